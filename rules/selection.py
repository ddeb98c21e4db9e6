"""Which rules see which events of a batch, decided on columns.

A batch is grouped once on (event kind, metric/category/object type); each group's candidate
rules come from an index. Every (rule, row) pair of the batch is then filtered at once with
numpy: the rule's zone (and ``match.zones``), its ``when`` conditions and the conditions its kind
declares (``Kind.conditions``), and its schedule. Sequence kinds (``gates_itself``) judge ``when``
and the schedule themselves, so they see every event of their zones.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from datetime import time, timedelta
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rules.columns import DISCRIMINATOR, KINDS, NOT_NUMERIC, NUMERIC, EventColumns
from rules.kinds.base import OPS, Kind, field_value
from rules.model import Enriched, event_value
from rules.schedule import ScheduleCheck
from rules.spec import Match, RuleBase
from rules.state import EPOCH

OP_CODES = (">", ">=", "<", "<=", "==", "!=")
# TRUTH[op, sign(x - v) + 1]: whether ``x op v`` holds when x is below, equal to or above v.
TRUTH = np.array(
    [
        [False, False, True],
        [False, True, True],
        [True, False, False],
        [True, True, False],
        [False, True, False],
        [True, False, True],
    ]
)
NAN_ROW = len(NUMERIC)  # a field no event has as a number: every condition on it fails
FALLBACK = -2  # a field not known to be columnar: judged with ``event_value`` row by row
DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000
_US = timedelta(microseconds=1)


def accepts(match: Match, kind: str, value: str | None) -> bool:
    """Whether a rule's match could accept an event of this kind with this metric/category/object type."""
    return match.takes(kind, value)


def _keys(match: Match, kind: str) -> list[str] | None:
    """The metric/category/object type values ``accepts`` takes for this kind: None for any, [] for none."""
    if kind == "reading":
        if match.category is not None or match.categories is not None or match.object_type is not None:
            return []
        return None if match.metric is None else [match.metric]
    if kind == "report":
        if match.metric is not None or match.object_type is not None:
            return []
        if match.category is not None:
            return [match.category] if match.categories is None or match.category in match.categories else []
        return None if match.categories is None else list(match.categories)
    if match.metric is not None or match.category is not None or match.categories is not None:
        return []
    return None if match.object_type is None else [match.object_type]


