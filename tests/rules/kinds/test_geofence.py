"""geofence rules: enter, exit, cross, inside and outside, with min_dwell and a jitter buffer."""

from __future__ import annotations

import copy
from datetime import timedelta

import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from rulekit import MIN, MS, T0, cut, east, fire, layer, make_pack, stream, track

from rules.engine import Engine
from rules.geo import Layer
from rules.model import Track
from rules.pack import LoadedPack

FENCES: Layer = layer(
    "fences",
    [
        {
            "type": "Feature",
            "properties": {"zone_id": zid, "name": f"Fence {zid}"},
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[x, 30.0], [x + 0.01, 30.0], [x + 0.01, 30.01], [x, 30.01], [x, 30.0]]],
            },
        }
        for zid, x in (("F", 114.0), ("G", 114.02))
    ],
)
BORDER = (114.0, 30.005)  # the west edge of F
DEEP_IN, BAND_IN = east(BORDER, 100), east(BORDER, 10)
DEEP_OUT, BAND_OUT = east(BORDER, -100), east(BORDER, -10)
FAR_OUT = east(BORDER, -900)
IN_G = (114.025, 30.005)


def _rule(transition: str, extra: str = "") -> str:
    return f"""
- id: fence
  kind: geofence
  title: Fence
  category: airspace
  match: {{kind: track}}
  fences: fences
  transition: {transition}
{extra}"""


def _pack(transition: str, extra: str = "") -> LoadedPack:
    return make_pack(_rule(transition, extra), {"fences": FENCES})


def _path(*points: tuple[float, float], every: timedelta = timedelta(seconds=10), obj: str = "o1") -> list[Track]:
    return [track(f"{obj}-{i:02d}", i * every, p, obj=obj) for i, p in enumerate(points)]


def _what(pack: LoadedPack, events: list[Track]) -> list[tuple[str, str | None, str]]:
    return [(i.details["transition"], i.zone_id, i.status) for i in fire(pack, events)]


# -- transitions -------------------------------------------------------------------------------


def test_moving_into_a_fence_is_an_enter_with_the_fence_as_zone() -> None:
    [incident] = fire(_pack("enter"), _path(DEEP_OUT, DEEP_IN))
    assert (incident.details["transition"], incident.zone_id, incident.zone_name) == ("enter", "F", "Fence F")
    assert (incident.subject, incident.layer, incident.kind) == ("o1", "fences", "geofence")
    assert incident.window_start == T0 + timedelta(seconds=10)
    assert incident.evidence.event_ids == ["o1-01"]


def test_moving_out_is_an_exit_and_cross_reports_both() -> None:
    there_and_back = _path(DEEP_OUT, DEEP_IN, DEEP_OUT)
    assert _what(_pack("exit"), there_and_back) == [("exit", "F", "open")]
    assert _what(_pack("enter"), there_and_back) == [("enter", "F", "open")]
    assert sorted(_what(_pack("cross"), there_and_back)) == [("enter", "F", "open"), ("exit", "F", "open")]


def test_the_first_fix_sets_the_state_without_a_transition() -> None:
    assert fire(_pack("cross"), _path(DEEP_IN, DEEP_IN)) == []
    assert _what(_pack("exit"), _path(DEEP_IN, DEEP_OUT)) == [("exit", "F", "open")]


def test_a_first_fix_in_the_band_leaves_the_state_unknown_until_the_band_is_left() -> None:
    pack = _pack("cross", "  buffer_m: 30\n")
    assert fire(pack, _path(BAND_IN, BAND_OUT, BAND_IN)) == []
    assert _what(pack, _path(BAND_IN, DEEP_IN, DEEP_OUT)) == [("exit", "F", "open")]


def test_a_track_zig_zagging_within_the_buffer_band_does_not_flap() -> None:
    jitter = _path(DEEP_OUT, BAND_IN, BAND_OUT, BAND_IN, BAND_OUT, BAND_IN)
    assert fire(_pack("cross", "  buffer_m: 30\n"), jitter) == []
    flaps = _what(_pack("cross"), jitter)  # the same track without a buffer
    assert len(flaps) == 5


def test_the_transition_happens_where_the_band_is_left_on_the_other_side() -> None:
    [incident] = fire(_pack("enter", "  buffer_m: 30\n"), _path(DEEP_OUT, BAND_OUT, BAND_IN, DEEP_IN))
    assert incident.window_start == T0 + timedelta(seconds=30)
    assert incident.details["buffer_m"] == 30.0


def test_fence_ids_restrict_the_fences() -> None:
    pack = _pack("enter", "  fence_ids: [G]\n")
    assert fire(pack, _path(DEEP_OUT, DEEP_IN)) == []
    assert _what(pack, _path(DEEP_OUT, IN_G)) == [("enter", "G", "open")]


# -- dwell: inside and outside -----------------------------------------------------------------


def test_inside_fires_after_min_dwell_and_resolves_on_leaving() -> None:
    pack = _pack("inside", "  min_dwell: 3m\n")
    short = _path(DEEP_IN, DEEP_IN, DEEP_IN, every=timedelta(seconds=90) - MS)
    assert fire(pack, short) == []
    stayed = _path(DEEP_IN, DEEP_IN, DEEP_IN, DEEP_OUT, every=timedelta(seconds=90))
    [incident] = fire(pack, stayed)
    assert (incident.status, incident.window_start, incident.resolved_at) == (
        "resolved",
        T0,
        T0 + timedelta(seconds=270),
    )
    assert incident.details["transition"] == "inside"
    assert incident.value == 180.0  # seconds from the start of the dwell to its last fix inside


