"""Rules keyed by grid cell across partitions: spread copies and owned incident keys give replay's incidents.

Events are partitioned by district. A cluster or a correlation on a district border has events in
two partitions, possibly owned by two workers with separate state. The events such rules may
select are copied to every partition (``Kind.spreads``); a cluster's block is emitted by the one
partition that owns it.
"""

from __future__ import annotations

import functools
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from rulekit import layer, make_pack, square

from rules.engine import Engine
from rules.model import Incident
from rules.pack import LoadedPack, load_pack
from rules.pipeline import Pipeline, decode_envelope, encode_tick, partition_for, zone_route
from rules.replay import replay

WUHAN = Path(__file__).resolve().parents[2] / "rules" / "packs" / "wuhan" / "pack.yaml"
PARTITIONS = 4
SPREADING = {"sanitation.dumping-cluster", "flood.waterlogging-confirmed"}


@functools.cache
def _wuhan() -> LoadedPack:
    return load_pack(WUHAN)


def _border_events() -> list[dict[str, Any]]:
    """At every border between districts of different partitions: a dumping cluster and a confirmed flood.

    The cluster has two reports on one side and one on the other; the water-level sensor is on one
    side and both waterlogging reports on the other.
    """
    layer = _wuhan().layers["districts"]
    geoms = dict(zip(layer.ids, layer.geoms, strict=True))
    events: list[dict[str, Any]] = []
    rng = np.random.default_rng(5)
    ids = sorted(geoms)
    for n, a in enumerate(ids):
        for b in ids[n + 1 :]:
            if partition_for(zone_route(a), PARTITIONS) == partition_for(zone_route(b), PARTITIONS):
                continue
            border = geoms[a].boundary.intersection(geoms[b].boundary)
            if border.length < 0.01:
                continue
            p = border.interpolate(0.5, normalized=True)
            lon, lat = p.x + rng.uniform(-0.0008, 0.0008, 400), p.y + rng.uniform(-0.0008, 0.0008, 400)
            where = layer.locate(lon, lat)
            in_a = [(float(x), float(y)) for x, y, w in zip(lon, lat, where, strict=True) if w == [a]][:3]
            in_b = [(float(x), float(y)) for x, y, w in zip(lon, lat, where, strict=True) if w == [b]][:3]
            if len(in_a) < 3 or len(in_b) < 3:
                continue
            first = len(events) // 6 * 40  # each border its own 30-minute buckets

            def at(m: int, first: int = first) -> str:
                return f"2026-07-01T{8 + (first + m) // 60:02d}:{(first + m) % 60:02d}:00+08:00"

            tag = f"{a}-{b}"
            for k, (x, y) in enumerate([in_a[0], in_a[1], in_b[0]]):
                events.append(
                    {
                        "kind": "report",
                        "id": f"dump-{tag}-{k}",
                        "ts": at(k),
                        "lon": x,
                        "lat": y,
                        "category": "illegal_dumping",
                    }
                )
            events.append(
                {
                    "kind": "reading",
                    "id": f"wl-{tag}",
                    "ts": at(3),
                    "lon": in_a[2][0],
                    "lat": in_a[2][1],
                    "sensor_id": f"wl-{tag}",
                    "metric": "water_level_cm",
                    "value": 45.0,
                }
            )
            for k, (x, y) in enumerate(in_b[1:3]):
                events.append(
                    {
                        "kind": "report",
                        "id": f"wlog-{tag}-{k}",
                        "ts": at(4 + k),
                        "lon": x,
                        "lat": y,
                        "category": "waterlogging",
                    }
                )
    events.sort(key=lambda e: (e["ts"], e["id"]))
    return events


def _signature(incidents: Any) -> dict[str, tuple[str, float | None, int, str]]:
    return {i.id: (i.rule_id, i.value, i.evidence.count, i.severity) for i in incidents if i.rule_id in SPREADING}


