"""A metric grid over WGS-84 for "within R metres" searches kept in rule state (cluster, correlation).

Rows are ``R`` metres of latitude tall. Each row's columns are ``R`` metres wide at the row's
edge nearest the pole, so a cell is never narrower than ``R`` in either direction. Two points at
most ``R`` apart are therefore in the same or neighbouring rows, and ``cells_near`` lists every
cell of those rows that can hold a point within ``R`` of a given point: the 3×3 neighbourhood of
its cell, give or take a column where rows differ in width. The grid is a pure function of ``R``:
the same point always lands in the same cell, in replay as in the stream. Longitudes do not wrap
at ±180°.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rules.kinds.base import EARTH_M

M_PER_DEG = EARTH_M * math.pi / 180.0  # metres per degree of latitude (and of longitude at the equator)
SLACK = 1.01  # the haversine and its flat approximation differ by far less than 1 % below 50 km


@dataclass(frozen=True)
class Grid:
    """Cells of about ``radius_m`` × ``radius_m``; a cell is ``(row, col)``."""

    radius_m: float

    @property
    def dy(self) -> float:
        return self.radius_m / M_PER_DEG

    def dx(self, row: int) -> float:
        """Width in degrees of the cells of ``row``."""
        edge = max(abs(row * self.dy), abs((row + 1) * self.dy))
        return self.dy / max(0.01, math.cos(math.radians(min(89.0, edge))))

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
