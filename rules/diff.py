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
    #: Changed rules whose ``version`` stayed the same, with that version.
    same_version: dict[str, int] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.layers_changed)

    @property
    def warnings(self) -> list[str]:
        """What makes the incidents of the two packs hard to tell apart (the diff still stands)."""
        out = []
        if not self.empty and self.version[0] == self.version[1]:
            out.append(
                f"warning: the pack version is still {self.version[1]}: incidents of both packs will carry "
                "the same pack_version"
            )
        out += [
            f"warning: rule {rid} changed but kept version {v}: its incidents will carry the same rule_version"
            for rid, v in self.same_version.items()
        ]
        return out

    def lines(self) -> list[str]:
        out = [f"pack version {self.version[0]} -> {self.version[1]}"]
        out += [f"+ {r}" for r in self.added]
        out += [f"- {r}" for r in self.removed]
        for rid, fields in self.changed.items():
            out.append(f"~ {rid}: {', '.join(fields)}")
        out += [f"~ layer {name}" for name in self.layers_changed]
        if self.empty:
            out.append("no rule changes")
        return out + self.warnings


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
            if old_rules[rid]["version"] == new_rules[rid]["version"]:
                result.same_version[rid] = int(new_rules[rid]["version"])
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
