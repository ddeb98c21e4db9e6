"""correlation rules: an IoT alarm corroborated by citizen reports is one "observed" incident."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rulekit import MIN, T0, by_time, cut, east, fire, make_pack, north, reading, report, stream

from rules.engine import AnyEvent, Engine
from rules.errors import PackError
from rules.kinds.base import incident_id
from rules.model import Reading, Report
from rules.state import bucket_of, to_ms

P = (114.30, 30.60)  # Jiang'an, Wuhan
RULE = """
- id: flood.confirmed
  kind: correlation
  title: Water-level alarm confirmed by reports
  category: flood
  severity: high
  iot: {metric: water_level_cm, op: ">", value: 30}
  categories: [waterlogging, flooded_road]
  min_reports: 2
  radius_m: 500
  within: 30m
  escalate:
    - {severity: critical, value: 50}
"""
PACK = make_pack(RULE)
HALF_HOUR_MS = 30 * 60_000


def _level(
    eid: str, minutes: float, value: float = 42, *, sensor: str = "wl-1", where: tuple[float, float] = P
) -> Reading:
    return reading(eid, timedelta(minutes=minutes), value, sensor=sensor, metric="water_level_cm", where=where)


def _wet(eid: str, minutes: float, where: tuple[float, float] = P, category: str = "waterlogging") -> Report:
    return report(eid, timedelta(minutes=minutes), category=category, where=where)


# -- what fires --------------------------------------------------------------------------------


def test_an_alarm_with_a_report_before_and_one_after_is_one_observed_incident() -> None:
    events = [_wet("w1", 2, north(P, 200)), _level("r1", 5), _wet("w2", 20, east(P, 300), category="flooded_road")]
    [incident] = fire(PACK, events)
    assert (incident.kind, incident.certainty, incident.subject) == ("correlation", "observed", "wl-1")
    assert incident.evidence.event_ids == ["w1", "r1", "w2"]
    assert incident.evidence.values == [1.0, 42.0, 1.0]
    assert incident.evidence.count == 3
    assert (incident.value, incident.threshold, incident.op) == (42.0, 30.0, ">")
    assert (incident.lon, incident.lat) == P  # where the sensor is, not the first report
    assert incident.details["readings"] == 1
    assert incident.details["reports"] == 2
    assert incident.details["report_ids"] == ["w1", "w2"]
    assert incident.window_start == T0  # the reading's 30-minute bucket
    assert incident.window_end == T0 + 30 * MIN
    assert incident.severity == "high"


def test_single_source_incidents_are_likely_and_correlated_ones_observed() -> None:
    rules = (
        RULE
        + """
- id: flood.level
  kind: threshold
  title: Water level
  category: flood
  match: {kind: reading, metric: water_level_cm}
  value: 30
