"""A block of JSON lines parsed in C by ``pyarrow.json`` and checked column by column.

``block_rows`` gives the column row (``Row``) of every line that is plainly a valid event, and None
for any other line. It accepts a strict subset of what ``rules.decode.fast_row`` accepts (one flat
object per line, no backslash escapes, no nulls, no unknown or repeated keys, ASCII ids, an
ISO 8601 time with an offset, finite numbers of at most 2**53 in magnitude) and gives the same
values; a line it does not take goes through ``rules.decode`` as before, so rejections and their
reasons do not change. A block that pyarrow cannot parse is split in halves until the bad lines
are found.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
from numpy.typing import NDArray

from rules.columns import KINDS, SUBJECT, Row
from rules.decode import DEFAULT_MAX_BYTES

logger = logging.getLogger(__name__)

_TEXT: tuple[str, ...] = (
    "id",
    "ts",
    "kind",
    "source",
    "sensor_id",
    "metric",
    "unit",
    "category",
    "description",
    "channel",
)
_TEXT += ("object_id", "object_type")
_NUMBER = ("lon", "lat", "value", "alt_m", "speed_mps", "heading")
_SCHEMA = pa.schema([(name, pa.string()) for name in _TEXT] + [(name, pa.float64()) for name in _NUMBER])
_PARSE = pj.ParseOptions(explicit_schema=_SCHEMA, unexpected_field_behavior="ignore", newlines_in_values=False)
#: The fields each kind may carry besides id, ts, lon, lat, source and kind.
_OWN = {
    "reading": ("sensor_id", "metric", "value", "unit"),
    "report": ("category", "description", "channel"),
    "track": ("object_id", "object_type", "alt_m", "speed_mps", "heading"),
}
_IDENT = "^[!-~]{1,128}$"
_LABEL = "^[A-Za-z0-9_.:-]{1,64}$"
_TS = (
    r"^(19|2[0-1])[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
_EXACT = float(2**53)
_SMALLEST = 16  # a failing block this small is left to the old path line by line
_UTC_US = pa.timestamp("us", tz="UTC")


@dataclass
class Piece:
    """Some events as columns (those of ``EventColumns`` and ``Row``), with the source of each.

    A source is the event object, its JSON object, or the bytes of its line; ``numeric`` holds the
    columns of ``rules.columns.NUMERIC`` in that order; ``subjects`` the subject of each event
    (None where only the event object can tell: ``EventColumns.subject``).
    """

    ts_us: NDArray[np.int64]
    kind: NDArray[np.int8]
    disc: list[str | None]
    ids: list[str]
    numeric: list[NDArray[np.float64]]
    sources: list[Any]
    subjects: list[str | None]

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def of_rows(cls, rows: Sequence[Row], sources: list[Any], subjects: list[str | None] | None = None) -> Piece:
        """The rows with their sources; their subjects, unless given, read from the sources."""
        if not rows:
            return cls(_NO_TS, _NO_KIND, [], [], [_NO_NUMBER] * 6, [], [])
        ts, kinds, disc, ids, *numbers = zip(*rows, strict=True)
        if subjects is None:
            subjects = [subject_of(k, source) for k, source in zip(kinds, sources, strict=True)]
        return cls(
            np.array(ts, dtype=np.int64),
            np.array(kinds, dtype=np.int8),
            list(disc),
            list(ids),
            [np.array(c, dtype=np.float64) for c in numbers],
            sources,
            subjects,
        )

    @classmethod
    def concat(cls, pieces: Sequence[Piece]) -> Piece:
        if len(pieces) == 1:
            return pieces[0]
        return cls(
            np.concatenate([p.ts_us for p in pieces]),
            np.concatenate([p.kind for p in pieces]),
            [d for p in pieces for d in p.disc],
            [i for p in pieces for i in p.ids],
            [np.concatenate([p.numeric[k] for p in pieces]) for k in range(6)],
            [s for p in pieces for s in p.sources],
            [s for p in pieces for s in p.subjects],
        )

    def part(self, start: int, stop: int) -> Piece:
        return Piece(
            self.ts_us[start:stop],
            self.kind[start:stop],
            self.disc[start:stop],
            self.ids[start:stop],
            [c[start:stop] for c in self.numeric],
            self.sources[start:stop],
            self.subjects[start:stop],
        )

    def rows(self) -> list[Row]:
        return list(
            zip(
                self.ts_us.tolist(),
                self.kind.tolist(),
                self.disc,
                self.ids,
                *(c.tolist() for c in self.numeric),
                strict=True,
            )
        )


def subject_of(kind: int, source: Any) -> str | None:
    """The subject of an event from its source: a JSON object's subject field, an event's own."""
    if isinstance(source, dict):
        found = source.get(SUBJECT[KINDS[kind]])
        return found if isinstance(found, str) else None
    return None if isinstance(source, bytes) else getattr(source, "subject", None)


_NO_TS = np.zeros(0, dtype=np.int64)
_NO_KIND = np.zeros(0, dtype=np.int8)
_NO_NUMBER = np.zeros(0, dtype=np.float64)


def block_piece(raws: Sequence[bytes]) -> tuple[Piece, NDArray[np.bool_]] | None:
    """The events of a block of lines as columns, and which lines are plainly valid events (only
    those rows hold meaningful values); None when pyarrow cannot parse the block."""
    parsed = _parse(raws) if raws else None
    return None if parsed is None else _checked(raws, *parsed)


def block_rows(raws: Sequence[bytes]) -> list[Row | None]:
    """The row of every line (stripped, non-blank) that is plainly a valid event object, else None."""
    if not raws:
        return []
    got = block_piece(raws)
    if got is None:
        if len(raws) <= _SMALLEST:
            return [None] * len(raws)
        half = len(raws) // 2
        return block_rows(raws[:half]) + block_rows(raws[half:])
    piece, ok = got
    return [row if good else None for row, good in zip(piece.rows(), ok.tolist(), strict=True)]


def _parse(raws: Sequence[bytes]) -> tuple[pa.Table, bytes] | None:
    """The table of a block of lines that each hold one JSON object, and the block's bytes."""
    joined = b"\n".join(raws)
    if joined[:1] != b"{" or joined.count(b"\n") != len(raws) - 1 or joined.count(b"\n{") != len(raws) - 1:
        return None
    try:
        table = pj.read_json(
            pa.BufferReader(joined),
            read_options=pj.ReadOptions(use_threads=False, block_size=len(joined) + 1),
            parse_options=_PARSE,
        )
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return None
    return (table, joined) if table.num_rows == len(raws) else None


