"""sustained: a condition holds on every reading of a subject for at least ``for``.

Per subject, readings are taken in event-time order. The incident opens when the open condition
has held on every reading for ``for`` (its window starts at the first of those readings), and
resolves when the close condition has held for ``resolve_after``. The close condition defaults to
"not the open condition"; a separate one gives hysteresis (open above 30 cm, resolve under 20 cm).
Between the two the incident stays open and the close timer restarts.

A reading older than the subject's newest one cannot rewrite the past: it is counted in
``details.out_of_order`` and otherwise ignored. Keep per-subject order (one producer per sensor,
messages keyed by source) for replay to equal stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from rules.duration import Duration
from rules.kinds.base import OPS, Kind, Scope, build_incident
from rules.model import Enriched, event_value
from rules.spec import Condition, Op, RuleBase
from rules.state import EVIDENCE_CAP


class SustainedRule(RuleBase):
    kind: Literal["sustained"]
    field: str = "value"
    op: Op = ">"
    value: float
    for_: Duration = Field(alias="for", description="How long the open condition must hold.")
    close: Condition | None = Field(default=None, description="Resolve condition (default: not the open condition).")
    resolve_after: Duration = Field(  # type: ignore[assignment]
        default="0s", validate_default=True, description="How long the close condition must hold."
    )

    model_config = {"populate_by_name": True, "extra": "forbid", "frozen": True}


class Sustained(Kind):
    rule: SustainedRule

    def __init__(self, rule: SustainedRule, ctx: Any) -> None:
        super().__init__(rule, ctx)
        self.for_ms = int(rule.for_.total_seconds() * 1000)
        self.resolve_ms = int(rule.resolve_after.total_seconds() * 1000)
        self.open_cmp = OPS[rule.op]

    def _closes(self, item: Enriched, value: float) -> bool:
        close = self.rule.close
        if close is None:
            return not self.open_cmp(value, self.rule.value)
        other = event_value(item.event, close.field)
        return other is not None and OPS[close.op](other, close.value)

    def feed(self, items: Sequence[Enriched], ts_ms: Sequence[int], scope: Scope) -> None:
        rule = self.rule
        for item, ts in zip(items, ts_ms, strict=True):
            value = event_value(item.event, rule.field)
            if value is None:
                continue
            subject = item.event.subject
            key = self.key(subject)
            entry, fresh = scope.load(
                key, lambda: {"phase": "idle", "since": None, "t": -1, "pos": {}, "ooo": 0, "subj": subject}
            )
            if not fresh:
                if entry.get("ep"):
                    scope.emit(self._snapshot(entry))
                continue
            if ts <= int(entry["t"]):
                entry["ooo"] = int(entry.get("ooo", 0)) + 1
                continue
            entry["t"] = ts
            opens = self.open_cmp(value, rule.value)
            record = [ts, item.event.id, value, item.event.lon, item.event.lat]
            phase = entry["phase"]
            if phase in ("idle", "resolved"):
                if opens:
                    entry.update(phase="pending", since=ts, buf=[record], zone=self.zone_of(item))
                    phase = "pending"
                    if self.for_ms == 0:
                        self._open(entry, ts)
            elif phase == "pending":
                if opens:
                    entry["buf"] = (entry["buf"] + [record])[:EVIDENCE_CAP]
                    if ts - int(entry["since"]) >= self.for_ms:
                        self._open(entry, ts)
                else:
                    entry.update(phase="idle", since=None, buf=[])
            else:  # open or closing
                ep = entry["ep"]
                ep["n"] += 1
                ep["last"] = ts
                ep["x"] = max(float(ep["x"]), value) if rule.op in (">", ">=") else min(float(ep["x"]), value)
                if len(ep["ev"]) < EVIDENCE_CAP:
                    ep["ev"].append(record)
                if self._closes(item, value):
                    if phase == "open":
                        entry.update(phase="closing", close_since=ts)
                    if ts - int(entry["close_since"]) >= self.resolve_ms:
                        ep["resolved"] = ts
                        entry.update(phase="resolved", since=None)
                else:
                    entry.update(phase="open", close_since=None)
            scope.put(key, entry)
            if entry.get("ep"):
                scope.emit(self._snapshot(entry))

    def _open(self, entry: dict[str, Any], ts: int) -> None:
        buf = entry.pop("buf")
        entry["phase"] = "open"
        entry["ep"] = {"start": int(entry["since"]), "n": len(buf), "last": ts, "ev": buf,
                       "x": max(b[2] for b in buf) if self.rule.op in (">", ">=") else min(b[2] for b in buf),
                       "resolved": None, "zone": entry.get("zone")}

    def _snapshot(self, entry: dict[str, Any]) -> Any:
        ep = entry["ep"]
        rule = self.rule
        resolved = ep.get("resolved")
        return build_incident(
            self.ctx, rule, subject=str(entry["subj"]), start_ms=int(ep["start"]),
            end_ms=int(resolved if resolved is not None else ep["last"]), entry=ep, value=float(ep["x"]),
            threshold=rule.value, op=rule.op, zone=ep.get("zone"), status="resolved" if resolved is not None else "open",
            resolved_ms=resolved, higher_is_worse=rule.op in (">", ">="),
            details={"for_ms": self.for_ms, "resolve_after_ms": self.resolve_ms, "out_of_order": int(entry.get("ooo", 0))},
        )
