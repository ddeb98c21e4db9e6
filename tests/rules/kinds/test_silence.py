"""silence rules: a sensor silent for ``for`` (via ticks), gaps inside the data, zones going blind."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from rulekit import MIN, MS, T0, by_time, cut, fire, layer, make_pack, reading, square, stream

from rules.engine import Engine
from rules.model import Incident, Reading
from rules.state import to_ms

ZONES = layer("zones", [square("A", 0.0), square("B", 1.0)])
IN_A, IN_B = (0.5, 0.5), (1.5, 0.5)
RULE = """
- id: quiet
  kind: silence
  title: Sensor silent
  category: operations
  match: {kind: reading, metric: m}
  layer: zones
  for: 10m
"""
PACK = make_pack(RULE, {"zones": ZONES})
BLIND = make_pack(RULE + "  zone_share: 0.5\n", {"zones": ZONES})


def _r(eid: str, minutes: float, sensor: str, where: tuple[float, float] = IN_A) -> Reading:
    return reading(eid, timedelta(minutes=minutes), 1.0, sensor=sensor, where=where)


def _subjects(incidents: list[Incident] | dict[str, Incident]) -> list[tuple[str, str, int]]:
    values = incidents.values() if isinstance(incidents, dict) else incidents
    return sorted((i.subject, i.status, i.revision) for i in values)


# -- one sensor --------------------------------------------------------------------------------


def test_a_sensor_is_silent_once_the_watermark_is_for_past_its_last_reading() -> None:
    engine, state = Engine(PACK), {}
    engine.process(engine.enrich([_r("a", 0, "s1"), _r("b", 1, "s2")]), state)
    assert engine.tick(state, clock_ms=to_ms(T0 + 10 * MIN - MS)) == []
    [incident] = engine.tick(state, clock_ms=to_ms(T0 + 10 * MIN))
    assert (incident.subject, incident.status, incident.zone_id) == ("s1", "open", "A")
    assert incident.window_start == T0  # the last reading
    assert incident.window_end == T0 + 10 * MIN  # when it became silent
    assert incident.details == {"silent_since": to_ms(T0), "scope": "subject"}
    later = engine.tick(state, clock_ms=to_ms(T0 + 11 * MIN))
    assert [i.subject for i in later] == ["s2"]  # s1 is not reported again


def test_a_silent_sensor_is_placed_where_it_last_reported() -> None:
    engine, state = Engine(PACK), {}
    engine.process(engine.enrich([_r("a", 0, "s1", where=(0.2, 0.7)), _r("b", 1, "s1", where=(0.3, 0.6))]), state)
    [incident] = engine.tick(state, clock_ms=to_ms(T0 + 12 * MIN))
    assert (incident.lon, incident.lat) == (0.3, 0.6)


def test_the_silence_resolves_when_the_sensor_speaks_again() -> None:
    engine, state = Engine(PACK), {}
    engine.process(engine.enrich([_r("a", 0, "s1")]), state)
    [opened] = engine.tick(state, clock_ms=to_ms(T0 + 12 * MIN))
    [resolved] = engine.process(engine.enrich([_r("b", 13, "s1")]), state).incidents
    assert resolved.id == opened.id
    assert (resolved.status, resolved.resolved_at) == ("resolved", T0 + 13 * MIN)
    assert resolved.revision > opened.revision


def test_a_gap_inside_the_data_is_reported_already_resolved() -> None:
    [incident] = fire(PACK, [_r("a", 0, "s1"), _r("b", 25, "s1")])
    assert (incident.status, incident.window_start, incident.resolved_at) == ("resolved", T0, T0 + 25 * MIN)
    assert incident.value == 25 * 60.0
    assert fire(PACK, [_r("a", 0, "s1"), _r("b", 10 - 1 / 60_000, "s1")]) == []
    assert len(fire(PACK, [_r("a", 0, "s1"), _r("b", 10, "s1")])) == 1


def test_replay_and_a_ticking_stream_agree_whatever_the_batching() -> None:
    events = by_time(
        [_r(f"a{i}", m, "s1") for i, m in enumerate([0, 4, 30, 33])]
        + [_r(f"b{i}", m, "s2", IN_B) for i, m in enumerate(range(0, 40, 3))]
    )
    replayed = {i.id: i for i in fire(PACK, events)}
    assert _subjects(replayed) == [("s1", "resolved", 2)]
    for step in (1, 2, 5):
        assert stream(PACK, cut(events, range(step, len(events), step))) == replayed


# -- zones going blind -------------------------------------------------------------------------


def _zone_a(minutes_s1: list[float], minutes_s2: list[float], *, until: float) -> list[Reading]:
    """Two sensors in zone A, and a sensor in B that reports every minute (it moves the watermark)."""
    events = [_r(f"x{i}", m, "s1") for i, m in enumerate(minutes_s1)]
    events += [_r(f"y{i}", m, "s2") for i, m in enumerate(minutes_s2)]
    events += [_r(f"b{i}", m, "b", IN_B) for i, m in enumerate(range(int(until) + 1))]
    return by_time(events)


def test_a_zone_is_blind_when_the_share_of_silent_sensors_reaches_zone_share() -> None:
    events = _zone_a([0, 5], [0, 5, 10, 15, 20], until=20)  # s1 silent from 15 min: 1 of 2 = 0.5
    incidents = {i.subject: i for i in fire(BLIND, events)}
    blind = incidents["zone:A"]
    assert (blind.status, blind.zone_id, blind.window_start) == ("open", "A", T0 + 15 * MIN)
    assert blind.details == {"scope": "zone", "blind": True, "silent": 1, "known": 2, "rules": []}
    assert (blind.value, blind.threshold) == (0.5, 0.5)
    assert incidents["s1"].status == "open"


def test_a_blind_zone_names_the_rules_that_rely_on_its_sensors() -> None:
    """The pack's rules that take the events the silence rule watches cannot say "all clear" there."""
    relying = """
- id: high
  kind: threshold
  title: m above 30
  category: flood
  match: {kind: reading, metric: m}
  value: 30
- id: other-metric
  kind: threshold
  title: n above 30
  category: flood
  match: {kind: reading, metric: n}
  value: 30
- id: any-reading
  kind: threshold
  title: any reading above 90
  category: flood
  match: {kind: reading}
  value: 90
- id: reports
  kind: window
  title: reports
  category: flood
  layer: zones
  match: {kind: report}
  window: 10m
  value: 3
"""
    pack = make_pack(RULE + "  zone_share: 0.5\n" + relying, {"zones": ZONES})
    blind = {i.subject: i for i in fire(pack, _zone_a([0, 5], [0, 5, 10, 15, 20], until=20))}["zone:A"]
    assert blind.details["rules"] == ["any-reading", "high"]


