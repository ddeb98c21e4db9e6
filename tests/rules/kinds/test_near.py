"""The vectorised radius search of cluster and correlation rules decides exactly as the scalar haversine.

``Near`` (rules.kinds.grid) and ``within_metres`` (rules.kinds.base) replace a per-pair
``metres_between(...) <= radius`` filter over ``Grid.cells_near``: the records found, their order
and the inclusive edge must be the same, bit for bit, also for points exactly at the radius (numpy's
sin, cos and arcsin may differ from libm's in the last bit).
"""

from __future__ import annotations

import math
import random
from datetime import timedelta
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from rulekit import fire, make_pack, north, reading, report

from rules.kinds.base import metres_between, metres_between_arrays, within_metres
from rules.kinds.grid import Grid, Near

Record = list[Any]


def _scalar_near(grid: Grid, cells: dict[tuple[int, int], list[Record]], lon: float, lat: float) -> list[Record]:
    """What ``near`` computed before it was vectorised."""
    return [
        r
        for cell in grid.cells_near(lon, lat)
        for r in cells.get(cell, [])
        if metres_between(lon, lat, r[2], r[3]) <= grid.radius_m
    ]


def _store(grid: Grid, points: list[tuple[float, float]]) -> dict[tuple[int, int], list[Record]]:
    cells: dict[tuple[int, int], list[Record]] = {}
    for i, (lon, lat) in enumerate(points):
        cells.setdefault(grid.cell(lon, lat), []).append([i, f"e{i}", lon, lat])
    return cells


def _edges(radius: float) -> list[float]:
    """The radius and the doubles either side of it."""
    return [math.nextafter(radius, 0.0), radius, math.nextafter(radius, math.inf)]


# -- within_metres ------------------------------------------------------------------------------


def test_within_metres_matches_the_scalar_at_the_radius_where_numpy_and_libm_differ() -> None:
    rng = random.Random(11)
    n = 20_000
    lon1 = np.array([114 + rng.random() * 0.6 for _ in range(n)])
    lat1 = np.array([30.3 + rng.random() * 0.6 for _ in range(n)])
    lon2 = lon1 + np.array([rng.uniform(-0.01, 0.01) for _ in range(n)])
    lat2 = lat1 + np.array([rng.uniform(-0.01, 0.01) for _ in range(n)])
    scalar = [metres_between(*map(float, p)) for p in zip(lon1, lat1, lon2, lat2, strict=True)]
    vector = metres_between_arrays(lon1, lat1, lon2, lat2)
    # the radius each pair is exactly at, by either computation (they differ for a few pairs)
    for i in [*range(200), *np.flatnonzero(vector != np.array(scalar)).tolist()]:
        for radius in {scalar[i], float(vector[i])}:
            for edge in _edges(radius):
                got = within_metres(lon1, lat1, lon2, lat2, edge)
                assert got.tolist() == [d <= edge for d in scalar], (i, edge)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(-179.0, 179.0),
            st.floats(-85.0, 85.0),
            st.floats(-0.02, 0.02),
            st.floats(-0.02, 0.02),
        ),
        min_size=1,
        max_size=30,
    ),
    st.data(),
)
def test_within_metres_is_the_scalar_decision(
    pairs: list[tuple[float, float, float, float]], data: st.DataObject
) -> None:
    lon1 = np.array([p[0] for p in pairs])
    lat1 = np.array([p[1] for p in pairs])
    lon2 = np.array([p[0] + p[2] for p in pairs])
    lat2 = np.array([max(-90.0, min(90.0, p[1] + p[3])) for p in pairs])
    scalar = [metres_between(*map(float, p)) for p in zip(lon1, lat1, lon2, lat2, strict=True)]
    at = data.draw(st.integers(0, len(pairs) - 1))
    for radius in [*_edges(scalar[at]), 300.0]:
        if radius > 0:
            assert within_metres(lon1, lat1, lon2, lat2, radius).tolist() == [d <= radius for d in scalar]


# -- Near ---------------------------------------------------------------------------------------


