"""The engine: position-based idempotency, allowed lateness, expiry, and replay equals stream."""

from __future__ import annotations

import copy
import functools
import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.engine import AnyEvent, Engine, Outcome, incident_id, run
from rules.model import Incident, Reading, Report, Track
from rules.pack import LoadedPack, load_pack
from rules.spec import RuleBase
from rules.state import to_ms

WUHAN = Path(__file__).resolve().parents[2] / "rules" / "packs" / "wuhan" / "pack.yaml"
T0 = datetime(2026, 7, 1, 0, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
MS = timedelta(milliseconds=1)
JIANGAN = (114.30, 30.60)  # 420102
HONGSHAN = (114.35, 30.50)  # 420111
QIAOKOU = (114.27, 30.58)  # 420104
WUCHANG = (114.30, 30.55)  # 420106
BEIJING = (116.40, 39.90)  # in no district


# Kinds whose incidents are a function of the set of events (docs/rules.md, "Replay equals stream").
ORDER_FREE = {"threshold", "window", "cluster", "correlation", "proximity"}
# Kinds that need each subject's events in time order (but not a global order).
PER_SUBJECT = {"sustained", "geofence"}


def only(pack: LoadedPack, kinds: set[str]) -> LoadedPack:
    """The pack with only the rules of the given kinds (same layers)."""
    rules: list[RuleBase] = [r for r in pack.spec.rules if getattr(r, "kind", None) in kinds]
    spec = pack.spec.model_copy(update={"rules": rules, "tests": []})
    return LoadedPack(spec=spec, path=pack.path, layers=pack.layers, digest=pack.digest)


@functools.cache
def _wuhan() -> LoadedPack:
    return load_pack(WUHAN)


@pytest.fixture(scope="module")
def pack() -> LoadedPack:
    return _wuhan()


@pytest.fixture(scope="module")
def buckets(pack: LoadedPack) -> LoadedPack:
    """The Wuhan pack's bucketed rules (threshold, window): what the expiry tests count."""
    return only(pack, {"threshold", "window"})


@pytest.fixture(scope="module")
def order_free(pack: LoadedPack) -> LoadedPack:
    return only(pack, ORDER_FREE)


def _flood(
    eid: str, at: timedelta, value: float = 42, *, sensor: str = "wl-1", where: tuple[float, float] = JIANGAN
) -> Reading:
    return Reading(
        id=eid, ts=T0 + at, lon=where[0], lat=where[1], sensor_id=sensor, metric="water_level_cm", value=value
    )


def _dumping(eid: str, at: timedelta, where: tuple[float, float] = HONGSHAN) -> Report:
    return Report(id=eid, ts=T0 + at, lon=where[0], lat=where[1], category="illegal_dumping")


def _process(
    engine: Engine, events: list[AnyEvent], state: dict[str, Any], position: tuple[int, int] | None = None
) -> Outcome:
    return engine.process(engine.enrich(events), state, position=position)


# -- idempotency -------------------------------------------------------------------------------


def test_reprocessing_the_same_position_leaves_state_unchanged_and_re_emits_the_snapshot(pack: LoadedPack) -> None:
    engine, state = Engine(pack), {}
    batch = [
        _flood("a", timedelta(minutes=1)),
        _flood("b", timedelta(minutes=2)),
        *[_dumping(f"d{i}", timedelta(minutes=i)) for i in range(3)],
    ]
    first = _process(engine, batch, state, position=(0, 5))
    before = copy.deepcopy(state)
    again = _process(engine, batch, state, position=(0, 5))
    assert state == before
    assert sorted(again.incidents, key=lambda i: i.id) == sorted(first.incidents, key=lambda i: i.id)
    assert {i.rule_id for i in again.incidents} == {
        "flood.water-level-high",
        "sanitation.dumping-reports",
        "sanitation.dumping-cluster",  # three reports at one spot within 2 minutes
    }
    assert again.late == []


def test_reprocessing_a_position_whose_entry_has_not_fired_re_emits_nothing(pack: LoadedPack) -> None:
    engine, state = Engine(pack), {}
    batch = [_dumping("d1", timedelta(0))]
    assert _process(engine, batch, state, position=(0, 1)).incidents == []
    before = copy.deepcopy(state)
    assert _process(engine, batch, state, position=(0, 1)).incidents == []
    assert state == before


def test_without_a_position_new_events_are_folded_in_and_repeats_are_ignored(pack: LoadedPack) -> None:
    engine, state = Engine(pack), {}
    _process(engine, [_flood("a", timedelta(minutes=1))], state)
    [incident] = _process(
        engine, [_flood("a", timedelta(minutes=1)), _flood("b", timedelta(minutes=2))], state
    ).incidents
    assert incident.evidence.event_ids == ["a", "b"]
    assert incident.revision == 2


def test_an_older_offset_of_the_same_partition_counts_as_already_applied(pack: LoadedPack) -> None:
    engine, state = Engine(pack), {}
    _process(engine, [_flood("a", timedelta(minutes=1))], state, position=(0, 9))
    [incident] = _process(engine, [_flood("b", timedelta(minutes=2))], state, position=(0, 8)).incidents
    assert incident.evidence.event_ids == ["a"]
    [incident] = _process(engine, [_flood("b", timedelta(minutes=2))], state, position=(1, 8)).incidents
    assert incident.evidence.event_ids == ["a", "b"]


def test_state_entries_are_reassigned_never_mutated_in_place(pack: LoadedPack) -> None:
    engine, state = Engine(pack), {}
    _process(engine, [_flood("a", timedelta(minutes=1))], state, position=(0, 1))
    old = dict(state)
    snapshot = copy.deepcopy(old)
    assert len(old) >= 4  # threshold bucket, sustained sensor, silence zone, correlation sensor and cell
    _process(engine, [_flood("b", timedelta(minutes=2))], state, position=(0, 2))
    assert old == snapshot
    for key in old:
        assert state[key] is not old[key], key
    [key] = [k for k in state if k.startswith("flood.water-level-high@")]
    assert state[key]["n"] == 2


# -- lateness ----------------------------------------------------------------------------------


def test_out_of_order_events_within_the_allowed_lateness_give_the_same_result(order_free: LoadedPack) -> None:
    pack = order_free  # sustained, geofence and silence need time order: see the property tests below
    events = [
        _flood("a", timedelta(minutes=1)),
        _flood("b", timedelta(minutes=5)),
        _flood("c", HOUR),
        *[_dumping(f"d{i}", timedelta(minutes=50 + i)) for i in range(3)],
    ]
    in_order = run(Engine(pack), events)
    engine, state = Engine(pack), {}
    latest: dict[str, Incident] = {}
    for event in reversed(events):  # one per batch, newest first: everything arrives late, within 1 h
        outcome = _process(engine, [event], state)
        assert outcome.late == []
        latest.update({i.id: i for i in outcome.incidents})
    assert latest == in_order
    assert {i.rule_id for i in latest.values()} >= {"sanitation.dumping-reports", "sanitation.dumping-cluster"}


def test_an_event_older_than_the_watermark_minus_the_lateness_is_reported_late(pack: LoadedPack) -> None:
    engine, state = Engine(pack), {}
    _process(engine, [_flood("new", 2 * HOUR)], state)
    before = copy.deepcopy(state)
    too_late = _flood("old", HOUR - MS, sensor="wl-2")
    outcome = _process(engine, [too_late], state)
    assert outcome.incidents == []
    assert state == before
    [(item, reason)] = outcome.late
    assert item.event == too_late
    assert reason.startswith(f"event time {too_late.ts.isoformat()} is older than the watermark ")
    assert (T0 + 2 * HOUR).isoformat() in reason
    assert "allowed lateness" in reason


def test_an_event_exactly_at_the_watermark_minus_the_lateness_is_accepted(pack: LoadedPack) -> None:
    engine, state = Engine(pack), {}
    _process(engine, [_flood("new", 2 * HOUR)], state)
    outcome = _process(engine, [_flood("edge", HOUR, sensor="wl-2")], state)
    assert outcome.late == []
    assert [i.subject for i in outcome.incidents] == ["wl-2"]


def test_lateness_is_judged_against_the_watermark_before_the_batch(pack: LoadedPack) -> None:
    engine, state = Engine(pack), {}
    outcome = _process(engine, [_flood("new", 5 * HOUR), _flood("old", timedelta(0), sensor="wl-2")], state)
    assert outcome.late == []
    assert engine.watermark_ms == to_ms(T0 + 5 * HOUR)


def test_late_events_do_not_move_the_watermark_and_it_never_goes_back(pack: LoadedPack) -> None:
    engine, state = Engine(pack), {}
    _process(engine, [_flood("a", 3 * HOUR)], state)
    _process(engine, [_flood("b", 2 * HOUR + timedelta(minutes=30))], state)
    _process(engine, [_flood("c", timedelta(0))], state)
    assert engine.watermark_ms == to_ms(T0 + 3 * HOUR)


# -- expiry ------------------------------------------------------------------------------------


def test_expire_drops_only_buckets_that_can_no_longer_receive_events(buckets: LoadedPack) -> None:
    engine, state = Engine(buckets), {}
    assert engine.expire(state) == 0  # no watermark yet
    # flood dedup is 15 min: buckets [0, 15m) and [45m, 60m)
    _process(engine, [_flood("a", timedelta(minutes=1)), _flood("b", timedelta(minutes=50), sensor="wl-2")], state)
    _process(engine, [_flood("now", HOUR + timedelta(minutes=15), sensor="wl-3")], state)  # floor = 15m
    assert engine.expire(state) == 1  # [0, 15m) ends exactly at the floor
    assert sorted(e["subj"] for e in state.values()) == ["wl-2", "wl-3"]
    _process(engine, [_flood("later", 2 * HOUR, sensor="wl-3")], state)  # floor = 60m
    assert engine.expire(state) == 1  # wl-2's [45m, 60m); wl-3's [75m, 90m) may still get events
    starts = sorted((e["subj"], e["start"]) for e in state.values())
    assert starts == [("wl-3", to_ms(T0 + HOUR + timedelta(minutes=15))), ("wl-3", to_ms(T0 + 2 * HOUR))]


def test_an_expired_bucket_gets_no_new_events_they_are_late(buckets: LoadedPack) -> None:
    engine, state = Engine(buckets), {}
    _process(engine, [_flood("a", timedelta(minutes=1)), _flood("now", 2 * HOUR, sensor="wl-9")], state)
    engine.expire(state)
    outcome = _process(engine, [_flood("b", timedelta(minutes=2))], state)
    assert len(outcome.late) == 1
    assert all(e["subj"] == "wl-9" for e in state.values())


def test_expire_with_a_partition_drops_only_closed_entries_homed_on_that_partition(buckets: LoadedPack) -> None:
    engine, state = Engine(buckets), {}
    _process(engine, [_flood("p0", timedelta(minutes=1), sensor="s-0")], state, position=(0, 1))
    _process(engine, [_flood("p1", timedelta(minutes=1), sensor="s-1")], state, position=(1, 1))
    _process(engine, [_flood("both", timedelta(minutes=2), sensor="s-1")], state, position=(0, 2))  # home 0 now
    _process(engine, [_flood("p2", timedelta(minutes=1), sensor="s-2")], state, position=(2, 1))
    _process(engine, [_flood("none", timedelta(minutes=1), sensor="s-x")], state)  # no position: any partition
    _process(engine, [_flood("open", 3 * HOUR, sensor="s-open")], state, position=(0, 3))
    assert engine.expire(state, partition=0) == 3
    assert sorted(e["subj"] for e in state.values()) == ["s-2", "s-open"]
    assert engine.expire(state, partition=1) == 0
    assert engine.expire(state, partition=2) == 1
    assert [e["subj"] for e in state.values()] == ["s-open"]


# -- replay equals stream ----------------------------------------------------------------------

AIRPORT_IN = (114.208, 30.784)  # inside the synthetic airport no-fly zone
AIRPORT_BAND = (114.187746, 30.763263)  # 10 m outside its border: inside the 30 m jitter band
AIRPORT_OUT = (114.187141, 30.762643)  # 100 m outside
STOP_01 = (114.242265, 30.564042)  # inside robotaxi stop zone stop-01
_PLACES = [JIANGAN, HONGSHAN, QIAOKOU, WUCHANG, BEIJING]
_TRACK_PLACES = [*_PLACES, AIRPORT_IN, AIRPORT_BAND, AIRPORT_OUT, STOP_01]
# Offsets within one hour (the Wuhan pack's allowed lateness), biased towards bucket edges.
_OFFSETS = st.sampled_from(
    [0, 1, 59_999, 60_000, 299_999, 300_000, 599_999, 600_000, 899_999, 900_000, 1_800_000, 3_599_999, 3_600_000]
) | st.integers(0, 3_600_000)


@st.composite
def _event(draw: st.DrawFn, eid: str) -> AnyEvent:
    ts = T0 + timedelta(milliseconds=draw(_OFFSETS))
    lon, lat = draw(st.sampled_from(_PLACES))
    what = draw(st.sampled_from(["water", "pm25", "dumping", "waterlogging", "drone", "robotaxi"]))
    if what in ("water", "pm25"):
        metric = "water_level_cm" if what == "water" else "pm25"
        value = draw(st.sampled_from([15.0, 29.0, 30.0, 31.0, 45.0, 60.0, 150.0, 151.0, 200.0]))
        return Reading(
            id=eid, ts=ts, lon=lon, lat=lat, sensor_id=draw(st.sampled_from(["s1", "s2"])), metric=metric, value=value
        )
    if what in ("drone", "robotaxi"):
        lon, lat = draw(st.sampled_from(_TRACK_PLACES))
        alt = draw(st.sampled_from([100.0, 120.0, 121.0, 300.0]) | st.none())
        return Track(
            id=eid,
            ts=ts,
            lon=lon,
            lat=lat,
            object_id=draw(st.sampled_from(["u1", "u2"])),
            object_type=what,
            alt_m=alt,
            speed_mps=draw(st.sampled_from([0.0, 0.4, 0.5, 3.0]) | st.none()),
        )
    return Report(id=eid, ts=ts, lon=lon, lat=lat, category="illegal_dumping" if what == "dumping" else what)


@st.composite
def _event_sets(draw: st.DrawFn) -> list[AnyEvent]:
    n = draw(st.integers(min_value=1, max_value=45))
    return [draw(_event(f"e{i}")) for i in range(n)]


def _by_time(events: list[AnyEvent]) -> list[AnyEvent]:
    return sorted(events, key=lambda e: (e.ts, e.id))


@st.composite
def _per_subject_order(draw: st.DrawFn, events: list[AnyEvent]) -> list[AnyEvent]:
    """A random interleaving of the subjects' event sequences, each kept in time order."""
    queues: dict[str, list[AnyEvent]] = {}
    for event in _by_time(events):
        queues.setdefault(f"{event.kind}:{event.subject}", []).append(event)
    out: list[AnyEvent] = []
    while queues:
        subject = draw(st.sampled_from(sorted(queues)))
        out.append(queues[subject].pop(0))
        if not queues[subject]:
            del queues[subject]
    return out


def _batched(draw: st.DrawFn, order: list[AnyEvent]) -> tuple[list[list[AnyEvent]], list[int]]:
    cuts = sorted(draw(st.lists(st.integers(0, len(order)), max_size=8)))
    bounds = [0, *cuts, len(order)]
    batches = [order[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    redeliver = draw(st.lists(st.integers(0, len(batches) - 1), max_size=3))
    return batches, redeliver


Delivery = tuple[list[AnyEvent], list[list[AnyEvent]], list[int]]


@st.composite
def _any_order(draw: st.DrawFn) -> Delivery:
    events = draw(_event_sets())
    return (events, *_batched(draw, draw(st.permutations(events))))


@st.composite
def _subject_order(draw: st.DrawFn) -> Delivery:
    events = draw(_event_sets())
    return (events, *_batched(draw, draw(_per_subject_order(events))))


@st.composite
def _time_order(draw: st.DrawFn) -> Delivery:
    events = draw(_event_sets())
    return (events, *_batched(draw, _by_time(events)))


def _stream(pack: LoadedPack, batches: list[list[AnyEvent]], redeliver: list[int]) -> dict[str, Incident]:
    """Deliver batches as the detect stage does: process with a position, then tick; redeliver some."""
    engine, state = Engine(pack), {}
    streamed: dict[str, Incident] = {}
    offsets: dict[int, int] = {}

    def keep(incidents: list[Incident]) -> None:
        for incident in incidents:
            if incident.id not in streamed or incident.revision >= streamed[incident.id].revision:
                streamed[incident.id] = incident

    def deliver(batch: list[AnyEvent], position: tuple[int, int]) -> None:
        outcome = _process(engine, batch, state, position)
        assert outcome.late == []
        keep(outcome.incidents)
        keep(engine.tick(state))

    sent: list[tuple[list[AnyEvent], tuple[int, int]]] = []
    for number, batch in enumerate(batches):
        partition = number % 2
        offsets[partition] = offsets.get(partition, -1) + 1
        sent.append((batch, (partition, offsets[partition])))
        deliver(*sent[-1])
    for number in redeliver:  # at-least-once: a message may come again after a restart
        deliver(*sent[number])
    return streamed


@given(delivery=_any_order())
@settings(max_examples=200, deadline=None)
def test_any_permutation_and_batching_gives_the_same_incidents_as_one_replay(delivery: Delivery) -> None:
    events, batches, redeliver = delivery  # the pack is not an argument: hypothesis would print all of it
    order_free = only(_wuhan(), ORDER_FREE)
    assert _stream(order_free, batches, redeliver) == run(Engine(order_free), events)


@given(delivery=_subject_order())
@settings(max_examples=150, deadline=None)
def test_sequence_kinds_give_the_same_incidents_for_any_batching_that_keeps_each_subjects_order(
    delivery: Delivery,
) -> None:
    events, batches, redeliver = delivery
    pack = only(_wuhan(), ORDER_FREE | PER_SUBJECT)
    assert _stream(pack, batches, redeliver) == run(Engine(pack), events)


@given(delivery=_time_order())
@settings(max_examples=150, deadline=None)
def test_the_whole_wuhan_pack_gives_the_same_incidents_for_any_batching_in_time_order(delivery: Delivery) -> None:
    events, batches, redeliver = delivery
    assert _stream(_wuhan(), batches, redeliver) == run(Engine(_wuhan()), events)


def _busy_hour() -> list[AnyEvent]:
    events: list[AnyEvent] = [
        _dumping(f"d{i}", timedelta(minutes=i), where=[HONGSHAN, QIAOKOU][i % 2]) for i in range(60)
    ]
    events += [_flood(f"f{i}", timedelta(minutes=i), value=25 + i % 10, sensor=f"s{i % 3}") for i in range(60)]
    events += [
        Report(id=f"w{i}", ts=T0 + timedelta(minutes=3 * i), lon=JIANGAN[0], lat=JIANGAN[1], category="waterlogging")
        for i in range(20)
    ]
    return events


def test_replay_equals_stream_on_a_busy_hour_of_the_wuhan_pack(pack: LoadedPack, order_free: LoadedPack) -> None:
    events = _busy_hour()
    replayed = run(Engine(order_free), events)
    assert len(replayed) > 5
    assert run(Engine(order_free), list(reversed(events)), batch_size=7) == replayed
    everything = run(Engine(pack), _by_time(events))
    assert {i.rule_id for i in everything.values()} >= {
        "flood.water-level-high",
        "flood.water-level-sustained",
        "flood.waterlogging-confirmed",
        "sanitation.dumping-cluster",
    }
    ordered = _by_time(events)
    sevens = [ordered[i : i + 7] for i in range(0, len(ordered), 7)]
    assert _stream(pack, sevens, [0, 3]) == everything  # a tick after every 7 events, two redeliveries


def test_incident_id_is_a_24_hex_digest_of_pack_rule_subject_and_window() -> None:
    value = incident_id("wuhan", "flood.water-level-high", "wl-1", 1_782_864_000_000)
    assert len(value) == 24
    assert int(value, 16) >= 0
    assert value == incident_id("wuhan", "flood.water-level-high", "wl-1", 1_782_864_000_000)
    assert value != incident_id("wuhan", "flood.water-level-high", "wl-1", 1_782_864_000_001)
