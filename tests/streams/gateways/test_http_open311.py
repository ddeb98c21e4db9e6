"""The Open311 endpoints of the HTTP gateway, served for real on a loopback port."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import jsonschema
import pytest
from gateway_client import STANDARDS, dead_letters, raw_events, request, served, settings_for_tests
from referencing import Registry, Resource

from rules.crs import wgs84_to_gcj02
from rules.engine import Engine
from rules.model import Report
from rules.pack import load_pack

FORM = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
SCHEMAS = STANDARDS / "open311" / "schema"


def schema(name: str) -> jsonschema.Validator:
    registry: Registry[Any] = Registry()
    for path in SCHEMAS.glob("*.json"):
        registry = registry.with_resource(path.name, Resource.opaque(json.loads(path.read_text())))
    return jsonschema.Draft7Validator(
        json.loads((SCHEMAS / name).read_text()), registry=registry, format_checker=jsonschema.FormatChecker()
    )


def form(**fields: Any) -> bytes:
    return urlencode(fields).encode()


def test_services_and_a_service_definition_follow_the_spec() -> None:
    s = settings_for_tests()
    with served(s) as (_, _, url):
        reply = request(url, "GET", "/services.json")
        assert reply.status == 200 and reply.headers["content-type"].startswith("application/json")
        schema("services.json").validate(reply.json)
        codes = [svc["service_code"] for svc in reply.json]
        assert codes[:2] == ["illegal_dumping", "waterlogging"] and "noise" in codes
        assert request(url, "GET", "/services/waterlogging.json").json == {
            "service_code": "waterlogging",
            "attributes": [],
        }
        missing = request(url, "GET", "/services/potholes.json")
        assert missing.status == 404 and "potholes" in missing.json[0]["description"]
        xml = request(url, "GET", "/services.xml")
        assert xml.status == 400 and "only the JSON format" in xml.json[0]["description"]


def test_a_form_post_becomes_one_report_on_the_raw_topic() -> None:
    s = settings_for_tests()
    with served(s) as (_, box, url):
        body = form(
            service_code="waterlogging",
            lat="30.59",
            long="114.27",
            description="积水 30 cm",
            requested_datetime="2026-07-01T10:00:00+08:00",
        )
        reply = request(url, "POST", "/requests.json", body, FORM)
        assert reply.status == 201, reply.body
        [created] = reply.json
        [event] = raw_events(box, s)
        assert event["id"] == created["service_request_id"]
        report = Report.model_validate(event)
        assert (report.category, report.lon, report.lat, report.description) == (
            "waterlogging",
            114.27,
            30.59,
            "积水 30 cm",
        )
        assert report.ts.isoformat() == "2026-07-01T02:00:00+00:00"
        view = request(url, "GET", f"/requests/{created['service_request_id']}.json")
        assert view.status == 200
        schema("requests.json").validate(view.json)
        assert view.json[0]["status"] == "open" and view.json[0]["service_code"] == "waterlogging"


def test_a_gcj02_json_post_lands_in_the_right_district() -> None:
    s = settings_for_tests()
    engine = Engine(load_pack(s.rules.pack))
    glon, glat = wgs84_to_gcj02(114.27, 30.59)
    with served(s) as (_, box, url):
        body = json.dumps({"service_code": "waterlogging", "lat": glat, "long": glon, "crs": "GCJ02"}).encode()
        assert request(url, "POST", "/requests.json", body, {"Content-Type": "application/json"}).status == 201
        header = json.dumps({"service_code": "noise", "lat": glat, "long": glon}).encode()
        headers = {"Content-Type": "application/json", "X-CRS": "GCJ02"}
        assert request(url, "POST", "/requests.json", header, headers).status == 201
        events = [Report.model_validate(e) for e in raw_events(box, s)]
        for event in events:
            assert (event.lon, event.lat) == pytest.approx((114.27, 30.59), abs=1e-9)
            assert engine.enrich([event])[0].zones["districts"] == ["420103"]


@pytest.mark.parametrize(
    ("body", "headers", "status", "reason"),
    [
        (form(lat="30.6", long="114.3"), FORM, 400, "service_code was not provided"),
        (form(service_code="potholes", lat="30.6", long="114.3"), FORM, 404, "'potholes' was not found"),
        (form(service_code="noise", lat="91", long="114.3"), FORM, 400, "lat: must be a number"),
        (b'{"service_code": "noise", "lat": NaN}', {"Content-Type": "application/json"}, 400, "NaN"),
        (b"[1, 2]", {"Content-Type": "application/json"}, 400, "must be a JSON object"),
        (b"service_code=\xff\xfe", FORM, 400, "not UTF-8"),
        (b"--x\r\n", {"Content-Type": "multipart/form-data; boundary=x"}, 415, "is not supported"),
    ],
)
def test_bad_requests_get_the_spec_error_format_and_a_dead_letter(
    body: bytes, headers: dict[str, str], status: int, reason: str
) -> None:
    s = settings_for_tests()
    with served(s) as (_, box, url):
        reply = request(url, "POST", "/requests.json", body, headers)
        assert reply.status == status
        assert reply.json == [{"code": status, "description": reply.json[0]["description"]}]
        assert reason in reply.json[0]["description"]
        [dead] = dead_letters(box, s)
        assert dead.reason == reply.json[0]["description"]
        assert dead.source.startswith("http:POST /requests.json#1@")
        assert dead.original_size == len(body)
        assert raw_events(box, s) == []


def test_api_keys_are_required_when_configured() -> None:
    s = settings_for_tests(api_keys=["k-good-1"])
    with served(s) as (_, box, url):
        ok = form(service_code="noise", lat="30.6", long="114.3")
        missing = request(url, "POST", "/requests.json", ok, FORM)
        assert missing.status == 403 and "Missing api_key" in missing.json[0]["description"]
        wrong = request(url, "POST", "/requests.json", form(api_key="nope", service_code="noise", lat=1, long=1), FORM)
        assert wrong.status == 403 and "Invalid api_key" in wrong.json[0]["description"]
        good = request(
            url, "POST", "/requests.json", form(api_key="k-good-1", service_code="noise", lat=30.6, long=114.3), FORM
        )
        assert good.status == 201
        header = request(url, "POST", "/requests.json", ok, {**FORM, "X-API-Key": "k-good-1"})
        assert header.status == 201
        assert [d.kind for d in dead_letters(box, s)] == ["unauthorized", "unauthorized"]
        assert all("k-good-1" not in d.reason for d in dead_letters(box, s))


def test_a_client_over_its_rate_gets_429_with_retry_after_and_others_do_not() -> None:
    s = settings_for_tests(api_keys=["a-key", "b-key"], rate_per_s=0.5, rate_burst=2)
    with served(s) as (_, box, url):
        body = form(service_code="noise", lat="30.6", long="114.3")
        statuses = [
            request(url, "POST", "/requests.json", body, {**FORM, "X-API-Key": "a-key"}).status for _ in range(3)
        ]
        assert statuses == [201, 201, 429]
        limited = request(url, "POST", "/requests.json", body, {**FORM, "X-API-Key": "a-key"})
        assert limited.status == 429 and int(limited.headers["retry-after"]) >= 1
        assert "rate limit" in limited.json[0]["description"]
        assert request(url, "POST", "/requests.json", body, {**FORM, "X-API-Key": "b-key"}).status == 201
        assert [d.kind for d in dead_letters(box, s)] == ["rate_limited", "rate_limited"]


def test_an_oversized_body_gets_413_before_it_is_read_whole() -> None:
    s = settings_for_tests(max_payload_bytes=2048)
    with served(s) as (_, box, url):
        body = form(service_code="noise", lat="30.6", long="114.3", description="x" * 4000)
        reply = request(url, "POST", "/requests.json", body, FORM)
        assert reply.status == 413 and "exceeds the limit of 2048" in reply.json[0]["description"]
        [dead] = dead_letters(box, s)
        assert dead.kind == "oversized" and dead.original_size <= 2048
        assert (
            request(url, "POST", "/requests.json", form(service_code="noise", lat=30.6, long=114.3), FORM).status == 201
        )


def test_the_gateway_refuses_to_listen_beyond_loopback_without_keys() -> None:
    from streams.gateways.http import check_startup
    from streams.gateways.outbox import GatewayError

    with pytest.raises(GatewayError, match="without API keys"):
        check_startup(settings_for_tests(), "0.0.0.0")
    check_startup(settings_for_tests(), "127.0.0.1")
    check_startup(settings_for_tests(api_keys=["k1"]), "0.0.0.0")
