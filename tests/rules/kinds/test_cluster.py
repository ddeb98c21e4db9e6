"""cluster rules: N matching events within R metres and T time, whatever the zones, in any order."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rulekit import MIN, MS, T0, by_time, cut, east, fire, layer, make_pack, north, report, square, stream

from rules.engine import Engine
from rules.errors import PackError
from rules.kinds.base import incident_id, metres_between
from rules.kinds.grid import Grid
from rules.model import Report
from rules.state import EVIDENCE_CAP, bucket_of, to_ms

P = (114.35, 30.50)  # Hongshan, Wuhan
RULE = """
- id: dump
  kind: cluster
  title: Dumping cluster
  category: sanitation
  match: {kind: report, category: c}
  min_events: 3
  radius_m: 300
  within: 30m
  escalate:
    - {severity: high, count: 6}
"""
PACK = make_pack(RULE)


def _at(eid: str, minutes: float, where: tuple[float, float] = P) -> Report:
    return report(eid, timedelta(minutes=minutes), where=where)


# -- what fires --------------------------------------------------------------------------------


def test_three_reports_within_radius_and_time_are_one_incident_with_the_earliest_first() -> None:
    events = [_at("c", 20, north(P, 100)), _at("a", 0), _at("b", 10, east(P, 100))]
    [incident] = fire(PACK, events)
    assert (incident.kind, incident.rule_id, incident.certainty) == ("cluster", "dump", "likely")
    assert incident.value == 3.0
    assert incident.evidence.count == 3
    assert incident.evidence.event_ids == ["a", "b", "c"]
    assert (incident.lon, incident.lat) == P
    assert incident.first_event_at == T0
    assert incident.last_event_at == T0 + 20 * MIN
    assert (incident.threshold, incident.op, incident.severity) == (3.0, ">=", "medium")
    bucket = bucket_of(to_ms(T0 + 20 * MIN), 30 * 60_000)  # the trigger is the report at 20 min
    assert incident.window_start == T0 + timedelta(milliseconds=bucket - to_ms(T0)) - 30 * MIN
    assert incident.window_end - incident.window_start == 60 * MIN
    assert incident.details["triggers"] == 1


def test_two_reports_are_not_a_cluster_of_three() -> None:
    assert fire(PACK, [_at("a", 0), _at("b", 1)]) == []


def test_the_radius_is_measured_from_the_trigger_and_includes_its_edge() -> None:
    inside = [_at("a", 0), _at("b", 1), _at("c", 2, north(P, 299.99))]
    assert [i.evidence.count for i in fire(PACK, inside)] == [3]
    outside = [_at("a", 0), _at("b", 1), _at("c", 2, north(P, 300.01))]
    assert fire(PACK, outside) == []


def test_the_time_span_is_the_trigger_time_minus_within_both_ends_included() -> None:
    exactly = [_at("a", 0), _at("b", 15), _at("c", 30)]
    assert [i.evidence.event_ids for i in fire(PACK, exactly)] == [["a", "b", "c"]]
    one_ms_more = [_at("a", 0), _at("b", 15), report("c", 30 * MIN + MS, where=P)]
    assert fire(PACK, one_ms_more) == []


def test_an_event_arriving_later_counts_for_a_trigger_exactly_within_after_it() -> None:
    """The trigger c was stored before a arrived: a must find c at the edge of its time span."""
    events = [_at("b", 15), _at("c", 30), _at("a", 0)]
    streamed = stream(PACK, [[e] for e in events])
    assert [i.evidence.event_ids for i in streamed.values()] == [["a", "b", "c"]]


def test_events_at_the_same_instant_count_for_each_other() -> None:
    [incident] = fire(PACK, [_at("a", 5), _at("b", 5), _at("c", 5)])
    assert incident.evidence.event_ids == ["a", "b", "c"]
    assert incident.details["triggers"] == 3


def test_a_cluster_across_a_zone_border_is_one_incident_in_the_zone_of_its_earliest_report() -> None:
    zones = layer("zones", [square("A", 0.0), square("B", 1.0)])
    pack = make_pack(RULE + "  layer: zones\n", {"zones": zones})
    events = [_at("b", 1, (1.0005, 0.5)), _at("a", 0, (0.9995, 0.5)), _at("c", 2, (1.0, 0.5005))]
    [incident] = fire(pack, events)
    assert incident.evidence.count == 3
    assert (incident.zone_id, incident.layer) == ("A", "zones")


def test_a_dense_spot_gives_one_incident_per_block_and_time_bucket_with_every_member() -> None:
    events = [_at(f"r{i:02d}", i) for i in range(12)]  # one report a minute at one spot
    [incident] = fire(PACK, events)
    assert incident.evidence.count == 12
    assert incident.details["triggers"] == 10
    assert incident.severity == "high"  # count >= 6 escalates


def test_two_clusters_far_apart_are_two_incidents() -> None:
    far = north(P, 5000)
    events = [*(_at(f"a{i}", i) for i in range(3)), *(_at(f"b{i}", i, far) for i in range(3))]
    first, second = fire(PACK, events)
    assert first.id != second.id
    assert {first.evidence.event_ids[0], second.evidence.event_ids[0]} == {"a0", "b0"}


def test_triggers_in_two_time_buckets_are_two_incidents_sharing_members() -> None:
    # buckets of 30 min: triggers at 20 and 40 min fall in [0, 30) and [30, 60)
    events = [_at("a", 0), _at("b", 10), _at("c", 20), _at("d", 40)]
    early, late = fire(PACK, events)
    assert early.evidence.event_ids == ["a", "b", "c"]
    assert late.evidence.event_ids == ["b", "c", "d"]
    assert late.window_start - early.window_start == 30 * MIN


def test_the_incident_id_is_the_hash_of_pack_rule_block_and_bucket() -> None:
    [incident] = fire(PACK, [_at("a", 0), _at("b", 1), _at("c", 2)])
    row, col = Grid(300).cell(*P)
    bucket = bucket_of(to_ms(T0 + 2 * MIN), 30 * 60_000)
    assert incident.subject == f"cell:{row // 2}:{col // 2}"
    assert incident.id == incident_id("t", "dump", incident.subject, bucket - 30 * 60_000)


def test_evidence_keeps_the_20_earliest_members_and_counts_all() -> None:
    events = [report(f"r{i:02d}", timedelta(seconds=30 * i), where=P) for i in range(25)]
    [incident] = fire(PACK, random.Random(1).sample(events, len(events)))
    assert incident.evidence.count == 25
    assert incident.evidence.event_ids == [f"r{i:02d}" for i in range(EVIDENCE_CAP)]


def test_the_grid_never_misses_a_pair_within_the_radius() -> None:
    grid = Grid(300)
    rng = random.Random(7)
    for _ in range(2000):
        a = (114.3 + rng.uniform(-0.05, 0.05), 30.5 + rng.uniform(-0.05, 0.05))
        b = (a[0] + rng.uniform(-0.004, 0.004), a[1] + rng.uniform(-0.004, 0.004))
        if metres_between(*a, *b) <= 300:
            assert grid.cell(*b) in grid.cells_near(*a)


# -- order, lateness, redelivery ---------------------------------------------------------------


def test_a_late_report_makes_a_later_report_a_trigger() -> None:
    events = [_at("a", 0), _at("b", 10), _at("c", 20)]
    streamed = stream(PACK, [[events[1], events[2]], [events[0]]])  # "a" arrives last, within the lateness
    assert streamed == {i.id: i for i in fire(PACK, events)}
    assert [i.evidence.event_ids for i in streamed.values()] == [["a", "b", "c"]]


def test_a_late_report_joins_the_members_of_an_incident_that_already_fired() -> None:
    events = [_at("b", 10), _at("c", 12), _at("d", 14)]
    engine, state = Engine(PACK), {}
    [before] = engine.process(engine.enrich(events), state).incidents
    [after] = engine.process(engine.enrich([_at("a", 1)]), state).incidents
    assert before.id == after.id
    assert (before.evidence.count, after.evidence.count) == (3, 4)
    assert after.revision > before.revision
    assert after.evidence.event_ids[0] == "a"


def test_a_redelivered_batch_re_emits_the_incident_without_counting_twice() -> None:
    engine, state = Engine(PACK), {}
    batch = engine.enrich([_at("a", 0), _at("b", 1), _at("c", 2)])
    [first] = engine.process(batch, state, position=(0, 4)).incidents
    [again] = engine.process(batch, state, position=(0, 4)).incidents
    assert again == first
    [repeat] = engine.process(engine.enrich([_at("a", 0)]), state).incidents  # a repeat without a position
    assert repeat == first


def test_cells_are_pruned_and_expire_once_nothing_in_them_can_matter() -> None:
    engine, state = Engine(PACK), {}
    for hour in range(6):  # a report every 10 minutes for 6 hours, in time order
        engine.process(engine.enrich([_at(f"r{hour}-{m}", 60 * hour + m) for m in range(0, 60, 10)]), state)
    [cell] = [v for k, v in state.items() if k.startswith("dump@1|c|")]
    # watermark 5:50; kept: everything from (5:50 − 1 h lateness − 2 × 30 min) = 3:50 on
    assert min(e[0] for e in cell["ev"]) == to_ms(T0 + timedelta(hours=3, minutes=50))
    assert engine.expire(state) == 0
    engine.process(engine.enrich([_at("far-later", 60 * 8, north(P, 9000))]), state)
    assert engine.expire(state) == 1
    assert not [k for k in state if k.startswith("dump@1|c|") and state[k] is cell]


def test_a_long_stream_in_time_order_with_pruning_equals_one_replay() -> None:
    rng = random.Random(3)
    events = [_at(f"r{i:03d}", rng.uniform(0, 600), north(P, rng.choice([0, 150, 280, 700, 950]))) for i in range(150)]
    ordered = by_time(events)
    replayed = {i.id: i for i in fire(PACK, events)}
    assert len(replayed) > 3
    assert stream(PACK, cut(ordered, range(0, len(ordered), 9))) == replayed


_SPOTS = [P, east(P, 120), north(P, 250), north(P, 520), east(P, 2000)]


@st.composite
def _reports(draw: st.DrawFn) -> list[Report]:
    n = draw(st.integers(1, 14))
    minutes = st.sampled_from([0, 10, 29.999, 30, 30.001, 45, 59.99]) | st.floats(0, 59.99)
    return [report(f"e{i}", timedelta(minutes=draw(minutes)), where=draw(st.sampled_from(_SPOTS))) for i in range(n)]


@given(events=_reports(), data=st.data())
@settings(max_examples=200, deadline=None)
def test_any_order_and_batching_of_the_same_reports_gives_the_same_incidents(
    events: list[Report], data: st.DataObject
) -> None:
    order = data.draw(st.permutations(events))
    cuts = data.draw(st.lists(st.integers(1, max(1, len(order) - 1)), max_size=5))
    assert stream(PACK, cut(order, cuts)) == {i.id: i for i in fire(PACK, events)}


# -- the rule schema ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("min_events", "1", "greater than or equal to 2"),
        ("radius_m", "0", "greater than 0"),
        ("within", "0s", "longer"),
    ],
)
def test_impossible_cluster_settings_are_pack_errors(field: str, value: str, message: str) -> None:
    text = "\n".join(f"  {field}: {value}" if line.startswith(f"  {field}:") else line for line in RULE.splitlines())
    with pytest.raises(PackError, match=message):
        make_pack(text)
