"""window rules beyond counts: sum, avg, min, max, distinct; sliding windows; sensor and H3 groups."""

from __future__ import annotations

from datetime import timedelta

import h3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rulekit import MIN, T0, cut, fire, layer, make_pack, reading, square, stream

from rules.engine import Engine
from rules.errors import PackError
from rules.model import Reading
from rules.pack import LoadedPack
from rules.state import bucket_of, from_ms, to_ms

ZONES = layer("zones", [square("A", 0.0), square("B", 1.0)])
IN_A, IN_B = (0.5, 0.5), (1.5, 0.5)


def _pack(aggregate: str, op: str, value: float, extra: str = "", *, lateness: str = "10m") -> LoadedPack:
    rule = f"""
- id: agg
  kind: window
  title: Aggregate
  category: test
  layer: zones
  match: {{kind: reading, metric: m}}
  aggregate: {aggregate}
  window: 10m
  op: "{op}"
  value: {value}
{extra}"""
    return make_pack(rule, {"zones": ZONES}, lateness=lateness)


def _r(eid: str, at: timedelta, value: float, sensor: str = "s1", where: tuple[float, float] = IN_A) -> Reading:
    return reading(eid, at, value, sensor=sensor, where=where)


def _closer(minutes: float = 20) -> Reading:
    """An event in zone B that moves the watermark to ``minutes`` (closing [0, 10m) with 10 m lateness)."""
    return _r("tick", timedelta(minutes=minutes), 0.0, sensor="other", where=IN_B)


def _values(pack: LoadedPack, events: list[Reading]) -> list[tuple[str, float]]:
    return [(i.subject, i.value) for i in fire(pack, events) if i.subject != "B"]


# -- aggregates --------------------------------------------------------------------------------


def test_sum_is_exact_in_micro_units_and_judged_at_close() -> None:
    events = [_r("a", MIN, 1.1), _r("b", 2 * MIN, 2.2), _r("c", 3 * MIN, 3.3)]
    pack = _pack("sum", ">=", 6.6)
    assert _values(pack, events) == []  # not closed yet
    assert _values(pack, [*events, _closer()]) == [("A", 6.6)]


def test_avg_is_judged_only_once_the_watermark_passes_the_window_end_plus_the_lateness() -> None:
    pack = _pack("avg", ">", 50)
    engine, state = Engine(pack), {}
    engine.process(engine.enrich([_r("a", MIN, 40), _r("b", 9 * MIN, 70)]), state)
    assert engine.tick(state) == []
    engine.process(engine.enrich([_closer(20 - 1 / 60_000)]), state)  # end + lateness − 1 ms
    assert engine.tick(state) == []
    engine.process(engine.enrich([_closer(20)]), state)
    [incident] = [i for i in engine.tick(state) if i.subject == "A"]
    assert (incident.value, incident.window_start, incident.window_end) == (55.0, T0, T0 + 10 * MIN)
    assert incident.details == {"aggregate": "avg", "group_by": "zone", "window_ms": 600_000}
    assert engine.tick(state) == []  # judged once


def test_an_avg_under_the_threshold_or_with_too_few_events_does_not_fire() -> None:
    assert _values(_pack("avg", ">", 50), [_r("a", MIN, 40), _r("b", 2 * MIN, 60), _closer()]) == []
    few = _pack("avg", ">", 50, "  min_events: 3\n")
    assert _values(few, [_r("a", MIN, 90), _r("b", 2 * MIN, 90), _closer()]) == []
    assert _values(few, [_r("a", MIN, 90), _r("b", 2 * MIN, 90), _r("c", 3 * MIN, 90), _closer()]) == [("A", 90.0)]


def test_an_event_exactly_at_the_window_end_belongs_to_the_next_window() -> None:
    pack = _pack("avg", ">", 50)
    events = [_r("a", MIN, 90), _r("b", 10 * MIN, 10), _closer(30)]
    assert [(i.subject, i.window_start, i.value) for i in fire(pack, events) if i.subject == "A"] == [("A", T0, 90.0)]


