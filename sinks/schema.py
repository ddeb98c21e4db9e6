"""The store's versioned schema. Migrations run in order, once, when the writer starts."""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "incidents, events archive, dead letters",
        """
        CREATE TABLE incidents (
            id VARCHAR PRIMARY KEY,
            revision INTEGER NOT NULL,
            schema_version VARCHAR NOT NULL,
            pack VARCHAR NOT NULL,
            pack_version VARCHAR NOT NULL,
            rule_id VARCHAR NOT NULL,
            rule_version INTEGER NOT NULL,
            kind VARCHAR NOT NULL,
            title VARCHAR NOT NULL,
            severity VARCHAR NOT NULL,
            category VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            subject VARCHAR NOT NULL,
            layer VARCHAR,
            zone_id VARCHAR,
            zone_name VARCHAR,
            window_start TIMESTAMPTZ NOT NULL,
            window_end TIMESTAMPTZ NOT NULL,
            first_event_at TIMESTAMPTZ NOT NULL,
            last_event_at TIMESTAMPTZ NOT NULL,
            lon DOUBLE NOT NULL,
            lat DOUBLE NOT NULL,
            value DOUBLE NOT NULL,
            threshold DOUBLE NOT NULL,
            op VARCHAR NOT NULL,
            evidence_count INTEGER NOT NULL,
            evidence JSON NOT NULL,
            stored_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL
        );
        CREATE TABLE events (
            id VARCHAR PRIMARY KEY,
            kind VARCHAR NOT NULL,
            ts TIMESTAMPTZ NOT NULL,
            lon DOUBLE NOT NULL,
            lat DOUBLE NOT NULL,
            subject VARCHAR NOT NULL,
            topic_label VARCHAR,
            value DOUBLE,
            zones JSON NOT NULL,
            payload JSON NOT NULL,
            stored_at TIMESTAMPTZ NOT NULL
        );
        CREATE TABLE dead_letters (
            source VARCHAR PRIMARY KEY,
            kind VARCHAR NOT NULL,
            reason VARCHAR NOT NULL,
            original BLOB NOT NULL,
            failed_at TIMESTAMPTZ NOT NULL,
            stored_at TIMESTAMPTZ NOT NULL
        );
        """,
    ),
    (
        2,
        "lifecycle, history (audit + outbox), evidence, actions, silences",
        """
        ALTER TABLE incidents ADD COLUMN rule_status VARCHAR DEFAULT 'open';
        ALTER TABLE incidents ADD COLUMN certainty VARCHAR DEFAULT 'likely';
        ALTER TABLE incidents ADD COLUMN resolved_at TIMESTAMPTZ;
        ALTER TABLE incidents ADD COLUMN details JSON DEFAULT '{}';
        ALTER TABLE incidents ADD COLUMN silenced BOOLEAN DEFAULT false;
        ALTER TABLE incidents ADD COLUMN silences JSON DEFAULT '[]';
        ALTER TABLE incidents ADD COLUMN assignee VARCHAR;
        ALTER TABLE incidents ADD COLUMN opened_at TIMESTAMPTZ;
        ALTER TABLE incidents ADD COLUMN acknowledged_at TIMESTAMPTZ;
        ALTER TABLE incidents ADD COLUMN closed_at TIMESTAMPTZ;
        ALTER TABLE incidents ADD COLUMN status_changed_at TIMESTAMPTZ;
        CREATE TABLE incident_history (
            update_id VARCHAR PRIMARY KEY,
            incident_id VARCHAR NOT NULL,
            kind VARCHAR NOT NULL,
            from_status VARCHAR,
            to_status VARCHAR NOT NULL,
            actor VARCHAR NOT NULL,
            happened_at TIMESTAMPTZ NOT NULL,
            note VARCHAR NOT NULL,
            revision INTEGER NOT NULL,
            severity VARCHAR,
            seq BIGINT NOT NULL,
            published_at TIMESTAMPTZ
        );
        CREATE TABLE evidence (
            incident_id VARCHAR NOT NULL,
            event_id VARCHAR NOT NULL,
            value DOUBLE,
            PRIMARY KEY (incident_id, event_id)
        );
        CREATE TABLE actions (
            action_id VARCHAR PRIMARY KEY,
            incident_id VARCHAR NOT NULL,
            action VARCHAR NOT NULL,
            actor VARCHAR NOT NULL,
            acted_at TIMESTAMPTZ NOT NULL,
            note VARCHAR NOT NULL,
            assignee VARCHAR,
            outcome VARCHAR NOT NULL,
            reason VARCHAR NOT NULL,
            stored_at TIMESTAMPTZ NOT NULL
        );
        CREATE TABLE silences (
            silence_id VARCHAR PRIMARY KEY,
            payload JSON NOT NULL,
            starts_at TIMESTAMPTZ NOT NULL,
            ends_at TIMESTAMPTZ NOT NULL,
            expired BOOLEAN NOT NULL,
            created_by VARCHAR NOT NULL,
            reason VARCHAR NOT NULL,
            stored_at TIMESTAMPTZ NOT NULL
        );
        UPDATE incidents SET opened_at = stored_at, status_changed_at = stored_at WHERE opened_at IS NULL;
        """,
    ),
]
