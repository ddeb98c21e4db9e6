"""Which fields each event kind has: what a rule may read, checked when its pack is loaded.

A rule that names a field its events do not have (``field: valu``, or ``field: value`` on a rule
over reports) would never fire and never say why; ``rules.pack`` refuses it with the rule, the
field and the fields that exist instead.
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, Field

from rules.model import Reading, Report, Track

_MODELS: dict[str, type[BaseModel]] = {"reading": Reading, "report": Report, "track": Track}


def _numeric(annotation: Any) -> bool:
    """``float`` or ``float | None`` (also when constrained, as ``Annotated[float, ...]``)."""
    if annotation is float:
        return True
    if get_origin(annotation) in (Union, types.UnionType):
        return all(a is float or a is type(None) for a in get_args(annotation)) and float in get_args(annotation)
    args = get_args(annotation)
    return bool(args) and args[0] is float


#: The numeric fields of each event kind (what threshold, sustained, window and ``when`` compare).
NUMERIC_FIELDS: dict[str, frozenset[str]] = {
    kind: frozenset(name for name, info in model.model_fields.items() if _numeric(info.annotation))
    for kind, model in _MODELS.items()
}
#: Every field of each event kind, and ``subject`` (what a distinct count may count).
ALL_FIELDS: dict[str, frozenset[str]] = {
    kind: frozenset(model.model_fields) | {"subject"} for kind, model in _MODELS.items()
}


#: A numeric event field in a pack: any string validates (``rules.pack`` then names an unknown one
#: with the rule and its line), but the JSON Schema lists the names, so an editor can complete them.
NumericField = Annotated[str, Field(json_schema_extra={"enum": sorted(set().union(*NUMERIC_FIELDS.values()))})]
#: Any event field, or ``subject`` (a distinct count's).
AnyField = Annotated[str, Field(json_schema_extra={"enum": sorted(set().union(*ALL_FIELDS.values()))})]


def field_problem(name: str, kinds: Sequence[str], *, numeric: bool = True) -> str | None:
    """Why events of ``kinds`` cannot give a rule the field ``name``, or None when some of them can."""
    catalogue = NUMERIC_FIELDS if numeric else ALL_FIELDS
    what = "numeric field" if numeric else "field"
    known = set().union(*catalogue.values())
    if name not in known:
        return f"reads unknown {what} '{name}' (event {what}s: {', '.join(sorted(known))})"
    if any(name in catalogue[kind] for kind in kinds):
        return None
    have = sorted(set().union(*(catalogue[kind] for kind in kinds)))
    names = " and ".join(f"{kind}s" for kind in kinds)
    return f"reads {what} '{name}', which its {names} do not have (theirs: {', '.join(have)})"
