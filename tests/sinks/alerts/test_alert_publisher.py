"""AlertPublisher: routes -> records keyed by incident id, kinds over a sequence, bounded memory."""

from __future__ import annotations

import itertools
import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from alert_helpers import make, resolved
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.pack import load_pack
from sinks.alerts.cap import Ring
from sinks.alerts.publisher import AlertPublisher, coalesce
from sinks.alerts.routes import Route, RouteTable, default_routes
from sinks.alerts.zones import ZoneOutlines
from streams.settings import default_pack

NS = {"cap": "urn:oasis:names:tc:emergency:cap:1.2"}


def publisher(**kwargs: object) -> AlertPublisher:
    return AlertPublisher(RouteTable(default_routes(), "city"), **kwargs)  # type: ignore[arg-type]


def test_one_record_per_matching_route_keyed_by_incident_id() -> None:
    pub = publisher().publish(make())
    assert pub.kind == "new"
    assert pub.routes == ("all", "flood", "critical")
    assert [(r.topic, r.format) for r in pub.records] == [
        ("city.alerts.all", "json"),
        ("city.alerts.flood", "cloudevents-binary"),
        ("city.alerts.critical", "cap"),
    ]
    assert {r.key for r in pub.records} == {b"878f8b16f83bb13b30a31d48"}
    assert json.loads(pub.records[0].value)["kind"] == "new"
    assert dict(pub.records[1].headers)["ce_type"] == b"org.cityops.incident.new"
    assert ET.fromstring(pub.records[2].value).findtext("cap:msgType", namespaces=NS) == "Alert"


def test_a_sequence_new_update_duplicate_stale_resolved() -> None:
    p = publisher()
    kinds = [
        p.publish(inc).kind
        for inc in (
            make(),
            make(revision=2),
            make(revision=2),
            make(revision=1),
            resolved(revision=3),
            resolved(revision=3),
            make(revision=4),
        )
    ]
    assert kinds == ["new", "update", None, None, "resolved", None, "new"]


def test_duplicates_produce_no_records_and_keep_the_state() -> None:
    p = publisher()
    p.publish(make(revision=2))
    dup = p.publish(make(revision=2))
    assert dup.kind is None
    assert dup.records == ()
    assert p.last(make().id) is not None
    assert p.last(make().id).revision == 2  # type: ignore[union-attr]


def test_update_records_reference_the_previous_message() -> None:
    p = publisher()
    first = p.publish(make())
    second = p.publish(make(revision=2, severity="critical"))
    assert second.kind == "update"
    assert second.payload is not None
    assert first.payload is not None
    assert second.payload.previous_message_id == first.payload.message_id
    cap = ET.fromstring(second.records[-1].value)
    assert cap.findtext("cap:msgType", namespaces=NS) == "Update"
    assert first.payload.message_id in (cap.findtext("cap:references", namespaces=NS) or "")


def test_routes_sharing_a_topic_produce_one_record() -> None:
    table = RouteTable(
        [Route(name="a", topic="{prefix}.x"), Route(name="b", topic="{prefix}.x", categories=["flood"])], "p"
    )
    pub = AlertPublisher(table).publish(make())
    assert pub.routes == ("a", "b")
    assert [r.route for r in pub.records] == ["a"]


def test_no_route_no_record_but_the_state_is_kept() -> None:
    table = RouteTable([Route(name="noise", topic="n", categories=["noise"])], "p")
    p = AlertPublisher(table)
    assert p.publish(make()).records == ()
    assert p.publish(make(revision=2)).kind == "update"


def test_memory_is_bounded_least_recently_used_first() -> None:
    p = publisher(max_tracked=2)
    for i in range(3):
        p.publish(make(id=f"inc{i}"))
    assert len(p) == 2
    assert p.last("inc0") is None
    assert p.publish(make(id="inc0", revision=2)).kind == "new"  # forgotten: announced again
    assert p.publish(make(id="inc2", revision=2)).kind == "update"


def test_cap_uses_zone_outlines_when_known() -> None:
    calls: list[tuple[str | None, str | None]] = []
    pack = load_pack(default_pack())
    outlines = ZoneOutlines(pack.layers)

    def zones(layer: str | None, zone_id: str | None) -> Sequence[Ring] | None:
        calls.append((layer, zone_id))
        return outlines(layer, zone_id)

    pub = publisher(zones=zones).publish(make())
    assert calls == [("districts", "420102")]
    polygons = ET.fromstring(pub.records[-1].value).findall("cap:info/cap:area/cap:polygon", NS)
    assert len(polygons) >= 1
    first = polygons[0].text or ""
    assert len(first.split(" ")) > 5  # the district outline, not the 5-point box
    lat, lon = (float(v) for v in first.split(" ")[0].split(","))
    assert 29.9 < lat < 31.4
    assert 113.6 < lon < 115.1
    assert outlines("districts", "nope") is None
    assert outlines(None, "420102") is None
    # no CAP route matched -> no lookup
    calls.clear()
    publisher(zones=zones).publish(make(id="other", severity="low"))
    assert calls == []


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("abc"), st.integers(1, 6), st.sampled_from(["open", "resolved"])), max_size=30)
)
def test_coalesce_keeps_each_incidents_transitions_and_newest_revisions(
    seq: list[tuple[str, int, str]],
) -> None:
    items = [
        (n, make(id=i, revision=r) if s == "open" else resolved(id=i, revision=r)) for n, (i, r, s) in enumerate(seq)
    ]
    kept = coalesce(items)
    assert [n for n, _ in kept] == sorted(n for n, _ in kept), "one batch order"
    for incident_id in "abc":
        mine = [inc for _, inc in items if inc.id == incident_id]
        out = [inc for _, inc in kept if inc.id == incident_id]
        # what a subscriber that upserts by id ends with: the same as without coalescing
        assert (mine[-1] if mine else None) == (out[-1] if out else None)
        # every status change survives; no two kept neighbours share a status unless a stale one came between
        changes = [a.status != b.status for a, b in itertools.pairwise(mine)]
        assert sum(a.status != b.status for a, b in itertools.pairwise(out)) == sum(changes)
        assert len(out) <= len(mine)