def _keys_known(raws: Sequence[bytes], joined: bytes, quotes: NDArray[np.int64]) -> NDArray[np.bool_]:
    """Which lines hold only known keys, none null, and no escapes.

    ``quotes`` is what a line's count of '"' must be if it holds nothing but its non-null known
    fields: two per key and two per string value. Anything else (an unknown key, a null, which
    pyarrow does not tell from an absent field) adds quotes, so when the block's totals agree every
    line's count does. Escapes are left to orjson (pyarrow takes lone surrogates that orjson does not).
    """
    if b"\\" not in joined and joined.count(b'"') == int(quotes.sum()):
        return np.ones(len(raws), dtype=bool)
    lines = pa.array(raws, type=pa.binary())
    counted = np.asarray(pc.count_substring(lines, '"'), dtype=np.int64)
    return np.asarray(~_true(pc.match_substring(lines, "\\")) & (counted == quotes), dtype=bool)


def _valid(column: pa.ChunkedArray) -> NDArray[np.bool_]:
    if column.null_count in (0, len(column)):  # the common cases, without a kernel call
        return np.full(len(column), column.null_count == 0)
    return np.asarray(pc.is_valid(column), dtype=bool)


def _matches(column: pa.ChunkedArray, pattern: str) -> NDArray[np.bool_]:
    """Which rows hold a string that the RE2 ``pattern`` matches (null: no)."""
    if column.null_count == len(column):
        return np.zeros(len(column), dtype=bool)
    return _true(pc.match_substring_regex(column, pattern))


def _true(mask: pa.ChunkedArray | pa.Array) -> NDArray[np.bool_]:
    """A boolean Arrow column as numpy, null counting as False."""
    return np.asarray(pc.fill_null(mask, False), dtype=bool)


