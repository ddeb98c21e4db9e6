"""The columnar engine gives exactly what the per-event engine gave, batch by batch.

``reference_process`` below is the engine as it was before batches became columns: every event,
sorted by (time, id), checked rule by rule (discriminator, zone, ``when``, schedule), and threshold
and window rules fed one event at a time (a snapshot after every event, as before they built
only the last snapshot of each entry per batch). Hypothesis
draws random packs (every filter the engine applies, schedules across a DST change) and random
batches (duplicates, ties, out-of-order and late events, re-delivered positions); both engines must
return the same incidents in the same order, the same late events, the same state and watermark.
"""

from __future__ import annotations

import copy
import functools
import itertools
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from rulekit import unchecked

from rules.columns import EventColumns, Rows, enriched_of, to_us
from rules.engine import AnyEvent, Engine, Outcome
from rules.kinds.base import OPS, Scope, field_value
from rules.model import Enriched, Reading, Report, Track, event_value
from rules.pack import LoadedPack, Pack, load_pack
from rules.schedule import ScheduleCheck
from rules.selection import accepts, active, local_us
from rules.spec import Schedule
from rules.state import from_ms, to_ms

WUHAN = Path(__file__).resolve().parents[2] / "rules" / "packs" / "wuhan" / "pack.yaml"
T0 = datetime(2026, 11, 1, 4, 0, tzinfo=UTC)  # DST ends at 04:30 UTC in St John's, 06:00 UTC in New York
POINTS = [
    (114.30, 30.60),  # 420102
    (114.35, 30.50),  # 420111
    (114.27, 30.58),  # 420104
    (114.30, 30.55),  # 420106
    (116.40, 39.90),  # in no district
]
DISTRICTS = ["420102", "420111", "420104", "420106", "420105"]
_DISCRIMINATOR = {"reading": "metric", "report": "category", "track": "object_type"}


@functools.cache
def _wuhan() -> LoadedPack:
    return load_pack(WUHAN)


# -- the per-event reference ------------------------------------------------------------------


def reference_enrich(engine: Engine, events: list[AnyEvent]) -> list[Enriched]:
    lon = np.array([e.lon for e in events], dtype=np.float64)
    lat = np.array([e.lat for e in events], dtype=np.float64)
    per_layer = {name: layer.locate(lon, lat) for name, layer in engine.pack.layers.items()}
    return [
        Enriched.model_construct(event=e, zones={name: zones[i] for name, zones in per_layer.items() if zones[i]})
        for i, e in enumerate(events)
    ]


def _matches(c: Any, item: Enriched) -> bool:
    rule, match, event = c.rule, c.rule.match, item.event
    if match.kind is not None and match.kind != event.kind:
        return False
    if not accepts(match, event.kind, getattr(event, _DISCRIMINATOR[event.kind], None)):
        return False
    if rule.layer is not None:
        zone = item.primary_zone(rule.layer)
        if zone is None or (match.zones is not None and zone not in match.zones):
            return False
    if c.kind.gates_itself:
        return True
    for cond in rule.when:
        value = event_value(event, cond.field)
        if value is None or not OPS[cond.op](value, cond.value):
            return False
    return c.schedule is None or c.schedule.active(event.ts)


