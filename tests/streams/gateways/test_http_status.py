"""GET /requests/{id}.json: the status comes from the incidents in the store (read through Quack)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import pytest
from gateway_client import raw_events, request, served, settings_for_tests

from rules.model import Enriched, Evidence, Incident, Report
from sinks.read import StoreReader
from sinks.store import Batch, Store
from streams.broker import free_port
from streams.gateways.status import StatusReader, derive_status

TOKEN = "test-token-gw"
NOW = datetime(2026, 7, 1, 2, 0, tzinfo=UTC)
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def incident(iid: str, event_ids: list[str]) -> Incident:
    return Incident.model_validate(
        {
            "id": iid,
            "revision": 1,
            "pack": "wuhan",
            "pack_version": "1",
            "rule_id": "flood.waterlogging-reports",
            "rule_version": 1,
            "kind": "window",
            "title": "Waterlogging reports",
            "severity": "high",
            "category": "flood",
            "subject": "420103",
            "layer": "districts",
            "zone_id": "420103",
            "zone_name": "江汉区",
            "window_start": NOW,
            "window_end": NOW + timedelta(minutes=15),
            "first_event_at": NOW,
            "last_event_at": NOW,
            "lon": 114.27,
            "lat": 30.59,
            "value": 3,
            "threshold": 3,
            "op": ">=",
            "evidence": Evidence(event_ids=event_ids, values=[1.0] * len(event_ids), count=len(event_ids)),
        }
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[Store, str, int]]:
    st = Store(tmp_path / "s.duckdb")
    port = free_port()
    st.serve("127.0.0.1", port, TOKEN)
    try:
        yield st, f"quack:127.0.0.1:{port}", port
    finally:
        st.close()


def test_status_is_open_then_closed_when_every_incident_it_fed_is_resolved(store: tuple[Store, str, int]) -> None:
    st, uri, port = store
    s = settings_for_tests()
    s.store.quack_port = port
    with served(s) as (gw, box, url):
        gw.status = StatusReader(StoreReader(uri, TOKEN), gw.services)
        body = urlencode({"service_code": "waterlogging", "lat": "30.59", "long": "114.27"}).encode()
        rid = request(url, "POST", "/requests.json", body, FORM).json[0]["service_request_id"]
        other = request(url, "POST", "/requests.json", body, FORM).json[0]["service_request_id"]

        def status() -> tuple[str, str | None]:
            view = request(url, "GET", f"/requests/{rid}.json").json[0]
            return view["status"], view["status_notes"]

        assert status() == ("open", None)  # no incident yet
        st.apply(Batch(incidents=[incident("inc-a", ["x", rid]), incident("inc-b", [rid, other])]))
        assert status()[0] == "open"
        st.con.execute("UPDATE incidents SET status = 'resolved' WHERE id = 'inc-a'")
        got = status()
        assert got[0] == "open" and "is resolved" in (got[1] or "") and "is open" in (got[1] or "")
        st.con.execute("UPDATE incidents SET status = 'closed' WHERE id = 'inc-b'")
        assert status()[0] == "closed"
        assert request(url, "GET", f"/requests/{other}.json").json[0]["status"] == "closed"
        assert len(raw_events(box, s)) == 2


def test_a_request_only_the_store_knows_is_rebuilt_from_the_archived_event(store: tuple[Store, str, int]) -> None:
    st, uri, _port = store
    report = Report(
        id="o311-0123456789abcdef0123", ts=NOW, lon=114.27, lat=30.59, category="waterlogging", description="积水"
    )
    st.apply(Batch(events=[Enriched(event=report, zones={"districts": ["420103"]})]))
    s = settings_for_tests()
    with served(s) as (gw, _, url):
        gw.status = StatusReader(StoreReader(uri, TOKEN), gw.services)
        view = request(url, "GET", "/requests/o311-0123456789abcdef0123.json")
        assert view.status == 200
        [req] = view.json
        assert (req["service_code"], req["description"], req["lat"], req["status"]) == (
            "waterlogging",
            "积水",
            30.59,
            "open",
        )
        missing = request(url, "GET", "/requests/o311-ffffffffffffffffffff.json")
        assert missing.status == 404 and "o311-ffffffffffffffffffff" in missing.json[0]["description"]


def test_an_unreachable_store_answers_503_with_retry_after() -> None:
    s = settings_for_tests()
    with served(s) as (gw, _, url):
        gw.status = StatusReader(StoreReader(f"quack:127.0.0.1:{free_port()}", TOKEN), gw.services)
        reply = request(url, "GET", "/requests/o311-00000000000000000000.json")
        assert reply.status == 503 and reply.headers["retry-after"] == "1"
        assert "unreachable" in reply.json[0]["description"]


def test_injection_in_the_request_id_is_only_a_literal(store: tuple[Store, str, int]) -> None:
    st, uri, _ = store
    st.apply(Batch(incidents=[incident("inc-a", ["e1"])]))
    reader = StatusReader(StoreReader(uri, TOKEN), {})
    assert reader.request("x' OR '1'='1") is None
    assert reader.incidents_for("e1' OR '1'='1") == []
    assert [r["id"] for r in reader.incidents_for("e1")] == ["inc-a"]
    # the payload reaches the server as a string literal: it matches nothing and executes nothing (the
    # read-only policy ignores keywords inside literals, so a harmless value is not refused either)
    assert reader.incidents_for("x'); DROP TABLE incidents; --") == []
    assert st.con.execute("SELECT count(*) FROM incidents").fetchone() == (1,)


def test_request_ids_that_we_never_issue_are_not_looked_up(store: tuple[Store, str, int]) -> None:
    _, uri, _ = store
    s = settings_for_tests()
    with served(s) as (gw, _, url):
        gw.status = StatusReader(StoreReader(uri, TOKEN), gw.services)
        for rid in ("x'%20OR%201=1", "a%20b", "x" * 200, "o311-UPDATE"):
            reply = request(url, "GET", f"/requests/{rid}.json")
            assert reply.status == 404, (rid, reply.body)


def test_derive_status_needs_every_incident_closed() -> None:
    assert derive_status([]).status == "open"
    both = [{"status": "resolved", "title": "a", "updated_at": NOW}, {"status": "acknowledged", "title": "b"}]
    assert derive_status(both).status == "open"
    done = [{"status": "resolved", "title": "a", "updated_at": NOW}, {"status": "closed", "title": "b"}]
    assert derive_status(done).status == "closed" and derive_status(done).updated == NOW
