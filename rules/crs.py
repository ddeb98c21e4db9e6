"""Coordinate reference systems used by Chinese map providers: WGS-84, GCJ-02 and BD-09.

GPS devices report WGS-84. Amap (Gaode) and Tencent report GCJ-02, the state-mandated
obfuscated datum ("Mars coordinates"); Baidu reports BD-09, a further offset of GCJ-02.
Near Wuhan GCJ-02 sits about +0.0054 deg lon / -0.0024 deg lat (a few hundred metres) from
WGS-84, so layers and events must be brought to one CRS before any geometry test.

Formula origin:
    The forward WGS-84 -> GCJ-02 polynomial (Krasovsky 1940 ellipsoid, a = 6378245 m,
    e^2 = 0.00669342162296594323, origin shifted to 105E 35N) is the widely published
    reverse-engineered form that circulated as ``Converter.java`` (emq project) and the
    CodePlex "on4wp7" sources, later collected in ``googollee/eviltransform`` (MIT) and
    ``wandergis/coordtransform`` (MIT). The GCJ-02 <-> BD-09 rotation/scale
    (x_pi = pi * 3000 / 180, offsets 0.0065 / 0.006) is from the same sources.
    The "out of China" box (72.004-137.8347 E, 0.8293-55.8271 N) is eviltransform's.

Inverses:
    Neither forward transform has a closed-form inverse. The one-step inverse that most
    libraries ship (``w = g - delta(g)``) is off by up to ~1e-5 deg (~1 m). Here both
    inverses are solved by fixed-point iteration ``w <- w - (forward(w) - g)`` seeded with
    the one-step estimate; the map contracts by less than 7e-3 per step, so a fixed 5
    iterations reach float64 resolution (~1e-14 deg). BD-09 -> GCJ-02 is refined the same
    way (the published closed form is off by up to ~2e-6 deg).

Why no library:
    The PyPI candidates were inspected (``pip download --no-deps``):
    ``coordtransform`` 0.2.1 (MIT, 2026) has only the one-step GCJ-02 inverse (measured
    8.7e-6 deg error at Wuhan), returns Python lists, is untyped, and ships cp311/cp312
    wheels only; ``eviltransform`` 0.1.1 (2018, scalar, licence missing from its metadata,
    uses the WGS-84 radius in place of Krasovsky's); ``coord-convert`` 0.2.1 (2019, scalar,
    pulls in fiona/click/tqdm); ``prcoords`` 1.0.2 (2019, scalar, CC0/GPLv3, stops
    iterating at 1e-5). None is vectorised and exact, and the formulas are ~40 lines of numpy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import StrEnum
from typing import TypeVar, overload

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "CHINA_BBOX",
    "CRS",
    "bd09_to_gcj02",
    "bd09_to_wgs84",
    "gcj02_to_bd09",
    "gcj02_to_wgs84",
    "out_of_china",
    "to_wgs84",
    "wgs84_to_bd09",
    "wgs84_to_gcj02",
]

logger = logging.getLogger(__name__)

Floats = NDArray[np.float64]
#: A coordinate: a float, or a numpy array of floats (any shape). Output matches input.
C = TypeVar("C", float, Floats)
_Transform = Callable[[Floats, Floats], tuple[Floats, Floats]]

_A = 6378245.0  # Krasovsky 1940 semi-major axis, metres
_EE = 0.00669342162296594323  # Krasovsky 1940 first eccentricity squared
_X_PI = np.pi * 3000.0 / 180.0
_BD_DLON = 0.0065
_BD_DLAT = 0.006
# Fixed-point steps of the inverses. The offsets change by at most ~7e-3 deg per deg inside
# the China box, so the error shrinks ~150-fold per step: 5e-5 deg after the one-step seed,
# below 1e-13 deg after 4 steps; the 5th reaches float64 resolution.
_ITERATIONS = 5

#: (min_lon, min_lat, max_lon, max_lat) outside which GCJ-02 equals WGS-84.
CHINA_BBOX = (72.004, 0.8293, 137.8347, 55.8271)


class CRS(StrEnum):
    """Coordinate reference system of incoming coordinates. Lookup ignores case, '-' and '_'."""

    WGS84 = "WGS84"
    GCJ02 = "GCJ02"
    BD09 = "BD09"

    @classmethod
    def _missing_(cls, value: object) -> CRS | None:
        if isinstance(value, str):
            key = value.upper().replace("-", "").replace("_", "")
            for member in cls:
                if member.value == key:
                    return member
        return None


def _arrays(lon: C, lat: C) -> tuple[Floats, Floats]:
    x, y = np.broadcast_arrays(np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64))
    return x, y


@overload
def _like(values: Floats, template: float) -> float: ...
@overload
def _like(values: Floats, template: Floats) -> Floats: ...
def _like(values: Floats, template: float | Floats) -> float | Floats:
    """Return ``values`` as a float when the input was scalar, else as an array."""
    if values.ndim == 0 and not isinstance(template, np.ndarray):
        return float(values)
    return values


def out_of_china(lon: C, lat: C) -> NDArray[np.bool_]:
    """True where a point lies outside the box in which GCJ-02 is applied."""
    x, y = _arrays(lon, lat)
    min_lon, min_lat, max_lon, max_lat = CHINA_BBOX
    inside = (x >= min_lon) & (x <= max_lon) & (y >= min_lat) & (y <= max_lat)
    return np.asarray(~inside)


def _gcj_delta(lon: Floats, lat: Floats) -> tuple[Floats, Floats]:
    """GCJ-02 minus WGS-84, in degrees, evaluated at a WGS-84 position (no box check)."""
    x = lon - 105.0
    y = lat - 35.0
    common = (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
    dlat_m = (
        -100.0
        + 2.0 * x
        + 3.0 * y
        + 0.2 * y * y
        + 0.1 * x * y
        + 0.2 * np.sqrt(np.abs(x))
        + common
        + (20.0 * np.sin(y * np.pi) + 40.0 * np.sin(y / 3.0 * np.pi)) * 2.0 / 3.0
        + (160.0 * np.sin(y / 12.0 * np.pi) + 320.0 * np.sin(y * np.pi / 30.0)) * 2.0 / 3.0
    )
    dlon_m = (
        300.0
        + x
        + 2.0 * y
        + 0.1 * x * x
        + 0.1 * x * y
        + 0.1 * np.sqrt(np.abs(x))
        + common
        + (20.0 * np.sin(x * np.pi) + 40.0 * np.sin(x / 3.0 * np.pi)) * 2.0 / 3.0
        + (150.0 * np.sin(x / 12.0 * np.pi) + 300.0 * np.sin(x / 30.0 * np.pi)) * 2.0 / 3.0
    )
    rad_lat = lat / 180.0 * np.pi
    magic = 1.0 - _EE * np.sin(rad_lat) ** 2
    sqrt_magic = np.sqrt(magic)
    dlat = (dlat_m * 180.0) / ((_A * (1.0 - _EE)) / (magic * sqrt_magic) * np.pi)
    dlon = (dlon_m * 180.0) / (_A / sqrt_magic * np.cos(rad_lat) * np.pi)
    return dlon, dlat


def _wgs_to_gcj(lon: Floats, lat: Floats) -> tuple[Floats, Floats]:
    dlon, dlat = _gcj_delta(lon, lat)
    return lon + dlon, lat + dlat


def _gcj_to_bd(lon: Floats, lat: Floats) -> tuple[Floats, Floats]:
    z = np.hypot(lon, lat) + 0.00002 * np.sin(lat * _X_PI)
    theta = np.arctan2(lat, lon) + 0.000003 * np.cos(lon * _X_PI)
    return z * np.cos(theta) + _BD_DLON, z * np.sin(theta) + _BD_DLAT


def _bd_to_gcj_closed_form(lon: Floats, lat: Floats) -> tuple[Floats, Floats]:
    x = lon - _BD_DLON
    y = lat - _BD_DLAT
    z = np.hypot(x, y) - 0.00002 * np.sin(y * _X_PI)
    theta = np.arctan2(y, x) - 0.000003 * np.cos(x * _X_PI)
    return z * np.cos(theta), z * np.sin(theta)


def _invert(
    forward: _Transform, target_lon: Floats, target_lat: Floats, lon: Floats, lat: Floats
) -> tuple[Floats, Floats]:
    """Solve ``forward(p) == target`` by fixed-point iteration from the guess ``(lon, lat)``.

    A fixed number of steps, with no early exit, so that each point's result depends on that
    point alone and not on the batch it arrived in (shared polygon vertices stay identical).
    """
    for _ in range(_ITERATIONS):
        got_lon, got_lat = forward(lon, lat)
        lon = lon - (got_lon - target_lon)
        lat = lat - (got_lat - target_lat)
    return lon, lat


def wgs84_to_gcj02(lon: C, lat: C) -> tuple[C, C]:
    """Convert WGS-84 to GCJ-02. Points outside China are returned unchanged.

    Args:
        lon: Longitude(s) in degrees, a float or a numpy array.
        lat: Latitude(s) in degrees, same type as ``lon``.

    Returns:
        ``(lon, lat)`` in GCJ-02, floats or arrays shaped like the broadcast input.
    """
    x, y = _arrays(lon, lat)
    gx, gy = _wgs_to_gcj(x, y)
    outside = out_of_china(x, y)
    return _like(np.where(outside, x, gx), lon), _like(np.where(outside, y, gy), lat)


def gcj02_to_wgs84(lon: C, lat: C) -> tuple[C, C]:
    """Convert GCJ-02 to WGS-84 by iterative inversion (round trip error ~1e-14 deg).

    Points outside China are returned unchanged.
    """
    x, y = _arrays(lon, lat)
    dx, dy = _gcj_delta(x, y)
    wx, wy = _invert(_wgs_to_gcj, x, y, x - dx, y - dy)
    outside = out_of_china(x, y)
    return _like(np.where(outside, x, wx), lon), _like(np.where(outside, y, wy), lat)


def gcj02_to_bd09(lon: C, lat: C) -> tuple[C, C]:
    """Convert GCJ-02 to BD-09 (applied everywhere, as Baidu's published formula does)."""
    x, y = _arrays(lon, lat)
    bx, by = _gcj_to_bd(x, y)
    return _like(bx, lon), _like(by, lat)


def bd09_to_gcj02(lon: C, lat: C) -> tuple[C, C]:
    """Convert BD-09 to GCJ-02: exact inverse of :func:`gcj02_to_bd09` (iterated)."""
    x, y = _arrays(lon, lat)
    gx, gy = _bd_to_gcj_closed_form(x, y)
    gx, gy = _invert(_gcj_to_bd, x, y, gx, gy)
    return _like(gx, lon), _like(gy, lat)


def wgs84_to_bd09(lon: C, lat: C) -> tuple[C, C]:
    """Convert WGS-84 to BD-09 (through GCJ-02)."""
    gx, gy = wgs84_to_gcj02(lon, lat)
    return gcj02_to_bd09(gx, gy)


def bd09_to_wgs84(lon: C, lat: C) -> tuple[C, C]:
    """Convert BD-09 to WGS-84 (through GCJ-02)."""
    gx, gy = bd09_to_gcj02(lon, lat)
    return gcj02_to_wgs84(gx, gy)


def to_wgs84(lon: C, lat: C, crs: CRS) -> tuple[C, C]:
    """Convert coordinates given in ``crs`` to WGS-84.

    >>> to_wgs84(114.3, 30.6, CRS.WGS84)
    (114.3, 30.6)
    """
    if crs is CRS.WGS84:
        return lon, lat
    if crs is CRS.GCJ02:
        return gcj02_to_wgs84(lon, lat)
    if crs is CRS.BD09:
        return bd09_to_wgs84(lon, lat)
    raise ValueError(f"unknown CRS {crs!r}; expected one of {[c.value for c in CRS]}")