def _numbers(column: pa.ChunkedArray, low: float, high: float) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """The column as floats (NaN where null) and which rows hold a finite number in [low, high]."""
    if column.null_count == len(column):
        return np.full(len(column), np.nan), np.zeros(len(column), dtype=bool)
    out = np.asarray(pc.fill_null(column, np.nan) if column.null_count else column, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return out, (out >= max(low, -_EXACT)) & (out <= min(high, _EXACT))


def _texts_within(column: pa.ChunkedArray, limit: int) -> NDArray[np.bool_]:
    """Null, or a string of at most ``limit`` characters."""
    if column.null_count == len(column):
        return np.ones(len(column), dtype=bool)
    return ~_valid(column) | _true(pc.less_equal(pc.utf8_length(column), limit))


def _checked(raws: Sequence[bytes], table: pa.Table, joined: bytes) -> tuple[Piece, NDArray[np.bool_]]:
    n = table.num_rows
    col = {
        name: table.column(name)
        if name in table.column_names
        else pa.chunked_array([pa.nulls(n, _SCHEMA.field(name).type)])
        for name in _TEXT + _NUMBER
    }
    valid = {name: _valid(c) for name, c in col.items()}
    present = np.stack(list(valid.values())).sum(axis=0, dtype=np.int64)
    texts = np.stack([valid[name] for name in _TEXT]).sum(axis=0, dtype=np.int64)
    ok = _keys_known(raws, joined, 2 * (present + texts))
    if len(joined) > DEFAULT_MAX_BYTES:
        ok &= np.array([len(r) <= DEFAULT_MAX_BYTES for r in raws], dtype=bool)
    code = np.asarray(pc.fill_null(pc.index_in(col["kind"], pa.array(KINDS)), -1), dtype=np.int8)
    ok &= code >= 0
    for k, kind in enumerate(KINDS):
        own = set(_OWN[kind])
        for other in {f for fields in _OWN.values() for f in fields} - own:
            ok &= (code != k) | ~valid[other]
    ok &= _matches(col["id"], _IDENT)
    ok &= _matches(col["ts"], _TS)
    lon, good = _numbers(col["lon"], -180.0, 180.0)
    ok &= good
    lat, good = _numbers(col["lat"], -90.0, 90.0)
    ok &= good
    ok &= _texts_within(col["source"], 128)
    reading, report, track = code == 0, code == 1, code == 2
    value, good = _numbers(col["value"], -_EXACT, _EXACT)
    ok &= ~reading | good
    ok &= ~reading | (_matches(col["sensor_id"], _IDENT) & _texts_within(col["unit"], 32))
    ok &= ~report | (_texts_within(col["description"], 4000) & _texts_within(col["channel"], 32))
    ok &= ~track | _matches(col["object_id"], _IDENT)
    extra = {}
    for name, low, high in (("alt_m", -500.0, 20000.0), ("speed_mps", 0.0, 1000.0), ("heading", 0.0, 360.0)):
        extra[name], good = _numbers(col[name], low, high)
        ok &= ~valid[name] | good
    disc_col = pc.coalesce(col["metric"], col["category"], col["object_type"])
    ok &= _matches(disc_col, _LABEL)
    ts_us, ok = _times(col["ts"], ok)
    numeric = [value, extra["alt_m"], extra["speed_mps"], extra["heading"], lon, lat]
    subjects = pc.coalesce(col["sensor_id"], col["object_id"], col["id"]).to_pylist()  # no line has two
    piece = Piece(ts_us, code, disc_col.to_pylist(), col["id"].to_pylist(), numeric, list(raws), subjects)
    return piece, ok


def _times(column: pa.ChunkedArray, ok: NDArray[np.bool_]) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """Microseconds since the epoch of the rows still ``ok``; a time that does not exist fails its row."""
    out = np.zeros(len(ok), dtype=np.int64)
    rows = np.flatnonzero(ok)
    picked = column.take(pa.array(rows))
    try:
        out[rows] = np.asarray(pc.cast(picked, _UTC_US).cast(pa.int64()), dtype=np.int64)
        return out, ok
    except pa.ArrowInvalid:  # a day that does not exist (Feb 30): judge row by row, as fast_row does
        pass
    ok = ok.copy()
    for r in rows.tolist():
        try:
            got = pc.cast(column[r : r + 1], _UTC_US).cast(pa.int64())
        except pa.ArrowInvalid:
            ok[r] = False
            continue
        out[r] = got[0].as_py()
    return out, ok
