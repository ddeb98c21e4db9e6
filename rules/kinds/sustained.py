"""sustained: a condition holds on every reading of a subject for at least ``for``.

Per subject, readings are taken in event-time order. The incident opens when the open condition
has held on every reading for ``for`` (its window starts at the first of those readings), and
resolves when the close condition has held for ``resolve_after``. The close condition defaults to
"not the open condition"; a separate one gives hysteresis (open above 30 cm, resolve under 20 cm).
Between the two the incident stays open and the close timer restarts.

A reading older than the subject's newest one cannot rewrite the past: it is counted in
``details.out_of_order`` and otherwise ignored. Keep per-subject order (one producer per sensor,
messages keyed by source) for replay to equal stream.

``when`` and ``schedule`` are judged here, not by the engine: a reading that fails them breaks
the sequence. A pending condition starts again, and an open incident resolves at that reading
(``details.ended_by_gate``). So a night-noise rule (``22:00-06:00``) resolves at the first reading
after 06:00, and a noisy reading the next evening does not continue last night's episode.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Literal

from pydantic import ConfigDict, Field

from rules.columns import NUMERIC, Rows
from rules.duration import Duration
from rules.fields import NumericField
from rules.kinds.base import OPS, Kind, Scope, build_incident, field_value
from rules.model import Enriched, Incident
from rules.spec import Condition, FieldRef, Op, RuleBase
from rules.state import EVIDENCE_CAP, Entry


class SustainedRule(RuleBase):
    kind: Literal["sustained"]
    field: NumericField = "value"
    op: Op = ">"
    value: float
    for_: Duration = Field(alias="for", description="How long the open condition must hold.")
    close: Condition | None = Field(default=None, description="Resolve condition (default: not the open condition).")
    # A timedelta default: parse_duration rejects "0s", so a string default failed every rule that omitted it.
    resolve_after: Duration = Field(
        default=timedelta(0), json_schema_extra={"default": "0s"}, description="How long the close condition must hold."
    )

    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)

    def field_refs(self) -> list[FieldRef]:
        refs = [*super().field_refs(), FieldRef(("field",), self.field)]
        if self.close is not None:
            refs.append(FieldRef(("close", "field"), self.close.field))
        return refs


class Sustained(Kind):
    rule: SustainedRule
    gates_itself = True
    reads_columns = True
    resends_episodes = True

    def __init__(self, rule: SustainedRule, ctx: Any) -> None:
        super().__init__(rule, ctx)
        self.for_ms = int(rule.for_.total_seconds() * 1000)
        self.resolve_ms = int(rule.resolve_after.total_seconds() * 1000)
        self.open_cmp = OPS[rule.op]

    def open_ended(self, incident: Incident) -> bool:
        """An open episode changes until it resolves."""
        return incident.status == "open"

    def _closes(self, item: Enriched, value: float) -> bool:
        close = self.rule.close
        if close is None:
            return not self.open_cmp(value, self.rule.value)
        other = field_value(item.event, close.field)
        return other is not None and OPS[close.op](other, close.value)

    def feed(self, items: Sequence[Enriched], ts_ms: Sequence[int], scope: Scope) -> None:
        rule = self.rule
        name, threshold, opens_at = rule.field, rule.value, self.open_cmp
        prefix = f"{self.state_prefix}|"  # self.key(subject), without a call per reading
        touched, replayed, state, position = scope.touched, scope.replayed, scope.state, scope.position
        part = str(position[0]) if position is not None else ""
        # Fed a batch's rows (see Kind.reads_columns): values and subjects come from its columns
        # (NaN where field_value is None), and an event is built only for a reading that needs it.
        columns = items.columns if isinstance(items, Rows) and name in NUMERIC else None
        rows = items.rows if isinstance(items, Rows) else []
        cells = columns.cells(name) if columns is not None else []
        values: list[float] = [cells[r] for r in rows] if columns is not None else []
        subjects = columns.subjects if columns is not None else None
        # Without `when`, a schedule or a separate close condition, a reading that changes the entry
        # needs only its id, position and zone: read from the columns, no event built.
        layer = rule.layer
        light = (
            columns is not None
            and not rule.when
            and self.schedule is None
            and rule.close is None
            and (layer is None or layer in columns.zones)
        )
        if light and columns is not None:
            ids, lons, lats = columns.ids, columns.cells("lon"), columns.cells("lat")
            zone_ids = columns.zones[layer].primary_ids if layer is not None else None
        for i, ts in enumerate(ts_ms):
            item: Enriched | None = None
            if columns is not None:
                value = values[i]
                if value != value:  # NaN
                    continue
                found_subject = subjects[rows[i]] if subjects is not None else None
                subject = found_subject if found_subject is not None else columns.subject(rows[i])
            else:
                item = items[i]
                found = field_value(item.event, name)
                if found is None:
                    continue
                value, subject = found, item.event.subject
            key = prefix + subject
            if not opens_at(value, threshold) and key not in touched and key not in replayed:
                # The common case, a normal reading of an idle subject (its entry a core, see
                # _store): what the path below does with it, without copying the entry first.
                stored = state.get(key)
                if not stored:
                    if ts > -1:  # newer than a new core (_core)
                        touched[key] = {"t": ts, "pos": {}}
                        continue
                elif (
                    "phase" not in stored
                    and ts > int(stored["t"])
                    and (position is None or int(stored["pos"].get(part, -1)) < position[1])
                ):
                    core = dict(stored)
                    core["t"], core["pos"] = ts, dict(stored["pos"])
                    touched[key] = core
                    continue
            if light:
                r = rows[i]
                gated_in = True
                record = [ts, ids[r], value, lons[r], lats[r]]
                zone = zone_ids[r] if zone_ids is not None else None
            else:
                if item is None:
                    item = items[i]
                gated_in = self.gate(item)
                record = [ts, item.event.id, value, item.event.lon, item.event.lat]
                zone = self.zone_of(item)
            entry, fresh = scope.load(key, _core, _copy_entry)
            if "phase" not in entry:  # an idle entry kept as its core (see _store), or a new subject
                if fresh and ts > int(entry["t"]) and (not self.open_cmp(value, rule.value) or not gated_in):
                    # the common case, a normal reading of an idle subject: it stays a core, newer
                    entry["t"] = ts
                    continue
                entry.update(phase="idle", since=None, ooo=0, subj=subject)
            if not fresh:
                if entry.get("ep"):
                    scope.emit(self._snapshot(entry))
                continue
            if ts <= int(entry["t"]):
                entry["ooo"] = int(entry.get("ooo", 0)) + 1
                if entry.get("ep"):  # the count is in the snapshot: the latest snapshot must show it
                    scope.emit(self._snapshot(entry))
                continue
            entry["t"] = ts
            # An episode's snapshot is sent when this reading changes it (counted on an open one,
            # opened, resolved); a resolved episode stays in the entry, unchanged by what follows.
            was_open = entry["phase"] in ("open", "closing")
            if not gated_in:
                self._break(entry, ts)
                _store(scope, key, entry)
                if was_open:
                    scope.emit(self._snapshot(entry))
                continue
            opens = self.open_cmp(value, rule.value)
            phase = entry["phase"]
            if phase in ("idle", "resolved"):
                if opens:
                    entry.update(phase="pending", since=ts, buf=[record], bn=1, bx=value, zone=zone)
                    phase = "pending"
                    if self.for_ms == 0:
                        self._open(entry, ts)
            elif phase == "pending":
                if opens:
                    entry["buf"] = (entry["buf"] + [record])[:EVIDENCE_CAP]
                    entry["bn"] = int(entry.get("bn", len(entry["buf"]) - 1)) + 1
                    entry["bx"] = self._worse(float(entry.get("bx", value)), value)
                    if ts - int(entry["since"]) >= self.for_ms:
                        self._open(entry, ts)
                else:
                    entry.update(phase="idle", since=None, buf=[])
            else:  # open or closing
                ep = entry["ep"]
                ep["n"] += 1
                ep["last"] = ts
                ep["x"] = self._worse(float(ep["x"]), value)
                if len(ep["ev"]) < EVIDENCE_CAP:
                    ep["ev"].append(record)
                if (not opens) if rule.close is None else self._closes(item if item is not None else items[i], value):
                    if phase == "open":
                        entry.update(phase="closing", close_since=ts)
                    if ts - int(entry["close_since"]) >= self.resolve_ms:
                        ep["resolved"] = ts
                        entry.update(phase="resolved", since=None)
                else:
                    entry.update(phase="open", close_since=None)
            _store(scope, key, entry)
            if was_open or (entry["phase"] == "open" and phase == "pending"):
                scope.emit(self._snapshot(entry))

    @staticmethod
    def _break(entry: dict[str, Any], ts: int) -> None:
        """A reading outside ``when`` or the schedule: drop a pending condition, resolve an open incident."""
        phase = entry["phase"]
        if phase == "pending":
            entry.update(phase="idle", since=None, buf=[])
        elif phase in ("open", "closing"):
            entry["ep"]["resolved"] = ts
            entry["ep"]["gated"] = True
            entry.update(phase="resolved", since=None, close_since=None)

    def _worse(self, a: float, b: float) -> float:
        return max(a, b) if self.rule.op in (">", ">=") else min(a, b)

    def _open(self, entry: dict[str, Any], ts: int) -> None:
        buf = entry.pop("buf")
        # bn/bx count every pending reading; the evidence buffer keeps only the first EVIDENCE_CAP
        count = int(entry.pop("bn", len(buf)))
        extreme = float(entry.pop("bx", buf[0][2]))
        for record in buf:
            extreme = self._worse(extreme, float(record[2]))
        entry["phase"] = "open"
        entry["ep"] = {
            "start": int(entry["since"]),
            "n": count,
            "last": ts,
            "ev": buf,
            "x": extreme,
            "resolved": None,
            "zone": entry.get("zone"),
        }

    def _snapshot(self, entry: dict[str, Any]) -> Any:
        ep = entry["ep"]
        rule = self.rule
        resolved = ep.get("resolved")
        return build_incident(
            self.ctx,
            rule,
            subject=str(entry["subj"]),
            start_ms=int(ep["start"]),
            end_ms=int(resolved if resolved is not None else ep["last"]),
            entry=ep,
            value=float(ep["x"]),
            threshold=rule.value,
            op=rule.op,
            zone=ep.get("zone"),
            status="resolved" if resolved is not None else "open",
            resolved_ms=resolved,
            higher_is_worse=rule.op in (">", ">="),
            details={
                "for_ms": self.for_ms,
                "resolve_after_ms": self.resolve_ms,
                "out_of_order": int(entry.get("ooo", 0)),
                "ended_by_gate": bool(ep.get("gated")),
            },
        )


def _store(scope: Scope, key: str, entry: Entry) -> None:
    """Keep the entry; when the subject has nothing pending and nothing to show, keep only its core.

    Most sensors read normal values most of the time, so most entries are idle. An idle entry
    without an episode or an out-of-order count needs only the newest reading time ``t`` (to
    recognise an out-of-order reading) and the applied source positions ``pos`` (idempotency, set
    at commit): everything else is its factory default, restored when it is loaded (``feed``).
    Dropping the entry altogether would lose both, so a re-delivered message would be folded in
    again; keeping the core keeps incidents identical whatever the redelivery.
    """
    if entry["phase"] == "idle" and not entry.get("ep") and not entry.get("ooo"):
        entry = {"t": entry["t"], "pos": entry.get("pos", {})}
    scope.put(key, entry)


def _core() -> Entry:
    """A subject seen for the first time: the core of an idle entry older than any reading (see ``_store``)."""
    return {"t": -1, "pos": {}}


def _copy_entry(entry: Entry) -> Entry:
    """A subject's private copy: ``pos``, the pending buffer and the episode with its evidence are
    changed in place by ``feed`` (and ``_open`` turns the buffer into the episode's evidence), so
    they are copied; records are never changed, so they are shared. Most entries are idle cores
    (``t`` and ``pos`` only)."""
    out = dict(entry)
    out["pos"] = dict(entry["pos"])
    if "buf" in entry:
        out["buf"] = list(entry["buf"])
    ep = entry.get("ep")
    if ep:
        out["ep"] = {**ep, "ev": list(ep["ev"])}
    return out
