"""cooldown: firings of one dedup key close together are one incident, and nothing is dropped."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rulekit import MIN, T0, cut, fire, layer, make_pack, reading, square, stream, track

from rules.decode import decode_one
from rules.engine import Engine
from rules.errors import PackError
from rules.model import Incident
from rules.pack import LoadedPack, load_pack
from rules.replay import replay_events
from rules.state import to_ms
from streams.bench_data import wuhan_events

WUHAN = Path(__file__).resolve().parents[2] / "rules" / "packs" / "wuhan"

THRESHOLD = """
- id: hot
  kind: threshold
  title: Above 30
  category: heat
  match: {kind: reading, metric: m}
  value: 30
  dedup: 15m
  cooldown: 30m
"""


def _hot(minutes: list[int], *, sensor: str = "s1", value: float = 40) -> list[Any]:
    return [reading(f"{sensor}-{m:03d}", m * MIN, value, sensor=sensor) for m in minutes]


def test_firings_within_the_cooldown_are_one_incident_with_their_sums() -> None:
    # buckets 00:00, 00:15 and 00:30 each fire; without a cooldown, three incidents
    events = _hot([1, 2, 16, 31, 32, 33])
    assert len(fire(make_pack(THRESHOLD.replace("  cooldown: 30m\n", "")), events)) == 3
    [one] = fire(make_pack(THRESHOLD), events)
    [first] = fire(make_pack(THRESHOLD), events[:2])
    assert one.id == first.id  # the first firing's incident keeps its id and its start
    assert (one.window_start, one.first_event_at) == (T0, T0 + MIN)
    assert one.evidence.count == 6
    assert one.revision == 6  # the firings' revisions: 2 + 1 + 3
    assert one.evidence.event_ids == [e.id for e in events]
    assert one.last_event_at == T0 + 33 * MIN
    assert one.window_end == T0 + 45 * MIN
    assert one.details["cooldown"]["firings"] == 3


def test_a_firing_after_the_cooldown_is_a_new_incident() -> None:
    # last activity 00:02; 00:32 is exactly 30 minutes later: the cooldown has passed
    a, b = fire(make_pack(THRESHOLD), _hot([1, 2, 32]))
    assert (a.evidence.count, b.evidence.count) == (2, 1)
    assert b.first_event_at == T0 + 32 * MIN
    assert "cooldown" not in a.details and "cooldown" not in b.details
    [one] = fire(make_pack(THRESHOLD), _hot([1, 2, 31]))  # one millisecond inside it: the same
    assert one.evidence.count == 3


def test_the_cooldown_runs_from_the_newest_firing_so_a_chain_goes_on() -> None:
    # firings 25 minutes apart: each within the cooldown of the one before
    [one] = fire(make_pack(THRESHOLD), _hot([0, 25, 50, 75, 100]))
    assert one.evidence.count == 5
    assert one.details["cooldown"]["firings"] == 5


def test_each_dedup_key_has_its_own_chain() -> None:
    events = sorted(_hot([1, 16], sensor="a") + _hot([2, 17], sensor="b"), key=lambda e: e.ts)
    incidents = fire(make_pack(THRESHOLD), events)
    assert sorted((i.subject, i.evidence.count) for i in incidents) == [("a", 2), ("b", 2)]


def test_severity_is_the_highest_and_value_the_worst_of_the_firings() -> None:
    pack = make_pack(THRESHOLD + "  escalate:\n    - {severity: critical, value: 90}\n")
    events = [reading("a", MIN, 95), reading("b", 16 * MIN, 40)]
    [one] = fire(pack, events)
    assert (one.severity, one.value) == ("critical", 95.0)


SUSTAINED = """
- id: water
  kind: sustained
  title: Water above 30 cm for 2 minutes
  category: flood
  match: {kind: reading, metric: m}
  value: 30
  for: 2m
  cooldown: 10m