def test_max_going_up_and_min_going_down_fire_at_once() -> None:
    high = _pack("max", ">", 80)
    assert _values(high, [_r("a", MIN, 50), _r("b", 2 * MIN, 85), _r("c", 3 * MIN, 95)]) == [("A", 95.0)]
    low = _pack("min", "<", 10)
    assert _values(low, [_r("a", MIN, 50), _r("b", 2 * MIN, 5), _r("c", 3 * MIN, 2)]) == [("A", 2.0)]


def test_min_above_a_value_can_still_fall_so_it_is_judged_at_close() -> None:
    pack = _pack("min", ">", 10)
    assert _values(pack, [_r("a", MIN, 50)]) == []
    assert _values(pack, [_r("a", MIN, 50), _closer()]) == [("A", 50.0)]
    assert _values(pack, [_r("a", MIN, 50), _r("b", 2 * MIN, 5), _closer()]) == []


def test_a_count_under_a_value_is_judged_at_close() -> None:
    pack = _pack("count", "<", 3)
    assert _values(pack, [_r("a", MIN, 1)]) == []
    assert _values(pack, [_r("a", MIN, 1), _closer()]) == [("A", 1.0)]


def test_distinct_counts_the_distinct_values_of_a_field() -> None:
    pack = _pack("distinct", ">=", 2)
    events = [_r("a", MIN, 1, "s1"), _r("b", 2 * MIN, 1, "s1"), _r("c", 3 * MIN, 1, "s2")]
    assert _values(pack, events[:2]) == []
    [(subject, value)] = _values(pack, events)
    assert (subject, value) == ("A", 2.0)
    by_value = _pack("distinct", ">=", 2, "  distinct_field: value\n")
    assert _values(by_value, events) == []


# -- sliding windows and groups ----------------------------------------------------------------


def test_a_sliding_window_holds_every_event_in_window_over_slide_windows() -> None:
    pack = _pack("count", ">=", 1, "  slide: 5m\n")
    [first, second] = fire(pack, [_r("a", 7 * MIN, 1)])
    assert (first.window_start, first.window_end) == (T0, T0 + 10 * MIN)
    assert (second.window_start, second.window_end) == (T0 + 5 * MIN, T0 + 15 * MIN)


def test_a_sliding_window_finds_a_burst_that_straddles_a_tumbling_boundary() -> None:
    burst = [_r("a", 8 * MIN, 1), _r("b", 11 * MIN, 1), _r("c", 12 * MIN, 1)]
    assert fire(_pack("count", ">=", 3), burst) == []
    [incident] = fire(_pack("count", ">=", 3, "  slide: 5m\n"), burst)
    assert incident.window_start == T0 + 5 * MIN


@pytest.mark.parametrize(("window", "slide"), [("10m", "3m"), ("10m", "15m")])
def test_a_slide_that_does_not_divide_the_window_is_a_pack_error(window: str, slide: str) -> None:
    with pytest.raises(PackError, match="must divide the window"):
        _pack("count", ">=", 1, f"  slide: {slide}\n")


@pytest.mark.parametrize(("slide", "ok"), [("1m", True), ("30s", False)])
def test_a_sliding_window_keeps_at_most_1440_overlapping_windows(slide: str, ok: bool) -> None:
    rule = f"""
- {{id: agg, kind: window, title: A, category: test, layer: zones, match: {{kind: reading, metric: m}},
   window: 1d, slide: {slide}, value: 1}}
"""
    if ok:
        assert make_pack(rule, {"zones": ZONES}).spec.rules[0].id == "agg"
        return
    with pytest.raises(PackError, match=r"keeps 2880 overlapping windows per group.*slide at least 0:01:00"):
        make_pack(rule, {"zones": ZONES})


def test_group_by_sensor_gives_one_incident_per_sensor() -> None:
    pack = _pack("max", ">", 80, "  group_by: sensor\n")
    events = [_r("a", MIN, 90, "s1"), _r("b", MIN, 95, "s2", IN_B), _r("c", MIN, 20, "s3")]
    assert sorted((i.subject, i.zone_id, i.value) for i in fire(pack, events)) == [("s1", "A", 90.0), ("s2", "B", 95.0)]