def test_below_zone_share_the_zone_is_not_blind() -> None:
    pack = make_pack(RULE + "  zone_share: 0.6\n", {"zones": ZONES})
    assert "zone:A" not in {i.subject for i in fire(pack, _zone_a([0, 5], [0, 5, 10, 15, 20], until=20))}


def test_the_blind_zone_resolves_at_the_reading_that_brings_the_share_below() -> None:
    events = _zone_a([0, 5, 22], [0, 5, 10, 15, 20], until=24)
    blind = {i.subject: i for i in fire(BLIND, events)}["zone:A"]
    assert (blind.status, blind.window_start, blind.resolved_at) == ("resolved", T0 + 15 * MIN, T0 + 22 * MIN)
    assert blind.revision == 2  # the peak of silent sensors, plus one once resolved


def test_a_blind_spell_inside_the_data_is_found_by_replay_as_by_live_ticks() -> None:
    # s1 silent 15..22 min and s2 silent 19..23 min: blind (1 of 2 is enough) from 15 to 23 min, peak 2
    events = _zone_a([0, 5, 22], [0, 9, 23], until=24)
    replayed = {i.id: i for i in fire(BLIND, events, batch_size=10_000)}
    blind = [i for i in replayed.values() if i.subject == "zone:A"]
    assert [(b.window_start, b.resolved_at, b.details["silent"]) for b in blind] == [(T0 + 15 * MIN, T0 + 23 * MIN, 2)]
    assert stream(BLIND, [[e] for e in events]) == replayed


@st.composite
def _readings(draw: st.DrawFn) -> list[Reading]:
    events: list[Reading] = []
    for sensor, where in (("s1", IN_A), ("s2", IN_A), ("s3", IN_A), ("b", IN_B)):
        minutes = draw(st.lists(st.integers(0, 60), max_size=8, unique=True))
        events += [_r(f"{sensor}-{m}", m, sensor, where) for m in minutes]
    return by_time(events)


@given(events=_readings(), data=st.data())
@settings(max_examples=150, deadline=None)
def test_in_time_order_any_batching_gives_the_same_silences_and_blind_zones(
    events: list[Reading], data: st.DataObject
) -> None:
    cuts = data.draw(st.lists(st.integers(1, max(1, len(events) - 1)), max_size=8))
    assert stream(BLIND, cut(events, cuts)) == {i.id: i for i in fire(BLIND, events)}
