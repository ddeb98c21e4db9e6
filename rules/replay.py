"""Replay: the live engine over a file of events, without a broker, in event time."""

from __future__ import annotations

import gc
import logging
import queue
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, TypeVar

import orjson

from rules.arrowblock import Piece, block_piece, block_rows, subject_of
from rules.columns import NUMERIC, EventColumns, Row, row_of
from rules.decode import Rejected, decode_message, decode_one, fast_objects, fast_rows
from rules.engine import AnyEvent, Engine, run, run_columns
from rules.model import Incident
from rules.pack import LoadedPack

logger = logging.getLogger(__name__)

#: Events per engine batch in a replay. A batch's fixed costs (grouping, rule selection, one call per
#: rule fed) are paid once per batch, so a pack of many rules replays faster in larger batches (1,000
#: rules: 146k events/s at 1,000 per batch, 170k at 4,096); lateness is judged per batch (docs/rules.md).
BATCH = 4096
_BLOCK = BATCH  # lines parsed by pyarrow at once (at least batch_size)
#: The cyclic GC's generation-0 threshold during a replay (as the live worker's ``gc_threshold``).
GC_THRESHOLD = 50_000

_gc_lock = threading.Lock()
_gc_depth = 0
_gc_saved: tuple[int, int, int] | None = None
_gc_set: tuple[int, int, int] | None = None


@contextmanager
def gc_tuned(threshold: int = GC_THRESHOLD) -> Iterator[None]:
    """Raise the cyclic GC's generation-0 threshold (never lower it) for the duration of a replay.

    A replay allocates a few objects per event and keeps a large rule state: with Python's default
    threshold (700) the collector runs every few events and its full collections scan the whole
    state (a quarter of replay time on the Wuhan pack). The previous thresholds are restored on
    exit, also when the body raises, unless something else changed them meanwhile. Nested and
    concurrent uses (threads) share one setting: the first to enter saves, the last to leave restores.
    Nothing is frozen (``gc.freeze``): that would also touch what a host process froze itself.
    """
    global _gc_depth, _gc_saved, _gc_set
    with _gc_lock:
        if _gc_depth == 0:
            _gc_saved = gc.get_threshold()
            gen0, gen1, gen2 = _gc_saved
            _gc_set = (max(gen0, threshold), gen1, gen2) if gen0 else _gc_saved  # 0: collection is off
            gc.set_threshold(*_gc_set)
        _gc_depth += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_depth -= 1
            if _gc_depth == 0:
                if _gc_saved is not None and gc.get_threshold() == _gc_set:
                    gc.set_threshold(*_gc_saved)
                _gc_saved = _gc_set = None


@dataclass
class ReplayResult:
    incidents: list[Incident]
    events: int
    rejected: list[tuple[int, Rejected]] = field(default_factory=list)


