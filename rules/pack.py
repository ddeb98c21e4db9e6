"""Rule-pack schema (pydantic) and loader with ``file:line: message`` errors.

A pack is a YAML file plus the GeoJSON layers it names. See ``docs/rules.md``.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from rules.crs import CRS
from rules.duration import Duration
from rules.errors import LayerError, PackError
from rules.fields import field_problem
from rules.geo import Layer
from rules.kinds import KIND_NAMES, Rule
from rules.kinds.threshold import ThresholdRule
from rules.kinds.window import WindowRule
from rules.model import EVENT_KINDS
from rules.spec import Match, RuleId, Severity

logger = logging.getLogger(__name__)

#: The pack file a directory stands for (``cityops rules validate rules/packs/wuhan``).
PACK_FILE = "pack.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LayerSpec(_Strict):
    """A GeoJSON zone layer used by the pack."""

    file: str = Field(description="Path of the GeoJSON file, relative to the pack file.")
    id_property: str = "zone_id"
    name_property: str = "name"
    crs: CRS = Field(default=CRS.WGS84, description="Coordinate system of the file; converted once at load.")


class ExpectedIncident(_Strict):
    """An incident a pack test expects (only the fields given are compared)."""

    rule: str
    subject: str | None = None
    zone_id: str | None = None
    count: int | None = None
    severity: Severity | None = None
    status: Literal["open", "resolved"] | None = None


class PackTest(_Strict):
    """promtool-style test: input events and the exact incidents they must produce."""

    name: str
    events: list[dict[str, Any]]
    expect: list[ExpectedIncident] = Field(default_factory=list, description="Empty means: expect none.")


class Pack(_Strict):
    """A rule pack: layers, rules and their tests."""

    pack: RuleId = Field(description="Pack id, e.g. wuhan.")
    version: str = Field(min_length=1, max_length=40, description="Pack version carried by every incident.")
    title: str = ""
    timezone: str = "Asia/Shanghai"
    allowed_lateness: Duration = Field(  # type: ignore[assignment]
        default="1h", validate_default=True, description="How late an event may arrive."
    )
    layers: dict[str, LayerSpec] = Field(default_factory=dict)
    rules: list[Rule]
    tests: list[PackTest] = Field(default_factory=list)

    @model_validator(mode="after")
    def _cross_check(self) -> Pack:
        # A model-level error has an empty location; ``ctx["loc"]`` tells parse_pack which line to blame.
        seen: set[str] = set()
        for index, rule in enumerate(self.rules):
            if rule.id in seen:
                raise _reference_error(f"rule id '{rule.id}' is used twice", ("rules", index, "id"))
            seen.add(rule.id)
            for attr in ("layer", "fences", "near"):
                name = getattr(rule, attr, None)
                if name is not None and name not in self.layers:
                    known = ", ".join(sorted(self.layers)) or "none"
                    raise _reference_error(
                        f"rule '{rule.id}' uses unknown layer '{name}' (known: {known})", ("rules", index, attr)
                    )
            kinds = rule.match.kinds()
            if not kinds:
                given = ", ".join(f"{k}: {v}" for k, v in rule.match.model_dump(exclude_none=True).items())
                raise _reference_error(
                    f"rule '{rule.id}' can match no event: its match ({given}) asks for fields of different "
                    "event kinds (a metric is a reading's, a category a report's, an object_type a track's)",
                    ("rules", index, "match"),
                )
            for ref in rule.field_refs():
                takes = (ref.kinds or kinds) if ref.needed else EVENT_KINDS
                problem = field_problem(ref.name, takes, numeric=ref.numeric)
                if problem is not None:
                    raise _reference_error(f"rule '{rule.id}' {problem}", ("rules", index, *ref.loc))
            zone = (rule.schedule.timezone if rule.schedule else None) or self.timezone
            try:
                ZoneInfo(zone)
            except (ZoneInfoNotFoundError, ValueError):
                raise _reference_error(
                    f"rule '{rule.id}': unknown timezone '{zone}' (use an IANA name such as Asia/Shanghai)",
                    ("rules", index, "schedule") if rule.schedule and rule.schedule.timezone else ("timezone",),
                ) from None
        for t, test in enumerate(self.tests):
            for e, exp in enumerate(test.expect):
                if exp.rule not in seen:
                    raise _reference_error(
                        f"test '{test.name}' expects unknown rule '{exp.rule}'", ("tests", t, "expect", e, "rule")
                    )
        return self


def _reference_error(message: str, loc: tuple[int | str, ...]) -> PydanticCustomError:
    return PydanticCustomError("pack_reference", "{message}", {"message": message, "loc": loc})


@dataclass(frozen=True)
class LoadedPack:
    """A validated pack with its layers indexed and ready for the engine."""

    spec: Pack
    path: Path
    layers: dict[str, Layer]
    digest: str

    @property
    def version(self) -> str:
        return self.spec.version


def _line_of(root: yaml.Node | None, loc: tuple[int | str, ...]) -> int:
    """Best line (1-based) of a pydantic error location in the YAML node tree."""
    node = root
    line = (root.start_mark.line + 1) if root is not None else 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            found = next(((key, value) for key, value in node.value if key.value == part), None)
            if found is None:
                break
            node = found[1]
            line = found[0].start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _clean_loc(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """Drop what pydantic adds that is not in the YAML: the union tag after ``rules[i]``, validator names.

    The tag must go by position: ``window`` is both a rule kind (tag) and a field of window rules.
    """
    parts = [p for p in loc if not (isinstance(p, str) and p.startswith("function-"))]
    if len(parts) >= 3 and parts[0] == "rules" and isinstance(parts[1], int) and parts[2] in KIND_NAMES:
        del parts[2]
    return tuple(parts)


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _rule_id_at(data: Any, loc: tuple[int | str, ...]) -> str | None:
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int) and isinstance(data, dict):
        rules = data.get("rules")
        if isinstance(rules, list) and loc[1] < len(rules) and isinstance(rules[loc[1]], dict):
            rid = rules[loc[1]].get("id")
            return str(rid) if rid is not None else None
    return None


_KIND_MESSAGES = {
    "union_tag_invalid": "unknown rule kind '{tag}' (expected one of: {kinds})",
    "union_tag_not_found": "missing 'kind' (expected one of: {kinds})",
}


def parse_pack(text: str, origin: str) -> Pack:
    """Validate pack YAML text. Raises PackError with ``origin:line: message`` problems."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise PackError([f"{origin}:{line}: not valid YAML: {getattr(exc, 'problem', exc)}"]) from exc
    if not isinstance(data, dict):
        raise PackError([f"{origin}:1: a rule pack is a YAML mapping with 'pack', 'version' and 'rules'"])
    try:
        return Pack.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            ctx = err.get("ctx") or {}
            loc = _clean_loc(tuple(err["loc"]) or tuple(ctx.get("loc", ())))
            line_loc = (*loc, "kind") if err["type"] == "union_tag_invalid" else loc
            rule_id = _rule_id_at(data, loc) if err["type"] != "pack_reference" else None
            head = " ".join(p for p in (f"rule '{rule_id}'" if rule_id else "", _format_loc(loc)) if p)
            template = _KIND_MESSAGES.get(err["type"])
            msg = (
                template.format(**ctx, kinds=", ".join(KIND_NAMES))
                if template
                else err["msg"].removeprefix("Value error, ")
            )
            problems.append(f"{origin}:{_line_of(root, line_loc)}: " + (f"{head}: {msg}" if head else msg))
        raise PackError(problems) from exc