class Selection:
    """The compiled filters of a pack's rules, applied to whole batches."""

    def __init__(self, rules: Sequence[RuleBase], kinds: Sequence[Kind], schedules: Sequence[ScheduleCheck | None]):
        self.rules = list(rules)
        n = len(self.rules)
        self.layers: list[str] = list(dict.fromkeys(r.layer for r in self.rules if r.layer is not None))
        self._layer_of = np.array([self.layers.index(r.layer) if r.layer else -1 for r in self.rules], dtype=np.intp)
        self._by_kind: dict[str, list[int]] = {k: [] for k in KINDS}
        for i, r in enumerate(self.rules):
            for kind_name in [r.match.kind] if r.match.kind else KINDS:
                self._by_kind[kind_name].append(i)
        self._index: dict[tuple[int, str | None], NDArray[np.intp]] = {}
        # per kind: rules open to any metric/category/object type, and rules keyed by one
        self._any: dict[str, list[int]] = {k: [] for k in KINDS}
        self._keyed: dict[str, dict[str, list[int]]] = {k: {} for k in KINDS}
        for kind_name, found in self._by_kind.items():
            for i in found:
                values = _keys(self.rules[i].match, kind_name)
                if values is None:
                    self._any[kind_name].append(i)
                else:
                    for v in values:
                        self._keyed[kind_name].setdefault(v, []).append(i)
        # match.zones: allowed (rule, zone key) codes per layer; zone keys are the ids any rule names
        self._zone_key: dict[str, dict[str, int]] = {name: {} for name in self.layers}
        for r in self.rules:
            if r.layer is not None and r.match.zones is not None:
                keys = self._zone_key[r.layer]
                for z in r.match.zones:
                    keys.setdefault(z, len(keys))
        self._has_zones = np.array([r.layer is not None and r.match.zones is not None for r in self.rules], dtype=bool)
        self._allowed: dict[str, NDArray[np.int64]] = {}
        for name in self.layers:
            width = len(self._zone_key[name]) + 1
            codes = [
                i * width + self._zone_key[name][z]
                for i, r in enumerate(self.rules)
                if r.layer == name and r.match.zones is not None
                for z in r.match.zones
            ]
            self._allowed[name] = np.array(sorted(codes), dtype=np.int64)
        self._vocab_keys: dict[int, tuple[Sequence[str], NDArray[np.intp]]] = {}
        # conditions of rules the engine gates: ``when`` plus what the kind declares
        conds: list[list[tuple[str, str, float]]] = []  # (field, op, value)
        for r, kind in zip(self.rules, kinds, strict=True):
            if kind.gates_itself:
                conds.append([])
            else:
                conds.append([(c.field, str(c.op), c.value) for c in [*r.when, *kind.conditions()]])
        slots = max((len(c) for c in conds), default=0)
        self._field = np.full((slots, n), -1, dtype=np.intp)
        self._op = np.zeros((slots, n), dtype=np.intp)
        self._value = np.zeros((slots, n), dtype=np.float64)
        self._names: list[list[str]] = [[""] * n for _ in range(slots)]
        for i, rule_conds in enumerate(conds):
            for k, (name, op, value) in enumerate(rule_conds):
                if name in NUMERIC:
                    self._field[k, i] = NUMERIC.index(name)
                elif name in NOT_NUMERIC:
                    self._field[k, i] = NAN_ROW
                else:
                    self._field[k, i] = FALLBACK
                self._op[k, i] = OP_CODES.index(op)
                self._value[k, i] = value
                self._names[k][i] = name
        #: the numeric columns some condition reads (the others are never built for a batch), and
        #: each field's row in the matrix ``_conditions`` builds of them (the last row: NaN)
        read = sorted(int(f) for f in np.unique(self._field) if 0 <= f < NAN_ROW)
        self._read = frozenset(read)
        self._read_names = [NUMERIC[f] for f in read]
        self._row_of = np.full(NAN_ROW + 1, len(read), dtype=np.intp)
        self._row_of[read] = np.arange(len(read))
        #: per condition slot: whether some rule's field there is judged event by event
        self._fallback = [bool((self._field[k] == FALLBACK).any()) for k in range(slots)]
        # schedules of gated rules, one check per distinct schedule
        self._schedules: list[ScheduleCheck] = []
        sched_ids: list[int] = []
        seen: dict[tuple[Any, ...], int] = {}
        for kind, check in zip(kinds, schedules, strict=True):
            if check is None or kind.gates_itself:
                sched_ids.append(-1)
                continue
            key = (str(check.tz), tuple(check.ranges), frozenset(check.days), frozenset(check.holidays))
            if key not in seen:
                seen[key] = len(self._schedules)
                self._schedules.append(check)
            sched_ids.append(seen[key])
        self._schedule_of = np.array(sched_ids, dtype=np.intp)
        # the same filters, event by event (``matching``)
        self._conds = conds
        self._gated = [not kind.gates_itself for kind in kinds]
        self._checks = [check if not kind.gates_itself else None for kind, check in zip(kinds, schedules, strict=True)]
        self._lists: dict[tuple[int, str | None], list[int]] = {}

    def candidates(self, kind: int, value: str | None) -> NDArray[np.intp]:
        """Rules that can match events of this kind and metric/category/object type (cached)."""
        key = (kind, value)
        found = self._index.get(key)
        if found is None:
            name = KINDS[kind]
            keyed = self._keyed[name].get(value, []) if value is not None else []
            found = np.array(sorted({*self._any[name], *keyed}), dtype=np.intp)
            if len(self._index) < 100_000:
                self._index[key] = found
        return found

    def matching(self, item: Enriched) -> list[int]:
        """The rules one event passes (what ``select`` gives for a batch of one), in rule order."""
        event = item.event
        fields = event.__dict__
        kind = fields["kind"]
        key = (KINDS.index(kind), fields.get(DISCRIMINATOR[kind]))
        found = self._lists.get(key)
        if found is None:
            found = self.candidates(*key).tolist()
            if len(self._lists) < 100_000:
                self._lists[key] = found
        out = []
        for i in found:
            rule = self.rules[i]
            if rule.layer is not None:
                ids = item.zones.get(rule.layer)
                if not ids or (rule.match.zones is not None and ids[0] not in rule.match.zones):
                    continue
            if self._gated[i]:
                if not all(
                    (got := field_value(event, name)) is not None and OPS[op](got, value)
                    for name, op, value in self._conds[i]
                ):
                    continue
                check = self._checks[i]
                if check is not None and not check.active(event.ts):
                    continue
            out.append(i)
        return out

    def select(
        self, batch: EventColumns, on_time: NDArray[np.bool_], order: NDArray[np.intp]
    ) -> Iterator[tuple[int, list[int]]]:
        """(rule index, rows) for every rule that some on-time row passes, in rule order; rows in time order."""
        n = len(batch)
        groups: dict[tuple[int, str | None], int] = {}
        group_of = groups.setdefault
        gid = np.array(
            [group_of(k, len(groups)) for k in zip(batch.kind.tolist(), batch.disc, strict=True)], dtype=np.intp
        )
        cands = [self.candidates(k, d) for k, d in groups]
        counts = np.array([len(c) for c in cands], dtype=np.intp)
        if not counts.any():
            return
        flat = np.concatenate(cands)
        gstart = np.cumsum(counts) - counts
        rows = np.flatnonzero(on_time)
        g = gid[rows]
        cnt = counts[g]
        prow = np.repeat(rows, cnt)
        if not len(prow):
            return
        offs = np.arange(len(prow)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        pr = flat[np.repeat(gstart[g], cnt) + offs]
        keep = self._zone_filter(batch, pr, prow)
        if len(self._field):
            keep &= self._conditions(batch, pr, prow)
        if len(self._schedules):
            keep &= self._scheduled(batch, pr, prow)
        pr, prow = pr[keep], prow[keep]
        if not len(pr):
            return
        rank = np.empty(n, dtype=np.intp)
        rank[order] = np.arange(n)
        o = np.lexsort((rank[prow], pr))
        pr, prow = pr[o], prow[o]
        bounds = [0, *(np.flatnonzero(pr[1:] != pr[:-1]) + 1).tolist(), len(pr)]
        rules, row_list = pr.tolist(), prow.tolist()
        for a, b in itertools.pairwise(bounds):
            yield rules[a], row_list[a:b]

    def _zone_filter(self, batch: EventColumns, pr: NDArray[np.intp], prow: NDArray[np.intp]) -> NDArray[np.bool_]:
        keep = np.ones(len(pr), dtype=bool)
        layer_of = self._layer_of[pr]
        for index, name in enumerate(self.layers):
            on = layer_of == index
            if not on.any():
                continue
            zones = batch.zones.get(name)
            if zones is None:
                keep &= ~on
                continue
            primary = zones.primary[prow]
            keep &= ~on | (primary >= 0)
            check = on & keep & self._has_zones[pr]
            if check.any():
                keys = self._keys_of(name, zones.ids)[primary[check]]
                width = len(self._zone_key[name]) + 1
                codes = pr[check].astype(np.int64) * width + keys
                keep[check] = (keys >= 0) & np.isin(codes, self._allowed[name])
        return keep

    def _keys_of(self, layer: str, vocab: Sequence[str]) -> NDArray[np.intp]:
        """The zone key of every id of a zone vocabulary (-1: named by no rule); cached per layer tuple."""
        cached = self._vocab_keys.get(id(vocab))
        if cached is not None and cached[0] is vocab:
            return cached[1]
        keys = self._zone_key[layer]
        out = np.array([keys.get(z, -1) for z in vocab], dtype=np.intp)
        if isinstance(vocab, tuple):  # a layer's own ids: the same object every batch
            self._vocab_keys[id(vocab)] = (vocab, out)
        return out

    def _conditions(self, batch: EventColumns, pr: NDArray[np.intp], prow: NDArray[np.intp]) -> NDArray[np.bool_]:
        keep = np.ones(len(pr), dtype=bool)
        matrix = np.vstack([*(batch.numeric[name] for name in self._read_names), np.full(len(batch), np.nan)])
        for k in range(len(self._field)):
            field = self._field[k][pr]
            columnar = field >= 0
            if columnar.any():
                x = matrix[self._row_of[np.where(columnar, field, NAN_ROW)], prow]
                v = self._value[k][pr]
                sign = (x > v).astype(np.intp) - (x < v) + 1
                holds = TRUTH[self._op[k][pr], sign] & ~np.isnan(x)
                keep &= ~columnar | holds
            if not self._fallback[k]:
                continue
            for p in np.flatnonzero((field == FALLBACK) & keep).tolist():
                rule, row = int(pr[p]), int(prow[p])
                name = self._names[k][rule]
                got = event_value(batch.event_at(row), name)
                if got is None or not OPS[OP_CODES[int(self._op[k][rule])]](got, float(self._value[k][rule])):
                    keep[p] = False
        return keep

    def _scheduled(self, batch: EventColumns, pr: NDArray[np.intp], prow: NDArray[np.intp]) -> NDArray[np.bool_]:
        sid = self._schedule_of[pr]
        used = np.unique(sid[sid >= 0])
        if not len(used):
            return np.ones(len(pr), dtype=bool)
        table = np.ones((len(self._schedules), len(batch)), dtype=bool)
        local: dict[str, NDArray[np.int64]] = {}
        for s in used.tolist():
            check = self._schedules[s]
            tz = str(check.tz)
            if tz not in local:
                local[tz] = local_us(batch.ts_us, check)
            table[s] = active(local[tz], check)
        return (sid < 0) | table[np.maximum(sid, 0), prow]


def _offset_us(at_us: int, check: ScheduleCheck) -> int:
    offset = (EPOCH + timedelta(microseconds=at_us)).astimezone(check.tz).utcoffset()
    return 0 if offset is None else offset // _US


def local_us(ts_us: NDArray[np.int64], check: ScheduleCheck) -> NDArray[np.int64]:
    """Local wall-clock time (microseconds since the local epoch) of each instant in the schedule's zone.

    The UTC offset is looked up once per hour of the batch; an hour whose offset changes inside
    it (a DST switch) is looked up instant by instant.
    """
    hours, inverse = np.unique(ts_us // HOUR_US, return_inverse=True)
    offsets = np.zeros(len(hours), dtype=np.int64)
    mixed = []
    for i, h in enumerate(hours.tolist()):
        a, b = _offset_us(h * HOUR_US, check), _offset_us((h + 1) * HOUR_US - 1, check)
        offsets[i] = a
        if a != b:
            mixed.append(i)
    out: NDArray[np.int64] = ts_us + offsets[inverse]
    for i in mixed:
        for r in np.flatnonzero(inverse == i).tolist():
            out[r] = int(ts_us[r]) + _offset_us(int(ts_us[r]), check)
    return out


def _time_us(t: time) -> int:
    return ((t.hour * 60 + t.minute) * 60 + t.second) * 1_000_000 + t.microsecond


def active(local: NDArray[np.int64], check: ScheduleCheck) -> NDArray[np.bool_]:
    """``ScheduleCheck.active`` for every instant at once, from local wall-clock microseconds."""
    day = local // DAY_US
    now = local - day * DAY_US
    ok = np.ones(len(local), dtype=bool)
    if check.holidays:
        ok &= ~np.isin(day, [(d - EPOCH.date()).days for d in check.holidays])
    if check.days:
        ok &= np.isin((day + 3) % 7, sorted(check.days))  # 1970-01-01 was a Thursday (weekday 3)
    if check.ranges:
        inside = np.zeros(len(local), dtype=bool)
        for start, end in check.ranges:
            a, b = _time_us(start), _time_us(end)
            inside |= ((now >= a) & (now < b)) if start < end else ((now >= a) | (now < b))
        ok &= inside
    return ok
