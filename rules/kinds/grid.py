"""A metric grid over WGS-84 for "within R metres" searches kept in rule state (cluster, correlation).

Rows are ``R`` metres of latitude tall. Each row's columns are ``R`` metres wide at the row's
edge nearest the pole, so a cell is never narrower than ``R`` in either direction. Two points at
most ``R`` apart are therefore in the same or neighbouring rows, and ``cells_near`` lists every
cell of those rows that can hold a point within ``R`` of a given point: the 3×3 neighbourhood of
its cell, give or take a column where rows differ in width. The grid is a pure function of ``R``:
the same point always lands in the same cell, in replay as in the stream. Longitudes do not wrap
at ±180°.

``Near`` answers "which stored records lie within ``R`` of this point" for one batch: exactly the
scalar haversine filter over ``cells_near``, memoised per point and computed many points at a time
with numpy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import compress
from typing import Any

import numpy as np

from rules.kinds.base import EARTH_M, within_metres

M_PER_DEG = EARTH_M * math.pi / 180.0  # metres per degree of latitude (and of longitude at the equator)
SLACK = 1.01  # the haversine and its flat approximation differ by far less than 1 % below 50 km


@dataclass(frozen=True)
class Grid:
    """Cells of about ``radius_m`` × ``radius_m``; a cell is ``(row, col)``."""

    radius_m: float
    _widths: dict[int, float] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def dy(self) -> float:
        return self.radius_m / M_PER_DEG

    def dx(self, row: int) -> float:
        """Width in degrees of the cells of ``row`` (computed once per row)."""
        width = self._widths.get(row)
        if width is None:
            edge = max(abs(row * self.dy), abs((row + 1) * self.dy))
            width = self._widths[row] = self.dy / max(0.01, math.cos(math.radians(min(89.0, edge))))
        return width

    def cell(self, lon: float, lat: float) -> tuple[int, int]:
        row = math.floor(lat / self.dy)
        return row, math.floor(lon / self.dx(row))

    def cells_near(self, lon: float, lat: float) -> list[tuple[int, int]]:
        """Every cell that can hold a point within ``radius_m`` of (lon, lat)."""
        dlat = self.dy * SLACK
        pole = min(89.0, abs(lat) + dlat)
        dlon = dlat / max(0.01, math.cos(math.radians(pole)))
        out = []
        for row in range(math.floor((lat - dlat) / self.dy), math.floor((lat + dlat) / self.dy) + 1):
            width = self.dx(row)
            for col in range(math.floor((lon - dlon) / width), math.floor((lon + dlon) / width) + 1):
                out.append((row, col))
        return out


Cell = tuple[int, int]
Point = tuple[float, float]


class Near:
    """The stored records within ``grid.radius_m`` of points, for one batch of one rule.

    ``records(cell)`` gives the records of a cell; ``lon_at`` and ``lat_at`` are the indices of a
    record's coordinates. ``near(lon, lat)`` is exactly::

        [r for cell in grid.cells_near(lon, lat) for r in records(cell)
         if metres_between(lon, lat, r[lon_at], r[lat_at]) <= grid.radius_m]

    the same records in the same order, with the same inclusive radius (``within_metres``
    rechecks distances at the radius with the scalar haversine). Answers are memoised per point,
    and ``prefetch`` computes those of many points in one numpy pass, so the cells must not change
    while a ``Near`` is in use: build one per batch, after the batch's records are stored.
    """

    def __init__(self, grid: Grid, records: Callable[[Cell], Sequence[Any]], lon_at: int, lat_at: int) -> None:
        self.grid = grid
        self.records = records
        self.lon_at = lon_at
        self.lat_at = lat_at
        self._cells: dict[Cell, tuple[Sequence[Any], list[float], list[float]] | None] = {}
        self._found: dict[Point, list[Any]] = {}

    def near(self, lon: float, lat: float) -> list[Any]:
        """Records within the radius of (lon, lat), in cell order then stored order (do not mutate)."""
        point = (lon, lat)
        found = self._found.get(point)
        if found is None:
            self.prefetch([point])
            found = self._found[point]
        return found

    def prefetch(self, points: Iterable[Point]) -> None:
        """Compute ``near`` for every point not yet known, all distances in one numpy pass."""
        todo = [p for p in dict.fromkeys(points) if p not in self._found]
        if not todo:
            return
        cells = self._cells
        pools: list[list[Any]] = []
        sizes: list[int] = []
        lons: list[float] = []
        lats: list[float] = []
        for lon, lat in todo:
            pool: list[Any] = []
            for cell in self.grid.cells_near(lon, lat):
                if cell in cells:
                    stored = cells[cell]
                else:
                    stored = cells[cell] = self._load(cell)
                if stored is not None:
                    pool += stored[0]
                    lons += stored[1]
                    lats += stored[2]
            pools.append(pool)
            sizes.append(len(pool))
        inside: list[bool] = []
        if lons:
            query = np.array(todo, dtype=np.float64)
            inside = within_metres(
                np.repeat(query[:, 0], sizes),
                np.repeat(query[:, 1], sizes),
                np.array(lons, dtype=np.float64),
                np.array(lats, dtype=np.float64),
                self.grid.radius_m,
            ).tolist()
        start = 0
        for point, pool, size in zip(todo, pools, sizes, strict=True):
            self._found[point] = list(compress(pool, inside[start : start + size]))
            start += size

    def _load(self, cell: Cell) -> tuple[Sequence[Any], list[float], list[float]] | None:
        """A cell's records and their coordinates (None when it has none)."""
        stored = self.records(cell)
        if not stored:
            return None
        return stored, [r[self.lon_at] for r in stored], [r[self.lat_at] for r in stored]


def merge_records(records: list[Any], new: Iterable[Any]) -> bool:
    """Add to ``records`` (kept sorted by (time, id), ``r[0]`` and ``r[1]``) each of ``new`` whose
    (time, id) is not there yet, then sort once. Whether any was added."""
    seen = {(r[0], r[1]) for r in records}
    added = False
    for record in new:
        if (record[0], record[1]) not in seen:
            seen.add((record[0], record[1]))
            records.append(record)
            added = True
    if added:
        records.sort(key=lambda r: (r[0], r[1]))
    return added
