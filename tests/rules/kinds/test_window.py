"""window rules: count of matching events per zone in tumbling event-time windows aligned to the epoch."""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rules.engine import Engine, run
from rules.geo import Layer
from rules.model import Incident, Reading, Report, Track
from rules.pack import LoadedPack, parse_pack
from rules.state import EVIDENCE_CAP, to_ms

T0 = datetime(2026, 7, 1, 2, 0, tzinfo=UTC)  # a multiple of 10 minutes
MS = timedelta(milliseconds=1)
IN_A = (0.5, 0.5)
IN_B = (1.5, 0.5)
ON_BORDER = (1.0, 0.5)  # on the edge shared by A and B
OUTSIDE = (5.0, 5.0)


def _square(zone_id: str, x0: float) -> dict[str, object]:
    ring = [[x0, 0.0], [x0 + 1, 0.0], [x0 + 1, 1.0], [x0, 1.0], [x0, 0.0]]
    return {
        "type": "Feature",
        "properties": {"zone_id": zone_id, "name": f"Zone {zone_id}"},
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }


ZONES = Layer.from_features("zones", [_square("A", 0.0), _square("B", 1.0)])


def _pack(
    *, op: str = ">=", value: int = 3, window: str = "10m", match: str = "{kind: report, category: illegal_dumping}"
) -> LoadedPack:
    text = f"""\
pack: t
version: "1"
layers:
  zones: {{file: unused.geojson}}
rules:
  - id: dumping
    kind: window
    title: Dumping
    category: sanitation
    layer: zones
    match: {match}
    window: {window}
    op: "{op}"
    value: {value}
"""
    return LoadedPack(spec=parse_pack(text, "t.yaml"), path=Path("t.yaml"), layers={"zones": ZONES}, digest="test")


def _report(eid: str, at: timedelta, *, where: tuple[float, float] = IN_A, category: str = "illegal_dumping") -> Report:
    return Report(id=eid, ts=T0 + at, lon=where[0], lat=where[1], category=category)


def _fire(pack: LoadedPack, events: list[Reading | Report | Track], batch_size: int = 1000) -> list[Incident]:
    latest = run(Engine(pack), events, batch_size=batch_size)
    return sorted(latest.values(), key=lambda i: (i.window_start, i.subject))


def _three(where: tuple[float, float] = IN_A, **kw: str) -> list[Report]:
    return [_report(f"d{i}", timedelta(minutes=i * 3), where=where, **kw) for i in range(3)]


# -- count against the threshold ---------------------------------------------------------------


def test_a_count_exactly_at_the_threshold_fires_with_greater_or_equal() -> None:
    [incident] = _fire(_pack(op=">=", value=3), _three())
    assert incident.value == 3.0
    assert incident.evidence.count == 3
    assert _fire(_pack(op=">=", value=3), _three()[:2]) == []


def test_a_count_exactly_at_the_threshold_does_not_fire_with_greater_than() -> None:
    assert _fire(_pack(op=">", value=3), _three()) == []
    [incident] = _fire(_pack(op=">", value=3), [*_three(), _report("d9", timedelta(minutes=9))])
    assert incident.value == 4.0


def test_the_incident_value_and_revision_are_the_count_and_grow_with_it() -> None:
    pack = _pack(value=2)
    engine, state = Engine(pack), {}
    assert engine.process(engine.enrich([_report("a", timedelta(0))]), state).incidents == []
    [second] = engine.process(engine.enrich([_report("b", timedelta(minutes=1))]), state).incidents
    [third] = engine.process(engine.enrich([_report("c", timedelta(minutes=2))]), state).incidents
    assert (second.value, second.revision) == (2.0, 2)
    assert (third.value, third.revision) == (3.0, 3)
    assert second.id == third.id


def test_an_incident_reports_zone_subject_and_times() -> None:
    [incident] = _fire(_pack(), _three(where=IN_B))
    assert (incident.subject, incident.zone_id, incident.zone_name, incident.layer) == ("B", "B", "Zone B", "zones")
    assert (incident.window_start, incident.window_end) == (T0, T0 + timedelta(minutes=10))
    assert (incident.first_event_at, incident.last_event_at) == (T0, T0 + timedelta(minutes=6))
    assert (incident.kind, incident.op, incident.threshold) == ("window", ">=", 3.0)


# -- window boundaries -------------------------------------------------------------------------


def test_an_event_at_exactly_the_window_end_belongs_to_the_next_window() -> None:
    events = [
        _report("a", timedelta(minutes=1)),
        _report("b", timedelta(minutes=10) - MS),
        _report("c", timedelta(minutes=10)),
    ]
    assert _fire(_pack(), events) == []
    [first, second] = _fire(_pack(value=1), events)
    assert first.evidence.event_ids == ["a", "b"]
    assert (second.window_start, second.evidence.event_ids) == (T0 + timedelta(minutes=10), ["c"])


def test_windows_are_aligned_to_the_epoch_not_to_the_first_event() -> None:
    close_together = [
        _report("a", timedelta(minutes=8)),
        _report("b", timedelta(minutes=9)),
        _report("c", timedelta(minutes=11)),
    ]  # 3 minutes apart, but across 02:10Z
    assert _fire(_pack(), close_together) == []
    assert [i.window_start for i in _fire(_pack(value=1), close_together)] == [T0, T0 + timedelta(minutes=10)]


def test_a_window_longer_than_a_day_is_still_aligned_to_the_utc_epoch() -> None:
    [incident] = _fire(_pack(window="1w", value=1), [_report("a", timedelta(0))])
    assert to_ms(incident.window_start) % to_ms(datetime(1970, 1, 8, tzinfo=UTC)) == 0
    assert incident.window_start == datetime(2026, 6, 25, tzinfo=UTC)  # the epoch was a Thursday
    assert incident.window_end - incident.window_start == timedelta(weeks=1)