def _two_workers(
    events: list[dict[str, Any]],
    owners: list[set[int]],
    *,
    spread: bool = True,
    emitters: dict[str, set[int]] | None = None,
    pack: LoadedPack | None = None,
    size: int = 5,
) -> dict[str, Incident]:
    """Ingest raw messages of ``size`` events, then detect per partition, each worker with its own engine and state.

    Small envelopes take the engine's event-by-event path, large ones (24 events or more) its columns.
    """
    pack = pack or _wuhan()
    ingest = Pipeline(Engine(pack), partitions=PARTITIONS)
    if not spread:
        ingest.engine.spreading = frozenset()
    per_partition: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
    for offset, start in enumerate(range(0, len(events), size)):
        out = ingest.ingest(orjson.dumps({"events": events[start : start + size]}), "raw", 0, offset)
        assert out.dead == []
        for target in out.targets():
            per_partition[target].append(out.envelope(target, (0, offset)))
    workers = [(Pipeline(Engine(pack), partitions=PARTITIONS), {}) for _ in owners]
    if not spread:
        for pipeline, _ in workers:
            pipeline.engine.spreading = frozenset()
    found: dict[str, Incident] = {}
    for n in range(max(len(v) for v in per_partition.values())):
        for part in range(PARTITIONS):
            if n >= len(per_partition[part]):
                continue
            pipeline, state = next(w for w, o in zip(workers, owners, strict=True) if part in o)
            for inc in pipeline.detect(per_partition[part][n], state, "events", part, n).incidents:
                if emitters is not None:
                    emitters.setdefault(inc.id, set()).add(part)
                if inc.id not in found or inc.revision >= found[inc.id].revision:
                    found[inc.id] = inc
    for part in range(PARTITIONS):  # a last tick in every partition, as replay ticks at its end
        pipeline, state = next(w for w, o in zip(workers, owners, strict=True) if part in o)
        tick = pipeline.detect(encode_tick(0), state, "events", part, len(per_partition[part]))
        for inc in tick.incidents:
            if emitters is not None:
                emitters.setdefault(inc.id, set()).add(part)
            if inc.id not in found or inc.revision >= found[inc.id].revision:
                found[inc.id] = inc
    return found


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    return _border_events()


@pytest.fixture(scope="module")
def expected(events: list[dict[str, Any]]) -> dict[str, tuple[str, float | None, int, str]]:
    return _signature(replay(_wuhan(), [json.dumps(e).encode() for e in events]).incidents)


def test_the_border_events_make_both_kinds_of_incident(
    events: list[dict[str, Any]], expected: dict[str, tuple[str, float | None, int, str]]
) -> None:
    rules = [v[0] for v in expected.values()]
    assert rules.count("sanitation.dumping-cluster") >= 5
    assert rules.count("flood.waterlogging-confirmed") >= 5


@pytest.mark.parametrize("size", [5, 60])
@pytest.mark.parametrize("owners", [[{0, 1}, {2, 3}], [{0, 2}, {1, 3}], [{0}, {1}, {2}, {3}], [{0, 1, 2, 3}]])
def test_workers_owning_parts_of_the_partitions_find_replays_border_incidents(
    events: list[dict[str, Any]],
    expected: dict[str, tuple[str, float | None, int, str]],
    owners: list[set[int]],
    size: int,
) -> None:
    emitters: dict[str, set[int]] = {}
    assert _signature(_two_workers(events, owners, emitters=emitters, size=size).values()) == expected
    assert all(len(emitters[i]) == 1 for i in expected), "each incident comes from one partition only"


def test_without_spreading_the_border_incidents_are_missed(
    events: list[dict[str, Any]], expected: dict[str, tuple[str, float | None, int, str]]
) -> None:
    found = _signature(_two_workers(events, [{0, 1}, {2, 3}], spread=False).values())
    assert found != expected and len(found) < len(expected)


def test_spread_copies_travel_apart_from_the_envelopes_own_events() -> None:
    pipeline = Pipeline(Engine(_wuhan()), partitions=PARTITIONS)
    events = _border_events()[:6]
    out = pipeline.ingest(orjson.dumps({"events": events}), "raw", 0, 0)
    reading = next(e["id"] for e in events if e["kind"] == "reading")
    spread_ids = {i.event.id for items in out.spread.values() for i in items}
    assert reading not in spread_ids, "readings stay in their sensor's partition"
    assert spread_ids == {e["id"] for e in events if e["kind"] == "report"}
    for target in out.targets():
        own = {i.event.id for i in out.routed.get(target, ())}
        copies = {i.event.id for i in out.spread.get(target, ())}
        assert not own & copies, "a partition gets each event once"
        assert own | copies >= spread_ids
        archived, _ = decode_envelope(out.envelope(target, (0, 0)))
        assert {i.event.id for i in archived} == own, "the store archives each event once, from its home"


def test_one_partition_spreads_nothing() -> None:
    pipeline = Pipeline(Engine(_wuhan()), partitions=1)
    out = pipeline.ingest(orjson.dumps({"events": _border_events()[:6]}), "raw", 0, 0)
    assert out.spread == {} and out.targets() == [0]