def test_outside_means_outside_every_fence_one_incident_not_one_per_fence() -> None:
    pack = _pack("outside", "  min_dwell: 3m\n")
    [incident] = fire(pack, _path(FAR_OUT, FAR_OUT, FAR_OUT, FAR_OUT, every=MIN))
    assert (incident.zone_id, incident.details["fence"], incident.status) == (None, None, "open")
    assert fire(pack, _path(IN_G, IN_G, IN_G, IN_G, every=MIN)) == []


def test_a_fix_failing_when_ends_the_dwell_which_restarts_at_the_next_slow_fix() -> None:
    pack = _pack("outside", "  min_dwell: 3m\n  when: [{field: speed_mps, op: '<', value: 0.5}]\n")
    stop_go_stop = [
        track("a", timedelta(0), FAR_OUT, speed=0.0),
        track("b", 2 * MIN, FAR_OUT, speed=9.0),  # drove off: ends the dwell
        track("c", 4 * MIN, FAR_OUT, speed=0.0),
        track("d", 6 * MIN, FAR_OUT, speed=0.0),
    ]
    assert fire(pack, stop_go_stop) == []
    [incident] = fire(pack, [*stop_go_stop, track("e", 7 * MIN, FAR_OUT, speed=0.0)])
    assert incident.window_start == T0 + 4 * MIN
    resolved = fire(
        pack, [*stop_go_stop, track("e", 7 * MIN, FAR_OUT, speed=0.0), track("f", 8 * MIN, FAR_OUT, speed=4.0)]
    )
    assert [(i.status, i.resolved_at) for i in resolved] == [("resolved", T0 + 8 * MIN)]


def test_a_crossing_at_a_fix_failing_when_is_not_reported_but_the_state_follows() -> None:
    pack = _pack("cross", "  when: [{field: alt_m, op: '>', value: 50}]\n")
    low_in_high_out = [
        track("a", timedelta(0), DEEP_OUT, alt=80),
        track("b", MIN, DEEP_IN, alt=10),
        track("c", 2 * MIN, DEEP_OUT, alt=80),
    ]
    assert _what(pack, low_in_high_out) == [("exit", "F", "open")]


# -- order and immutability --------------------------------------------------------------------


def test_an_older_fix_is_counted_and_ignored() -> None:
    pack = _pack("enter")
    engine, state = Engine(pack), {}
    engine.process(engine.enrich(_path(DEEP_OUT, DEEP_IN)), state)
    [incident] = engine.process(engine.enrich([track("old", timedelta(seconds=5), DEEP_OUT)]), state).incidents
    assert incident.details["out_of_order"] == 1
    assert incident.details["transition"] == "enter"


def test_a_dwell_episode_is_copied_before_it_grows_never_changed_in_the_stored_entry() -> None:
    """Copy-on-touch: a batch changes its own copy of an entry; the stored one changes only by replacement."""
    pack = _pack("inside", "  min_dwell: 3m\n")
    engine, state = Engine(pack), {}
    path = _path(DEEP_IN, DEEP_IN, DEEP_IN, DEEP_IN, DEEP_OUT, every=timedelta(seconds=90))
    engine.process(engine.enrich(path[:3]), state, position=(0, 0))
    [(key, stored)] = [(k, v) for k, v in state.items() if k.startswith("fence@") and k.endswith("|F")]
    frozen = copy.deepcopy(stored)
    engine.process(engine.enrich(path[3:4]), state, position=(0, 1))
    assert stored == frozen, "the episode of the stored entry was changed in place"
    [ep] = state[key]["eps"].values()
    assert ep["n"] == 2 and len(ep["ev"]) == 2
    engine.process(engine.enrich(path[4:]), state, position=(0, 2))
    assert state[key]["eps"] != stored["eps"]


def test_fences_are_never_mutated() -> None:
    before = [shapely.to_wkb(g) for g in FENCES.geoms]
    for transition in ("enter", "inside", "outside"):
        fire(_pack(transition, "  buffer_m: 50\n"), _path(DEEP_OUT, BAND_IN, DEEP_IN, IN_G, FAR_OUT))
    assert [shapely.to_wkb(g) for g in FENCES.geoms] == before


_POINTS = [DEEP_IN, BAND_IN, BAND_OUT, DEEP_OUT, FAR_OUT, IN_G]


@st.composite
def _tracks(draw: st.DrawFn) -> list[Track]:
    out: list[Track] = []
    for obj in ("o1", "o2"):
        points = draw(st.lists(st.sampled_from(_POINTS), max_size=10))
        speeds = [draw(st.sampled_from([0.0, 0.3, 5.0])) for _ in points]
        out += [
            track(f"{obj}-{i}", i * MIN, p, obj=obj, speed=s)
            for i, (p, s) in enumerate(zip(points, speeds, strict=True))
        ]
    return out


@pytest.mark.parametrize("transition", ["cross", "inside", "outside"])
@given(events=_tracks(), data=st.data())
@settings(max_examples=60, deadline=None)
def test_any_batching_that_keeps_each_objects_order_gives_the_same_incidents(
    transition: str, events: list[Track], data: st.DataObject
) -> None:
    extra = "  buffer_m: 30\n  min_dwell: 2m\n  when: [{field: speed_mps, op: '<', value: 0.5}]\n"
    pack = _pack(transition, extra)
    cuts = data.draw(st.lists(st.integers(1, max(1, len(events) - 1)), max_size=5))
    assert stream(pack, cut(events, cuts)) == {i.id: i for i in fire(pack, events)}