"""


def _series(values: list[float], start: int = 0) -> list[Any]:
    return [reading(f"r{start + i:03d}", (start + i) * MIN, v) for i, v in enumerate(values)]


def test_a_flapping_episode_reopens_the_incident_instead_of_opening_another() -> None:
    # opens at 2 min, resolves at 3 min, opens again at 6 min (3 minutes later): one incident, open
    events = _series([35, 36, 37, 10, 35, 36, 37])
    assert len(fire(make_pack(SUSTAINED.replace("  cooldown: 10m\n", "")), events)) == 2
    [one] = fire(make_pack(SUSTAINED), events)
    assert one.status == "open" and one.resolved_at is None
    assert one.evidence.count == 7  # 3 + the resolving reading + 3
    assert one.window_start == T0
    [resolved] = fire(make_pack(SUSTAINED), events[:4])
    assert resolved.status == "resolved" and resolved.id == one.id
    assert one.revision > resolved.revision


def test_a_resolved_incident_stays_resolved_when_nothing_fires_again() -> None:
    [one] = fire(make_pack(SUSTAINED), _series([35, 36, 37, 10, 10, 10]))
    assert one.status == "resolved"
    assert one.resolved_at == T0 + 3 * MIN


def test_revisions_of_the_incident_only_grow_batch_after_batch() -> None:
    engine, state = Engine(make_pack(SUSTAINED)), dict[str, Any]()
    seen: dict[str, int] = {}
    events = _series([35, 36, 37, 10, 35, 36, 37, 38, 10, 10, 40, 41, 42])
    for offset, event in enumerate(events):
        for incident in engine.process(engine.enrich([event]), state, position=(0, offset)).incidents:
            assert incident.revision > seen.get(incident.id, 0), incident
            seen[incident.id] = incident.revision
    assert len(seen) == 1


def test_a_redelivered_message_changes_nothing_and_sends_the_incident_again() -> None:
    engine, state = Engine(make_pack(THRESHOLD)), dict[str, Any]()
    first = engine.process(engine.enrich(_hot([1])), state, position=(0, 0)).incidents
    [joined] = engine.process(engine.enrich(_hot([16])), state, position=(0, 1)).incidents
    assert joined.id == first[0].id and joined.evidence.count == 2
    [again] = engine.process(engine.enrich(_hot([16])), state, position=(0, 1)).incidents
    assert again == joined


def test_a_late_event_of_an_earlier_firing_is_still_counted() -> None:
    # 00:01 and 00:16 fire (one chain); then a late reading in the first bucket
    events = [*_hot([1, 16]), reading("late", 5 * MIN, 50)]
    [one] = stream(make_pack(THRESHOLD), [[e] for e in events]).values()
    assert one.evidence.count == 3
    assert one.value == 50.0


def test_no_incident_is_lost_when_chains_expire() -> None:
    """Engine.expire drops chains whose cooldown has passed; later firings start new incidents."""
    engine, state = Engine(make_pack(THRESHOLD, lateness="10m")), dict[str, Any]()
    out: dict[str, Incident] = {}
    events = _hot([1, 16, 100, 200, 215])
    for offset, event in enumerate(events):
        for incident in engine.process(engine.enrich([event]), state, position=(0, offset)).incidents:
            out[incident.id] = incident
        engine.expire(state)
    counts = sorted((i.first_event_at, i.evidence.count) for i in out.values())
    assert counts == [(T0 + MIN, 2), (T0 + 100 * MIN, 1), (T0 + 200 * MIN, 2)]
    assert sum(c for _, c in counts) == len(events)


def test_state_of_a_finished_chain_is_expired() -> None:
    engine, state = Engine(make_pack(THRESHOLD, lateness="10m")), dict[str, Any]()
    engine.process(engine.enrich(_hot([1, 16])), state, position=(0, 0))
    engine.process(engine.enrich([reading("x", 300 * MIN, 1, sensor="other")]), state, position=(0, 1))
    engine.expire(state)
    assert [k for k in state if k.startswith("cool:")] == []  # the chain, and then the key's pointer


def test_an_old_episode_sent_again_after_its_chain_expired_is_not_a_new_incident() -> None:
    """sustained sends its episode again when a reading comes out of order; once the chain of that
    episode has expired, that snapshot must not open an incident of its own."""
    pack = make_pack(SUSTAINED, lateness="5m")
    engine, state = Engine(pack), dict[str, Any]()
    out: dict[str, Incident] = {}
    batches = [_series([35, 36, 37, 10, 35, 36, 37, 10], 0), _series([10], 60), [reading("ooo", 59 * MIN, 5)]]
    for offset, batch in enumerate(batches):
        for incident in engine.process(engine.enrich(batch), state, position=(0, offset), check_late=False).incidents:
            out[incident.id] = incident
        engine.expire(state)
    assert len(out) == 1


def test_a_chain_keeps_only_the_firings_that_can_still_change() -> None:
    """Two days above the threshold: 192 buckets, one incident, and a chain entry that stays small."""
    engine, state = Engine(make_pack(THRESHOLD)), dict[str, Any]()
    events = _hot(list(range(0, 2 * 24 * 60, 5)))
    for offset in range(0, len(events), 50):
        engine.process(engine.enrich(events[offset : offset + 50]), state, position=(0, offset))
    [chain] = [v for k, v in state.items() if "|c|" in k]
    assert chain["k"] == 192 and chain["n"] == len(events)
    assert len(chain["m"]) <= 8  # the first, and those within the allowed lateness (1h) of the newest event
    [one] = fire(make_pack(THRESHOLD), events)
    assert one.evidence.count == len(events)


def test_geofence_keys_are_the_object_and_its_fence() -> None:
    fences = {"nofly": layer("nofly", [square("a", 0.0), square("b", 2.0)])}
    rule = """