def _grid_pack() -> LoadedPack:
    """Routing layer: 16 squares of 0.01 degrees; windows per H3 cell and per zone of a layer over all of them."""
    squares = [square(f"g{r}{c}", 114.30 + 0.01 * c, 30.50 + 0.01 * r, size=0.01) for r in range(4) for c in range(4)]
    layers = {"grid": layer("grid", squares), "big": layer("big", [square("all", 114.30, 30.50, size=0.04)])}
    return make_pack(
        """
        - id: litter-per-cell
          kind: window
          title: litter per H3 cell
          severity: low
          category: sanitation
          match: {kind: report, category: litter}
          group_by: cell
          h3_resolution: 7
          window: 10m
          op: ">="
          value: 3
        - id: litter-per-area
          kind: window
          title: litter in the whole area
          severity: low
          category: sanitation
          layer: big
          match: {kind: report, category: litter}
          window: 10m
          op: ">="
          value: 8
        - id: noise-in-area
          kind: threshold
          title: loud somewhere in the whole area
          severity: low
          category: noise
          layer: big
          group_by: zone
          match: {kind: reading, metric: noise_db}
          op: ">"
          value: 70
        - id: litter-per-square
          kind: window
          title: litter per square of the routing layer
          severity: low
          category: sanitation
          layer: grid
          match: {kind: report, category: litter}
          window: 10m
          op: ">="
          value: 2
        - id: mics-silent
          kind: silence
          title: microphones silent in the whole area
          severity: low
          category: operations
          layer: big
          match: {kind: reading, metric: noise_db}
          for: 4m
          zone_share: 0.25
        """,
        layers,
    )


def _grid_events() -> list[dict[str, Any]]:
    """Litter reports and noise readings over the 16 squares within 20 minutes."""
    rng = np.random.default_rng(9)
    events = [
        {
            "kind": "report",
            "id": f"l{n}",
            "ts": f"2026-07-01T08:{n // 4:02d}:{(n * 7) % 60:02d}+08:00",
            "lon": float(114.30 + rng.uniform(0, 0.04)),
            "lat": float(30.50 + rng.uniform(0, 0.04)),
            "category": "litter",
        }
        for n in range(80)
    ] + [
        {
            "kind": "reading",
            "id": f"n{n}",
            "ts": f"2026-07-01T08:{n // 2:02d}:30+08:00",
            "lon": float(114.30 + rng.uniform(0, 0.04)),
            "lat": float(30.50 + rng.uniform(0, 0.04)),
            "sensor_id": f"mic-{n % 12}",
            "metric": "noise_db",
            "value": 75.0 + n % 5,
        }
        for n in range(40)
    ]
    events.sort(key=lambda e: (e["ts"], e["id"]))
    return events


def test_windows_and_thresholds_grouped_by_cell_or_by_another_layer_are_owned_by_one_partition() -> None:
    pack = _grid_pack()
    events = _grid_events()
    squares = {
        i.zones["grid"][0] for i in Engine(pack).enrich([_report_of(e) for e in events if e["kind"] == "report"])
    }
    assert len({partition_for(zone_route(z), PARTITIONS) for z in squares}) == PARTITIONS
    wanted = {"litter-per-cell", "litter-per-area", "litter-per-square", "noise-in-area", "mics-silent"}

    def sig(incidents: Any) -> dict[str, tuple[str, float | None, int, str]]:
        return {i.id: (i.rule_id, i.value, i.evidence.count, i.status) for i in incidents if i.rule_id in wanted}

    expected = sig(replay(pack, [json.dumps(e).encode() for e in events]).incidents)
    assert {v[0] for v in expected.values()} == wanted
    blind = [i for i in replay(pack, [json.dumps(e).encode() for e in events]).incidents if i.subject == "zone:all"]
    assert blind and all(i.rule_id == "mics-silent" for i in blind), "the area goes blind at least once"
    for owners, size in itertools.product(([{0, 1}, {2, 3}], [{0}, {1}, {2}, {3}], [{0, 1, 2, 3}]), (5, 40)):
        emitters: dict[str, set[int]] = {}
        found = _two_workers(events, owners, pack=pack, emitters=emitters, size=size)
        assert sig(found.values()) == expected, (owners, size)
        assert all(len(emitters[i]) == 1 for i in expected)
    missed = sig(_two_workers(events, [{0, 1}, {2, 3}], pack=pack, spread=False).values())
    for rule in ("litter-per-cell", "litter-per-area", "noise-in-area", "mics-silent"):
        assert {k: v for k, v in missed.items() if v[0] == rule} != {
            k: v for k, v in expected.items() if v[0] == rule
        }, f"{rule}: without the copies it is split between the workers"
    assert {k: v for k, v in missed.items() if v[0] == "litter-per-square"} == {
        k: v for k, v in expected.items() if v[0] == "litter-per-square"
    }, "a window per routing zone needs no copies"


def _report_of(e: dict[str, Any]) -> Any:
    from rules.model import Report

    return Report.model_validate(e)
