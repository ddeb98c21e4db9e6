"""A batch of events as columns: what the engine filters and groups with numpy.

Every row is one event. The engine reads the columns to choose which rules see which events, and
builds an ``Enriched`` (the event object plus its zones) only for the rows a rule is fed. Rows keep
the batch order; the engine sorts by (event time, id) itself.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from itertools import chain, pairwise
from typing import Any, overload

import numpy as np
from numpy.typing import NDArray

from rules.geo import Layer, Locator
from rules.model import Enriched, Reading, Report, Track
from rules.state import EPOCH

AnyEvent = Reading | Report | Track

KINDS: tuple[str, ...] = ("reading", "report", "track")
KIND_CODE: dict[str, int] = {k: n for n, k in enumerate(KINDS)}
#: The field of each event kind that rules are indexed by.
DISCRIMINATOR: dict[str, str] = {"reading": "metric", "report": "category", "track": "object_type"}
#: The field that holds each event kind's subject (``subject`` of the event: sensor, report, object).
SUBJECT: dict[str, str] = {"reading": "sensor_id", "report": "id", "track": "object_id"}
#: Numeric event fields kept as float columns (NaN where an event has no finite number there).
NUMERIC: tuple[str, ...] = ("value", "alt_m", "speed_mps", "heading", "lon", "lat")
TRACK_ONLY = frozenset({"alt_m", "speed_mps", "heading"})
#: Event fields that are never numbers: a condition on them never holds (``event_value`` is None).
NOT_NUMERIC = frozenset(
    {"id", "ts", "source", "kind", "sensor_id", "metric", "unit", "category", "description", "channel"}
    | {"object_id", "object_type", "subject"}
)
_US = timedelta(microseconds=1)
#: One event as a row: (ts_us, kind code, discriminator, id, value, alt_m, speed_mps, heading, lon, lat).
Row = tuple[int, int, str | None, str, float, float, float, float, float, float]


def to_us(ts: Any) -> int:
    """Exact integer microseconds since the epoch of an aware datetime."""
    return int((ts - EPOCH) // _US)


def number(raw: Any) -> float:
    """``event_value`` as a float column cell: NaN for a missing, boolean or non-finite value."""
    if type(raw) is float:
        return raw if math.isfinite(raw) else math.nan
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return math.nan
    value = float(raw)
    return value if math.isfinite(value) else math.nan


_PLAIN = frozenset({float, type(None)})
_SET = object.__setattr__
# ``Enriched.model_construct`` spends most of its time on alias handling that Enriched does not
# use; ``enriched_of`` does the rest of it directly when the model is as simple as it is today.
_SIMPLE = (
    set(Enriched.model_fields) == {"event", "zones"}
    and all(f.alias is None and f.validation_alias is None for f in Enriched.model_fields.values())
    and not Enriched.__pydantic_post_init__
    and not Enriched.__pydantic_root_model__
    and Enriched.model_config.get("extra") != "allow"
)


def enriched_of(event: AnyEvent, zones: dict[str, list[str]]) -> Enriched:
    """``Enriched.model_construct(event=event, zones=zones)``, faster."""
    if not _SIMPLE:
        return Enriched.model_construct(event=event, zones=zones)
    item = Enriched.__new__(Enriched)
    _SET(item, "__dict__", {"event": event, "zones": zones})
    _SET(item, "__pydantic_fields_set__", {"event", "zones"})
    _SET(item, "__pydantic_extra__", None)
    _SET(item, "__pydantic_private__", None)
    return item


def floats(values: list[Any]) -> NDArray[np.float64]:
    """A float column of raw field values, ``number`` applied to each."""
    if set(map(type, values)) <= _PLAIN:  # the common case: numpy turns None into NaN
        out = np.array(values, dtype=np.float64)
        if len(out) and not np.isfinite(out).all():
            out[~np.isfinite(out)] = np.nan
        return out
    return np.fromiter((number(v) for v in values), dtype=np.float64, count=len(values))


def _primary(starts: NDArray[np.intp], members: NDArray[np.intp]) -> NDArray[np.intp]:
    """The first member of each row (rows ``members[starts[r]:starts[r + 1]]``), -1 for an empty row."""
    found = starts[:-1] < starts[1:]
    first = members[np.minimum(starts[:-1], max(0, len(members) - 1))] if len(members) else starts[:-1]
    out: NDArray[np.intp] = np.where(found, first, -1).astype(np.intp)
    return out


@dataclass(frozen=True)
class Zones:
    """The zones of one layer for every row.

    Row ``r`` lies in ``ids[m]`` for every ``m`` in ``members[starts[r]:starts[r + 1]]`` (in the
    layer's order); ``primary[r]`` is the first of them, or -1 when the row is in no zone.
    """

    ids: Sequence[str]
    primary: NDArray[np.intp]
    starts: NDArray[np.intp]
    members: NDArray[np.intp]

    @classmethod
    def locate(cls, layer: Layer, lon: NDArray[np.float64], lat: NDArray[np.float64]) -> Zones:
        """One vectorised STRtree query for the whole batch (without a ``Locator``'s memory)."""
        point_idx, zone_idx = layer.query(lon, lat)
        starts = np.searchsorted(point_idx, np.arange(len(lon) + 1)).astype(np.intp)
        return cls(layer.ids, _primary(starts, zone_idx), starts, zone_idx)

    @classmethod
    def from_sets(cls, ids: Sequence[str], sets: Sequence[tuple[int, ...]]) -> Zones:
        """From each row's zone positions in ``ids`` (ascending), as ``rules.geo.Locator`` gives them."""
        counts = np.fromiter(map(len, sets), dtype=np.intp, count=len(sets))
        starts = np.zeros(len(sets) + 1, dtype=np.intp)
        np.cumsum(counts, out=starts[1:])
        members = np.fromiter(chain.from_iterable(sets), dtype=np.intp, count=int(starts[-1]))
        primary = np.fromiter((zones[0] if zones else -1 for zones in sets), dtype=np.intp, count=len(sets))
        return cls(ids, primary, starts, members)

    @classmethod
    def from_lists(cls, lists: Sequence[Sequence[str] | None]) -> Zones:
        """From each row's list of zone ids (as an ``Enriched`` carries them)."""
        vocab: dict[str, int] = {}
        members: list[int] = []
        starts = [0]
        for ids in lists:
            if ids:
                members.extend(vocab.setdefault(z, len(vocab)) for z in ids)
            starts.append(len(members))
        start = np.array(starts, dtype=np.intp)
        member = np.array(members, dtype=np.intp)
        return cls(list(vocab), _primary(start, member), start, member)

    def take(self, rows: NDArray[np.intp]) -> Zones:
        """The zones of some rows (in that order), with the same ids."""
        first, last = self.starts[rows], self.starts[rows + 1]
        counts = last - first
        starts = np.zeros(len(rows) + 1, dtype=np.intp)
        np.cumsum(counts, out=starts[1:])
        # member k of the result is parent member first[row] + (k - starts[row])
        at = np.repeat(first - starts[:-1], counts) + np.arange(starts[-1], dtype=np.intp)
        return Zones(self.ids, self.primary[rows], starts, self.members[at])

    @classmethod
    def concat(cls, parts: Sequence[Zones]) -> Zones:
        """The rows of several batches' zones, one after the other (ids merged when they differ)."""
        ids = parts[0].ids
        if not all(p.ids is ids for p in parts):  # a vocabulary per part: map each into one
            vocab: dict[str, int] = {}
            for p in parts:
                for z in p.ids:
                    vocab.setdefault(z, len(vocab))
            maps = [np.array([vocab[z] for z in p.ids], dtype=np.intp) for p in parts]
            parts = [
                Zones(
                    list(vocab),
                    np.where(p.primary >= 0, m[np.maximum(p.primary, 0)], -1) if len(m) else p.primary,
                    p.starts,
                    m[p.members] if len(m) else p.members,
                )
                for p, m in zip(parts, maps, strict=True)
            ]
            ids = list(vocab)
        starts = [parts[0].starts]
        shift = int(parts[0].starts[-1])
        for p in parts[1:]:
            starts.append(p.starts[1:] + shift)
            shift += int(p.starts[-1])
        return cls(
            ids,
            np.concatenate([p.primary for p in parts]).astype(np.intp),
            np.concatenate(starts).astype(np.intp),
            np.concatenate([p.members for p in parts]).astype(np.intp),
        )

    @cached_property
    def _lists(self) -> tuple[list[int], list[int]]:
        return self.starts.tolist(), self.members.tolist()

    @cached_property
    def primary_ids(self) -> list[str | None]:
        """The primary zone id of every row (None: in no zone), made once: what kinds read row by row."""
        ids = self.ids
        return [ids[p] if p >= 0 else None for p in self.primary.tolist()]

    @cached_property
    def per_row(self) -> list[list[str]]:
        """The zone ids of every row (for a whole batch: one pass instead of one ``of`` per row)."""
        starts, members = self._lists
        ids = self.ids
        names = [ids[m] for m in members]
        return [names[a:b] for a, b in pairwise(starts)]

    def of(self, row: int) -> list[str]:
        """Zone ids of one row (empty when it is in no zone)."""
        starts, members = self._lists
        ids = self.ids
        return [ids[m] for m in members[starts[row] : starts[row + 1]]]


class NumericOf(dict[str, NDArray[np.float64]]):
    """The ``NUMERIC`` float columns of field dicts, each made when it is first read.

    Ingest reads only lon and lat, and a pack's conditions read a few fields: the others are
    never built.
    """

    def __init__(self, fields: Sequence[Mapping[str, Any]], *, tracks: bool) -> None:
        super().__init__()
        self._fields, self._tracks = fields, tracks

    def __missing__(self, name: str) -> NDArray[np.float64]:
        if name not in NUMERIC:
            raise KeyError(name)
        if self._tracks or name not in TRACK_ONLY:
            column = floats([f.get(name) for f in self._fields])
        else:
            column = np.full(len(self._fields), np.nan)
        self[name] = column
        return column


class _Taken(dict[str, NDArray[np.float64]]):
    """Some rows of another batch's float columns, each taken when it is first read."""

    def __init__(self, source: Mapping[str, NDArray[np.float64]], rows: NDArray[np.intp]) -> None:
        super().__init__()
        self._source, self._rows = source, rows

    def __missing__(self, name: str) -> NDArray[np.float64]:
        column = self[name] = self._source[name][self._rows]
        return column


class _Joined(dict[str, NDArray[np.float64]]):
    """The float columns of several batches, one after the other, each joined when it is first read."""

    def __init__(self, parts: Sequence[Mapping[str, NDArray[np.float64]]]) -> None:
        super().__init__()
        self._parts = parts

    def __missing__(self, name: str) -> NDArray[np.float64]:
        column = self[name] = np.concatenate([p[name] for p in self._parts])
        return column


@dataclass
class EventColumns:
    """A batch of events, column by column.

    ``ts_us`` is the exact event time in microseconds since the epoch, ``kind`` the code of the
    event kind (``KINDS``), ``disc`` the metric, category or object type, ``numeric`` the float
    columns of ``NUMERIC``. ``zones`` holds the zones per layer once the batch is located
    (``Engine.enrich_columns``). ``event_at`` gives the event object of a row (it may be built
    on demand); ``given`` holds the enriched events the batch was made from, if any.
    ``subjects``, when known, holds the ``subject`` of every event (see ``subject``); ``fields``,
    when known, the field dict of every event (its ``__dict__``).
    """

    ts_us: NDArray[np.int64]
    kind: NDArray[np.int8]
    disc: list[str | None]
    ids: list[str]
    numeric: dict[str, NDArray[np.float64]]
    event_at: Callable[[int], AnyEvent]
    zones: dict[str, Zones] = field(default_factory=dict)
    given: Sequence[Enriched] | None = None
    subjects: list[str | None] | None = None
    fields: Sequence[Mapping[str, Any]] | None = None
    _built: list[Enriched | None] = field(default_factory=list, repr=False)
    _cells: dict[str, list[float]] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def ts_ms(self) -> NDArray[np.int64]:
        """Event time in whole milliseconds (floored, like ``rules.state.to_ms``)."""
        return self.ts_us // 1000

    @property
    def lon(self) -> NDArray[np.float64]:
        return self.numeric["lon"]

    @property
    def lat(self) -> NDArray[np.float64]:
        return self.numeric["lat"]

    @classmethod
    def from_events(cls, events: Sequence[AnyEvent]) -> EventColumns:
        """Columns of validated event objects."""
        fields = [e.__dict__ for e in events]  # a pydantic model keeps its field values here
        ts_us = np.fromiter((to_us(f["ts"]) for f in fields), dtype=np.int64, count=len(fields))
        return cls.from_fields(fields, ts_us, events.__getitem__)

    @classmethod
    def of_fields(cls, fields: Sequence[dict[str, Any]], build: Callable[[dict[str, Any]], AnyEvent]) -> EventColumns:
        """Columns of validated events' field dicts (``rules.decode.decode_fields``); ``build`` makes
        the event object of one when a rule needs it."""
        ts_us = np.fromiter((to_us(f["ts"]) for f in fields), dtype=np.int64, count=len(fields))
        return cls.from_fields(fields, ts_us, lambda row: build(fields[row]))

    @classmethod
    def from_fields(
        cls, fields: Sequence[Mapping[str, Any]], ts_us: NDArray[np.int64], event_at: Callable[[int], AnyEvent]
    ) -> EventColumns:
        """Columns of event field dicts (a model's ``__dict__``, or the same read from an envelope).

        ``ts_us`` is the event time column (the dicts' ``ts`` may be a datetime or its ISO text);
        ``event_at`` gives the event object of a row when a rule needs it.
        """
        n = len(fields)
        kinds = [f["kind"] for f in fields]
        return cls(
            ts_us=ts_us,
            kind=np.fromiter((KIND_CODE[k] for k in kinds), dtype=np.int8, count=n),
            disc=[f.get(DISCRIMINATOR[k]) for f, k in zip(fields, kinds, strict=True)],
            ids=[f["id"] for f in fields],
            numeric=NumericOf(fields, tracks="track" in kinds),
            event_at=event_at,
            subjects=[f.get(SUBJECT[k]) for f, k in zip(fields, kinds, strict=True)],
            fields=fields,
        )

    @classmethod
    def from_enriched(cls, items: Sequence[Enriched], layers: Sequence[str]) -> EventColumns:
        """Columns of events enriched elsewhere (the live detect stage): their own zones count."""
        events = [i.event for i in items]
        columns = cls.from_events(events)
        columns.given = items
        columns.zones = {name: Zones.from_lists([i.zones.get(name) for i in items]) for name in layers}
        return columns

    @classmethod
    def from_rows(
        cls,
        rows: Sequence[Row],
        event_at: Callable[[int], AnyEvent],
    ) -> EventColumns:
        """Columns of rows (``Row``); ``event_at`` gives the event object of a row when a rule needs it."""
        if not rows:
            return cls.from_events([])
        ts, kinds, disc, ids, *numbers = zip(*rows, strict=True)
        return cls(
            ts_us=np.array(ts, dtype=np.int64),
            kind=np.array(kinds, dtype=np.int8),
            disc=list(disc),
            ids=list(ids),
            numeric={name: np.array(col, dtype=np.float64) for name, col in zip(NUMERIC, numbers, strict=True)},
            event_at=event_at,
        )

    @classmethod
    def concat(cls, parts: Sequence[EventColumns]) -> EventColumns:
        """Several located batches as one, their rows one after the other (``rules.pipeline``
        applies consecutive events messages of one stream as one batch). Each row's event and
        enriched event are its part's own."""
        if len(parts) == 1:
            return parts[0]
        starts = np.cumsum([0, *(len(p) for p in parts)]).tolist()

        def part_of(row: int) -> tuple[EventColumns, int]:
            n = bisect.bisect_right(starts, row) - 1
            return parts[n], row - starts[n]

        def event_at(row: int) -> AnyEvent:
            part, local = part_of(row)
            return part.event_at(local)

        subjects = [p.subjects for p in parts]
        layers = parts[0].zones.keys()
        out = cls(
            ts_us=np.concatenate([p.ts_us for p in parts]),
            kind=np.concatenate([p.kind for p in parts]),
            disc=[d for p in parts for d in p.disc],
            ids=[i for p in parts for i in p.ids],
            numeric=_Joined([p.numeric for p in parts]),
            event_at=event_at,
            zones={name: Zones.concat([p.zones[name] for p in parts]) for name in layers},
            subjects=None if any(s is None for s in subjects) else [x for s in subjects if s is not None for x in s],
        )
        out.given = _Parts(part_of, len(out.ids))
        return out

    def cells(self, name: str) -> list[float]:
        """A float column (``NUMERIC``) as a list, made once per batch.

        Kinds fed a few rows each read them here: a list index is a fraction of the fixed cost of
        a numpy fancy index, which a rule fed one or two rows of a batch would pay on every call.
        """
        found = self._cells.get(name)
        if found is None:
            found = self._cells[name] = self.numeric[name].tolist()
        return found

    def subject(self, row: int) -> str:
        """The ``subject`` of one row's event, without building the event when the column is known."""
        found = self.subjects[row] if self.subjects is not None else None
        return found if found is not None else self.enriched(row).event.subject

    def enriched(self, row: int) -> Enriched:
        """The enriched event of one row, built once, on first use."""
        if self.given is not None:
            return self.given[row]
        if not self._built:
            self._built = [None] * len(self)
        item = self._built[row]
        if item is None:
            item = self._built[row] = enriched_of(self.event_at(row), self.zones_at(row))
        return item

    def zones_at(self, row: int) -> dict[str, list[str]]:
        """The zone ids of one row per layer (a layer none of whose zones holds it is left out)."""
        zones = {}
        for name, z in self.zones.items():
            # every row's lists, when made already (ingest made them for the envelope): shared, never mutated
            ids = z.__dict__["per_row"][row] if "per_row" in z.__dict__ else z.of(row)
            if ids:
                zones[name] = ids
        return zones

    def all_enriched(self) -> list[Enriched]:
        return [self.enriched(r) for r in range(len(self))]


class _Lazy(Sequence[Enriched]):
    """A sequence of enriched events, each made by ``_at`` when it is first asked for."""

    def _at(self, index: int) -> Enriched:
        raise NotImplementedError

    @overload
    def __getitem__(self, at: int) -> Enriched: ...
    @overload
    def __getitem__(self, at: slice) -> list[Enriched]: ...
    def __getitem__(self, at: int | slice) -> Enriched | list[Enriched]:
        if isinstance(at, slice):
            return [self._at(i) for i in range(*at.indices(len(self)))]
        return self._at(at)  # a list underneath: negative indexes and IndexError as a list has them


class _Parts(_Lazy):
    """The enriched events of a joined batch (``EventColumns.concat``): each its part's own."""

    def __init__(self, part_of: Callable[[int], tuple[EventColumns, int]], n: int) -> None:
        self._part_of, self._n = part_of, n

    def __len__(self) -> int:
        return self._n

    def _at(self, index: int) -> Enriched:
        part, local = self._part_of(index if index >= 0 else index + self._n)
        return part.enriched(local)


class Rows(_Lazy):
    """Some rows of a located column batch, as enriched events (each built on first use).

    ``wire`` gives the rows as the events topic carries them without building any event object.
    """

    def __init__(self, columns: EventColumns, rows: list[int]) -> None:
        self.columns, self.rows = columns, rows

    def __len__(self) -> int:
        return len(self.rows)

    def _at(self, index: int) -> Enriched:
        return self.columns.enriched(self.rows[index])

    def located(self, layers: Sequence[str]) -> EventColumns:
        """The rows as a column batch of their own, located in ``layers`` by the zones ingest found.

        What ``Rebuilt.columns`` gives for the same rows read back from their envelope (the
        detect stage of the worker that ingested them skips the read, ``rules.pipeline.Handoff``);
        the event objects are the ones ingest validated. Columns and zones are taken from the
        parent batch with numpy (its float columns are made once for all of its partitions).
        """
        parent, rows = self.columns, self.rows
        at = np.array(rows, dtype=np.intp)
        disc, ids = parent.disc, parent.ids
        out = EventColumns(
            ts_us=parent.ts_us[at],
            kind=parent.kind[at],
            disc=[disc[r] for r in rows],
            ids=[ids[r] for r in rows],
            numeric=_Taken(parent.numeric, at),
            event_at=lambda n: parent.event_at(rows[n]),
            subjects=[parent.subjects[r] for r in rows] if parent.subjects is not None else None,
        )
        out.given = self
        for name in layers:
            zones = parent.zones.get(name)
            out.zones[name] = zones.take(at) if zones is not None else Zones.from_lists([None] * len(rows))
        return out

    def wire(self) -> list[dict[str, Any]]:
        """``{"event": fields, "zones": zones}`` per row: the items of an events-topic envelope."""
        columns = self.columns
        layers = [(name, z.per_row) for name, z in columns.zones.items()]
        fields = columns.fields
        return [
            {
                "event": fields[r] if fields is not None else columns.event_at(r).__dict__,
                "zones": {name: ids[r] for name, ids in layers if ids[r]},
            }
            for r in self.rows
        ]


class Rebuilt(_Lazy):
    """Enriched events read back from their fields (ingest validated them): each is built on first use.

    ``fields`` are the events' field dicts (their ``ts`` already a datetime), ``zones`` their zone
    dicts and ``ts_us`` their event times. ``build`` makes the event object of one field dict. The
    engine reads the columns (``columns``) and builds only the events some rule is fed.
    """

    def __init__(
        self,
        fields: list[dict[str, Any]],
        zones: list[dict[str, list[str]]],
        ts_us: NDArray[np.int64],
        build: Callable[[dict[str, Any]], AnyEvent],
    ) -> None:
        self.fields, self.zones, self.ts_us, self._build = fields, zones, ts_us, build
        self._items: list[Enriched | None] = [None] * len(fields)

    def __len__(self) -> int:
        return len(self.fields)

    def _at(self, index: int) -> Enriched:
        item = self._items[index]
        if item is None:
            item = self._items[index] = enriched_of(self._build(self.fields[index]), self.zones[index])
        return item

    def columns(self, layers: Sequence[str]) -> EventColumns:
        """The batch as columns, located in ``layers`` by the zones it carries."""
        columns = EventColumns.from_fields(self.fields, self.ts_us, lambda row: self[row].event)
        columns.given = self
        columns.zones = {name: Zones.from_lists([z.get(name) for z in self.zones]) for name in layers}
        return columns


def row_of(event: AnyEvent) -> Row:
    """The row of one event object (as ``EventColumns.from_events`` would make it)."""
    fields = event.__dict__
    kind = fields["kind"]
    numbers = [number(fields.get(name)) for name in NUMERIC]
    return (to_us(fields["ts"]), KIND_CODE[kind], fields.get(DISCRIMINATOR[kind]), fields["id"], *numbers)  # type: ignore[return-value]


def locate(columns: EventColumns, layers: Locator) -> None:
    """Attach the zones of every layer: from memory for points seen before, else one vectorised
    STRtree query per layer for the batch's new points (``rules.geo.Locator``), or for all of
    them while the memory finds too few."""
    lon, lat = columns.lon, columns.lat
    if not layers.worth_asking():
        columns.zones = {name: Zones.locate(layer, lon, lat) for name, layer in layers.layers.items()}
        return
    rows = layers.zone_sets(lon, lat)
    columns.zones = {
        name: Zones.from_sets(layer.ids, [sets[n] for sets in rows])
        for n, (name, layer) in enumerate(layers.layers.items())
    }