@st.composite
def _scene(draw: st.DrawFn) -> tuple[Grid, list[tuple[float, float]], list[tuple[float, float]]]:
    """A grid, stored points and query points, one query exactly at the radius from a stored point."""
    lon0 = draw(st.floats(-170.0, 170.0))
    lat0 = draw(st.floats(-70.0, 70.0))
    spread = draw(st.sampled_from([0.001, 0.005, 0.02]))
    offset = st.floats(-spread, spread)
    stored = [(lon0 + draw(offset), lat0 + draw(offset)) for _ in range(draw(st.integers(1, 40)))]
    queries = [(lon0 + draw(offset), lat0 + draw(offset)) for _ in range(draw(st.integers(1, 15)))]
    queries += draw(st.lists(st.sampled_from(stored), max_size=3))  # a stored event's own point
    q, s = draw(st.sampled_from(queries)), draw(st.sampled_from(stored))
    radius = metres_between(*q, *s)  # that stored point lies exactly at the radius of that query
    radius = draw(st.sampled_from(_edges(radius))) if radius > 0 else draw(st.sampled_from([50.0, 300.0, 500.0]))
    return Grid(radius), stored, queries


@settings(max_examples=300, deadline=None)
@given(_scene(), st.booleans())
def test_near_is_the_scalar_filter_in_the_same_order(
    scene: tuple[Grid, list[tuple[float, float]], list[tuple[float, float]]], prefetch: bool
) -> None:
    grid, stored, queries = scene
    cells = _store(grid, stored)
    near = Near(grid, lambda cell: cells.get(cell, []), 2, 3)
    if prefetch:
        near.prefetch(queries)
    for lon, lat in queries:
        expected = _scalar_near(grid, cells, lon, lat)
        assert near.near(lon, lat) == expected
        assert near.near(lon, lat) == expected  # memoised: the same answer again
        everything = [
            r for r in (x for c in cells.values() for x in c) if metres_between(lon, lat, r[2], r[3]) <= grid.radius_m
        ]
        assert sorted(r[0] for r in expected) == sorted(r[0] for r in everything)  # the grid misses nothing


def test_near_reads_each_cell_once_and_takes_records_at_any_index() -> None:
    grid = Grid(300)
    cells = {
        grid.cell(114.35, 30.5): [["x", 114.35, 30.5, "zone"]],
        grid.cell(114.351, 30.5): [["y", 114.351, 30.5, None]],
    }
    reads: list[tuple[int, int]] = []

    def records(cell: tuple[int, int]) -> list[Record]:
        reads.append(cell)
        return cells.get(cell, [])

    near = Near(grid, records, -3, -2)
    near.prefetch([(114.35, 30.5), (114.3501, 30.5)])
    assert near.near(114.35, 30.5) == [r for c in grid.cells_near(114.35, 30.5) for r in cells.get(c, [])]
    assert sorted(r[0] for r in near.near(114.3501, 30.5)) == ["x", "y"]
    assert near.near(120.0, 10.0) == []
    assert len(reads) == len(set(reads))


# -- the kinds, with an event exactly at the radius ---------------------------------------------

P = (114.35, 30.50)


def _cluster_pack(radius: float) -> Any:
    return make_pack(f"""
- id: dump
  kind: cluster
  title: Dumping cluster
  category: sanitation
  match: {{kind: report, category: c}}
  min_events: 3
  radius_m: {radius!r}
  within: 30m
""")


def test_a_cluster_member_exactly_at_the_radius_counts_and_one_a_double_further_does_not() -> None:
    edge = north(P, 300.0)
    radius = metres_between(*P, *edge)
    events = [report("a", timedelta(0), where=P), report("b", timedelta(minutes=1), where=P)]
    events.append(report("c", timedelta(minutes=2), where=edge))
    assert [i.evidence.event_ids for i in fire(_cluster_pack(radius), events)] == [["a", "b", "c"]]
    assert fire(_cluster_pack(math.nextafter(radius, 0.0)), events) == []


def _correlation_pack(radius: float) -> Any:
    return make_pack(f"""
- id: flood
  kind: correlation
  title: Flood confirmed
  category: flood
  iot: {{metric: water_level_cm, op: ">", value: 30}}
  categories: [waterlogging]
  min_reports: 1
  radius_m: {radius!r}
  within: 30m
""")


def test_a_report_exactly_at_the_radius_corroborates_and_one_a_double_further_does_not() -> None:
    edge = north(P, 500.0)
    radius = metres_between(*P, *edge)
    events = [
        reading("r1", timedelta(minutes=1), 35.0, metric="water_level_cm", where=P),
        report("w1", timedelta(minutes=2), category="waterlogging", where=edge),
    ]
    [incident] = fire(_correlation_pack(radius), events)
    assert (incident.certainty, incident.evidence.event_ids) == ("observed", ["r1", "w1"])
    assert fire(_correlation_pack(math.nextafter(radius, 0.0)), events) == []
