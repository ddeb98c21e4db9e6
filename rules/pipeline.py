"""The two stream stages as pure functions over bytes: ingest (decode, enrich, route) and detect.

The Faust agents in ``streams.agents`` only move bytes between topics and call these.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import orjson
from pydantic import ValidationError

from rules.columns import KIND_CODE, KINDS, EventColumns, Rebuilt, Rows, to_us
from rules.decode import DEFAULT_MAX_BYTES, Rejected, decode_fields, decode_message
from rules.engine import Engine
from rules.model import DeadLetterRecord, Enriched, Incident, Reading, Report, Track
from rules.routes import object_route, routing_layer, zone_route
from rules.state import to_ms

logger = logging.getLogger(__name__)

#: Raw-topic positions are recorded as partition RAW_POSITION_BASE + ..., apart from events-topic ones.
RAW_POSITION_BASE = 1_000_000
#: Upper bound of a topic's partition count (KafkaSettings.partitions) used to pack positions.
MAX_PARTITIONS = 1024


def partition_for(route_key: str, partitions: int) -> int:
    """The events-topic partition of a route key: Kafka's default partitioner for that key.

    ``murmur2(utf-8 bytes) & 0x7fffffff`` modulo ``partitions``, as the Java client and
    kafka-python place a keyed record. Stable across processes and runs (unlike ``hash``), and the
    placement the events topic had when envelopes were keyed by zone. Every producer of the
    events topic uses this function, so that a zone's (or object's) state lives in one partition.
    """
    return (murmur2(route_key.encode()) & 0x7FFFFFFF) % partitions


_M32 = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """MurmurHash2 (32-bit, seed 0x9747b28c) as in ``org.apache.kafka.common.utils.Utils.murmur2``."""
    m, length = 0x5BD1E995, len(data)
    h = (0x9747B28C ^ length) & _M32
    whole = length - length % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & _M32
        k ^= k >> 24
        k = (k * m) & _M32
        h = ((h * m) & _M32) ^ k
    rest = length % 4
    if rest >= 3:
        h ^= data[whole + 2] << 16
    if rest >= 2:
        h ^= data[whole + 1] << 8
    if rest >= 1:
        h ^= data[whole]
        h = (h * m) & _M32
    h ^= h >> 13
    h = (h * m) & _M32
    h ^= h >> 15
    return h


#: State keys ``~applied|<stream>`` hold each position stream's highest applied offset (``{"o": n}``).
APPLIED_PREFIX = "~applied"
#: State keys ``~watermark|<events partition>``: the newest event time applied in that partition.
WATERMARK_PREFIX = "~watermark"


def source_position(events_partition: int, src: tuple[int, int]) -> tuple[int, int]:
    """The idempotency position of an envelope that came from raw message ``src`` = (partition, offset).

    Positions are ordered streams: an entry remembers the highest offset applied per stream and
    skips anything at or below it. Raw offsets only arrive in order within one (events partition,
    raw partition) pair, so that pair is the stream: an entry fed from two events partitions (a
    correlation or cluster rule across zone borders) must not skip an older raw message that
    arrives late through the other partition. Ingest sends at most one envelope per events
    partition per raw message, so no two envelopes of one stream share a raw offset.
    """
    return RAW_POSITION_BASE + src[0] + MAX_PARTITIONS * events_partition, src[1]


def source_label(topic: str, partition: int, offset: int, index: int | None = None) -> str:
    """``topic[partition]@offset`` (plus ``#index`` for one record of a batch)."""
    return f"{topic}[{partition}]@{offset}" + (f"#{index}" if index is not None else "")


DEAD_LETTER_MAX_ORIGINAL = 262_144
#: The largest events-topic envelope ingest sends, in bytes: under the producer's request limit
#: (Faust's default ``producer_max_request_size``, 1,000,000; Kafka's ``message.max.bytes`` is about
#: 1 MiB), with room for the record's framing. Enriched events are larger than raw ones (their zones,
#: and spread copies go to every partition), so a raw message under ``max_bytes`` can exceed it.
MAX_ENVELOPE_BYTES = 1_000_000 - 1_024


def dead_letter(reason: str, kind: str, source: str, original: bytes) -> DeadLetterRecord:
    """A dead-letter record; an original over 256 KiB is kept as a prefix plus its size and hash."""
    kept = original[:DEAD_LETTER_MAX_ORIGINAL]
    return DeadLetterRecord(
        reason=reason,
        kind=kind,
        source=source,
        original_b64=base64.b64encode(kept).decode(),
        original_size=len(original),
        original_sha256=hashlib.sha256(original).hexdigest(),
        truncated=len(kept) < len(original),
        failed_at=datetime.now(UTC),
    )


def encode_enriched(
    items: Sequence[Enriched],
    src: tuple[int, int] | None = None,
    prev: int | None = None,
    cells: Sequence[Enriched] | None = None,
) -> bytes:
    """The internal envelope of the events topic: validated events, serialised without re-validation.

    ``src`` is the (partition, offset) of the raw message they came from: a raw message ingested
    twice (after a crash) gives the same envelope with the same ``src``, which detect skips.
    ``prev`` links the envelope to the raw offset of the one this ingest sent before it on the
    same stream (raw partition -> events partition): detect sees a lost envelope as a broken link
    and derives it again from the raw topic (``Detected.missing``). ``cells`` are spread copies of
    events whose home is another partition (``Kind.spreads``): only rules keyed by grid cell see
    them here, and the store does not archive them (``decode_enriched`` reads ``items`` only).
    """
    doc: dict[str, Any] = {"v": 1, "items": _wire(items)}
    if cells:
        doc["cells"] = _wire(cells)
    if src is not None:
        doc["src"] = list(src)
        if prev is not None and prev < src[1]:
            doc["prev"] = prev
    return orjson.dumps(doc)


def _wire(items: Sequence[Enriched]) -> list[dict[str, Any]]:
    return items.wire() if isinstance(items, Rows) else [{"event": i.event.__dict__, "zones": i.zones} for i in items]


def envelope_source(raw: bytes) -> tuple[int, int] | None:
    """The raw (partition, offset) an enriched envelope came from, when it says."""
    return _source_of(orjson.loads(raw))


def _prev_of(doc: dict[str, Any]) -> int | None:
    prev = doc.get("prev")
    return prev if type(prev) is int else None


def _source_of(doc: Any) -> tuple[int, int] | None:
    src = doc.get("src") if isinstance(doc, dict) else None
    if isinstance(src, list) and len(src) == 2 and all(isinstance(x, int) for x in src):
        return int(src[0]), int(src[1])
    return None


_KINDS: dict[str, type[Reading | Report | Track]] = {"reading": Reading, "report": Report, "track": Track}


def _construct(cls: type[Any], fields: dict[str, Any]) -> Any:
    """``cls.model_construct(**fields)`` for a dict holding exactly the model's fields, about 4x faster.

    ``model_construct`` walks every field for defaults and aliases; an envelope item carries the
    complete ``__dict__`` of a validated model, so the dict can be adopted as it is. Anything else
    (a model that gained a field, private attributes) takes the ordinary path.
    """
    if len(fields) != len(cls.model_fields) or cls.__private_attributes__:
        return cls.model_construct(**fields)
    obj = object.__new__(cls)
    object.__setattr__(obj, "__dict__", fields)
    object.__setattr__(obj, "__pydantic_fields_set__", set(fields))
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj


def _event_of(fields: dict[str, Any]) -> Reading | Report | Track:
    """The event object of a validated event's fields (``decode_fields``), adopting the dict."""
    return _construct(_KINDS[fields["kind"]], fields)  # type: ignore[no-any-return]


def _rebuilt(items: Any) -> Rebuilt:
    """Events that ingest already validated, read back without a second validation.

    Only what the columns need is read now (kind, id, time, numbers, zones); an event object is
    built when a rule is fed the event. ``items`` come fresh from ``orjson.loads``: their dicts
    are not shared, so they are adopted.
    """
    fromiso = datetime.fromisoformat
    fields: list[dict[str, Any]] = []
    zones: list[dict[str, list[str]]] = []
    stamps: list[int] = []
    for item in items:
        event = item["event"]
        if event["kind"] not in _KINDS:
            raise ValueError(f"unknown event kind {event['kind']!r}")
        zone = item["zones"]
        if type(zone) is not dict:
            raise TypeError(f"zones must be an object, not {type(zone).__name__}")
        ts = event["ts"] = fromiso(event["ts"])
        stamps.append(to_us(ts))
        fields.append(event)
        zones.append(zone)
    ts_us = np.array(stamps, dtype=np.int64)
    return Rebuilt(fields, zones, ts_us, lambda f: _construct(_KINDS[f["kind"]], f))


def encode_tick(clock_ms: int) -> bytes:
    """A time tick for one partition of the events topic: lets silence timers fire when no events come."""
    return orjson.dumps({"v": 1, "tick": clock_ms})


def tick_of(raw: bytes) -> int | None:
    """The clock of a tick message, or None for an events envelope."""
    if not raw.startswith(b'{"v":1,"tick":'):
        return None
    doc = orjson.loads(raw)
    return int(doc["tick"]) if isinstance(doc, dict) and isinstance(doc.get("tick"), int) else None


def decode_enriched(raw: bytes) -> list[Enriched]:
    """Events of an enriched envelope; a tick message has none."""
    return list(decode_envelope(raw)[0])


def decode_envelope(raw: bytes) -> tuple[Sequence[Enriched], tuple[int, int] | None]:
    """Events of an enriched envelope (its own, not the spread ones) and the raw (partition, offset) it came from."""
    items, src, _, _ = _decode(raw, cells=False)
    return items, src


def _decode(
    raw: bytes, *, cells: bool = True
) -> tuple[Sequence[Enriched], tuple[int, int] | None, int | None, int | None]:
    """Events (with ``cells``, the spread copies after them), source, link (``prev``), where the copies start."""
    doc = orjson.loads(raw)
    if not isinstance(doc, dict) or doc.get("v") != 1:
        raise ValueError("not a cityops enriched-events envelope (v=1)")
    if "tick" in doc:
        return [], None, None, None
    try:
        items = doc["items"]
        spread = doc.get("cells") if cells else None
        if spread:
            return _rebuilt(items + spread), _source_of(doc), _prev_of(doc), len(items)
        return _rebuilt(items), _source_of(doc), _prev_of(doc), None
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed enriched-events envelope: {exc!r}") from exc


@dataclass(frozen=True)
class Missing:
    """Raw messages [first, last] of one raw partition whose envelopes never reached this stream."""

    raw_partition: int
    first: int
    last: int


class Chain:
    """Ingest's side of the envelope links: per stream, the raw offset of the last envelope sent.

    Only offsets that move forward are linked: a raw message ingested again (gap repair, a resend
    after a broker restart) carries no link, as its predecessor is not known to be later than
    what detect applied. Links of one life of one ingest: a new owner of a raw partition starts
    without them, which only means its first envelope per stream is not checked.
    """

    def __init__(self) -> None:
        self.last: dict[tuple[int, int], int] = {}

    def link(self, raw_partition: int, events_partition: int, offset: int) -> int | None:
        """The ``prev`` of an envelope from raw message (``raw_partition``, ``offset``); records it."""
        prev = self.peek(raw_partition, events_partition, offset)
        key = (raw_partition, events_partition)
        held = self.last.get(key)
        if held is None or offset > held:
            self.last[key] = offset
        return prev

    def peek(self, raw_partition: int, events_partition: int, offset: int) -> int | None:
        """What ``link`` would give, without recording anything (for an envelope that may not be sent)."""
        held = self.last.get((raw_partition, events_partition))
        return held if held is not None and offset > held else None

    def forget(self, keep_raw: set[int]) -> None:
        """Drop the links of raw partitions this worker no longer owns (after a rebalance)."""
        for key in [k for k in self.last if k[0] not in keep_raw]:
            del self.last[key]


@dataclass
class Ingested:
    """One raw message, ingested: enriched events by target events-topic partition, and dead letters."""

    routed: dict[int, Sequence[Enriched]] = field(default_factory=dict)
    dead: list[DeadLetterRecord] = field(default_factory=list)
    #: copies for the partitions that are not the events' home, for rules keyed by grid cell (``Kind.spreads``)
    spread: dict[int, Sequence[Enriched]] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.routed.values())

    def targets(self) -> list[int]:
        """The events partitions that get an envelope from this raw message."""
        return sorted(self.routed.keys() | self.spread.keys())

    def envelope(self, partition: int, src: tuple[int, int] | None = None, prev: int | None = None) -> bytes:
        """The envelope for one of ``targets``: its own events, and the spread copies."""
        return encode_enriched(self.routed.get(partition, ()), src, prev, self.spread.get(partition))

    def batch(self, partition: int) -> tuple[Rows, int | None] | None:
        """What detect reads back from ``envelope(partition)``: its events then the spread copies
        (the index where those start, or None without copies). None when not one column batch."""
        own, cells = self.routed.get(partition, ()), self.spread.get(partition)
        rows: list[int] = []
        columns = None
        for part in (own, cells or ()):
            if not part:
                continue
            if not isinstance(part, Rows) or (columns is not None and part.columns is not columns):
                return None
            columns = part.columns
            rows.extend(part.rows)
        if columns is None:
            return None
        return Rows(columns, rows), (len(own) if cells else None)