def reference_process(
    engine: Engine, batch: list[Enriched], state: dict[str, Any], position: tuple[int, int] | None
) -> Outcome:
    outcome = Outcome()
    floor = None if engine.watermark_ms is None else engine.watermark_ms - engine.lateness_ms
    stamped = sorted((to_ms(i.event.ts), i.event.id, n) for n, i in enumerate(batch))
    per_rule: dict[int, tuple[list[Enriched], list[int]]] = {}
    batch_max = None
    for ts, _, n in stamped:
        item = batch[n]
        if floor is not None and ts < floor:
            outcome.late.append(
                (
                    item,
                    (
                        f"event time {item.event.ts.isoformat()} is older than the watermark "
                        f"{from_ms(engine.watermark_ms or 0).isoformat()} minus the allowed lateness "
                        f"{engine.pack.spec.allowed_lateness}"
                    ),
                )
            )
            continue
        batch_max = ts
        for c in engine.compiled:
            if _matches(c, item):
                items, stamps = per_rule.setdefault(id(c), ([], []))
                items.append(item)
                stamps.append(ts)
    scope = Scope(state, position)
    for c in engine.compiled:
        if id(c) in per_rule:
            items, stamps = per_rule[id(c)]
            if c.rule.kind in ("threshold", "window"):  # one at a time: a snapshot after every event
                for item, ts in zip(items, stamps, strict=True):
                    c.kind.feed([item], [ts], scope)
            else:
                c.kind.feed(items, stamps, scope)
    scope.commit()
    if batch_max is not None and (engine.watermark_ms is None or batch_max > engine.watermark_ms):
        engine.watermark_ms = batch_max
    outcome.incidents = list(scope.incidents.values())
    return outcome


# -- random packs and events --------------------------------------------------------------------

FIELDS = ["value", "value", "alt_m", "speed_mps", "heading", "lon", "lat", "unit", "sensor_id", "no_such_field"]
conditions = st.lists(
    st.fixed_dictionaries(
        {
            "field": st.sampled_from(FIELDS),
            "op": st.sampled_from([">", ">=", "<", "<=", "==", "!="]),
            "value": st.sampled_from([0.0, 5.0, 10.0, 50.0, 114.3, 30.55]),
        }
    ),
    max_size=2,
)
schedules = st.none() | st.fixed_dictionaries(
    {
        "timezone": st.sampled_from([None, "America/New_York", "Europe/London", "America/St_Johns"]),
        "hours": st.lists(st.sampled_from(["22:00-06:00", "00:00-01:30", "09:15-17:45", "18:00-24:00"]), max_size=2),
        "weekdays": st.lists(st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]), max_size=3),
        "holidays": st.lists(st.sampled_from([date(2026, 11, 1), date(2026, 11, 2)]), max_size=1),
    }
)
CONSISTENT = {
    "reading": st.fixed_dictionaries({"kind": st.just("reading")}, optional={"metric": st.sampled_from(["m1", "m2"])}),
    "report": st.fixed_dictionaries(
        {"kind": st.just("report")},
        optional={
            "category": st.sampled_from(["c1", "c2"]),
            "categories": st.lists(st.sampled_from(["c1", "c2", "c3"]), min_size=1, max_size=2),
        },
    ),
    "track": st.fixed_dictionaries(
        {"kind": st.just("track")}, optional={"object_type": st.sampled_from(["drone", "car"])}
    ),
}
ANYTHING = st.fixed_dictionaries(
    {},
    optional={
        "kind": st.sampled_from(["reading", "report", "track"]),
        "metric": st.sampled_from(["m1", "m2"]),
        "category": st.sampled_from(["c1", "c2"]),
        "categories": st.lists(st.sampled_from(["c1", "c2", "c3"]), min_size=1, max_size=2),
        "object_type": st.sampled_from(["drone", "car"]),
    },
)
matches = st.one_of(*CONSISTENT.values(), ANYTHING, st.just({}))


