"""threshold: one event's numeric field compared with a value; repeats grouped per dedup bucket.

Matching events of one subject (or zone, with ``group_by: zone``) inside one tumbling ``dedup``
bucket form one incident; repeats are counted on it. The state is order-independent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from rules.duration import Duration
from rules.fields import NumericField
from rules.kinds.base import OPS, Kind, PackContext, Scope, build_incident
from rules.model import Enriched, Incident
from rules.routes import routing_layer
from rules.spec import Condition, FieldRef, Op, RuleBase
from rules.state import Entry, add_event, bucket_of, copy_entry, new_entry


class ThresholdRule(RuleBase):
    """Fires when a single event's numeric ``field`` compares true with ``value``."""

    kind: Literal["threshold"]
    field: NumericField = Field(default="value", description="Numeric event field, e.g. value or alt_m.")
    op: Op = ">"
    value: float = Field(description="Threshold the observed value is compared with.")
    group_by: Literal["subject", "zone"] = Field(default="subject", description="One incident per subject or zone.")
    # validate_default: without it the default stays the string "10m" and the engine gets a str.
    dedup: Duration = Field(  # type: ignore[assignment]
        default="10m", validate_default=True, description="Tumbling bucket that groups repeats into one incident."
    )

    def field_refs(self) -> list[FieldRef]:
        return [*super().field_refs(), FieldRef(("field",), self.field)]

    @property
    def key_shared(self) -> bool:
        return self.group_by == "zone"


class Threshold(Kind):
    rule: ThresholdRule
    reads_columns = True

    def __init__(self, rule: ThresholdRule, ctx: PackContext) -> None:
        super().__init__(rule, ctx)
        self.size_ms = int(rule.dedup.total_seconds() * 1000)
        self.compare = OPS[rule.op]
        self.higher_is_worse = rule.op not in ("<", "<=")
        # grouped by the zones of a layer that is not the routing layer: a zone can span partitions,
        # so the rule is spread and only the partition owning a group keeps and emits it (as windows)
        self.spreading = rule.group_by == "zone" and rule.layer not in (None, routing_layer(ctx.layers))

    def conditions(self) -> Sequence[Condition]:
        return (Condition(field=self.rule.field, op=self.rule.op, value=self.rule.value),)

    def feed(self, items: Sequence[Enriched], ts_ms: Sequence[int], scope: Scope) -> None:
        rule = self.rule
        by_zone = rule.group_by == "zone"
        # An entry only grows within a batch, so its last snapshot (the highest revision) is the
        # one that counts: each is built once, at the end, in the order the entries were first hit.
        touched: dict[str, Entry] = {}
        for (value, zone, subject, event_id, lon, lat), ts in zip(self.facts(items, rule.field), ts_ms, strict=True):
            if value is None or not self.compare(value, rule.value):
                continue
            group = zone if (by_zone and zone) else subject
            if not self.owns_group(scope, group):
                continue  # another partition owns this group (and gets this event too)
            start = bucket_of(ts, self.size_ms)
            key = self.key(group, start)
            entry, fresh = scope.load(key, new_entry, copy_entry, (group, zone, start, start + self.size_ms))
            if fresh:
                add_event(entry, ts, event_id, value, lon, lat, prefer_max=self.higher_is_worse, zone=zone)
            touched.setdefault(key, entry)
        for entry in touched.values():
            scope.emit(self.snapshot(entry))

    def snapshot(self, entry: Entry) -> Incident:
        rule = self.rule
        return build_incident(
            self.ctx,
            rule,
            subject=str(entry["subj"]),
            start_ms=int(entry["start"]),
            end_ms=int(entry["end"]),
            entry=entry,
            value=float(entry["x"]),
            threshold=rule.value,
            op=rule.op,
            zone=entry.get("zone"),
            higher_is_worse=self.higher_is_worse,
        )