Held = tuple[Rows, tuple[int, int] | None, int | None, int | None]  # events, source, link, copies' start


class Handoff:
    """Envelopes this process sent to the events topic, with the events they hold, until it reads them back.

    The worker that ingests a raw message is usually the one that detects on (some of) the
    envelopes it made: they still go through the events topic (order, durability and
    at-least-once are the topic's), but when detect reads back an envelope that is byte for
    byte one it sent, it takes the events it already has instead of parsing them again.

    At most ``capacity`` events are held (each envelope keeps its raw message's events alive: a
    worker's RSS grew by about 4.4 KB per held event at the default 20,000); when full, a new
    envelope is not held and detect parses it. Only envelopes for ``partitions`` (the events
    partitions this worker detects on, ``assign``) are held, and taking one drops the older ones
    of its stream (same raw and events partition), which detect has passed: nothing held waits
    for an envelope that will never come.
    """

    def __init__(self, capacity: int = 20_000) -> None:
        self.capacity = capacity
        self.events = 0  # held now
        self.partitions: set[int] | None = None  # None: every partition
        self._held: dict[bytes, Held] = {}
        self._stream: dict[bytes, tuple[int, int, int]] = {}  # envelope -> (events partition, raw partition, offset)
        self.hits = 0
        self.misses = 0
        self.full = 0

    def __len__(self) -> int:
        return len(self._held)

    def assign(self, partitions: set[int]) -> None:
        """Keep envelopes only for these events partitions (and drop those held for others)."""
        self.partitions = set(partitions)
        for envelope, (part, _, _) in list(self._stream.items()):
            if part not in self.partitions:
                self._drop(envelope)

    def keep(
        self, envelope: bytes, out: Ingested, partition: int, src: tuple[int, int] | None, prev: int | None
    ) -> None:
        """Hold ``envelope``, made by ``out.envelope(partition, src, prev)``, for detect to take."""
        if self.capacity <= 0 or src is None or (self.partitions is not None and partition not in self.partitions):
            return
        if envelope in self._held:  # the same bytes again (a raw message ingested twice): held once
            return
        batch = out.batch(partition)
        if batch is None:
            return
        rows, spread_from = batch
        if self.events + len(rows) > self.capacity:
            self.full += 1
            return
        self.events += len(rows)
        self._held[envelope] = (rows, src, prev if prev is not None and prev < src[1] else None, spread_from)
        self._stream[envelope] = (partition, src[0], src[1])

    def take(self, envelope: bytes) -> Held | None:
        """What ``_decode(envelope)`` would give, when the envelope is held here (forgotten once taken)."""
        found = self._held.get(envelope) if self._held else None
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        part, raw_part, offset = self._stream[envelope]
        self._drop(envelope)
        passed = [e for e, (p, r, o) in self._stream.items() if p == part and r == raw_part and o < offset]
        for older in passed:
            self._drop(older)
        return found

    def peek(self, envelope: bytes) -> Held | None:
        """What ``take`` would give, leaving it held."""
        return self._held.get(envelope) if self._held else None

    def restore(self, envelope: bytes, held: Held, partition: int) -> None:
        """Hold again what ``take`` gave for ``partition`` (detect did not apply it yet)."""
        src = held[1]
        if self.capacity > 0 and src is not None:
            self.events += len(held[0])
            self._held[envelope] = held
            self._stream[envelope] = (partition, src[0], src[1])

    def _drop(self, envelope: bytes) -> None:
        self.events -= len(self._held.pop(envelope)[0])
        del self._stream[envelope]


