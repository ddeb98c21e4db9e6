"""window: count of matching events per zone in tumbling event-time windows."""

from __future__ import annotations

from rules.kinds.base import OPS, Kind, Slot
from rules.model import Enriched, event_value
from rules.pack import WindowRule
from rules.state import bucket_of


class Window(Kind):
    def __init__(self, rule: WindowRule) -> None:
        assert rule.layer is not None
        self.rule = rule
        self.layer = rule.layer
        self.size_ms = int(rule.window.total_seconds() * 1000)
        self.compare = OPS[rule.op]

    def slot(self, item: Enriched, ts_ms: int) -> Slot | None:
        zone = item.primary_zone(self.layer)
        if zone is None:
            return None
        start = bucket_of(ts_ms, self.size_ms)
        value = event_value(item.event, "value")
        return Slot(
            f"{self.rule.id}|{zone}|{start}", zone, zone, start, start + self.size_ms, 1.0 if value is None else value
        )

    def fires(self, count: int, extreme: float | None) -> bool:
        return self.compare(float(count), self.rule.value)

    @property
    def prefer_max(self) -> bool:
        return True
