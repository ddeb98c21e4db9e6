"""A rule pack as one self-contained message: the YAML plus every layer file it names.

``cityops rules publish`` writes bundles to the compacted rules topic (key = pack id); workers
unpack a bundle into a private directory, validate it with the same loader as files, and swap.
"""

from __future__ import annotations

import base64
import hashlib
import tempfile
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from rules.errors import PackError
from rules.pack import LoadedPack, load_pack, parse_pack


class PackBundle(BaseModel):
    """The wire format of the rules topic."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: str = "1.0"
    pack: str
    version: str
    digest: str = Field(description="sha256 of the YAML and every layer file.")
    filename: str = Field(description="The pack file's name, e.g. pack.yaml.")
    yaml_text: str
    layers: dict[str, str] = Field(description="Relative layer path -> file content, base64.")
    published_by: str = ""


def bundle_pack(path: Path | str, *, published_by: str = "") -> PackBundle:
    """Validate a pack file (and its layers) and bundle it. Raises PackError when invalid."""
    loaded = load_pack(path)
    path = loaded.path  # the pack.yaml of a directory
    files = {spec.file: (path.parent / spec.file).read_bytes() for spec in loaded.spec.layers.values()}
    text = path.read_text(encoding="utf-8")
    digest = hashlib.sha256(text.encode() + b"".join(files[k] for k in sorted(files))).hexdigest()[:16]
    return PackBundle(
        pack=loaded.spec.pack,
        version=loaded.version,
        digest=digest,
        filename=path.name,
        yaml_text=text,
        layers={k: base64.b64encode(v).decode() for k, v in sorted(files.items())},
        published_by=published_by,
    )


def unpack(bundle: PackBundle, into: Path | None = None) -> LoadedPack:
    """Write a bundle to a directory and load it with the normal validation. Raises PackError."""
    parse_pack(bundle.yaml_text, f"<published {bundle.pack}@{bundle.version}>/{bundle.filename}")
    root = Path(into) if into is not None else Path(tempfile.mkdtemp(prefix=f"cityops-pack-{bundle.pack}-"))
    for rel, content in bundle.layers.items():
        target = (root / rel).resolve()
        if root.resolve() not in target.parents:
            raise PackError([f"{bundle.filename}:1: layer path {rel!r} leaves the pack directory"])
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(base64.b64decode(content))
    pack_file = root / bundle.filename
    pack_file.write_text(bundle.yaml_text, encoding="utf-8")
    return load_pack(pack_file)
