"""sustained rules: a condition held for ``for``, hysteresis, resolve_after, order, gates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from rulekit import MIN, MS, T0, cut, fire, layer, make_pack, reading, square, stream

from rules.columns import EventColumns, to_us
from rules.engine import Engine
from rules.model import Incident, Reading

RULE = """
- id: water
  kind: sustained
  title: Water above 30 cm for 2 minutes
  category: flood
  severity: medium
  match: {kind: reading, metric: m}
  op: ">"
  value: 30
  for: 2m
  close: {field: value, op: "<", value: 20}
  resolve_after: 5m
"""
PACK = make_pack(RULE)


def _series(
    values: list[float],
    *,
    every: timedelta = MIN,
    start: timedelta = timedelta(0),
    sensor: str = "s1",
    prefix: str = "r",
) -> list[Reading]:
    return [reading(f"{prefix}{i:03d}", start + i * every, v, sensor=sensor) for i, v in enumerate(values)]


def _one(pack: object, events: list[Reading]) -> Incident:
    [incident] = fire(pack, events)  # type: ignore[arg-type]
    return incident


# -- opening -----------------------------------------------------------------------------------


def test_the_incident_opens_when_the_condition_has_held_for_exactly_for() -> None:
    incident = _one(PACK, _series([35, 36, 37]))  # 0, 1, 2 min
    assert incident.status == "open"
    assert (incident.window_start, incident.first_event_at) == (T0, T0)
    assert incident.evidence.event_ids == ["r000", "r001", "r002"]
    assert (incident.value, incident.threshold, incident.op, incident.kind) == (37.0, 30.0, ">", "sustained")


def test_one_millisecond_short_of_for_is_nothing() -> None:
    events = [reading("a", timedelta(0), 35), reading("b", 2 * MIN - MS, 35)]
    assert fire(PACK, events) == []
    assert len(fire(PACK, [*events, reading("c", 2 * MIN, 35)])) == 1


def test_a_reading_at_exactly_the_threshold_breaks_the_condition_and_restarts_it() -> None:
    assert fire(PACK, _series([35, 36, 30, 36, 37])) == []  # 30 is not above 30: pending again from 3 min
    incident = _one(PACK, _series([35, 36, 30, 36, 37, 38]))
    assert incident.window_start == T0 + 3 * MIN


def test_every_pending_reading_counts_even_beyond_the_evidence_cap() -> None:
    # for 30 min at one reading a minute: 31 readings before it opens; the highest is the 26th
    pack = make_pack(RULE.replace("for: 2m", "for: 30m"))
    values = [31.0] * 31
    values[25] = 99.0
    incident = _one(pack, _series(values))
    assert incident.evidence.count == 31
    assert len(incident.evidence.event_ids) == 20
    assert incident.value == 99.0


# -- hysteresis and resolve_after --------------------------------------------------------------


def test_with_hysteresis_the_incident_stays_open_between_the_close_and_open_levels() -> None:
    incident = _one(PACK, _series([35, 36, 37, 25, 25, 25, 25, 25, 25, 25, 25]))
    assert incident.status == "open"
    assert incident.resolved_at is None


def test_it_resolves_once_the_close_condition_has_held_for_resolve_after() -> None:
    opened = _series([35, 36, 37])
    closing = [reading("c0", 3 * MIN, 15), reading("c1", 8 * MIN - MS, 15)]
    assert _one(PACK, opened + closing).status == "open"
    done = _one(PACK, [*opened, *closing, reading("c2", 8 * MIN, 15)])
    assert done.status == "resolved"
    assert done.resolved_at == T0 + 8 * MIN
    assert done.window_end == T0 + 8 * MIN
    assert done.revision == done.evidence.count + 1


def test_a_reading_between_the_levels_restarts_the_close_timer() -> None:
    events = [*_series([35, 36, 37]), *_series([15, 25, 15, 15, 15, 15, 15, 15], start=3 * MIN, prefix="c")]
    # close since 3 min, broken at 4 min by 25, again since 5 min: resolves at 10 min, not at 8 min
    incident = _one(PACK, events)
    assert incident.resolved_at == T0 + 10 * MIN


def test_without_a_close_condition_the_negation_of_the_open_one_resolves() -> None:
    pack = make_pack(
        RULE.replace('  close: {field: value, op: "<", value: 20}\n', "").replace("  resolve_after: 5m\n", "")
    )
    incident = _one(pack, _series([35, 36, 37, 30]))
    assert incident.status == "resolved"
    assert incident.resolved_at == T0 + 3 * MIN


def test_a_new_episode_after_resolving_is_a_new_incident() -> None:
    events = _series([35, 36, 37, 10, 10, 10, 10, 10, 10, 40, 41, 42])
    first, second = fire(PACK, events)
    assert first.status == "resolved"
    assert second.status == "open"
    assert second.window_start == T0 + 9 * MIN
    assert first.id != second.id


def test_a_snapshot_is_sent_only_by_readings_that_change_the_episode() -> None:
    """Readings of an open episode update it; once resolved, later readings leave it alone and send
    nothing (before, every later reading of the sensor sent the resolved incident again)."""
    engine, state = Engine(PACK), {}

    def sent(values: list[float], start: int, offset: int) -> list[Incident]:
        batch = engine.enrich(_series(values, start=start * MIN, prefix=f"b{offset}-"))
        return engine.process(batch, state, position=(0, offset)).incidents

    assert sent([35, 36], 0, 0) == []  # pending
    [opened] = sent([37], 2, 1)
    assert (opened.status, opened.revision) == ("open", 3)
    [counted] = sent([25], 3, 2)  # between the levels: counted on the open incident
    assert (counted.id, counted.status, counted.revision) == (opened.id, "open", 4)
    [closing] = sent([15, 15, 15, 15, 15], 4, 3)  # close since 4 min, not yet 5 min
    assert closing.status == "open"
    [resolved] = sent([15], 9, 4)
    assert (resolved.status, resolved.revision) == ("resolved", closing.revision + 2)
    assert sent([10, 10, 10], 10, 5) == []  # the resolved incident is not sent again
    assert sent([35, 36], 13, 6) == []  # a new condition pending: nothing changes yet
    [second] = sent([37], 15, 7)
    assert second.id != opened.id and second.status == "open"
    # a re-delivered message sends its episode again (a crash may have lost the first send)
    again = engine.process(engine.enrich(_series([37], start=15 * MIN, prefix="b7-")), state, position=(0, 7))
    assert [i.id for i in again.incidents] == [second.id]


# -- per-subject order -------------------------------------------------------------------------


def test_an_out_of_order_reading_is_counted_but_not_applied() -> None:
    engine, state = Engine(PACK), {}
    engine.process(engine.enrich(_series([35, 36, 37, 38], every=MIN)), state)  # 0..3 min: open
    [incident] = engine.process(engine.enrich([reading("old", timedelta(seconds=90), 5)]), state).incidents
    assert incident.details["out_of_order"] == 1
    assert "old" not in incident.evidence.event_ids
    assert incident.status == "open"
    assert incident.evidence.count == 4


def test_a_normal_reading_in_a_later_batch_moves_the_sensors_newest_time_on() -> None:
    """An idle sensor keeps only its newest reading time; each normal reading must move it on (the
    first of a new sensor too), or a later batch's older readings would be applied instead of being
    counted out of order."""
    batches = [
        [reading("a0", 10 * MIN, 5, sensor="a")],  # a new sensor, normal: its newest time is 10 min
        _series([35, 36, 37], start=4 * MIN, sensor="a", prefix="a"),  # 4..6 min: older, so ignored
        [reading("b0", 10 * MIN, 5, sensor="b")],
        [reading("b1", 20 * MIN, 5, sensor="b")],  # normal again, in a later message: newest is 20 min
        _series([35, 36, 37], start=14 * MIN, sensor="b", prefix="b"),  # 14..16 min: older, so ignored
    ]
    for small_batch in (10**9, 0):  # event by event, and through columns (Engine.process)
        engine, state = Engine(PACK), {}
        engine.small_batch = small_batch
        for offset, batch in enumerate(batches):
            assert engine.process(engine.enrich(batch), state, position=(0, offset)).incidents == []
        last = _series([35, 36, 37], start=21 * MIN, sensor="a", prefix="na")
        last += _series([35, 36, 37], start=21 * MIN, sensor="b", prefix="nb")
        found = engine.process(engine.enrich(last), state, position=(0, len(batches))).incidents
        assert sorted((i.subject, i.details["out_of_order"], i.evidence.count) for i in found) == [
            ("a", 3, 3),
            ("b", 3, 3),
        ]


def test_each_sensor_has_its_own_sequence() -> None:
    a = _series([35, 36, 37], sensor="a", prefix="a")
    b = _series([35, 10, 37], sensor="b", prefix="b")
    assert [i.subject for i in fire(PACK, [*b, *a])] == ["a"]


@st.composite
def _sequences(draw: st.DrawFn) -> list[Reading]:
    out = []
    for sensor in ("a", "b"):
        values = draw(st.lists(st.sampled_from([10.0, 19.0, 20.0, 25.0, 30.0, 31.0, 60.0]), max_size=16))
        out += _series(values, every=timedelta(seconds=45), sensor=sensor, prefix=sensor)
    return out


@given(events=_sequences(), data=st.data())
@settings(max_examples=150, deadline=None)
def test_any_batching_that_keeps_each_sensors_order_gives_the_same_incidents(
    events: list[Reading], data: st.DataObject
) -> None:
    cuts = data.draw(st.lists(st.integers(1, max(1, len(events) - 1)), max_size=6))
    # sensor a's readings all come before b's: a different global order, the same per-sensor order
    assert stream(PACK, cut(events, cuts)) == {i.id: i for i in fire(PACK, events)}


# -- when and schedule break a sequence --------------------------------------------------------

NIGHT = """
- id: noise
  kind: sustained
  title: Night noise
  category: noise
  match: {kind: reading, metric: m}
  schedule: {hours: ["22:00-06:00"]}
  op: ">"
  value: 55
  for: 10m