- id: enter
  kind: geofence
  title: Drone enters a no-fly zone
  category: airspace
  match: {kind: track, object_type: drone}
  fences: nofly
  transition: enter
  cooldown: 30m
"""
    pack = make_pack(rule, fences)
    outside, in_a, in_b = (1.5, 0.5), (0.5, 0.5), (2.5, 0.5)
    path = [outside, in_a, outside, in_a, outside, in_b]
    events = [track(f"t{i}", i * MIN, where) for i, where in enumerate(path)]
    incidents = fire(pack, events)
    assert sorted((i.zone_id, i.evidence.count) for i in incidents) == [("a", 2), ("b", 1)]
    # a crossing never changes once it happened: it keeps no chain from expiring
    engine, state = Engine(pack), dict[str, Any]()
    engine.process(engine.enrich(events), state, position=(0, 0))
    chains = [v for k, v in state.items() if "|c|" in k]
    assert len(chains) == 2 and not any("closed" in c for c in chains)


def test_a_dwell_that_starts_again_within_the_cooldown_reopens_its_incident() -> None:
    stops = {"stops": layer("stops", [square("stop", 0.0)])}
    rule = """
- id: stalled
  kind: geofence
  title: Robotaxi outside its stop for 3 minutes
  category: mobility
  match: {kind: track, object_type: robotaxi}
  fences: stops
  transition: outside
  min_dwell: 3m
  cooldown: 20m
