"""Rendering values as SQL literals for the read side.

Quack's ``quack_query`` takes the remote SQL as text with no bind parameters, so values reach
the server as literals. Only typed values are accepted: strings are quoted with every ``'``
doubled, numbers and timestamps are checked by type, identifiers come from allow-lists.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime

from sinks.errors import QueryError

Param = str | int | float | bool | datetime | None | Sequence[str]

_NAME = re.compile(r"\$([a-z_][a-z0-9_]*)")


def literal(value: Param) -> str:
    """One value as a SQL literal."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise QueryError(f"refusing non-finite number {value!r} as a query parameter")
        return repr(float(value))
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise QueryError("timestamps passed to queries must be timezone-aware")
        return f"TIMESTAMPTZ '{value.isoformat()}'"
    if isinstance(value, str):
        if "\x00" in value:
            raise QueryError("refusing a NUL byte in a query parameter")
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, Sequence):
        return "[" + ", ".join(literal(str(v)) for v in value) + "]::VARCHAR[]"
    raise QueryError(f"unsupported query parameter type {type(value).__name__}")


def bind(sql: str, params: Mapping[str, Param]) -> str:
    """Replace ``$name`` placeholders in trusted SQL with literals of the given values."""

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in params:
            raise QueryError(f"query parameter ${name} was not given")
        return literal(params[name])

    return _NAME.sub(sub, sql)