"""


def _local(text: str) -> timedelta:
    return datetime.fromisoformat(text + "+08:00").astimezone(UTC) - T0


def test_a_reading_after_the_schedule_ends_resolves_the_night_incident() -> None:
    pack = make_pack(NIGHT)
    events = [reading(f"n{i}", _local(f"2026-07-02T05:{40 + 5 * i}:00"), 60) for i in range(4)]  # 05:40..05:55
    events.append(reading("day", _local("2026-07-02T06:00:00"), 60))
    incident = _one(pack, events)
    assert incident.status == "resolved"
    assert incident.resolved_at == T0 + _local("2026-07-02T06:00:00")
    assert incident.details["ended_by_gate"] is True
    assert "day" not in incident.evidence.event_ids


def test_last_nights_pending_noise_does_not_carry_over_to_the_next_night() -> None:
    pack = make_pack(NIGHT)
    events = [
        reading("a", _local("2026-07-02T05:55:00"), 60),
        reading("b", _local("2026-07-02T06:05:00"), 60),  # outside: ends the pending condition
        reading("c", _local("2026-07-02T22:00:00"), 60),  # a new night: pending from 22:00
        reading("d", _local("2026-07-02T22:09:59"), 60),
    ]
    assert fire(pack, events) == []
    incident = _one(pack, [*events, reading("e", _local("2026-07-02T22:10:00"), 60)])
    assert incident.window_start == T0 + _local("2026-07-02T22:00:00")


def test_a_reading_failing_when_resolves_an_open_incident() -> None:
    pack = make_pack(RULE + '  when: [{field: value, op: "<", value: 1000}]\n')
    incident = _one(pack, _series([35, 36, 37, 9999]))
    assert (incident.status, incident.resolved_at) == ("resolved", T0 + 3 * MIN)
    assert incident.value == 37.0


# -- escalation --------------------------------------------------------------------------------


def test_severity_steps_up_with_the_value_and_with_the_duration() -> None:
    pack = make_pack(RULE + "  escalate:\n    - {severity: high, after: 10m}\n    - {severity: critical, value: 50}\n")
    assert _one(pack, _series([35, 36, 37])).severity == "medium"
    assert _one(pack, _series([35, 36, 37, 51])).severity == "critical"
    assert _one(pack, _series([35] * 10)).severity == "medium"  # 9 minutes
    assert _one(pack, _series([35] * 11)).severity == "high"  # 10 minutes since the first reading


# -- columns ------------------------------------------------------------------------------------

PLAIN = """
- id: plain
  kind: sustained
  title: Water above 30 cm for 2 minutes, in a zone
  category: flood
  severity: medium
  layer: zones
  match: {kind: reading, metric: m}
  op: ">"
  value: 30
  for: 2m
  resolve_after: 3m
