"""Zone outlines for CAP areas, from the rule pack's layers (simplified, cached per zone)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache

import shapely

from rules.geo import Layer
from sinks.alerts.cap import Ring


def exterior_rings(geom: shapely.Geometry, tolerance_deg: float) -> list[list[tuple[float, float]]]:
    """The exterior rings (lon, lat) of a polygon or multipolygon, simplified, largest first."""
    simple = shapely.simplify(geom, tolerance_deg, preserve_topology=True) if tolerance_deg > 0 else geom
    parts = [p for p in shapely.get_parts(simple) if isinstance(p, shapely.Polygon) and not p.is_empty]
    parts.sort(key=lambda p: p.area, reverse=True)
    return [[(float(x), float(y)) for x, y in p.exterior.coords] for p in parts]


class ZoneOutlines:
    """``(layer, zone id) -> rings`` over a pack's layers; a ``publisher.ZoneLookup``."""

    def __init__(self, layers: Mapping[str, Layer], *, tolerance_deg: float = 0.001, max_parts: int = 8) -> None:
        self.layers = dict(layers)
        self.tolerance_deg = tolerance_deg
        self.max_parts = max_parts
        self._cached = lru_cache(maxsize=4096)(self._rings)

    def _rings(self, layer: str, zone_id: str) -> tuple[tuple[tuple[float, float], ...], ...] | None:
        found = self.layers.get(layer)
        if found is None or zone_id not in found.ids:
            return None
        geom = found.geoms[found.ids.index(zone_id)]
        rings = exterior_rings(geom, self.tolerance_deg)[: self.max_parts]
        return tuple(tuple(r) for r in rings) or None

    def __call__(self, layer: str | None, zone_id: str | None) -> Sequence[Ring] | None:
        if layer is None or zone_id is None:
            return None
        return self._cached(layer, zone_id)