"""
    inside, outside = (0.5, 0.5), (3.0, 0.5)
    path = [outside] * 5 + [inside] * 2 + [outside] * 5  # a minute apart: dwell, back at the stop, dwell
    events = [track(f"t{i}", i * MIN, where, kind="robotaxi") for i, where in enumerate(path)]
    pack = make_pack(rule, stops)
    assert len(fire(make_pack(rule.replace("  cooldown: 20m\n", ""), stops), events)) == 2
    [one] = fire(pack, events)
    assert one.status == "open" and one.details["cooldown"]["firings"] == 2
    [first] = fire(pack, events[:6])
    assert first.status == "resolved" and first.id == one.id
    engine, state = Engine(pack), dict[str, Any]()
    engine.process(engine.enrich(events), state, position=(0, 0))
    [chain] = [v for k, v in state.items() if "|c|" in k]
    assert chain["closed"] is False  # the open dwell keeps its chain from expiring


SILENCE_ZONES = {"zones": layer("zones", [square("A", 0.0)])}
SILENCE = """
- id: quiet
  kind: silence
  title: Sensor silent
  category: operations
  match: {kind: reading, metric: m}
  layer: zones
  for: 10m
"""


def test_a_sensor_that_drops_out_again_soon_after_it_came_back_is_the_same_silence_incident() -> None:
    """silence incidents are opened and resolved by ticks: the cooldown applies there too."""
    engine, state = Engine(make_pack(SILENCE + "  cooldown: 1h\n", SILENCE_ZONES)), dict[str, Any]()
    out: dict[str, Incident] = {}

    def keep(incidents: list[Incident]) -> None:
        for incident in incidents:
            assert incident.revision > out[incident.id].revision if incident.id in out else True
            out[incident.id] = incident

    for offset, (minute, tick) in enumerate([(0, 15), (20, 21), (22, 40), (41, 42)]):
        keep(engine.process(engine.enrich([reading(f"r{minute}", minute * MIN, 1.0)]), state, (0, offset)).incidents)
        keep(engine.tick(state, clock_ms=to_ms(T0 + tick * MIN)))
    # silent 00:00-00:20 and 00:22-00:41: two episodes, one incident, open again, then resolved
    [one] = out.values()
    assert one.status == "resolved"
    assert one.details["cooldown"]["firings"] == 2
    assert one.window_start == T0


def test_an_open_silence_keeps_its_chain_and_pointer_however_long_it_lasts() -> None:
    """Expiry must not drop a chain (or its key's pointer) while an episode in it is open: the
    episode's resolution, hours later, must reach the incident that was sent."""
    engine, state = Engine(make_pack(SILENCE + "  cooldown: 15m\n", SILENCE_ZONES, lateness="5m")), dict[str, Any]()
    sent: dict[str, Incident] = {}

    def step(offset: int, events: list[Any], tick: int) -> None:
        for incident in engine.process(engine.enrich(events), state, position=(0, offset)).incidents:
            sent[incident.id] = incident
        for incident in engine.tick(state, clock_ms=to_ms(T0 + tick * MIN)):
            sent[incident.id] = incident
        engine.expire(state)

    # s1 is silent from 00:00 to 00:20, back, silent again from 00:22 (one chain), then for hours
    step(0, [reading("a0", 0 * MIN, 1.0, sensor="s1")], 15)
    step(1, [reading("a1", 20 * MIN, 1.0, sensor="s1")], 21)
    step(2, [reading("a2", 22 * MIN, 1.0, sensor="s1")], 40)
    for hour in range(1, 6):  # another sensor moves the watermark on, far past the chain's end
        step(2 + hour, [reading(f"b{hour}", hour * 60 * MIN, 1.0, sensor="s2")], hour * 60 + 1)
    [opened] = [i for i in sent.values() if i.subject == "s1"]
    assert opened.status == "open" and opened.details["cooldown"]["firings"] == 2
    step(10, [reading("a3", 400 * MIN, 1.0, sensor="s1")], 401)
    [resolved] = [i for i in sent.values() if i.subject == "s1"]
    assert resolved.id == opened.id and resolved.status == "resolved"
    assert resolved.revision > opened.revision


def test_a_cooldown_longer_than_a_week_is_refused() -> None:
    expected = r"t.yaml:15: rule 'hot' rules\[0\].cooldown: cooldown 8d is longer than the longest, 7d"
    with pytest.raises(PackError, match=expected):
        make_pack(THRESHOLD.replace("cooldown: 30m", "cooldown: 8d"))
    with pytest.raises(PackError, match="no unit"):
        make_pack(THRESHOLD.replace("cooldown: 30m", "cooldown: 30"))


def test_without_a_cooldown_the_engine_keeps_no_cooldown_state() -> None:
    engine, state = Engine(make_pack(THRESHOLD.replace("  cooldown: 30m\n", ""))), dict[str, Any]()
    engine.process(engine.enrich(_hot([1, 16])), state, position=(0, 0))
    assert not [k for k in state if k.startswith("cool:")]


@st.composite
def _readings(draw: st.DrawFn) -> list[Any]:
    minutes = sorted(set(draw(st.lists(st.integers(0, 240), min_size=1, max_size=40))))
    values = draw(st.lists(st.sampled_from([10.0, 35.0, 40.0]), min_size=len(minutes), max_size=len(minutes)))
    return [reading(f"r{m:03d}", m * MIN, v) for m, v in zip(minutes, values, strict=True)]


@settings(max_examples=60, deadline=None)
@given(events=_readings(), cuts=st.lists(st.integers(0, 40), max_size=6))
def test_any_batching_gives_the_same_incidents_and_counts_every_firing(events: list[Any], cuts: list[int]) -> None:
    for rules in (THRESHOLD, SUSTAINED, AUTO, THRESHOLD + "  auto_resolve: 20m\n"):
        pack = make_pack(rules)
        replayed = fire(pack, events)
        streamed = stream(pack, cut(events, cuts))
        assert sorted(streamed.values(), key=lambda i: i.id) == sorted(replayed, key=lambda i: i.id)
    # threshold: every event above 30 is counted on exactly one incident
    over = sum(1 for e in events if e.value > 30)
    assert sum(i.evidence.count for i in fire(make_pack(THRESHOLD), events)) == over


def test_the_cooldown_is_off_by_default() -> None:
    assert make_pack(THRESHOLD.replace("  cooldown: 30m\n", "")).spec.rules[0].cooldown == timedelta(0)


def _with_cooldown(pack: LoadedPack, cooldown: timedelta) -> LoadedPack:
    rules = [r.model_copy(update={"cooldown": cooldown}) for r in pack.spec.rules]
    return replace(pack, spec=pack.spec.model_copy(update={"rules": rules}))


def test_every_kind_of_the_wuhan_pack_counts_every_firing_on_one_incident_per_chain() -> None:
    """With a cooldown on all 15 rules of the demo pack, each rule's incidents add up to exactly
    what its firings without a cooldown add up to (counts and revisions), in fewer incidents."""
    pack = load_pack(WUHAN)
    raw = wuhan_events(20_000)  # 400 s of event time, stretched to 67 minutes: buckets and episodes repeat
    start = datetime.fromisoformat(raw[0]["ts"])
    events = [
        decode_one({**e, "ts": (start + (datetime.fromisoformat(e["ts"]) - start) * 10).isoformat()}) for e in raw
    ]
    plain = replay_events(_with_cooldown(pack, timedelta(0)), events)
    cooled = replay_events(_with_cooldown(pack, timedelta(hours=1)), events)

    def totals(incidents: list[Incident]) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for i in incidents:
            count, revision = out.get(i.rule_id, (0, 0))
            out[i.rule_id] = (count + i.evidence.count, revision + i.revision)
        return out

    assert len(totals(plain)) >= 9  # most rules fire on these events
    assert totals(cooled) == totals(plain)
    assert len(cooled) < len(plain) * 0.8
    merged = Counter(i.kind for i in cooled if "cooldown" in i.details)
    assert set(merged) >= {"threshold", "window", "sustained", "cluster", "correlation", "proximity"}, merged


# -- auto_resolve ------------------------------------------------------------------------------------

AUTO = THRESHOLD.replace("  cooldown: 30m\n", "  auto_resolve: 20m\n")


def _ticked(pack: LoadedPack, batches: list[list[Any]], ticks: list[int]) -> dict[str, Incident]:
    """Batches with a tick (at a minute of event time) after each; the latest snapshot per id."""
    engine, state = Engine(pack), dict[str, Any]()
    out: dict[str, Incident] = {}
    for offset, (batch, tick) in enumerate(zip(batches, ticks, strict=True)):
        found = engine.process(engine.enrich(batch), state, position=(0, offset)).incidents if batch else []
        for incident in [*found, *engine.tick(state, clock_ms=to_ms(T0 + tick * MIN))]:
            assert incident.id not in out or incident.revision > out[incident.id].revision, incident
            out[incident.id] = incident
        engine.expire(state)
    return out


def test_an_incident_quiet_for_auto_resolve_resolves_once_it_can_no_longer_change() -> None:
    pack = make_pack(AUTO, lateness="10m")
    # bucket 00:00-00:15; last event 00:02: quiet from 00:22, final from 00:25 (end + lateness)
    out = _ticked(pack, [_hot([1, 2]), [], [], []], [10, 24, 25, 60])
    [one] = out.values()
    assert one.status == "resolved"
    assert one.resolved_at == T0 + 22 * MIN
    assert one.revision == 3 and one.evidence.count == 2
    assert one.details["auto_resolved"] is True
    still_open = _ticked(pack, [_hot([1, 2]), []], [10, 24])
    assert [i.status for i in still_open.values()] == ["open"]


def test_auto_resolve_gives_the_same_incidents_in_replay_as_with_ticks_all_along() -> None:
    pack = make_pack(AUTO, lateness="10m")
    events = [*_hot([1, 2, 16, 40, 41, 90]), reading("last", 200 * MIN, 1.0, sensor="other")]
    replayed = {i.id: i for i in fire(pack, events)}  # one tick, at the end
    ticked = _ticked(pack, [[e] for e in events], [1, 2, 16, 40, 41, 90, 200])
    assert ticked == replayed
    assert [i.status for i in sorted(replayed.values(), key=lambda i: i.window_start)] == ["resolved"] * 4


def test_auto_resolve_with_a_cooldown_resolves_the_whole_chain() -> None:
    pack = make_pack(THRESHOLD + "  auto_resolve: 20m\n", lateness="10m")
    events = _hot([1, 16, 31])  # one chain of three firings
    [one] = fire(pack, [*events, reading("later", 200 * MIN, 1.0, sensor="other")])
    assert one.status == "resolved" and one.resolved_at == T0 + 51 * MIN
    assert one.evidence.count == 3 and one.revision == 4
    [still] = fire(pack, [*events, reading("soon", 45 * MIN, 1.0, sensor="other")])
    assert still.status == "open"  # the cooldown (30m after 00:31) and lateness have not passed


def test_auto_resolve_leaves_an_open_episode_to_its_own_condition() -> None:
    pack = make_pack(SUSTAINED + "  auto_resolve: 5m\n")
    [one] = fire(pack, [*_series([35, 36, 37]), reading("far", 300 * MIN, 1.0, sensor="other")])
    assert one.status == "open"


def test_a_redelivery_after_auto_resolve_sends_the_resolved_incident_again() -> None:
    engine, state = Engine(make_pack(AUTO, lateness="10m")), dict[str, Any]()
    engine.process(engine.enrich(_hot([1, 2])), state, position=(0, 0))
    [resolved] = engine.tick(state, clock_ms=to_ms(T0 + 30 * MIN))
    assert resolved.status == "resolved"
    # the pipeline re-applies a re-delivered message without judging lateness (check_late=False)
    [again] = engine.process(engine.enrich(_hot([1, 2])), state, position=(0, 0), check_late=False).incidents
    assert again == resolved