"""


def test_a_rule_without_gates_reads_its_readings_from_the_columns_and_builds_no_event() -> None:
    """Without ``when``, a schedule or a separate close condition, evidence, position and zone come
    from the batch's columns; the incidents equal those of the event-by-event path."""
    pack = make_pack(PLAIN, {"zones": layer("zones", [square("A", 0.0), square("B", 1.0)])})
    values = [35, 36, 37, 38, 10, 10, 10, 10, 40, 41, 42, 5]
    events = [
        *_series(values, sensor="s1"),
        *_series(values[::-1], sensor="s2", prefix="q"),
        *[e.model_copy(update={"lon": 1.5, "id": f"b{i}"}) for i, e in enumerate(_series(values, sensor="s3"))],
    ]
    events.sort(key=lambda e: (e.ts, e.id))
    built: list[int] = []

    def event_at(row: int) -> Reading:
        built.append(row)
        return events[row]

    engine = Engine(pack)
    ts_us = np.array([to_us(e.ts) for e in events], dtype=np.int64)
    columns = engine.enrich_columns(EventColumns.from_fields([e.__dict__ for e in events], ts_us, event_at))
    found = {i.id: i for i in engine.process_columns(columns, {}).incidents}
    assert built == []
    one_by_one = stream(pack, [[e] for e in events], tick=False)  # batches of one: event by event
    assert found == one_by_one
    assert {i.zone_id for i in found.values()} == {"A", "B"}
    # 35..38 open at 2 min, four lows resolve it after 3 min (8 readings); 40..42 open again, 5 closes
    assert sorted((i.subject, i.status, i.evidence.count) for i in found.values()) == [
        ("s1", "open", 4),
        ("s1", "resolved", 8),
        ("s2", "open", 4),
        ("s2", "resolved", 7),
        ("s3", "open", 4),
        ("s3", "resolved", 8),
    ]