@st.composite
def rules(draw: st.DrawFn, number: int) -> dict[str, Any]:
    kind = draw(
        st.sampled_from(
            ["threshold", "window", "sustained", "proximity", "silence", "geofence", "cluster", "correlation"]
        )
    )
    rule: dict[str, Any] = {"id": f"r{number}", "kind": kind, "title": "T", "category": "test"}
    rule["match"] = draw(matches)
    if draw(st.booleans()):
        rule["layer"] = "districts"
        if draw(st.booleans()):
            rule["match"]["zones"] = draw(st.lists(st.sampled_from(DISTRICTS), min_size=1, max_size=3))
    rule["when"] = draw(conditions)
    schedule = draw(schedules)
    if schedule is not None:
        rule["schedule"] = {k: v for k, v in schedule.items() if v is not None}
    field = draw(st.sampled_from(["value", "speed_mps", "lon"]))
    if kind == "threshold":
        rule.update(field=field, op=draw(st.sampled_from([">", "<=", "!="])), value=10.0, dedup="10m")
    elif kind == "window":
        group = "zone" if "layer" in rule else "sensor"
        aggregate = draw(st.sampled_from(["count", "sum", "max", "min", "avg", "distinct"]))
        op = draw(st.sampled_from([">=", ">", "<", "<=", "=="]))
        rule.update(aggregate=aggregate, window="30m", group_by=group, op=op, value=2, field=field)
    elif kind == "sustained":
        rule.update(field=field, op=">", value=10.0, **{"for": "5m"})
    elif kind == "proximity":
        rule.update(near="schools", distance_m=3000)
    elif kind == "silence":
        rule.update(**{"for": "20m"})
    elif kind == "cluster":
        rule.update(min_events=2, radius_m=draw(st.sampled_from([500, 8000])), within="30m")
    elif kind == "correlation":  # readings and reports: match may name only zones, and no when
        rule["match"] = {k: v for k, v in rule["match"].items() if k == "zones"}
        rule["when"] = []
        iot = {"metric": draw(st.sampled_from(["m1", "m2"])), "field": field, "op": ">", "value": 10.0}
        rule.update(iot=iot, categories=["c1", "c2"], min_reports=1, radius_m=8000, within="30m")
    else:
        rule.update(fences="no_fly", transition=draw(st.sampled_from(["enter", "inside", "cross"])))
    return rule


@st.composite
def packs(draw: st.DrawFn) -> LoadedPack:
    wuhan = _wuhan()
    count = draw(st.integers(1, 6))
    doc = {
        "pack": "columnar",
        "version": "1",
        "allowed_lateness": "30m",
        "layers": {name: wuhan.spec.layers[name].model_dump() for name in ("districts", "schools", "no_fly")},
        "rules": [draw(rules(n)) for n in range(count)],
    }
    note(f"rules: {doc['rules']}")
    # rules are drawn without regard to their fields (a speed over readings): the loader refuses
    # some of them (``rules.fields``), but the two engines must agree on any rule
    spec = unchecked(Pack.model_validate({**doc, "rules": []}), doc["rules"])
    layers = {name: wuhan.layers[name] for name in doc["layers"]}
    return LoadedPack(spec=spec, path=WUHAN, layers=layers, digest="columnar")


@st.composite
def events(draw: st.DrawFn, number: int) -> AnyEvent:
    ts = T0 + timedelta(minutes=draw(st.integers(0, 4 * 60)), microseconds=draw(st.sampled_from([0, 1, 999, 5000])))
    lon, lat = draw(st.sampled_from(POINTS))
    eid = f"e{draw(st.integers(0, 40))}" if draw(st.booleans()) else f"u{number}"
    kind = draw(st.sampled_from(["reading", "report", "track"]))
    value = draw(st.sampled_from([0.0, 5.0, 10.0, 11.5, 60.0]))
    if kind == "reading":
        sensor = draw(st.sampled_from(["s1", "s2", "s3"]))
        unit = draw(st.sampled_from([None, "cm"]))
        metric = draw(st.sampled_from(["m1", "m2"]))
        return Reading(id=eid, ts=ts, lon=lon, lat=lat, sensor_id=sensor, metric=metric, value=value, unit=unit)
    if kind == "report":
        return Report(id=eid, ts=ts, lon=lon, lat=lat, category=draw(st.sampled_from(["c1", "c2", "c3"])))
    speed = draw(st.sampled_from([None, 0.0, 12.0]))
    obj = draw(st.sampled_from(["o1", "o2"]))
    kind_of = draw(st.sampled_from(["drone", "car"]))
    return Track(id=eid, ts=ts, lon=lon, lat=lat, object_id=obj, object_type=kind_of, speed_mps=speed, alt_m=value)


