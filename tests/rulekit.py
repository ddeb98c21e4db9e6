"""Helpers for rule-kind unit tests: in-memory packs and layers, events, replay and stream runs."""

from __future__ import annotations

import itertools
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from rules.engine import AnyEvent, Engine, run
from rules.geo import Layer
from rules.kinds import Rule
from rules.model import Incident, Reading, Report, Track
from rules.pack import LoadedPack, Pack, parse_pack

T0 = datetime(2026, 7, 1, 0, 0, tzinfo=UTC)  # 08:00 in Wuhan; a multiple of every bucket used in tests
MS = timedelta(milliseconds=1)
MIN = timedelta(minutes=1)


def square(zone_id: str, x0: float, y0: float = 0.0, size: float = 1.0, name: str | None = None) -> dict[str, Any]:
    ring = [[x0, y0], [x0 + size, y0], [x0 + size, y0 + size], [x0, y0 + size], [x0, y0]]
    return {
        "type": "Feature",
        "properties": {"zone_id": zone_id, "name": name or f"Zone {zone_id}"},
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }


def point(feature_id: str, lon: float, lat: float, name: str | None = None) -> dict[str, Any]:
    return {
        "type": "Feature",
        "properties": {"zone_id": feature_id, "name": name or feature_id},
        "geometry": {"type": "Point", "coordinates": [lon, lat]},
    }


def layer(name: str, features: list[dict[str, Any]]) -> Layer:
    return Layer.from_features(name, features)


def make_pack(
    rules: str, layers: dict[str, Layer] | None = None, *, lateness: str = "1h", tz: str = "Asia/Shanghai"
) -> LoadedPack:
    """A pack from the YAML text of its rules (indented as list items or not), with in-memory layers."""
    layers = layers or {}
    body = textwrap.indent(textwrap.dedent(rules).strip("\n"), "  ")
    head = f'pack: t\nversion: "1"\ntimezone: {tz}\nallowed_lateness: {lateness}\nlayers:\n'
    head += "".join(f"  {name}: {{file: unused.geojson}}\n" for name in layers) or "  {}\n"
    text = head + "rules:\n" + body + "\n"
    return LoadedPack(spec=parse_pack(text, "t.yaml"), path=Path("t.yaml"), layers=layers, digest="test")


def unchecked(spec: Pack, rules: Sequence[dict[str, Any]]) -> Pack:
    """``spec`` holding ``rules``, each validated on its own but not against its pack (``Pack``'s
    checks, such as a field its events do not have): for engine tests of rules the loader refuses."""
    return spec.model_copy(update={"rules": [TypeAdapter(Rule).validate_python(r) for r in rules]})


def reading(
    eid: str,
    at: timedelta,
    value: float,
    *,
    sensor: str = "s1",
    metric: str = "m",
    where: tuple[float, float] = (0.5, 0.5),
) -> Reading:
    return Reading(id=eid, ts=T0 + at, lon=where[0], lat=where[1], sensor_id=sensor, metric=metric, value=value)


def report(eid: str, at: timedelta, *, category: str = "c", where: tuple[float, float] = (0.5, 0.5)) -> Report:
    return Report(id=eid, ts=T0 + at, lon=where[0], lat=where[1], category=category)


def track(
    eid: str,
    at: timedelta,
    where: tuple[float, float],
    *,
    obj: str = "o1",
    kind: str = "drone",
    speed: float | None = None,
    alt: float | None = None,
) -> Track:
    return Track(
        id=eid, ts=T0 + at, lon=where[0], lat=where[1], object_id=obj, object_type=kind, speed_mps=speed, alt_m=alt
    )


def fire(pack: LoadedPack, events: Sequence[AnyEvent], batch_size: int = 1000) -> list[Incident]:
    """Replay: the final snapshot of every incident, sorted by (rule, window start, subject)."""
    latest = run(Engine(pack), list(events), batch_size=batch_size)
    return sorted(latest.values(), key=lambda i: (i.rule_id, i.window_start, i.subject))


def stream(pack: LoadedPack, batches: Sequence[Sequence[AnyEvent]], *, tick: bool = True) -> dict[str, Incident]:
    """Batches as the detect stage delivers them (a position each, a tick after each); the latest snapshots."""
    engine, state = Engine(pack), {}
    out: dict[str, Incident] = {}
    for offset, batch in enumerate(batches):
        outcome = engine.process(engine.enrich(list(batch)), state, position=(0, offset))
        assert outcome.late == []
        incidents = outcome.incidents + (engine.tick(state) if tick else [])
        for incident in incidents:
            if incident.id not in out or incident.revision >= out[incident.id].revision:
                out[incident.id] = incident
    return out


def cut(events: Sequence[AnyEvent], cuts: Sequence[int]) -> list[list[AnyEvent]]:
    """Events split into batches at the given indexes."""
    bounds = [0, *sorted(c for c in cuts if 0 < c < len(events)), len(events)]
    return [list(events[a:b]) for a, b in itertools.pairwise(bounds) if b > a]


def by_time(events: Sequence[AnyEvent]) -> list[AnyEvent]:
    return sorted(events, key=lambda e: (e.ts, e.id))


def east(where: tuple[float, float], metres: float) -> tuple[float, float]:
    """A point ``metres`` east of ``where`` on the sphere (same latitude, to ~1e-9 relative)."""
    import math

    from rules.kinds.base import EARTH_M

    return (where[0] + math.degrees(metres / (EARTH_M * math.cos(math.radians(where[1])))), where[1])


def north(where: tuple[float, float], metres: float) -> tuple[float, float]:
    import math

    from rules.kinds.base import EARTH_M

    return (where[0], where[1] + math.degrees(metres / EARTH_M))