def test_group_by_cell_uses_h3_cells_at_the_given_resolution() -> None:
    pack = _pack("count", ">=", 2, "  group_by: cell\n  h3_resolution: 9\n")
    near, far = (0.5, 0.5), (0.52, 0.5)  # about 2 km apart: different resolution-9 cells
    events = [_r("a", MIN, 1, "s1", near), _r("b", MIN, 1, "s2", near), _r("c", MIN, 1, "s3", far)]
    [incident] = fire(pack, events)
    assert incident.subject == h3.latlng_to_cell(0.5, 0.5, 9)
    assert incident.evidence.event_ids == ["a", "b"]


# -- expiry and order --------------------------------------------------------------------------


def test_expire_keeps_a_window_that_is_still_to_be_judged() -> None:
    pack = _pack("avg", ">", 50)
    engine, state = Engine(pack), {}
    engine.process(engine.enrich([_r("a", MIN, 90)]), state)
    engine.process(engine.enrich([_closer(25)]), state)  # floor 15 min: [0, 10m) could be expired
    assert engine.expire(state) == 0  # ... but it has not been judged: a tick may come later
    [incident] = [i for i in engine.tick(state) if i.subject == "A"]
    assert incident.value == 90.0
    assert engine.expire(state) == 1  # judged: now it goes


@st.composite
def _readings(draw: st.DrawFn) -> list[Reading]:
    n = draw(st.integers(1, 20))
    return [
        _r(
            f"e{i}",
            # within the 10 min lateness of one another, biased to window edges
            timedelta(
                milliseconds=draw(st.sampled_from([0, 299_999, 300_000, 599_999, 600_000]) | st.integers(0, 600_000))
            ),
            draw(st.sampled_from([0.1, 0.2, 10.0, 49.99, 50.0, 50.01, 99.9])),
            draw(st.sampled_from(["s1", "s2", "s3"])),
            draw(st.sampled_from([IN_A, IN_B])),
        )
        for i in range(n)
    ]


@pytest.mark.parametrize(
    "pack",
    [
        _pack("sum", ">", 100, "  slide: 5m\n"),
        _pack("avg", ">=", 50),
        _pack("distinct", ">=", 2, "  slide: 2m\n"),
        _pack("min", "<", 1, "  group_by: sensor\n"),
    ],
    ids=["sum-sliding", "avg", "distinct-sliding", "min-by-sensor"],
)
@given(events=_readings(), data=st.data())
@settings(max_examples=80, deadline=None)
def test_any_order_and_batching_within_the_lateness_gives_the_same_incidents(
    pack: LoadedPack, events: list[Reading], data: st.DataObject
) -> None:
    order = data.draw(st.permutations(events))
    cuts = data.draw(st.lists(st.integers(1, max(1, len(order) - 1)), max_size=5))
    closing = [_closer(60)]  # after everything: every window is judged
    batches = [*cut(order, cuts), closing]
    assert stream(pack, batches) == {i.id: i for i in fire(pack, [*events, *closing])}


# -- window arithmetic -------------------------------------------------------------------------


@given(ts=st.integers(0, 10**13), size=st.integers(1, 10**9))
def test_bucket_of_is_the_epoch_aligned_bucket_holding_the_time(ts: int, size: int) -> None:
    start = bucket_of(ts, size)
    assert start % size == 0
    assert start <= ts < start + size


@given(
    ts=st.integers(0, 4 * 10**12),
    slide_s=st.sampled_from([1, 30, 60, 300, 900, 3600]),
    hops=st.integers(1, 12),
)
@settings(max_examples=150, deadline=None)
def test_every_event_lands_in_exactly_window_over_slide_windows_each_containing_it(
    ts: int, slide_s: int, hops: int
) -> None:
    window_s = slide_s * hops
    pack = make_pack(
        f"""
- id: w
  kind: window
  title: Sliding
  category: test
  group_by: sensor
  match: {{kind: reading}}
  window: {window_s}s
  slide: {slide_s}s
  value: 1
"""
    )
    event = Reading(id="e", ts=from_ms(ts), lon=0.5, lat=0.5, sensor_id="s", metric="m", value=1.0)
    assert to_ms(event.ts) == ts
    engine, state = Engine(pack), {}
    engine.process(engine.enrich([event]), state)
    windows = sorted((int(e["start"]), int(e["end"])) for e in state.values())
    assert len(windows) == hops == len({start for start, _ in windows})
    for start, end in windows:
        assert end - start == window_s * 1000
        assert start % (slide_s * 1000) == 0
        assert start <= ts < end