@st.composite
def streams(draw: st.DrawFn) -> list[list[AnyEvent]]:
    n = draw(st.integers(1, 60))
    pool = [draw(events(i)) for i in range(n)]
    # a shuffled stream with repeats, cut into batches
    order = draw(st.permutations(list(range(n))))
    stream = [pool[i] for i in order] + [pool[i] for i in draw(st.lists(st.integers(0, n - 1), max_size=5))]
    cuts = sorted(draw(st.lists(st.integers(1, max(1, len(stream) - 1)), max_size=4)))
    bounds = [0, *cuts, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds) if stream[a:b]]


def _same(a: Outcome, b: Outcome) -> None:
    assert a.incidents == b.incidents
    assert [(i.event.id, i.event.ts, r) for i, r in a.late] == [(i.event.id, i.event.ts, r) for i, r in b.late]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pack=packs(), batches=streams(), positioned=st.booleans())
def test_columnar_engine_equals_the_per_event_engine(
    pack: LoadedPack, batches: list[list[AnyEvent]], positioned: bool
) -> None:
    ref, via_process, via_columns, one_by_one = Engine(pack), Engine(pack), Engine(pack), Engine(pack)
    via_process.small_batch = 0  # Engine.process through columns, whatever the batch size
    one_by_one.small_batch = 10**9  # Engine.process event by event
    ref_state: dict[str, Any] = {}
    process_state: dict[str, Any] = {}
    columns_state: dict[str, Any] = {}
    one_state: dict[str, Any] = {}
    for number, batch in enumerate(batches):
        enriched = reference_enrich(ref, batch)
        assert via_process.enrich(batch) == enriched
        for _ in range(2 if positioned and number % 2 else 1):  # a re-delivered position changes nothing
            position = (0, number) if positioned else None
            expected = reference_process(ref, enriched, ref_state, position)
            _same(via_process.process(enriched, process_state, position=position), expected)
            _same(one_by_one.process(enriched, one_state, position=position), expected)
            assert one_state == ref_state
            assert one_by_one.watermark_ms == ref.watermark_ms
            columns = via_columns.enrich_columns(EventColumns.from_events(batch))
            _same(via_columns.process_columns(columns, columns_state, position=position), expected)
            assert process_state == ref_state
            assert columns_state == ref_state
            assert via_process.watermark_ms == via_columns.watermark_ms == ref.watermark_ms
    ticked = ref.tick(ref_state)
    assert via_process.tick(process_state) == ticked == via_columns.tick(columns_state) == one_by_one.tick(one_state)
    assert process_state == ref_state == columns_state == one_state


@settings(max_examples=300, deadline=None)
@given(
    schedule=schedules.filter(lambda s: s is not None),
    minutes=st.lists(st.integers(-3 * 24 * 60, 3 * 24 * 60), min_size=1, max_size=30),
    micros=st.sampled_from([0, 1, 999_999]),
)
def test_vectorised_schedule_equals_the_scalar_check(schedule: dict[str, Any], minutes: list[int], micros: int) -> None:
    check = ScheduleCheck(Schedule.model_validate(schedule), "Asia/Shanghai")
    instants = [T0 + timedelta(minutes=m, microseconds=micros) for m in minutes]
    ts_us = np.array([to_us(t) for t in instants], dtype=np.int64)
    assert active(local_us(ts_us, check), check).tolist() == [check.active(t) for t in instants]