def load_pack(path: Path | str) -> LoadedPack:
    """Load, validate and index a pack file and its layers (a directory means its ``pack.yaml``).

    Raises:
        PackError: with every problem as ``file:line: message``.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / PACK_FILE).is_file():
            raise PackError([f"{path}: a directory without a {PACK_FILE}: name the pack's YAML file"])
        path = path / PACK_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PackError([f"{path}:1: cannot read rule pack: {exc.strerror}"]) from exc
    spec = parse_pack(text, str(path))
    layers: dict[str, Layer] = {}
    problems: list[str] = []
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    for name, layer_spec in spec.layers.items():
        try:
            layers[name] = Layer.from_file(
                name,
                path.parent / layer_spec.file,
                id_property=layer_spec.id_property,
                name_property=layer_spec.name_property,
                crs=layer_spec.crs,
            )
        except LayerError as exc:
            problems.append(f"{path}:{_line_of(root, ('layers', name, 'file'))}: {exc}")
    for rule in spec.rules:
        zones = rule.match.zones
        if zones and rule.layer in layers:
            unknown = sorted(set(zones) - set(layers[rule.layer].ids))
            if unknown:
                index = spec.rules.index(rule)
                line = _line_of(root, ("rules", index, "match", "zones"))
                problems.append(f"{path}:{line}: rule '{rule.id}': unknown zones {unknown} in layer '{rule.layer}'")
    if problems:
        raise PackError(problems)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    logger.info("pack loaded pack=%s version=%s rules=%d digest=%s", spec.pack, spec.version, len(spec.rules), digest)
    return LoadedPack(spec=spec, path=path, layers=layers, digest=digest)


def caveats(pack: LoadedPack) -> list[str]:
    """What a valid pack may not do as its author expects, as ``file:line: warning: ...`` lines.

    A rule with a ``cooldown`` whose dedup key several sources share (``RuleBase.key_shared``): live,
    the key's events can come through several raw partitions, so its firings may be judged out of
    event-time order, and which firing starts a chain (docs/rules.md, "Dedup keys and cooldown")
    may then differ from a replay of the same events.
    """
    try:
        root = yaml.compose(pack.path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, yaml.YAMLError):
        root = None  # a pack made in memory: every warning points at line 1
    out = []
    for index, rule in enumerate(pack.spec.rules):
        if rule.cooldown and rule.key_shared:
            line = _line_of(root, ("rules", index, "cooldown"))
            out.append(
                f"{pack.path}:{line}: warning: rule '{rule.id}': its cooldown chains incidents of a dedup key "
                "that several sources share (a zone, cell or block); live, their events may come through "
                "different raw partitions and fire out of time order, and the chains then differ from a "
                "replay. Key such sources to one raw partition, or keep the cooldown on per-subject rules"
            )
    return out


__all__ = [
    "ExpectedIncident",
    "LayerSpec",
    "LoadedPack",
    "Match",
    "Pack",
    "PackTest",
    "Rule",
    "ThresholdRule",
    "WindowRule",
    "caveats",
    "load_pack",
    "parse_pack",
]