"""
    )
    pack = make_pack(rules)
    incidents = fire(pack, [_level("r1", 0), _wet("w1", 1), _wet("w2", 2)])
    assert {(i.rule_id, i.certainty) for i in incidents} == {("flood.confirmed", "observed"), ("flood.level", "likely")}


@pytest.mark.parametrize(
    ("name", "events"),
    [
        ("one report is not enough", [_level("r1", 5), _wet("w1", 6)]),
        ("a report beyond the radius", [_level("r1", 5), _wet("w1", 6), _wet("w2", 7, north(P, 500.5))]),
        ("a report more than 30 min after", [_level("r1", 5), _wet("w1", 6), _wet("w2", 35 + 1 / 60_000)]),
        ("a report more than 30 min before", [_wet("w0", 0), _level("r1", 30 + 1 / 60_000), _wet("w1", 31)]),
        ("a level not above 30 cm", [_level("r1", 5, 30), _wet("w1", 6), _wet("w2", 7)]),
        (
            "reports of another category",
            [_level("r1", 5), _wet("w1", 6, category="noise"), _wet("w2", 7, category="noise")],
        ),
        ("another metric", [reading("r1", 5 * MIN, 42, metric="pm25", where=P), _wet("w1", 6), _wet("w2", 7)]),
        ("reports only", [_wet("w1", 6), _wet("w2", 7), _wet("w3", 8)]),
    ],
)
def test_an_uncorroborated_alarm_or_reports_alone_are_no_correlated_incident(name: str, events: list[AnyEvent]) -> None:
    assert fire(PACK, events) == [], name


def test_the_radius_and_the_time_span_include_their_edges() -> None:
    exactly = [_wet("w0", 0), _level("r1", 30), _wet("w1", 60, north(P, 499.99))]
    [incident] = fire(PACK, exactly)
    assert incident.evidence.event_ids == ["w0", "r1", "w1"]


def test_one_incident_per_sensor_and_bucket_with_the_most_extreme_corroborated_reading() -> None:
    events = [
        _level("a1", 1, 35),
        _level("a2", 3, 55),
        _level("a3", 29, 40),
        _level("a4", 31, 33),  # the next 30-minute bucket: its own incident
        _level("b1", 2, 38, sensor="wl-2", where=east(P, 100)),  # another sensor near the same reports
        _wet("w1", 10),
        _wet("w2", 20),
    ]
    incidents = {(i.subject, i.window_start): i for i in fire(PACK, events)}
    assert sorted(incidents) == [("wl-1", T0), ("wl-1", T0 + 30 * MIN), ("wl-2", T0)]
    first = incidents["wl-1", T0]
    assert first.value == 55.0
    assert first.severity == "critical"  # escalated: 55 passes 50
    assert first.evidence.event_ids == ["a1", "a2", "w1", "w2", "a3"]
    assert incidents["wl-1", T0 + 30 * MIN].evidence.event_ids == ["w1", "w2", "a4"]
    assert first.id == incident_id("t", "flood.confirmed", "wl-1", bucket_of(to_ms(T0), HALF_HOUR_MS))


def test_a_reading_without_reports_is_left_out_of_its_sensors_incident() -> None:
    events = [_level("a1", 1), _wet("w1", 2), _wet("w2", 3), _level("a2", 29, 60, where=north(P, 3000))]
    [incident] = fire(PACK, events)
    assert incident.evidence.event_ids == ["a1", "w1", "w2"]
    assert incident.value == 42.0


def test_a_below_condition_reports_the_lowest_reading() -> None:
    pack = make_pack(RULE.replace('op: ">", value: 30', 'op: "<", value: 5'))
    [incident] = fire(pack, [_level("a1", 1, 4), _level("a2", 2, 2), _wet("w1", 3), _wet("w2", 4)])
    assert incident.value == 2.0


# -- order, lateness, redelivery ---------------------------------------------------------------


def test_reports_arriving_after_the_alarm_in_later_batches_complete_the_incident() -> None:
    events = [_level("r1", 0), _wet("w1", 10), _wet("w2", 25)]
    streamed = stream(PACK, [[e] for e in events])
    assert streamed == {i.id: i for i in fire(PACK, events)}
    late_alarm = stream(PACK, [[events[1], events[2]], [events[0]]])  # the alarm arrives last
    assert late_alarm == streamed


def test_reports_exactly_within_after_the_alarm_in_later_batches_complete_the_incident() -> None:
    events = [_level("r1", 0), _wet("w1", 30), _wet("w2", 30, east(P, 100))]
    streamed = stream(PACK, [[e] for e in events])
    [incident] = fire(PACK, events)
    assert streamed == {incident.id: incident}
    assert incident.evidence.event_ids == ["r1", "w1", "w2"]


def test_a_redelivered_batch_re_emits_without_counting_twice() -> None:
    engine, state = Engine(PACK), {}
    batch = engine.enrich([_level("r1", 0), _wet("w1", 1), _wet("w2", 2)])
    [first] = engine.process(batch, state, position=(3, 7)).incidents
    [again] = engine.process(batch, state, position=(3, 7)).incidents
    assert again == first


def test_state_expires_once_no_event_can_change_the_incident() -> None:
    engine, state = Engine(PACK), {}
    engine.process(engine.enrich([_level("r1", 0), _wet("w1", 1), _wet("w2", 2)]), state)
    assert len(state) == 2  # one sensor bucket, one grid cell
    engine.process(engine.enrich([_wet("x", 60 + 59, north(P, 9000))]), state)  # floor 0:59
    assert engine.expire(state) == 0
    engine.process(engine.enrich([_wet("y", 60 + 61, north(P, 9000))]), state)  # floor 1:01 >= bucket + 2 × 30 min
    assert engine.expire(state) == 1
    engine.process(engine.enrich([_wet("z", 60 + 92, north(P, 9000))]), state)  # floor 1:32 = newest + 3 × 30 min
    assert engine.expire(state) == 0  # the cell ends 1 ms after newest + 3 × within
    engine.process(engine.enrich([_wet("z2", 60 + 93, north(P, 9000))]), state)  # floor 1:33
    assert engine.expire(state) == 1  # the first cell; the far cell of x, y, z, z2 stays
    assert len(state) == 1


_SPOTS = [P, north(P, 300), east(P, 450), north(P, 800)]


@st.composite
def _events(draw: st.DrawFn) -> list[AnyEvent]:
    n = draw(st.integers(1, 12))
    minutes = st.sampled_from([0, 15, 29.999, 30, 30.001, 45, 59.99]) | st.floats(0, 59.99)
    out: list[AnyEvent] = []
    for i in range(n):
        at, where = draw(minutes), draw(st.sampled_from(_SPOTS))
        if draw(st.booleans()):
            out.append(
                _level(
                    f"e{i}",
                    at,
                    draw(st.sampled_from([20.0, 31.0, 60.0])),
                    sensor=draw(st.sampled_from(["a", "b"])),
                    where=where,
                )
            )
        else:
            out.append(_wet(f"e{i}", at, where))
    return out


@given(events=_events(), data=st.data())
@settings(max_examples=200, deadline=None)
def test_any_order_and_batching_gives_the_same_incidents(events: list[AnyEvent], data: st.DataObject) -> None:
    order = data.draw(st.permutations(events))
    cuts = data.draw(st.lists(st.integers(1, max(1, len(order) - 1)), max_size=5))
    assert stream(PACK, cut(order, cuts)) == {i.id: i for i in fire(PACK, by_time(events))}


# -- the rule schema ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("  match: {kind: reading}\n", "leave match.kind unset"),
        ("  match: {metric: water_level_cm}\n", "leave match.metric unset"),
        ("  match: {categories: [waterlogging]}\n", "leave match.categories unset"),
        ("  when: [{field: value, op: '>', value: 1}]\n", "cannot have 'when'"),
    ],
)
def test_a_match_or_when_that_would_drop_one_source_is_a_pack_error(extra: str, message: str) -> None:
    with pytest.raises(PackError, match=message):
        make_pack(RULE + extra)


def test_the_categories_must_not_be_empty() -> None:
    with pytest.raises(PackError, match="categories"):
        make_pack(RULE.replace("categories: [waterlogging, flooded_road]", "categories: []"))


def test_match_zones_and_a_layer_are_allowed() -> None:
    assert make_pack(RULE + "  match: {zones: [A]}\n").spec.rules[0].match.zones == ["A"]
