"""threshold: one event's numeric field compared with a value; repeats grouped per dedup bucket."""

from __future__ import annotations

from rules.kinds.base import OPS, Kind, Slot
from rules.model import Enriched, event_value
from rules.pack import ThresholdRule
from rules.state import bucket_of


class Threshold(Kind):
    def __init__(self, rule: ThresholdRule) -> None:
        self.rule = rule
        self.size_ms = int(rule.dedup.total_seconds() * 1000)
        self.compare = OPS[rule.op]

    def slot(self, item: Enriched, ts_ms: int) -> Slot | None:
        value = event_value(item.event, self.rule.field)
        if value is None or not self.compare(value, self.rule.value):
            return None
        subject = item.event.subject
        zone = item.primary_zone(self.rule.layer) if self.rule.layer else None
        start = bucket_of(ts_ms, self.size_ms)
        return Slot(f"{self.rule.id}|{subject}|{start}", subject, zone, start, start + self.size_ms, value)

    def fires(self, count: int, extreme: float | None) -> bool:
        return count >= 1

    @property
    def prefer_max(self) -> bool:
        return self.rule.op not in ("<", "<=")