@dataclass
class Detected:
    incidents: list[Incident] = field(default_factory=list)
    dead: list[DeadLetterRecord] = field(default_factory=list)
    redelivered: bool = False  # at or below its stream's high-water mark: applied before, skipped
    missing: Missing | None = None  # an envelope before this one was lost: nothing applied yet
    read: Literal["handoff", "parsed"] | None = None  # how an envelope's events were read (not for a tick)


class Pipeline:
    """Ingest and detect for one engine (one loaded pack)."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        wall_clock: bool = False,
        partitions: int = 1,
        handoff: int = 0,
        max_envelope_bytes: int = MAX_ENVELOPE_BYTES,
    ) -> None:
        if not 1 <= partitions <= MAX_PARTITIONS:
            raise ValueError(f"events-topic partitions must be 1..{MAX_PARTITIONS}, not {partitions}")
        self.engine = engine
        self.wall_clock = wall_clock
        self.max_bytes = max_bytes
        self.max_envelope_bytes = max_envelope_bytes
        self.partitions = partitions
        self._partition_of: dict[str, int] = {}
        #: the zone ids of the routing layer last routed, and the partition of each (then "outside")
        self._zone_parts: tuple[Sequence[str], np.ndarray[Any, np.dtype[np.intp]]] | None = None
        self.handoff = Handoff(handoff)

    @property
    def routing_layer(self) -> str | None:
        """The pack's first layer (of the current engine: a hot-swapped pack may change it)."""
        return routing_layer(self.engine.pack.layers)

    def route_key(self, item: Enriched, routing_layer: str | None = None) -> str:
        """Routing key: tracks by object, everything else by its zone in the routing layer."""
        event = item.event
        if event.kind == "track":
            return object_route(event.subject)
        layer = routing_layer if routing_layer is not None else self.routing_layer
        return zone_route(item.primary_zone(layer) if layer else None)

    def partition_of(self, route_key: str) -> int:
        """``partition_for`` this pipeline's partition count, cached (a few thousand zones and objects)."""
        found = self._partition_of.get(route_key)
        if found is None:
            if len(self._partition_of) >= 200_000:
                self._partition_of.clear()
            found = self._partition_of[route_key] = partition_for(route_key, self.partitions)
        return found

    def _owner(self, partition: int) -> Callable[[str], bool]:
        """Whether ``partition`` owns an incident key of a spreading rule (``Scope.owned``)."""
        return lambda key: self.partition_of(key) == partition

    def partition_watermark(self, state: MutableMapping[str, Any], partition: int) -> int | None:
        """The time a partition's time-driven rules are judged at: its own newest event time.

        With one watermark for all of a worker's partitions, a partition the consumer has read
        less far (or whose tail a restart is still replaying) would see its sensors as silent and
        its windows as closed. With the wall clock (``clock: wall``) the engine's watermark, pushed
        by the clock, is used as before. None (a partition without events yet) also falls back.
        """
        if self.wall_clock:
            return None
        held = state.get(f"{WATERMARK_PREFIX}|{partition}")
        return int(held["wm"]) if held else None

    def expire(self, state: MutableMapping[str, Any], partition: int) -> int:
        """Drop the partition's entries that can no longer receive events (at its own watermark)."""
        return self.engine.expire(state, partition=partition, watermark_ms=self.partition_watermark(state, partition))

    def ingest(self, raw: bytes, topic: str, partition: int, offset: int) -> Ingested:
        """Decode, enrich and route one raw message: one list of events per target partition."""
        out = Ingested()
        fields = decode_fields(raw, max_bytes=self.max_bytes)  # a message of valid events, the common case
        if fields is not None:
            if fields:
                self._route(EventColumns.of_fields(fields, _event_of), out)
            return out
        decoded = decode_message(raw, max_bytes=self.max_bytes)  # says what is wrong, record by record
        for rej in decoded.rejected:
            out.dead.append(self._dead(rej, topic, partition, offset))
        if decoded.events:
            self._route(EventColumns.from_events(decoded.events), out)
        return out

    def oversized(
        self, raw: bytes, topic: str, partition: int, offset: int, sizes: Mapping[int, int]
    ) -> DeadLetterRecord | None:
        """A dead letter for a raw message whose envelope to some events partition (``sizes``: bytes
        per partition) would be larger than ``max_envelope_bytes``, else None.

        Such a message is refused whole, before any of its envelopes is sent: the producer would
        refuse the large one, and sending the others would apply part of one message. The reason
        says how far over it is, so that its producer can send smaller envelopes.
        """
        over = {p: n for p, n in sizes.items() if n > self.max_envelope_bytes}
        if not over:
            return None
        target, size = max(over.items(), key=lambda kv: kv[1])
        share = self.max_envelope_bytes / size
        reason = (
            f"its events would make a {size}-byte envelope for events partition {target} (with their zones"
            f"{' and spread copies' if self.engine.spreading and self.partitions > 1 else ''}), over the "
            f"{self.max_envelope_bytes}-byte limit of an events message: send envelopes of at most about "
            f"{share:.0%} of this one's {len(raw)} bytes"
        )
        source = source_label(topic, partition, offset)
        logger.warning("dead letter source=%s kind=oversized reason=%s", source, reason)
        return dead_letter(reason, "oversized", source, raw)

    def _route(self, columns: EventColumns, out: Ingested) -> None:
        """Locate the events and split them by events-topic partition into ``out``."""
        columns = self.engine.enrich_columns(columns)
        parts = self._partitions(columns)
        for target in np.unique(parts).tolist():
            out.routed[target] = Rows(columns, np.flatnonzero(parts == target).tolist())
        if self.partitions > 1 and self.engine.spreading:
            self._spread(columns, parts, out)

    def _spread(self, columns: EventColumns, parts: np.ndarray[Any, np.dtype[np.intp]], out: Ingested) -> None:
        """Copy the events a rule keyed by grid cell may select to every partition but their home."""
        spreads = self.engine.spreads
        rows = [
            r
            for r, (code, disc) in enumerate(zip(columns.kind.tolist(), columns.disc, strict=True))
            if spreads(KINDS[code], disc)
        ]
        if not rows:
            return
        homes = parts[rows].tolist()
        for target in range(self.partitions):
            copies = [r for r, home in zip(rows, homes, strict=True) if home != target]
            if copies:
                out.spread[target] = Rows(columns, copies)

    def _partitions(self, columns: EventColumns) -> np.ndarray[Any, np.dtype[np.intp]]:
        """The events-topic partition of every row: ``partition_of(route_key(...))``, per zone not per row."""
        layer = self.routing_layer
        if layer is None:
            parts = np.full(len(columns), self.partition_of(zone_route(None)), dtype=np.intp)
        else:
            zones = columns.zones[layer]
            parts = self._zone_partitions(zones.ids)[zones.primary]  # -1 (no zone) takes the last
        for row in np.flatnonzero(columns.kind == KIND_CODE["track"]).tolist():  # tracks go by object
            parts[row] = self.partition_of(object_route(columns.subject(row)))
        return parts

    def _zone_partitions(self, ids: Sequence[str]) -> np.ndarray[Any, np.dtype[np.intp]]:
        """The partition of every zone of the routing layer, then that of events in none of them.

        Made once per layer (a hot-swapped pack brings other ids), so routing a batch is one
        numpy take instead of a route key and a cache lookup per zone.
        """
        cached = self._zone_parts
        if cached is None or cached[0] is not ids:
            keys = [zone_route(z) for z in ids] + [zone_route(None)]
            cached = self._zone_parts = (ids, np.array([self.partition_of(k) for k in keys], dtype=np.intp))
        return cached[1]

    def _dead(self, rej: Rejected, topic: str, partition: int, offset: int) -> DeadLetterRecord:
        source = source_label(topic, partition, offset, rej.index)
        logger.warning("dead letter source=%s kind=%s reason=%s", source, rej.kind, rej.reason)
        return dead_letter(rej.reason, rej.kind, source, rej.original)

    def detect(
        self,
        raw: bytes,
        state: MutableMapping[str, Any],
        topic: str,
        partition: int,
        offset: int,
        *,
        check_late: bool = True,
        chain: bool = True,
    ) -> Detected:
        """Apply one events message to ``state``.

        With ``chain``, an envelope whose link (``prev``) names a raw offset its stream has not
        applied is not applied: ``missing`` says which raw messages to derive again first (the
        caller reads them from the raw topic), then the envelope comes again with ``chain=False``.
        """
        out = Detected()
        source = source_label(topic, partition, offset)
        clock = tick_of(raw)
        if clock is not None:
            if not check_late:
                # A tick replayed by gap repair would judge this partition's silence against a
                # watermark that the replay of other partitions has already moved on, before this
                # partition's own later events are applied; the next live tick does the judging.
                return out
            out.incidents = self.engine.tick(
                state,
                clock_ms=clock if self.wall_clock else None,
                partition=partition,
                watermark_ms=self.partition_watermark(state, partition),
            )
            return out
        held = self.handoff.take(raw)
        out.read = "parsed" if held is None else "handoff"
        try:
            items, src, prev, spread_from = held if held is not None else _decode(raw)
        except (orjson.JSONDecodeError, ValueError, ValidationError) as exc:
            logger.warning("dead letter source=%s kind=poison reason=%s", source, exc)
            out.dead.append(dead_letter(f"not a valid enriched-events envelope: {exc}", "poison", source, raw))
            return out
        # Idempotency by the raw message's position when the envelope carries it: a raw message
        # re-ingested after a crash arrives here at a new offset, but with the same source.
        position = source_position(partition, src) if src is not None else (partition, offset)
        # The stream's high-water mark, kept apart from the entries: expiry drops entries (and with
        # them the positions they applied), so a re-delivery older than an expired entry would
        # otherwise open it afresh. Within one stream positions arrive in order, so at or below
        # the mark means every entry this message touched has it already.
        mark_key = f"{APPLIED_PREFIX}|{position[0]}"
        mark = state.get(mark_key)
        if mark and position[1] <= int(mark["o"]):
            out.redelivered = True
            return out
        if chain and src is not None and prev is not None and (not mark or prev > int(mark["o"])):
            # everything between what the stream applied and the link is derived again, in order
            out.missing = Missing(src[0], int(mark["o"]) + 1 if mark else prev, prev)
            if held is not None:  # it comes again once the gap is repaired
                self.handoff.restore(raw, held, partition)
            return out
        # Lateness is judged within the stream: a raw partition carries its sources in order, so an
        # event is late when it is older than its own stream's newest event minus the allowed
        # lateness. Against the worker-wide watermark, whether it is late would depend on how the
        # consumer interleaved the raw partitions, and on a crash: a raw message re-ingested after
        # one comes back behind events of other partitions that went on meanwhile.
        # The first message of a stream has nothing before it in the stream to be late against (the
        # worker-wide watermark would include the other partitions' part of this very raw message).
        stream_wm = int(mark["wm"]) if mark and mark.get("wm") is not None else None
        outcome = self.engine.process(
            items,
            state,
            position=position,
            home=partition,
            check_late=check_late and not (src is not None and stream_wm is None),
            late_watermark_ms=stream_wm if src is not None else None,
            spread_from=spread_from,
            owns=self._owner(partition) if self.partitions > 1 and self.engine.spreading else None,
        )
        applied = _newest_ms(items, {item.event.id for item, _ in outcome.late})
        newest = applied if stream_wm is None or (applied is not None and applied > stream_wm) else stream_wm
        _record(state, mark_key, position[1], partition, newest, applied)
        out.incidents = outcome.incidents  # time-driven rules advance on tick messages (see encode_tick)
        for item, reason in outcome.late:
            out.dead.append(
                dead_letter(reason, "late", f"{source}:{item.event.id}", item.event.model_dump_json().encode())
            )
        return out

    def runnable(self, values: Sequence[bytes], state: Mapping[str, Any], partition: int) -> int:
        """How many of these consecutive messages of one events partition (the first ones) ``detect_run``
        can apply as one batch: 0 when fewer than two.

        A run is envelopes this worker's ingest made (held in the handoff), of one stream (the same
        raw partition), each linked to the one before it, the first neither applied before nor after
        a missing link: what ``detect`` would apply one by one without anything else happening
        between them. Anything else (a tick, a parsed envelope, a repair) takes ``detect``.
        """
        stream = last = -1
        n = 0
        for raw in values:
            held = self.handoff.peek(raw)
            if held is None:
                break
            items, src, prev, _ = held
            if src is None or not isinstance(items, Rows):
                break
            if n == 0:
                position = source_position(partition, src)
                mark = state.get(f"{APPLIED_PREFIX}|{position[0]}")
                if mark and position[1] <= int(mark["o"]):
                    break  # applied before: detect says so
                if prev is not None and (not mark or prev > int(mark["o"])):
                    break  # a missing link: detect repairs it
                stream = src[0]
            elif src[0] != stream or src[1] <= last or (prev is not None and prev > last):
                break
            last = src[1]
            n += 1
        return n if n >= 2 else 0

    def detect_run(
        self,
        values: Sequence[bytes],
        offsets: Sequence[int],
        state: MutableMapping[str, Any],
        topic: str,
        partition: int,
        *,
        check_late: bool = True,
    ) -> Detected:
        """Apply a run of messages (``runnable``) as one engine batch: what ``detect`` on each in turn gives.

        Lateness is judged message by message, each against its stream's watermark after the ones
        before it, as ``detect`` judges it; the on-time events of all of them are then evaluated
        together (so the fixed cost of a batch is paid once), under the position of the last one.
        The incidents are the latest snapshot of each over the run. Events out of order across the
        messages are evaluated in event-time order, as a larger envelope's would be.
        """
        out = Detected(read="handoff")
        helds = [self.handoff.take(raw) for raw in values]
        if any(h is None for h in helds):
            raise ValueError("detect_run needs a run that runnable() accepted, every envelope still held")
        last_src = helds[-1][1]  # type: ignore[index]
        assert last_src is not None
        position = source_position(partition, last_src)
        mark_key = f"{APPLIED_PREFIX}|{position[0]}"
        mark = state.get(mark_key)
        stream_wm = int(mark["wm"]) if mark and mark.get("wm") is not None else None
        layers = self.engine.layers_read
        lateness = self.engine.lateness_ms
        parts: list[EventColumns] = []
        copies: list[bool] = []
        newest: int | None = None
        for held, offset in zip(helds, offsets, strict=True):
            items, _, _, spread_from = held  # type: ignore[misc]
            assert isinstance(items, Rows)
            columns, rows = items.columns, items.rows
            own = len(rows) if spread_from is None else spread_from  # then the spread copies (Kind.spreads)
            stamps = (columns.ts_us[rows] // 1000).tolist()
            newest_of = stamps
            kept: Sequence[int] = range(len(rows))
            if check_late and stream_wm is not None:
                floor = stream_wm - lateness
                late = [k for k, ts in enumerate(stamps) if ts < floor]
                if late:
                    source = source_label(topic, partition, offset)
                    # in the order detect reports them (event time, id, row); a spread copy is
                    # reported late by its home partition
                    reported = sorted((stamps[k], columns.ids[rows[k]], k) for k in late if k < own)
                    for _, _, k in reported:
                        item = columns.enriched(rows[k])
                        out.dead.append(
                            dead_letter(
                                self.engine.late_reason(item, stream_wm),
                                "late",
                                f"{source}:{item.event.id}",
                                item.event.model_dump_json().encode(),
                            )
                        )
                    late_ids = {i for _, i, _ in reported}  # as _newest_ms: an id reported late counts for none
                    newest_of = [ts for k, ts in enumerate(stamps) if columns.ids[rows[k]] not in late_ids]
                    gone = set(late)
                    kept = [k for k in range(len(rows)) if k not in gone]
            applied = max(newest_of) if newest_of else None
            if applied is not None and (stream_wm is None or applied > stream_wm):
                stream_wm = applied
            if applied is not None and (newest is None or applied > newest):
                newest = applied
            parts.append(Rows(columns, [rows[k] for k in kept]).located(layers))
            copies += [k >= own for k in kept]
        outcome = self.engine.process_columns(
            EventColumns.concat(parts),
            state,
            position,
            home=partition,
            check_late=False,
            owns=self._owner(partition) if self.partitions > 1 and self.engine.spreading else None,
            copies=copies if any(copies) else None,
        )
        _record(state, mark_key, position[1], partition, stream_wm, newest)
        out.incidents = outcome.incidents
        return out


def _record(
    state: MutableMapping[str, Any],
    mark_key: str,
    offset: int,
    partition: int,
    stream_wm: int | None,
    applied: int | None,
) -> None:
    """What a detect stage applied: its stream's high-water mark (``offset``) and watermark, and the
    partition's watermark, moved on by ``applied``, the newest on-time event time (None: none)."""
    state[mark_key] = {"o": offset, "home": partition, "wm": stream_wm}
    if applied is not None:
        key = f"{WATERMARK_PREFIX}|{partition}"
        held = state.get(key)
        if not held or applied > int(held["wm"]):
            state[key] = {"wm": applied, "home": partition}


def _newest_ms(items: Sequence[Enriched], late_ids: set[str]) -> int | None:
    """The newest event time (ms) of the events that were not late: their stream's watermark."""
    if isinstance(items, Rebuilt):  # from the columns, without building an event per row
        if not late_ids:
            return int(items.ts_us.max()) // 1000 if len(items) else None
        kept = [ts for f, ts in zip(items.fields, items.ts_us.tolist(), strict=True) if f["id"] not in late_ids]
        return max(kept) // 1000 if kept else None
    if isinstance(items, Rows):
        ts_us, ids = items.columns.ts_us, items.columns.ids
        if not late_ids:
            return int(ts_us[items.rows].max()) // 1000 if len(items) else None
        kept = [t for r, t in zip(items.rows, ts_us[items.rows].tolist(), strict=True) if ids[r] not in late_ids]
        return max(kept) // 1000 if kept else None
    return max((to_ms(i.event.ts) for i in items if i.event.id not in late_ids), default=None)
