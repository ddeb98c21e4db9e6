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
]
