"""``cityops rules diff``: which rules a new pack adds, removes or changes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rules.pack import LoadedPack


@dataclass
class PackDiff:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: dict[str, list[str]] = field(default_factory=dict)
    version: tuple[str, str] = ("", "")
    layers_changed: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.layers_changed)

    def lines(self) -> list[str]:
        out = [f"pack version {self.version[0]} -> {self.version[1]}"]
        out += [f"+ {r}" for r in self.added]
        out += [f"- {r}" for r in self.removed]
        for rid, fields in self.changed.items():
            out.append(f"~ {rid}: {', '.join(fields)}")
        out += [f"~ layer {name}" for name in self.layers_changed]
        if self.empty:
            out.append("no rule changes")
        return out


def _changed_fields(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    fields = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            fields += _changed_fields(a, b, f"{prefix}{key}.")
        else:
            fields.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return fields


def diff_packs(old: LoadedPack, new: LoadedPack) -> PackDiff:
    old_rules = {r.id: r.model_dump(mode="json", by_alias=True) for r in old.spec.rules}
    new_rules = {r.id: r.model_dump(mode="json", by_alias=True) for r in new.spec.rules}
    result = PackDiff(version=(old.version, new.version))
    result.added = sorted(set(new_rules) - set(old_rules))
    result.removed = sorted(set(old_rules) - set(new_rules))
    for rid in sorted(set(old_rules) & set(new_rules)):
        fields = _changed_fields(old_rules[rid], new_rules[rid])
        if fields:
            result.changed[rid] = fields
    for name in sorted(set(old.layers) | set(new.layers)):
        a, b = old.layers.get(name), new.layers.get(name)
        if (
            a is None
            or b is None
            or a.ids != b.ids
            or not all(x.equals(y) for x, y in zip(a.geoms, b.geoms, strict=True))
        ):
            result.layers_changed.append(name)
    return result