def test_vectorised_schedule_across_a_dst_switch_inside_a_utc_hour() -> None:
    # Newfoundland leaves DST at 02:00 local time, 04:30 UTC: inside a UTC hour
    check = ScheduleCheck(Schedule(timezone="America/St_Johns", hours=["01:15-01:45"]), "UTC")
    start = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)
    instants = [start + timedelta(minutes=m) for m in range(0, 180, 5)]
    ts_us = np.array([to_us(t) for t in instants], dtype=np.int64)
    assert active(local_us(ts_us, check), check).tolist() == [check.active(t) for t in instants]


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(["threshold", "window"]),
    aggregate=st.sampled_from(["count", "distinct", "max", "min", "sum", "avg"]),
    op=st.sampled_from([">", ">=", "<", "<=", "==", "!="]),
    bound=st.sampled_from([1.0, 2.0, 3.0, 10.0]),
    readings=st.lists(
        st.tuples(st.integers(0, 50), st.sampled_from(["s1", "s2"]), st.sampled_from([0.0, 1.0, 2.0, 10.0, 20.0])),
        min_size=1,
        max_size=25,
    ),
)
def test_one_snapshot_per_entry_and_batch_equals_a_snapshot_after_every_event(
    kind: str, aggregate: str, op: str, bound: float, readings: list[tuple[int, str, float]]
) -> None:
    rule: dict[str, Any] = {"id": "r", "kind": kind, "title": "T", "category": "t", "op": op, "value": bound}
    if kind == "window":
        rule.update(aggregate=aggregate, window="30m", slide="10m", group_by="sensor")
    else:
        rule.update(dedup="20m")
    if kind == "window" and aggregate in ("count", "distinct") and op in (">", ">=") and bound < 0:
        return
    spec = Pack.model_validate({"pack": "p", "version": "1", "rules": [rule]})
    engine = Engine(LoadedPack(spec=spec, path=WUHAN, layers=_wuhan().layers, digest="x"))
    events = [
        Reading(id=f"e{n}", ts=T0 + timedelta(minutes=m), lon=114.3, lat=30.6, sensor_id=s, metric="m", value=v)
        for n, (m, s, v) in enumerate(readings)
    ]
    items = sorted(engine.enrich(events), key=lambda i: (to_ms(i.event.ts), i.event.id))
    stamps = [to_ms(i.event.ts) for i in items]
    evaluator = engine.compiled[0].kind
    together, apart = Scope({}, None), Scope({}, None)
    evaluator.feed(items, stamps, together)
    for item, ts in zip(items, stamps, strict=True):
        evaluator.feed([item], [ts], apart)
    assert list(together.incidents.values()) == list(apart.incidents.values())
    assert together.touched == apart.touched


def test_enriched_of_equals_model_construct() -> None:
    event = Report(id="r1", ts=T0, lon=114.3, lat=30.6, category="c1")
    zones = {"districts": ["420102"]}
    fast, slow = enriched_of(event, zones), Enriched.model_construct(event=event, zones=zones)
    assert fast == slow
    assert fast.model_fields_set == slow.model_fields_set
    assert fast.__pydantic_extra__ == slow.__pydantic_extra__
    assert fast.__pydantic_private__ == slow.__pydantic_private__
    assert fast.model_dump_json() == slow.model_dump_json()


def test_a_condition_on_a_field_no_event_has_as_a_number_never_holds() -> None:
    pack = copy.copy(_wuhan())
    rule = {
        "id": "odd",
        "kind": "threshold",
        "title": "T",
        "category": "t",
        "match": {"kind": "reading"},
        "when": [{"field": "model_fields_set", "op": "!=", "value": 1}],
        "value": 0,
    }
    with pytest.raises(ValidationError, match="reads unknown numeric field 'model_fields_set'"):
        Pack.model_validate({"pack": "p", "version": "1", "rules": [rule]})
    # the engine given it anyway (the loader refuses it) never finds a number there
    spec = unchecked(Pack.model_validate({"pack": "p", "version": "1", "rules": []}), [rule])
    engine = Engine(LoadedPack(spec=spec, path=WUHAN, layers=pack.layers, digest="x"))
    event = Reading(id="a", ts=T0, lon=114.3, lat=30.6, sensor_id="s", metric="m", value=5)
    assert engine.process(engine.enrich([event]), {}).incidents == []


