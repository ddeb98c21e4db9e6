"""Durations as rule authors write them: ``30s``, ``15m``, ``1h``, ``2d``, or combined ``1h30m``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_PART = re.compile(r"(\d+)(ms|s|m|h|d|w)")
_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}


def parse_duration(text: str) -> timedelta:
    """Parse a duration such as ``15m`` or ``1h30m``.

    >>> parse_duration("1h30m")
    datetime.timedelta(seconds=5400)

    Raises:
        ValueError: when the text is not a positive duration.
    """
    cleaned = text.strip().replace(" ", "")
    pos = 0
    total = timedelta(0)
    for match in _PART.finditer(cleaned):
        if match.start() != pos:
            break
        try:
            total += int(match.group(1)) * _UNITS[match.group(2)]
        except OverflowError:
            raise ValueError(f"{text!r} is too long (the limit is 999999999d)") from None
        pos = match.end()
    if not cleaned or pos != len(cleaned):
        raise ValueError(f"{text!r} is not a duration (e.g. '30s', '15m', '1h30m', '2d')")
    if total <= timedelta(0):
        raise ValueError(f"{text!r} must be longer than zero")
    return total


def format_duration(value: timedelta) -> str:
    """Format a timedelta the way rule authors write it (``1h30m``)."""
    ms = value // timedelta(milliseconds=1)
    out = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, ms = divmod(ms, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out) or "0s"


def _coerce(value: Any) -> Any:
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(f"{value!r} has no unit: write it as a duration such as '{int(value)}s' or '15m'")
    return value


# Not pydantic's default for timedelta ("format": "duration", which means ISO 8601 such as PT15M).
DURATION_JSON_SCHEMA = {
    "type": "string",
    "pattern": r"^\s*([0-9]+ *(ms|s|m|h|d|w) *)+$",
    "description": "A duration: whole numbers with units ms, s, m, h, d or w, e.g. '30s', '15m', '1h30m'.",
    "examples": ["30s", "15m", "1h30m", "2d"],
}

Duration = Annotated[
    timedelta,
    BeforeValidator(_coerce),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema(DURATION_JSON_SCHEMA),
]
