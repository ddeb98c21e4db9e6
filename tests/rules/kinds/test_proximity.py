"""proximity rules: the nearest feature of a point layer, its distance in metres, escalation by distance."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from rulekit import east, fire, layer, make_pack, north, point, reading, square

from rules.kinds.base import metres_between
from rules.model import Reading
from rules.pack import LoadedPack

SCHOOL = (114.30, 30.55)
RULE = """
- id: near
  kind: proximity
  title: PM2.5 near a school
  category: air_quality
  severity: medium
  match: {kind: reading, metric: m}
  when: [{field: value, op: ">", value: 75}]
  near: schools
  distance_m: 500
  dedup: 1h
  escalate:
    - {severity: high, within_m: 250}
    - {severity: critical, within_m: 100}
"""


def _pack(features: list[dict[str, object]]) -> LoadedPack:
    return make_pack(RULE, {"schools": layer("schools", features)})


ONE = _pack([point("school-1", *SCHOOL, name="第一中学")])


def _at(
    where: tuple[float, float], value: float = 90, *, sensor: str = "aq", eid: str = "r", minutes: float = 0
) -> Reading:
    return reading(eid, timedelta(minutes=minutes), value, sensor=sensor, where=where)


def test_the_incident_names_the_nearest_feature_and_its_distance_in_metres() -> None:
    [incident] = fire(ONE, [_at(north(SCHOOL, 300))])
    assert incident.details["nearest_feature"] == "school-1"
    assert incident.details["nearest_name"] == "第一中学"
    assert incident.details["distance_m"] == pytest.approx(300, abs=0.1)
    assert (incident.kind, incident.op, incident.threshold, incident.value) == ("proximity", "within", 500.0, 90.0)


def test_the_nearest_is_measured_in_metres_not_in_degrees() -> None:
    # 100 m north is 0.0009 deg; 95 m east is 0.00099 deg at this latitude: nearer on the ground, farther in degrees
    pack = _pack([point("north", *north(SCHOOL, 100)), point("east", *east(SCHOOL, 95))])
    [incident] = fire(pack, [_at(SCHOOL)])
    assert incident.details["nearest_feature"] == "east"
    assert incident.details["distance_m"] == pytest.approx(95, abs=0.1)


def test_a_feature_within_reach_in_metres_is_found_when_a_nearer_in_degrees_one_is_too_far() -> None:
    pack = _pack([point("north", *north(SCHOOL, 510)), point("east", *east(SCHOOL, 490))])
    [incident] = fire(pack, [_at(SCHOOL)])
    assert incident.details["nearest_feature"] == "east"


def test_nothing_fires_beyond_distance_m() -> None:
    assert fire(ONE, [_at(east(SCHOOL, 500.5))]) == []
    assert len(fire(ONE, [_at(east(SCHOOL, 499.5))])) == 1


def test_when_filters_the_value() -> None:
    assert fire(ONE, [_at(SCHOOL, 75)]) == []


@pytest.mark.parametrize(
    ("metres", "severity"), [(400, "medium"), (250, "high"), (180, "high"), (100, "critical"), (5, "critical")]
)
def test_severity_steps_up_the_closer_the_event(metres: float, severity: str) -> None:
    [incident] = fire(ONE, [_at(north(SCHOOL, metres))])
    assert incident.severity == severity


def test_events_of_one_subject_in_a_dedup_bucket_share_an_incident_with_the_minimum_distance() -> None:
    events = [
        _at(north(SCHOOL, 400), eid="a"),
        _at(north(SCHOOL, 90), eid="b", minutes=20),
        _at(north(SCHOOL, 300), eid="c", minutes=40),
    ]
    [incident] = fire(ONE, events)
    assert incident.evidence.count == 3
    assert incident.details["distance_m"] == pytest.approx(90, abs=0.1)
    assert incident.severity == "critical"
    assert len(fire(ONE, [*events, _at(north(SCHOOL, 90), eid="d", minutes=61)])) == 2


def test_the_distance_to_a_polygon_feature_is_to_its_edge() -> None:
    campus = square("campus", SCHOOL[0], SCHOOL[1], 0.002)
    pack = _pack([campus])
    [incident] = fire(pack, [_at(east(SCHOOL, -200))])
    assert incident.details["distance_m"] == pytest.approx(200, rel=0.01)
    [inside] = fire(pack, [_at((SCHOOL[0] + 0.001, SCHOOL[1] + 0.001))])
    assert inside.details["distance_m"] == 0.0


def test_nearest_feature_and_distance_agree_with_a_haversine_reference_within_1_percent() -> None:
    rng = random.Random(11)
    schools = [(f"s{i:02d}", 114.2 + rng.random() * 0.2, 30.45 + rng.random() * 0.2) for i in range(40)]
    pack = make_pack(
        RULE.replace("distance_m: 500", "distance_m: 3000"), {"schools": layer("schools", [point(*s) for s in schools])}
    )
    events = [
        reading(
            f"e{i:03d}",
            timedelta(minutes=i),
            90,
            sensor=f"aq{i}",
            where=(114.2 + rng.random() * 0.2, 30.45 + rng.random() * 0.2),
        )
        for i in range(300)
    ]
    got = {i.subject: i for i in fire(pack, events)}
    checked = 0
    for event in events:
        reference = min((metres_between(event.lon, event.lat, x, y), sid) for sid, x, y in schools)
        if reference[0] > 3000:
            assert event.sensor_id not in got
            continue
        incident = got[event.sensor_id]
        assert incident.details["distance_m"] == pytest.approx(reference[0], rel=0.01, abs=0.1)
        assert incident.details["nearest_feature"] == reference[1]
        checked += 1
    assert checked > 200