# -- zones and filters -------------------------------------------------------------------------


def test_each_zone_is_counted_separately() -> None:
    events = [*_three(where=IN_A)[:2], *[_report(f"b{i}", timedelta(minutes=i), where=IN_B) for i in range(3)]]
    assert [i.subject for i in _fire(_pack(), events)] == ["B"]


def test_events_outside_any_zone_are_not_counted() -> None:
    events = [*_three()[:2], _report("x", timedelta(minutes=1), where=OUTSIDE)]
    assert _fire(_pack(), events) == []


def test_an_event_on_a_shared_border_counts_for_the_first_zone_in_layer_order() -> None:
    events = [*_three(where=IN_A)[:2], _report("x", timedelta(minutes=1), where=ON_BORDER)]
    [incident] = _fire(_pack(), events)
    assert incident.zone_id == "A"


def test_reports_of_another_category_are_not_counted() -> None:
    events = [*_three()[:2], _report("x", timedelta(minutes=1), category="waterlogging")]
    assert _fire(_pack(), events) == []


def test_a_category_filter_without_a_kind_does_not_count_readings_or_tracks_with_that_name() -> None:
    pack = _pack(match="{category: illegal_dumping}", value=1)
    reading = Reading(id="r", ts=T0, lon=0.5, lat=0.5, sensor_id="s", metric="illegal_dumping", value=1)
    track = Track(id="k", ts=T0, lon=0.5, lat=0.5, object_id="o", object_type="illegal_dumping")
    assert _fire(pack, [reading, track]) == []
    assert len(_fire(pack, [_report("c", timedelta(0))])) == 1


def test_the_zones_filter_counts_only_the_listed_zones() -> None:
    pack = _pack(match="{kind: report, category: illegal_dumping, zones: [B]}")
    assert _fire(pack, _three(where=IN_A)) == []
    assert [i.zone_id for i in _fire(pack, _three(where=IN_B))] == ["B"]


def test_a_metric_filter_counts_readings_and_keeps_their_values_as_evidence() -> None:
    pack = _pack(match="{kind: reading, metric: noise_db}", value=2)
    readings = [
        Reading(
            id=f"n{i}", ts=T0 + timedelta(minutes=i), lon=0.5, lat=0.5, sensor_id=f"s{i}", metric=metric, value=70 + i
        )
        for i, metric in enumerate(["noise_db", "pm25", "noise_db"])
    ]
    [incident] = _fire(pack, readings)
    assert incident.evidence.event_ids == ["n0", "n2"]
    assert incident.evidence.values == [70.0, 72.0]
    assert incident.value == 2.0


def test_an_object_type_filter_counts_tracks() -> None:
    pack = _pack(match="{kind: track, object_type: drone}", value=2)
    tracks = [
        Track(id=f"k{i}", ts=T0, lon=0.5, lat=0.5, object_id=f"o{i}", object_type=kind)
        for i, kind in enumerate(["drone", "bus", "drone"])
    ]
    [incident] = _fire(pack, tracks)
    assert incident.evidence.event_ids == ["k0", "k2"]
    assert incident.evidence.values == [1.0, 1.0]


# -- evidence and duplicates -------------------------------------------------------------------


def _many(n: int) -> list[Report]:
    return [_report(f"r{n - i:03d}", timedelta(seconds=i // 3)) for i in range(n)]


def test_evidence_is_capped_at_20_and_keeps_the_earliest_by_time_then_id() -> None:
    events = _many(40)
    [incident] = _fire(_pack(), events)
    assert incident.evidence.count == 40
    assert incident.evidence.event_ids == [e.id for e in sorted(events, key=lambda e: (e.ts, e.id))[:EVIDENCE_CAP]]
    assert len(incident.evidence.values) == EVIDENCE_CAP


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_the_incident_does_not_depend_on_arrival_order_or_batching(seed: int) -> None:
    events = _many(40)
    shuffled = random.Random(seed).sample(events, len(events))
    assert _fire(_pack(), shuffled, batch_size=seed - 10) == _fire(_pack(), events)


def test_a_repeated_report_is_not_counted_twice() -> None:
    events = _three()[:2]
    assert _fire(_pack(), [*events, events[0], events[1], events[0]]) == []
    [incident] = _fire(_pack(value=2), [*events, *events])
    assert incident.evidence.count == 2


def test_a_repeated_report_beyond_the_evidence_cap_is_not_counted_twice() -> None:
    events = _many(22)
    latest = max(events, key=lambda e: (e.ts, e.id))
    [incident] = _fire(_pack(), [*events, latest])
    assert incident.evidence.count == 22


# -- ids ---------------------------------------------------------------------------------------


def test_the_incident_id_is_the_hash_of_pack_rule_zone_and_window_start() -> None:
    [incident] = _fire(_pack(), [_report(f"d{i}", timedelta(minutes=12 + i)) for i in range(3)])
    start_ms = to_ms(T0 + timedelta(minutes=10))
    assert incident.id == hashlib.sha256(f"t|dumping|A|{start_ms}".encode()).hexdigest()[:24]


def test_incident_ids_are_the_same_across_runs() -> None:
    events = [*_three(where=IN_A), *_three(where=IN_B)]
    first = [i.id for i in _fire(_pack(), events)]
    second = [i.id for i in _fire(_pack(), list(reversed(events)))]
    assert first == second
    assert len(set(first)) == 2
