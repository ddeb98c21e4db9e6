"""The two stream stages as pure functions over bytes: ingest (decode, enrich, route) and detect.

The Faust agents in ``streams.agents`` only move bytes between topics and call these.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from rules.decode import DEFAULT_MAX_BYTES, Rejected, decode_message
from rules.engine import Engine
from rules.model import DeadLetterRecord, Enriched, Incident, Reading, Report, Track

logger = logging.getLogger(__name__)

OUTSIDE = "_outside"
#: Raw-topic positions are recorded as partition RAW_POSITION_BASE + p, apart from events-topic ones.
RAW_POSITION_BASE = 1_000_000


def source_label(topic: str, partition: int, offset: int, index: int | None = None) -> str:
    """``topic[partition]@offset`` (plus ``#index`` for one record of a batch)."""
    return f"{topic}[{partition}]@{offset}" + (f"#{index}" if index is not None else "")


DEAD_LETTER_MAX_ORIGINAL = 262_144


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


def encode_enriched(items: list[Enriched], src: tuple[int, int] | None = None) -> bytes:
    """The internal envelope of the events topic: validated events, serialised without re-validation.

    ``src`` is the (partition, offset) of the raw message they came from: a raw message ingested
    twice (after a crash) gives the same envelope with the same ``src``, which detect skips.
    """
    doc: dict[str, Any] = {"v": 1, "items": [{"event": i.event.__dict__, "zones": i.zones} for i in items]}
    if src is not None:
        doc["src"] = list(src)
    return orjson.dumps(doc)


def envelope_source(raw: bytes) -> tuple[int, int] | None:
    """The raw (partition, offset) an enriched envelope came from, when it says."""
    doc = orjson.loads(raw)
    src = doc.get("src") if isinstance(doc, dict) else None
    if isinstance(src, list) and len(src) == 2 and all(isinstance(x, int) for x in src):
        return int(src[0]), int(src[1])
    return None


_KINDS: dict[str, type[Reading | Report | Track]] = {"reading": Reading, "report": Report, "track": Track}


def _trusted(items: Any) -> list[Enriched]:
    """Rebuild events that ingest already validated (no second validation on the hot path)."""
    out = []
    for item in items:
        fields = dict(item["event"])
        cls = _KINDS[fields["kind"]]
        fields["ts"] = datetime.fromisoformat(fields["ts"])
        out.append(Enriched.model_construct(event=cls.model_construct(**fields), zones=dict(item["zones"])))
    return out


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
    doc = orjson.loads(raw)
    if not isinstance(doc, dict) or doc.get("v") != 1:
        raise ValueError("not a cityops enriched-events envelope (v=1)")
    if "tick" in doc:
        return []
    try:
        return _trusted(doc["items"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed enriched-events envelope: {exc!r}") from exc


@dataclass
class Ingested:
    routed: dict[str, list[Enriched]] = field(default_factory=dict)
    dead: list[DeadLetterRecord] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.routed.values())


@dataclass
class Detected:
    incidents: list[Incident] = field(default_factory=list)
    dead: list[DeadLetterRecord] = field(default_factory=list)


class Pipeline:
    """Ingest and detect for one engine (one loaded pack)."""

    def __init__(self, engine: Engine, *, max_bytes: int = DEFAULT_MAX_BYTES, wall_clock: bool = False) -> None:
        self.engine = engine
        self.wall_clock = wall_clock
        self.max_bytes = max_bytes
        layers = list(engine.pack.layers)
        self.routing_layer = layers[0] if layers else None

    def route_key(self, item: Enriched) -> str:
        """Partition key: tracks by object, everything else by its zone in the routing layer."""
        event = item.event
        if event.kind == "track":
            return f"obj:{event.subject}"
        zone = item.primary_zone(self.routing_layer) if self.routing_layer else None
        return f"zone:{zone or OUTSIDE}"

    def ingest(self, raw: bytes, topic: str, partition: int, offset: int) -> Ingested:
        out = Ingested()
        decoded = decode_message(raw, max_bytes=self.max_bytes)
        for rej in decoded.rejected:
            out.dead.append(self._dead(rej, topic, partition, offset))
        for item in self.engine.enrich(decoded.events):
            out.routed.setdefault(self.route_key(item), []).append(item)
        return out

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
    ) -> Detected:
        out = Detected()
        source = source_label(topic, partition, offset)
        clock = tick_of(raw)
        if clock is not None:
            out.incidents = self.engine.tick(state, clock_ms=clock if self.wall_clock else None, partition=partition)
            return out
        try:
            items = decode_enriched(raw)
        except (orjson.JSONDecodeError, ValueError, ValidationError) as exc:
            logger.warning("dead letter source=%s kind=poison reason=%s", source, exc)
            out.dead.append(dead_letter(f"not a valid enriched-events envelope: {exc}", "poison", source, raw))
            return out
        # Idempotency by the raw message's position when the envelope carries it: a raw message
        # re-ingested after a crash arrives here at a new offset, but with the same source.
        src = envelope_source(raw)
        position = (RAW_POSITION_BASE + src[0], src[1]) if src is not None else (partition, offset)
        outcome = self.engine.process(items, state, position=position, home=partition, check_late=check_late)
        out.incidents = outcome.incidents  # time-driven rules advance on tick messages (see encode_tick)
        for item, reason in outcome.late:
            out.dead.append(
                dead_letter(reason, "late", f"{source}:{item.event.id}", item.event.model_dump_json().encode())
            )
        return out