def replay(
    pack: LoadedPack,
    lines: Iterable[bytes],
    *,
    batch_size: int = BATCH,
    progress: Callable[[int], None] | None = None,
    arrow: bool = True,
    prefetch: int = 2,
) -> ReplayResult:
    """Run every JSON line (an event, a list, or an envelope) through a fresh engine.

    Lines are decoded straight into column batches of ``batch_size`` events: blocks of lines are
    parsed by pyarrow (``block_piece``, unless ``arrow`` is False), lines it does not take with
    orjson (``fast_rows``), and anything else through ``decode_message``, so rejections are exactly
    those of the live ingest. Returns the final snapshot of every incident, sorted by id. The
    cyclic GC runs less often meanwhile (``gc_tuned``).

    With ``prefetch`` above 0, lines are read and decoded in a background thread, up to that many
    blocks ahead of the engine (``prefetched``): pyarrow parses without the GIL, so on a machine
    with a spare core decoding overlaps the rules. The order of events, and so the incidents, are
    the same either way; 0 decodes in the calling thread.
    """
    rejected: list[tuple[int, Rejected]] = []
    block = max(batch_size, _BLOCK)
    counter = {"n": 0}

    def parsed() -> Iterator[Piece]:
        """The events of a block of lines at a time, in file order."""
        source = iter(lines)
        first = 1
        while part := list(islice(source, block)):
            raws = [line.strip() for line in part]
            numbers = range(first, first + len(part))
            first += len(part)
            if all(raws):
                chunk = list(zip(numbers, raws, strict=True))
            else:
                chunk = [(number, raw) for number, raw in zip(numbers, raws, strict=True) if raw]
            yield _block(chunk, rejected) if arrow else Piece.of_rows(*_checked(_objects(chunk), rejected))

    def batches() -> Iterator[EventColumns]:
        pending: list[Piece] = []
        size = 0
        for piece in prefetched(parsed, prefetch) if prefetch > 0 else parsed():
            before, counter["n"] = counter["n"], counter["n"] + len(piece)
            for step in range(before // 100_000 + 1, counter["n"] // 100_000 + 1):
                if progress is not None:
                    progress(step * 100_000)
            if not len(piece):
                continue
            pending.append(piece)
            size += len(piece)
            if size >= batch_size:
                merged = Piece.concat(pending)
                start = 0
                while size - start >= batch_size:
                    yield _columns(merged.part(start, start + batch_size))
                    start += batch_size
                pending = [merged.part(start, size)] if start < size else []
                size -= start
        if size:
            yield _columns(Piece.concat(pending))

    with gc_tuned():
        latest = run_columns(Engine(pack), batches())
    return ReplayResult(incidents=[latest[k] for k in sorted(latest)], events=counter["n"], rejected=rejected)


_DONE = object()
_T = TypeVar("_T")


def prefetched(produce: Callable[[], Iterator[_T]], depth: int) -> Generator[_T, None, None]:
    """The items of ``produce()``, in order, made in a background thread up to ``depth`` items ahead.

    An exception raised while producing is raised here, at the item where it happened. When the
    consumer stops early (an exception, or ``close()``), the thread stops at its next item; it is
    a daemon, so a producer blocked on its input never keeps the process alive.
    """
    items: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in produce():
                if not put((item, None)):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            put((_DONE, exc))
            return
        put((_DONE, None))

    thread = threading.Thread(target=work, name="replay-decode", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = items.get()
            if item is _DONE:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def _objects(chunk: list[tuple[int, bytes]]) -> list[tuple[int, bytes, list[Any] | None]]:
    return [(number, raw, fast_objects(raw)) for number, raw in chunk]


def _block(chunk: list[tuple[int, bytes]], rejected: list[tuple[int, Rejected]]) -> Piece:
    """The events of some lines, in line order: the plain event objects among them parsed as one
    pyarrow block (``block_piece``), the other lines through ``_checked``.

    A line pyarrow takes has its bytes as the source (validated only when a rule needs the event).
    """
    raws = [raw for _, raw in chunk]
    whole = block_piece(raws)  # None unless every line holds one JSON object
    if whole is not None:
        piece, ok = whole
        if ok.all():
            return piece
        got: list[Row | None] = [row if good else None for row, good in zip(piece.rows(), ok.tolist(), strict=True)]
        objects = list(range(len(chunk)))
        known: list[str | None] = piece.subjects
    else:
        objects = [n for n, raw in enumerate(raws) if raw[:1] == b"{"]
        got = block_rows([raws[n] for n in objects])
        known = [None] * len(chunk)  # the event tells (EventColumns.subject)
    taken: dict[int, Row] = {n: row for n, row in zip(objects, got, strict=True) if row is not None}
    spans: list[tuple[int, int]] = []
    rest_rows, rest_sources = _checked(
        _objects([line for n, line in enumerate(chunk) if n not in taken]), rejected, spans
    )
    rows: list[Row] = []
    sources: list[Any] = []
    subjects: list[str | None] = []
    at = 0
    for n, raw in enumerate(raws):
        row = taken.get(n)
        if row is not None:
            rows.append(row)
            sources.append(raw)
            subjects.append(known[n])
            continue
        start, stop = spans[at]
        at += 1
        rest = zip(rest_rows[start:stop], rest_sources[start:stop], strict=True)
        rows.extend(rest_rows[start:stop])
        sources.extend(rest_sources[start:stop])
        subjects.extend(subject_of(r[1], source) for r, source in rest)
    return Piece.of_rows(rows, sources, subjects)


def _checked(
    chunk: list[tuple[int, bytes, list[Any] | None]],
    rejected: list[tuple[int, Rejected]],
    spans: list[tuple[int, int]] | None = None,
) -> tuple[list[Row], list[Any]]:
    """Rows and sources of the events of some lines, in line order: a line whose every object
    passes ``fast_rows`` gives those objects, any other line goes through ``decode_message``
    (with its rejections). ``spans`` gets the rows of each line (start, stop)."""
    rows: list[Row] = []
    sources: list[Any] = []
    fast = fast_rows([o for _, _, found in chunk if found is not None for o in found])
    at = 0
    for number, raw, found in chunk:
        start = len(rows)
        got = None
        if found is not None:
            got = fast[at : at + len(found)]
            at += len(found)
        if got is not None and None not in got:
            rows.extend(got)  # type: ignore[arg-type]
            sources.extend(found)  # type: ignore[arg-type]
        else:
            decoded = decode_message(raw)
            rejected.extend((number, r) for r in decoded.rejected)
            rows.extend(row_of(e) for e in decoded.events)
            sources.extend(decoded.events)
        if spans is not None:
            spans.append((start, len(rows)))
    return rows, sources


def _columns(piece: Piece) -> EventColumns:
    sources = piece.sources

    def event_at(row: int) -> AnyEvent:
        source = sources[row]
        if isinstance(source, bytes):  # a line pyarrow decoded: one event object
            return decode_one(orjson.loads(source))
        return decode_one(source) if isinstance(source, dict) else source  # type: ignore[no-any-return]

    return EventColumns(
        ts_us=piece.ts_us,
        kind=piece.kind,
        disc=piece.disc,
        ids=piece.ids,
        numeric=dict(zip(NUMERIC, piece.numeric, strict=True)),
        event_at=event_at,
        subjects=piece.subjects,
    )


def replay_events(pack: LoadedPack, events: Iterable[AnyEvent], batch_size: int = BATCH) -> list[Incident]:
    with gc_tuned():
        latest = run(Engine(pack), events, batch_size=batch_size)
    return [latest[k] for k in sorted(latest)]
