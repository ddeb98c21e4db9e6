"""The rule engine: enrich a batch of events with zones, fold it into state, emit incidents.

Pure and synchronous. The same class serves the live worker (state in a Faust table), replay
and backtests (state in a dict). Time is event time: windows, ``for`` durations and silence
timers advance with the event-time watermark (the newest event time seen), so the same events
give the same incidents in every mode.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rules.columns import DISCRIMINATOR, KINDS, EventColumns, Rebuilt, Rows, locate
from rules.cooldown import Cooldown
from rules.geo import Locator
from rules.kinds import Kind, PackContext, evaluator
from rules.kinds.base import Scope, incident_id
from rules.kinds.silence import Silence
from rules.model import Enriched, Incident, Reading, Report, Track
from rules.pack import LoadedPack
from rules.schedule import ScheduleCheck as _ScheduleCheck
from rules.selection import Selection
from rules.spec import RuleBase
from rules.state import from_ms, to_ms

logger = logging.getLogger(__name__)

AnyEvent = Reading | Report | Track
#: Entries of a memo keyed by values that come from the input (metric and category names).
MEMO_CAP = 100_000

__all__ = ["AnyEvent", "Engine", "EventColumns", "Outcome", "incident_id", "run", "run_columns"]


@dataclass
class Outcome:
    """What one batch produced: the latest snapshot of every incident it touched, and late events."""

    incidents: list[Incident] = field(default_factory=list)
    late: list[tuple[Enriched, str]] = field(default_factory=list)


@dataclass
class _Compiled:
    rule: RuleBase
    kind: Kind
    schedule: _ScheduleCheck | None
    #: the rule's ``cooldown`` (None when it has none): every snapshot of the rule goes through it
    cooldown: Cooldown | None = None

    def feed(self, items: Sequence[Enriched], stamps: Sequence[int], scope: Scope) -> None:
        if self.cooldown is None:  # the hot path: most rules have none
            self.kind.feed(items, stamps, scope)
            return
        self._through(scope, lambda: self.kind.feed(items, stamps, scope))

    def tick(self, scope: Scope, at: int, keys: Sequence[str]) -> None:
        self._through(scope, lambda: self.kind.tick(scope, at, keys))

    def _through(self, scope: Scope, call: Callable[[], None]) -> None:
        """Run a kind's ``feed`` or ``tick`` with its snapshots going through the rule's cooldown."""
        if self.cooldown is None:
            call()
            return
        scope.through = self.cooldown.apply
        try:
            call()
        finally:
            scope.through = None


class Engine:
    """Evaluates one loaded pack. Holds no rule state itself except the event-time watermark."""

    #: ``process`` evaluates batches smaller than this event by event: numpy's fixed cost per call
    #: outweighs what columns save on a handful of events (small envelopes in the live worker).
    small_batch: int = 24

    def __init__(self, pack: LoadedPack) -> None:
        self.pack = pack
        spec = pack.spec
        self.lateness_ms = int(spec.allowed_lateness.total_seconds() * 1000)
        self.ctx = PackContext(spec.pack, spec.version, spec.timezone, self.lateness_ms, pack.layers)
        self.watermark_ms: int | None = None
        self.compiled = [
            _Compiled(r, evaluator(r, self.ctx), _ScheduleCheck(r.schedule, spec.timezone) if r.schedule else None)
            for r in spec.rules
        ]
        for c in self.compiled:
            if isinstance(c.kind, Silence):
                c.kind.relying = tuple(
                    sorted(r.id for r in spec.rules if r is not c.rule and r.match.overlaps(c.rule.match))
                )
            if c.rule.cooldown or c.rule.auto_resolve:
                c.cooldown = Cooldown(
                    c.kind,
                    int(c.rule.cooldown.total_seconds() * 1000),
                    self.lateness_ms,
                    int(c.rule.auto_resolve.total_seconds() * 1000),
                )
        self._selector = Selection(
            [c.rule for c in self.compiled], [c.kind for c in self.compiled], [c.schedule for c in self.compiled]
        )
        #: rules whose state groups events of several zones (``Kind.spreads``): fed the spread rows too
        self.spreading = frozenset(n for n, c in enumerate(self.compiled) if c.kind.spreading)
        self._spreads: dict[tuple[str, str | None], bool] = {}
        #: locates batches in the pack's layers (remembering the zones of points seen before)
        self.locator = Locator(pack.layers)
        self._takes: dict[tuple[int, str, str | None], bool] = {}

    @property
    def layers_read(self) -> Sequence[str]:
        """The layers whose zones the pack's rules read (what a batch is located in)."""
        return self._selector.layers

    def spreads(self, kind: str, disc: str | None) -> bool:
        """Whether events of this kind and metric/category/object type go to every events partition."""
        key = (kind, disc)
        found = self._spreads.get(key)
        if found is None:
            if len(self._spreads) >= MEMO_CAP:  # categories come from the input: keep the memo bounded
                self._spreads.clear()
            found = self._spreads[key] = any(self.compiled[n].kind.spreads(kind, disc) for n in self.spreading)
        return found

    def _takes_copy(self, rule: int, kind: str, disc: str | None) -> bool:
        """Whether ``rule`` is fed a spread copy of an event of this kind and metric/category."""
        key = (rule, kind, disc)
        found = self._takes.get(key)
        if found is None:
            if len(self._takes) >= MEMO_CAP:
                self._takes.clear()
            found = self._takes[key] = rule in self.spreading and self.compiled[rule].kind.spreads(kind, disc)
        return found

    # -- enrichment -------------------------------------------------------------------------
    def enrich(self, events: Sequence[AnyEvent]) -> list[Enriched]:
        """Attach the zones of every layer to each event: one STRtree query per layer per batch."""
        if not events:
            return []
        columns = EventColumns.from_events(events)
        self.enrich_columns(columns)
        return columns.all_enriched()

    def enrich_columns(self, columns: EventColumns) -> EventColumns:
        """Locate a column batch in every layer of the pack (one vectorised query per layer)."""
        locate(columns, self.locator)
        return columns

    # -- evaluation -------------------------------------------------------------------------
    def process(
        self,
        batch: Sequence[Enriched],
        state: MutableMapping[str, Any],
        position: tuple[int, int] | None = None,
        home: int | None = None,
        check_late: bool = True,
        late_watermark_ms: int | None = None,
        *,
        spread_from: int | None = None,
        owns: Callable[[str], bool] | None = None,
    ) -> Outcome:
        """Fold a batch into ``state`` and return the incidents it created or updated.

        Args:
            batch: enriched events, in any order (they are evaluated in event-time order).
            state: rule state; entries are re-assigned (never mutated in place) so that a
                changelog-backed table records every change.
            position: (partition, offset) of the source message; when given, a message that
                was already applied to an entry is not applied again.
            late_watermark_ms: judge lateness against this instead of the engine's watermark
                (the live pipeline passes the watermark of the batch's own source stream).
            spread_from: rows from here on are spread copies of other partitions' events
                (``Kind.spreads``): only spreading rules see them, and they are never reported late.
            owns: whether this partition emits a spreading rule's incident key (``Scope.owned``).
        """
        if len(batch) < self.small_batch:
            return self._process_items(
                batch, state, position, home, check_late, late_watermark_ms, spread_from=spread_from, owns=owns
            )
        layers = self.layers_read
        if isinstance(batch, Rebuilt):
            columns = batch.columns(layers)
        elif isinstance(batch, Rows):
            columns = batch.located(layers)
        else:
            columns = EventColumns.from_enriched(batch, layers)
        return self.process_columns(
            columns, state, position, home, check_late, late_watermark_ms, spread_from=spread_from, owns=owns
        )

    def _floor(self, check_late: bool, late_watermark_ms: int | None) -> tuple[int | None, int | None]:
        """The watermark lateness is judged against, and the oldest event time still on time."""
        mark = self.watermark_ms if late_watermark_ms is None else late_watermark_ms
        if mark is None or not check_late:
            return mark, None
        return mark, mark - self.lateness_ms

    def _process_items(
        self,
        batch: Sequence[Enriched],
        state: MutableMapping[str, Any],
        position: tuple[int, int] | None,
        home: int | None,
        check_late: bool,
        late_watermark_ms: int | None = None,
        *,
        spread_from: int | None = None,
        owns: Callable[[str], bool] | None = None,
    ) -> Outcome:
        """``process`` event by event: the same filters as the columnar path, without numpy's fixed cost."""
        outcome = Outcome()
        judged_by, floor = self._floor(check_late, late_watermark_ms)
        per_rule: dict[int, tuple[list[Enriched], list[int]]] = {}
        batch_max: int | None = None
        spread_at = len(batch) if spread_from is None else spread_from
        for ts, _, n in sorted((to_ms(i.event.ts), i.event.id, n) for n, i in enumerate(batch)):
            item = batch[n]
            if floor is not None and ts < floor:
                if n < spread_at:  # a spread copy is reported late by its home partition
                    outcome.late.append((item, self.late_reason(item, judged_by)))
                continue
            batch_max = ts
            for rule in self._selector.matching(item):
                if n >= spread_at and not self._takes_copy(rule, item.event.kind, _disc(item)):
                    continue
                items, stamps = per_rule.setdefault(rule, ([], []))
                items.append(item)
                stamps.append(ts)
        scope = Scope(state, position, home=home, owns=owns)
        for rule in sorted(per_rule):
            self.compiled[rule].feed(*per_rule[rule], scope)
        scope.commit()
        if batch_max is not None and (self.watermark_ms is None or batch_max > self.watermark_ms):
            self.watermark_ms = batch_max
        outcome.incidents = list(scope.incidents.values())
        return outcome

    def late_reason(self, item: Enriched, judged_by: int | None) -> str:
        """Why ``item`` is dead-lettered as late, against the watermark ``judged_by`` (ms)."""
        return (
            f"event time {item.event.ts.isoformat()} is older than the watermark "
            f"{from_ms(judged_by or 0).isoformat()} minus the allowed lateness "
            f"{self.pack.spec.allowed_lateness}"
        )

    def process_columns(
        self,
        batch: EventColumns,
        state: MutableMapping[str, Any],
        position: tuple[int, int] | None = None,
        home: int | None = None,
        check_late: bool = True,
        late_watermark_ms: int | None = None,
        *,
        spread_from: int | None = None,
        owns: Callable[[str], bool] | None = None,
        copies: Sequence[bool] | None = None,
    ) -> Outcome:
        """``process`` for a column batch (located with ``enrich_columns``, or built from enriched events).

        Rules see their events sorted by (event time, id); an ``Enriched`` is built only for the
        rows that some rule is fed. ``copies``, when given, says row by row which rows are spread
        copies (instead of ``spread_from``: a run of messages has copies after each one's events).
        """
        outcome = Outcome()
        if not len(batch):
            return outcome
        judged_by, floor = self._floor(check_late, late_watermark_ms)
        ts_ms = batch.ts_ms
        order = _time_order(ts_ms, batch.ids)
        late = ts_ms < floor if floor is not None else np.zeros(len(batch), dtype=bool)
        if copies is None:
            spread_at = len(batch) if spread_from is None else spread_from
            copies = [False] * spread_at + [True] * (len(batch) - spread_at) if spread_at < len(batch) else None
        if late.any():
            for n in order[late[order]].tolist():
                if copies is None or not copies[n]:  # a spread copy is reported late by its home partition
                    item = batch.enriched(n)
                    outcome.late.append((item, self.late_reason(item, judged_by)))
        on_time = ~late
        scope = Scope(state, position, home=home, owns=owns)
        stamps = ts_ms.tolist()
        codes = batch.kind
        for rule, rows in self._selector.select(batch, on_time, order):
            if copies is not None:
                takes = self._takes_copy
                rows = [r for r in rows if not copies[r] or takes(rule, KINDS[codes[r]], batch.disc[r])]
                if not rows:
                    continue
            c = self.compiled[rule]
            items = Rows(batch, rows) if c.kind.reads_columns else [batch.enriched(r) for r in rows]
            c.feed(items, [stamps[r] for r in rows], scope)
        scope.commit()
        if on_time.any():
            batch_max = int(ts_ms[on_time].max())
            if self.watermark_ms is None or batch_max > self.watermark_ms:
                self.watermark_ms = batch_max
        outcome.incidents = list(scope.incidents.values())
        return outcome

    def tick(
        self,
        state: MutableMapping[str, Any],
        *,
        clock_ms: int | None = None,
        partition: int | None = None,
        watermark_ms: int | None = None,
    ) -> list[Incident]:
        """Advance time-driven rules (silence, windows judged at close) to the watermark.

        ``clock_ms`` (live mode: the wall clock) may push the watermark forward when no events
        arrive. With ``partition``, only entries whose home is that partition are touched.
        ``watermark_ms`` judges them at that time instead of the engine's watermark (the live
        pipeline passes the partition's own event time when the clock is event time).
        """
        if clock_ms is not None and (self.watermark_ms is None or clock_ms > self.watermark_ms):
            self.watermark_ms = clock_ms
        timed = [c for c in self.compiled if c.kind.time_driven]
        resolving = [c.cooldown for c in self.compiled if c.cooldown is not None and c.cooldown.auto_resolve_ms]
        at = self.watermark_ms if watermark_ms is None else watermark_ms
        if at is None or not (timed or resolving):
            return []
        keys: dict[str, list[str]] = {c.kind.state_prefix: [] for c in timed}
        keys.update({r.prefix: [] for r in resolving})
        for key, value in list(state.items()):
            prefix = key.split("|", 1)[0]
            if prefix in keys and value and (partition is None or _home(value) in (None, partition)):
                keys[prefix].append(key)
        scope = Scope(state, None)
        for c in timed:
            c.tick(scope, at, keys[c.kind.state_prefix])
        for r in resolving:  # after the kinds' ticks, whose snapshots may change or open a chain
            opened = [k for k in scope.touched if k.startswith(f"{r.prefix}|") and k not in state]
            r.tick(scope, at, [*keys[r.prefix], *opened])
        scope.commit()
        return list(scope.incidents.values())

    def expire(
        self, state: MutableMapping[str, Any], *, partition: int | None = None, watermark_ms: int | None = None
    ) -> int:
        """Delete bucket entries that can no longer receive events. Returns how many.

        With ``partition``, only entries whose home (lowest source partition) is that partition
        are touched, so that a changelog tombstone lands where the entry was written.
        ``watermark_ms`` replaces the engine's watermark (as in ``tick``).
        """
        at = self.watermark_ms if watermark_ms is None else watermark_ms
        if at is None:
            return 0
        floor = at - self.lateness_ms
        dead = []
        for key, value in list(state.items()):
            if not value or "end" not in value or int(value["end"]) > floor:
                continue
            if value.get("closed") is False:
                continue
            if partition is not None and _home(value) not in (None, partition):
                continue
            dead.append(key)
        for key in dead:
            del state[key]
        return len(dead)