def test_field_value_equals_event_value_for_every_kind_and_name() -> None:
    events: list[AnyEvent] = [
        Reading(id="a", ts=T0, lon=114.3, lat=30.6, sensor_id="s", metric="m", value=5),
        Report(id="b", ts=T0, lon=114.3, lat=30.6, category="c"),
        Track(id="c", ts=T0, lon=114.3, lat=30.6, object_id="o", object_type="drone", speed_mps=2.5),
        Reading.model_construct(id="d", ts=T0, lon=1, lat=2, sensor_id="s", metric="m", value=True),
        Reading.model_construct(id="e", ts=T0, lon=1, lat=2, sensor_id="s", metric="m", value=float("inf")),
    ]
    names = ["value", "alt_m", "speed_mps", "heading", "lon", "lat", "id", "ts", "subject", "kind", "unit"]
    names += ["model_fields_set", "__class__", "__pydantic_complete__", "no_such_field", "category"]
    for event in events:
        for name in names:
            assert field_value(event, name) == event_value(event, name), (event.id, name)


@settings(max_examples=60, deadline=None)
@given(
    batch=st.lists(events(0), min_size=1, max_size=40),
    picks=st.lists(st.integers(0, 39), max_size=40),
    name=st.sampled_from(["value", "alt_m", "speed_mps", "lon"]),
)
def test_facts_read_from_columns_equal_the_facts_of_the_events(
    batch: list[AnyEvent], picks: list[int], name: str
) -> None:
    """``Kind.facts`` (and ``event_kinds``, ``zones_in``) of a batch's rows, read from its columns, equals
    what their enriched events give."""
    batch = [e.model_copy(update={"id": f"e{n}"}) for n, e in enumerate(batch)]
    pack = _wuhan()
    engine = Engine(pack)
    columns = engine.enrich_columns(EventColumns.from_events(batch))
    rows = sorted({p % len(batch) for p in picks})
    with_layer = next(c.kind for c in engine.compiled if c.rule.layer is not None)
    without = next(c.kind for c in engine.compiled if c.rule.layer is None)
    for kind in (with_layer, without):
        items = [columns.enriched(r) for r in rows]
        expected = kind.facts(items, name)
        found = kind.facts(Rows(columns, rows), name)
        assert found == expected
        assert [type(f[0]) for f in found] == [type(f[0]) for f in expected]
        assert kind.event_kinds(Rows(columns, rows)) == kind.event_kinds(items)
        assert kind.zones_in(Rows(columns, rows), "districts") == kind.zones_in(items, "districts")


def test_a_batch_the_locator_does_not_remember_gets_the_zones_of_a_plain_query() -> None:
    pack = _wuhan()
    engine = Engine(pack)
    rng = np.random.default_rng(5)
    batch = [
        Report(id=f"r{n}", ts=from_ms(n), lon=float(x), lat=float(y), category="waterlogging")
        for n, (x, y) in enumerate(zip(rng.uniform(114.0, 114.6, 300), rng.uniform(30.3, 30.9, 300), strict=True))
    ]
    engine.locator.filled, engine.locator.hit_rate = True, 0.0  # as after a stream of moving objects
    assert not engine.locator.worth_asking()
    skipped = engine.enrich_columns(EventColumns.from_events(batch))
    remembered = Engine(pack).enrich_columns(EventColumns.from_events(batch))
    assert engine.locator.points == {}  # the skipped batch was not remembered
    assert skipped.zones.keys() == remembered.zones.keys() == pack.layers.keys()
    for name in pack.layers:
        assert [skipped.zones[name].of(r) for r in range(300)] == [remembered.zones[name].of(r) for r in range(300)]
        assert skipped.zones[name].primary.tolist() == remembered.zones[name].primary.tolist()
