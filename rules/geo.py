"""Zone layers: GeoJSON polygons in one STRtree per layer, queried a whole batch at a time."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from numpy.typing import NDArray

from rules.crs import CRS, to_wgs84
from rules.errors import LayerError

logger = logging.getLogger(__name__)

#: How many points a ``Locator`` remembers (about 80 bytes each, so about 10 MB at most).
POINT_CACHE = 131_072
#: A ``Locator`` looks batches up in its memory while at least this share of recent points was there
MIN_HIT_RATE = 0.5
#: Below ``MIN_HIT_RATE``, one batch in this many still goes through the memory (and fills it)
PROBE_EVERY = 16


@dataclass(frozen=True)
class Layer:
    """An immutable set of zones with a spatial index. Coordinates are WGS-84."""

    name: str
    ids: tuple[str, ...]
    names: tuple[str, ...]
    geoms: NDArray[np.object_]
    properties: tuple[dict[str, Any], ...]
    tree: shapely.STRtree = field(repr=False)

    @classmethod
    def from_features(
        cls,
        name: str,
        features: list[dict[str, Any]],
        *,
        id_property: str = "zone_id",
        name_property: str = "name",
        crs: CRS = CRS.WGS84,
        origin: str = "<memory>",
    ) -> Layer:
        """Build a layer from GeoJSON features, converting coordinates to WGS-84 once."""
        ids: list[str] = []
        names: list[str] = []
        props: list[dict[str, Any]] = []
        geoms: list[shapely.Geometry] = []
        for number, feature in enumerate(features):
            properties = feature.get("properties") or {}
            zone_id = properties.get(id_property, feature.get("id"))
            if zone_id is None:
                raise LayerError(f"layer '{name}' ({origin}): feature #{number} has no '{id_property}' property")
            try:
                geom = shapely.geometry.shape(feature["geometry"])
            except (KeyError, TypeError, ValueError, shapely.errors.GEOSException) as exc:
                raise LayerError(f"layer '{name}' ({origin}): zone '{zone_id}' has no valid geometry: {exc}") from exc
            if crs is not CRS.WGS84:
                geom = shapely.transform(geom, lambda xy: np.column_stack(to_wgs84(xy[:, 0], xy[:, 1], crs)))
            if not geom.is_valid:
                geom = shapely.make_valid(geom)
            ids.append(str(zone_id))
            names.append(str(properties.get(name_property, zone_id)))
            props.append(dict(properties))
            geoms.append(geom)
        if len(set(ids)) != len(ids):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            raise LayerError(f"layer '{name}' ({origin}): duplicate zone ids {dupes}")
        array = np.array(geoms, dtype=object)
        shapely.prepare(array)
        return cls(name, tuple(ids), tuple(names), array, tuple(props), shapely.STRtree(array))

    @classmethod
    def from_file(
        cls,
        name: str,
        path: Path,
        *,
        id_property: str = "zone_id",
        name_property: str = "name",
        crs: CRS = CRS.WGS84,
    ) -> Layer:
        """Load a GeoJSON FeatureCollection file."""
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise LayerError(f"layer '{name}': cannot read {path}: {exc}") from exc
        features = doc.get("features") if isinstance(doc, dict) else None
        if not isinstance(features, list):
            raise LayerError(f"layer '{name}': {path} is not a GeoJSON FeatureCollection")
        layer = cls.from_features(
            name, features, id_property=id_property, name_property=name_property, crs=crs, origin=str(path)
        )
        logger.info("layer loaded name=%s zones=%d path=%s crs=%s", name, len(layer.ids), path, crs.value)
        return layer

    def query(self, lon: NDArray[np.float64], lat: NDArray[np.float64]) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
        """(point, zone) index pairs of every zone containing a point, sorted by point then zone.

        One vectorised STRtree query for the whole batch; a point on a border is in both zones.
        """
        if len(lon) == 0:
            empty = np.zeros(0, dtype=np.intp)
            return empty, empty
        # The tree gives the bounding-box candidates; the exact test then runs on the zones, which
        # are prepared. The tree's own predicate prepares the points instead, and a point against
        # a detailed polygon (a district's thousands of vertices) was 20x slower that way.
        point_idx, zone_idx = self.tree.query(shapely.points(lon, lat))
        inside = shapely.intersects_xy(self.geoms[zone_idx], lon[point_idx], lat[point_idx])
        point_idx, zone_idx = point_idx[inside], zone_idx[inside]
        order = np.lexsort((zone_idx, point_idx))
        return point_idx[order].astype(np.intp, copy=False), zone_idx[order].astype(np.intp, copy=False)

    def locate(self, lon: NDArray[np.float64], lat: NDArray[np.float64]) -> list[list[str]]:
        """Zone ids containing each point, in one vectorised STRtree query for the whole batch."""
        result: list[list[str]] = [[] for _ in range(len(lon))]
        point_idx, zone_idx = self.query(lon, lat)
        for p, z in zip(point_idx.tolist(), zone_idx.tolist(), strict=True):
            result[p].append(self.ids[z])
        return result

    @cached_property
    def index(self) -> dict[str, int]:
        """Position of each zone id in ``ids``."""
        return {zone_id: n for n, zone_id in enumerate(self.ids)}

    def name_of(self, zone_id: str) -> str:
        """Human name of a zone (falls back to its id)."""
        n = self.index.get(zone_id)
        return zone_id if n is None else self.names[n]

    def to_geojson(self) -> dict[str, Any]:
        """The layer as a WGS-84 FeatureCollection (for maps)."""
        return {
            "type": "FeatureCollection",
            "features": [
                {
                    "type": "Feature",
                    "properties": {**props, "zone_id": zid, "name": zname},
                    "geometry": shapely.geometry.mapping(geom),
                }
                for zid, zname, props, geom in zip(self.ids, self.names, self.properties, self.geoms, strict=True)
            ],
        }


class Locator:
    """Locates points in a fixed set of layers, remembering the zones of the points it has seen.

    Fixed sensors report from the same coordinates every time, so most points of a batch were
    located before: their zones come from memory, and the others go through one vectorised query
    per layer. One entry per point holds its zones in every layer. The memory starts again when
    it holds ``POINT_CACHE`` points (moving objects and reports bring new points all the time).

    A point not found costs more this way than in a plain query. So once the memory has filled up
    (before that it is still learning the points), while fewer than ``MIN_HIT_RATE`` of the recent
    points were found (a stream of moving objects, more sensors than the memory holds),
    ``worth_asking`` says no for all but one batch in ``PROBE_EVERY``, and the caller queries the
    layers without the memory.
    """

    def __init__(self, layers: Mapping[str, Layer]) -> None:
        self.layers = dict(layers)
        #: (lon + lat*1j) -> the point's zone positions (ascending) in each layer, in ``layers`` order
        self.points: dict[complex, tuple[tuple[int, ...], ...]] = {}
        #: one tuple object per distinct value of ``points``, shared by every point that has it
        self._shared: dict[tuple[tuple[int, ...], ...], tuple[tuple[int, ...], ...]] = {}
        #: moving average of the share of a batch's points found in memory (halved every batch)
        self.hit_rate = 1.0
        self.filled = False  # whether the memory has been full (and started again) yet
        self._passed = 0

    def worth_asking(self) -> bool:
        """Whether the next batch should go through ``zone_sets`` (see the class)."""
        if not self.filled or self.hit_rate >= MIN_HIT_RATE:
            return True
        self._passed += 1
        if self._passed < PROBE_EVERY:
            return False
        self._passed = 0
        return True

    def zone_sets(self, lon: NDArray[np.float64], lat: NDArray[np.float64]) -> list[tuple[tuple[int, ...], ...]]:
        """For each point, the positions (in each layer's ``ids``, ascending) of the zones holding it."""
        points = self.points
        keys: list[complex] = (lon + lat * 1j).tolist()
        found: list[tuple[tuple[int, ...], ...] | None] = [points.get(k) for k in keys]
        missed = [i for i, sets in enumerate(found) if sets is None]
        if keys:
            self.hit_rate = (self.hit_rate + 1 - len(missed) / len(keys)) / 2
        if not missed:
            return found  # type: ignore[return-value]
        rows = np.array(missed, dtype=np.intp)
        per_layer = []
        for layer in self.layers.values():
            point_idx, zone_idx = layer.query(lon[rows], lat[rows])
            starts = np.searchsorted(point_idx, np.arange(len(rows) + 1)).tolist()
            members = zone_idx.tolist()
            per_layer.append([tuple(members[a:b]) for a, b in pairwise(starts)])
        if len(points) + len(missed) > POINT_CACHE:
            points.clear()
            self._shared.clear()
            self.filled = True
        room = POINT_CACHE - len(points)
        shared = self._shared
        combined = list(zip(*per_layer, strict=True)) if per_layer else [()] * len(missed)  # no layers: ()
        for n, (i, sets) in enumerate(zip(missed, combined, strict=True)):
            sets = shared.setdefault(sets, sets)
            found[i] = sets
            key = keys[i]
            if n < room and key == key:  # not NaN: a NaN key would never be found again
                points[key] = sets
        return found  # type: ignore[return-value]