def _time_order(ts_ms: NDArray[np.int64], ids: Sequence[str]) -> NDArray[np.intp]:
    """Row numbers sorted by (event time in ms, id, row): the order rules see a batch in."""
    order = np.argsort(ts_ms, kind="stable")
    ties = np.flatnonzero(ts_ms[order][1:] == ts_ms[order][:-1])
    if not len(ties):
        return order
    out = order.tolist()
    a = b = int(ties[0])
    for t in [*ties[1:].tolist(), -2]:
        if t == b + 1:
            b = t
            continue
        run = slice(a, b + 2)  # positions a .. b + 1 share one time
        out[run] = sorted(out[run], key=lambda n: (ids[n], n))
        a = b = t
    return np.array(out, dtype=np.intp)


def _disc(item: Enriched) -> str | None:
    """An event's metric, category or object type (``rules.columns.DISCRIMINATOR``)."""
    event = item.event
    return getattr(event, DISCRIMINATOR[event.kind], None)


def _home(entry: dict[str, Any]) -> int | None:
    """The events-topic partition an entry lives in (its changelog partition)."""
    if entry.get("home") is not None:
        return int(entry["home"])
    homes = [int(p) for p in entry.get("pos", {})]
    return min(homes) if homes else None


def run_columns(engine: Engine, batches: Iterable[EventColumns]) -> dict[str, Incident]:
    """Run column batches through an engine with in-memory state; the latest snapshot per incident id."""
    state: dict[str, Any] = {}
    latest: dict[str, Incident] = {}

    def keep(incidents: Iterable[Incident]) -> None:
        for incident in incidents:
            prev = latest.get(incident.id)
            if prev is None or incident.revision >= prev.revision:
                latest[incident.id] = incident

    for batch in batches:
        if len(batch):
            keep(engine.process_columns(engine.enrich_columns(batch), state).incidents)
    # Time-driven rules need only the final watermark: gaps inside the data are found by the events
    # themselves, so ticking once at the end gives the same incidents as ticking after every batch.
    keep(engine.tick(state))
    return latest


def run(engine: Engine, events: Iterable[AnyEvent], *, batch_size: int = 1000) -> dict[str, Incident]:
    """Run events through an engine with in-memory state; the latest snapshot per incident id."""

    def batches() -> Iterator[EventColumns]:
        chunk: list[AnyEvent] = []
        for event in events:
            chunk.append(event)
            if len(chunk) >= batch_size:
                yield EventColumns.from_events(chunk)
                chunk = []
        if chunk:
            yield EventColumns.from_events(chunk)

    return run_columns(engine, batches())
