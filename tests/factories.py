"""Small factories of domain objects shared by tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rules.model import Evidence, Incident

T0 = datetime(2026, 7, 1, 8, tzinfo=UTC)


def incident(
    n: int,
    revision: int,
    *,
    status: str = "open",
    severity: str = "high",
    rule: str = "flood.level",
    zone: str = "420103",
) -> Incident:
    return Incident(
        id=f"inc{n:04d}",
        revision=revision,
        pack="wuhan",
        pack_version="1",
        rule_id=rule,
        rule_version=1,
        kind="threshold",
        title="Water level above 30 cm",
        severity=severity,
        category="flood",  # type: ignore[arg-type]
        status=status,
        subject=f"wl-{n}",
        layer="districts",
        zone_id=zone,
        zone_name="江汉区",  # type: ignore[arg-type]
        window_start=T0,
        window_end=T0 + timedelta(minutes=15),
        first_event_at=T0,
        last_event_at=T0 + timedelta(seconds=revision),
        lon=114.27,
        lat=30.59,
        value=30.0 + revision,
        threshold=30,
        op=">",
        resolved_at=T0 + timedelta(seconds=revision) if status == "resolved" else None,
        evidence=Evidence(
            event_ids=[f"e{n}-{i}" for i in range(min(revision, 20))], values=[31.0] * min(revision, 20), count=revision
        ),
    )
