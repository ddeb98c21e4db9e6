"""CAP 1.2: every message type validates against the OASIS XSD; references, times, areas, mapping."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
import xmlschema
from alert_helpers import cap_schema, make, resolved

from sinks.alerts.cap import CapOptions, box_ring, cap_polygon, to_cap
from sinks.alerts.errors import FormatError
from sinks.alerts.payload import build_payload, published

NS = {"cap": "urn:oasis:names:tc:emergency:cap:1.2"}
SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture(scope="module")
def xsd() -> xmlschema.XMLSchema:
    return cap_schema()


def _text(doc: bytes, path: str) -> list[str]:
    return [el.text or "" for el in ET.fromstring(doc).findall(path, NS)]


def _chain() -> tuple[bytes, bytes, bytes]:
    """new (r1) -> update (r2) -> resolved (r2), each referencing the previous message."""
    p1 = build_payload("new", make(), None)
    p2 = build_payload("update", make(revision=2, last_event_at="2026-07-01T00:05:00Z"), published(p1))
    p3 = build_payload("resolved", resolved(revision=2, last_event_at="2026-07-01T00:05:00Z"), published(p2))
    return (
        to_cap(p1, None, tz=SHANGHAI),
        to_cap(p2, published(p1), tz=SHANGHAI),
        to_cap(p3, published(p2), tz=SHANGHAI),
    )


def test_the_xsd_rejects_a_broken_alert(xsd: xmlschema.XMLSchema) -> None:
    new, _, _ = _chain()
    assert xsd.is_valid(new.decode())
    assert not xsd.is_valid(new.decode().replace("<status>Actual</status>", "<status>BOGUS</status>"))
    assert not xsd.is_valid(new.decode().replace("+08:00</sent>", "Z</sent>"))  # CAP needs an explicit offset


def test_new_update_resolved_are_alert_update_cancel_and_valid(xsd: xmlschema.XMLSchema) -> None:
    new, update, cancel = _chain()
    for doc in (new, update, cancel):
        xsd.validate(doc.decode())
    assert _text(new, "cap:msgType") == ["Alert"]
    assert _text(update, "cap:msgType") == ["Update"]
    assert _text(cancel, "cap:msgType") == ["Cancel"]
    assert _text(new, "cap:references") == []


def test_references_name_sender_identifier_and_sent_of_the_previous_message() -> None:
    new, update, cancel = _chain()
    sender = _text(new, "cap:sender")[0]
    assert _text(update, "cap:references") == [
        f"{sender},{_text(new, 'cap:identifier')[0]},{_text(new, 'cap:sent')[0]}"
    ]
    assert _text(cancel, "cap:references") == [
        f"{sender},{_text(update, 'cap:identifier')[0]},{_text(update, 'cap:sent')[0]}"
    ]
    assert _text(new, "cap:identifier") == ["878f8b16f83bb13b30a31d48.r1.open"]
    assert _text(new, "cap:incidents") == _text(cancel, "cap:incidents") == ["878f8b16f83bb13b30a31d48"]


def test_a_redelivered_snapshot_gives_identical_bytes() -> None:
    assert _chain() == _chain()


def test_times_are_in_the_city_timezone_with_an_offset_and_whole_seconds() -> None:
    new, _, cancel = _chain()
    assert _text(new, "cap:sent") == ["2026-07-01T08:01:00+08:00"]
    assert _text(new, "cap:info/cap:onset") == ["2026-07-01T08:00:00+08:00"]
    assert _text(cancel, "cap:sent") == ["2026-07-01T08:20:30+08:00"]  # resolved_at, fraction dropped
    utc = to_cap(build_payload("new", make(), None), None, tz=ZoneInfo("UTC"))
    assert _text(utc, "cap:sent") == ["2026-07-01T00:01:00+00:00"]


def test_severity_urgency_certainty_mapping() -> None:
    def info(doc: bytes) -> tuple[str, str, str]:
        return (
            _text(doc, "cap:info/cap:severity")[0],
            _text(doc, "cap:info/cap:urgency")[0],
            _text(doc, "cap:info/cap:certainty")[0],
        )

    def cap_for(**changes: object) -> bytes:
        return to_cap(build_payload("new", make(**changes), None), None, tz=SHANGHAI)

    assert info(cap_for(severity="critical", certainty="observed")) == ("Extreme", "Immediate", "Observed")
    assert info(cap_for(severity="high")) == ("Severe", "Immediate", "Likely")
    assert info(cap_for(severity="medium", certainty="possible")) == ("Moderate", "Expected", "Possible")
    assert info(cap_for(severity="low")) == ("Minor", "Future", "Likely")
    assert info(cap_for(severity="info")) == ("Minor", "Future", "Likely")
    _, _, cancel = _chain()
    assert _text(cancel, "cap:info/cap:urgency") == ["Past"]
    assert _text(cancel, "cap:info/cap:responseType") == ["AllClear"]
    assert _text(cap_for(category="flood"), "cap:info/cap:category") == ["Met"]
    assert _text(cap_for(category="unheard_of"), "cap:info/cap:category") == ["Other"]


def test_polygon_is_lat_lon_and_closed_around_the_point(xsd: xmlschema.XMLSchema) -> None:
    new, _, _ = _chain()
    [polygon] = _text(new, "cap:info/cap:area/cap:polygon")
    pairs = [tuple(float(v) for v in p.split(",")) for p in polygon.split(" ")]
    assert len(pairs) == 5
    assert pairs[0] == pairs[-1]
    lats = [p[0] for p in pairs]
    lons = [p[1] for p in pairs]
    assert min(lats) < 30.6 < max(lats)  # latitude first: Wuhan is at 30.6 N, 114.3 E
    assert min(lons) < 114.3 < max(lons)
    assert max(lats) - min(lats) == pytest.approx(500 / 111_320, rel=1e-3)  # 250 m each side
    assert _text(new, "cap:info/cap:area/cap:areaDesc") == ["江岸区"]
    assert _text(new, "cap:info/cap:area/cap:geocode/cap:value") == ["420102"]


def test_zone_rings_become_polygons(xsd: xmlschema.XMLSchema) -> None:
    ring = [(114.28, 30.58), (114.32, 30.58), (114.32, 30.62), (114.28, 30.62)]  # open ring: closed on output
    doc = to_cap(build_payload("new", make(), None), None, tz=SHANGHAI, zone_rings=[ring, box_ring(114.0, 30.0, 100)])
    xsd.validate(doc.decode())
    polygons = _text(doc, "cap:info/cap:area/cap:polygon")
    assert len(polygons) == 2
    assert (
        polygons[0]
        == "30.580000,114.280000 30.580000,114.320000 30.620000,114.320000 30.620000,114.280000 30.580000,114.280000"
    )
    with pytest.raises(FormatError, match="at least 4 points"):
        cap_polygon([(114.0, 30.0), (114.1, 30.0)])


def test_an_update_needs_a_previous_message() -> None:
    with pytest.raises(FormatError, match="878f8b16f83bb13b30a31d48"):
        to_cap(build_payload("update", make(revision=2), None), None, tz=SHANGHAI)


def test_resolved_without_a_previous_message_is_an_all_clear_alert(xsd: xmlschema.XMLSchema) -> None:
    doc = to_cap(build_payload("resolved", resolved(), None), None, tz=SHANGHAI)
    xsd.validate(doc.decode())
    assert _text(doc, "cap:msgType") == ["Alert"]
    assert _text(doc, "cap:info/cap:responseType") == ["AllClear"]
    assert _text(doc, "cap:references") == []


def test_restricted_scope_needs_and_writes_a_restriction(xsd: xmlschema.XMLSchema) -> None:
    with pytest.raises(ValueError, match="restriction"):
        CapOptions(scope="Restricted")
    opts = CapOptions(scope="Restricted", restriction="city operations staff", status="Exercise", language="zh-CN")
    doc = to_cap(build_payload("new", make(), None), None, tz=SHANGHAI, options=opts)
    xsd.validate(doc.decode())
    assert _text(doc, "cap:restriction") == ["city operations staff"]
    assert _text(doc, "cap:status") == ["Exercise"]
    assert _text(doc, "cap:info/cap:language") == ["zh-CN"]


def test_the_published_state_keeps_the_sent_time_for_references() -> None:
    p = build_payload("new", make(), None)
    assert published(p).sent == datetime(2026, 7, 1, 0, 1, tzinfo=UTC)


def test_a_zone_outline_is_formatted_once_and_the_same_as_a_list_of_its_points() -> None:
    outline = ((114.0, 30.0), (114.1, 30.0), (114.1, 30.1), (114.0, 30.1), (114.0, 30.0))
    first = cap_polygon(outline)
    expected = (
        "30.000000,114.000000 30.000000,114.100000 30.100000,114.100000 30.100000,114.000000 30.000000,114.000000"
    )
    assert first == cap_polygon(list(outline)) == expected
    assert cap_polygon(outline) is first, "an outline's text is made once"
    with pytest.raises(FormatError):
        cap_polygon(((114.0, 30.0), (114.1, 30.0), (114.0, 30.0)))


def test_the_document_is_utf8_xml_with_its_declaration_and_non_ascii_text_intact() -> None:
    payload = build_payload("new", make(zone_name="武昌区 & <东湖>"), None)
    doc = to_cap(payload, None, tz=SHANGHAI)
    assert doc.startswith(
        b"<?xml version='1.0' encoding='utf-8'?>\n<alert xmlns=\"urn:oasis:names:tc:emergency:cap:1.2\">"
    )
    assert _text(doc, "cap:info/cap:area/cap:areaDesc") == ["武昌区 & <东湖>"]
    again = ET.tostring(ET.fromstring(doc), encoding="utf-8", xml_declaration=True)
    assert again == doc, "byte for byte what ElementTree's own UTF-8 writer gives"
