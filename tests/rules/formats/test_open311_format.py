"""Open311 GeoReport v2: services from the pack, requests in, responses valid against the spec's schemas."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import jsonschema
import pytest
from formats_data import NOW, OPEN311, load_json
from referencing import Registry, Resource

from rules.crs import CRS, wgs84_to_bd09, wgs84_to_gcj02
from rules.decode import Rejected
from rules.formats.open311 import (
    Open311Context,
    Service,
    error_body,
    parse_service_request,
    post_response,
    request_view,
    service_definition,
)
from rules.model import Report

SCHEMA = OPEN311 / "schema"


def validator(name: str) -> jsonschema.Validator:
    registry: Registry[Any] = Registry()
    for path in SCHEMA.glob("*.json"):
        if path.name != "swagger.json":
            registry = registry.with_resource(path.name, Resource.opaque(load_json(path)))
    schema = load_json(SCHEMA / name)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    return cls(schema, registry=registry, format_checker=jsonschema.FormatChecker())


def spec_post_fields() -> dict[str, str]:
    text = (OPEN311 / "spec-examples" / "post-service-request-http-request.txt").read_text()
    body = text.strip().splitlines()[-1]
    fields: dict[str, str] = {}
    for name, value in parse_qsl(body, keep_blank_values=True):
        fields.setdefault(name, value)
    return fields


def accept(fields: dict[str, Any], ctx: Open311Context, **kw: Any) -> tuple[Report, Any]:
    got = parse_service_request(fields, ctx, request_id="o311-t1", received_at=NOW, raw=b"raw", **kw)
    assert not isinstance(got, Rejected), got
    return got


def reject(fields: dict[str, Any], ctx: Open311Context) -> Rejected:
    got = parse_service_request(fields, ctx, request_id="o311-t1", received_at=NOW, raw=b"raw")
    assert isinstance(got, Rejected), got
    return got


def test_service_list_has_the_packs_report_categories_and_validates_against_the_spec_schema(
    services: dict[str, Service],
) -> None:
    body = [s.model_dump() for s in services.values()]
    validator("services.json").validate(body)
    assert {"illegal_dumping", "waterlogging", "001", "noise"} == set(services)
    assert services["waterlogging"].group == "flood"
    assert "waterlogging" in (services["waterlogging"].description or "")


def test_the_spec_example_service_list_validates_against_the_same_schema_as_ours() -> None:
    validator("services.json").validate(load_json(OPEN311 / "spec-examples" / "normalized" / "json-service-list.json"))
    with pytest.raises(jsonschema.ValidationError):
        validator("services.json").validate([{"service_code": "001"}])  # the schema does reject bad lists


def test_service_definition_names_its_code_and_needs_no_attributes(services: dict[str, Service]) -> None:
    assert service_definition(services["noise"]) == {"service_code": "noise", "attributes": []}


def test_the_spec_example_post_becomes_a_report_without_personal_data(open311_ctx: Open311Context) -> None:
    fields = spec_post_fields()
    assert fields["service_code"] == "001" and fields["email"] == "smit333@sfgov.edu"
    event, record = accept(fields, open311_ctx)
    assert (event.kind, event.category, event.lat, event.lon) == ("report", "001", 37.76524078, -122.4212043)
    assert event.description == "A large sinkhole is destroying the street"
    dumped = event.model_dump_json()
    for private in ("smit333", "tt222111", "john", "111111111", "123456"):
        assert private not in dumped
    assert record.media_url == "http://farm3.static.flickr.com/2002/2212426634_5ed477a060.jpg"
    assert record.address == "1234 5th street"


def test_request_view_and_post_response_validate_against_the_spec_schemas(open311_ctx: Open311Context) -> None:
    _, record = accept(spec_post_fields(), open311_ctx)
    view = request_view(record, "closed", status_notes="incident 'x' is resolved", updated=NOW)
    validator("requests.json").validate([view])
    assert view["status"] == "closed" and view["service_request_id"] == "o311-t1"
    swagger = load_json(SCHEMA / "swagger.json")
    jsonschema.Draft4Validator(swagger["definitions"]["RequestResponse"]).validate(post_response("o311-t1")[0])


def test_error_body_has_the_shape_of_the_spec_example() -> None:
    example = load_json(OPEN311 / "spec-examples" / "normalized" / "json-errors.json")
    ours = error_body(403, "Invalid api_key")
    assert [set(e) for e in ours] == [set(e) for e in example]
    assert ours == [{"code": 403, "description": "Invalid api_key"}]


def test_requested_datetime_becomes_the_event_time(open311_ctx: Open311Context) -> None:
    event, _ = accept(
        {"service_code": "noise", "lat": 30.6, "long": 114.3, "requested_datetime": "2026-07-01T10:03:00+08:00"},
        open311_ctx,
    )
    assert event.ts.isoformat() == "2026-07-01T02:03:00+00:00"


def test_missing_requested_datetime_uses_the_time_of_receipt(open311_ctx: Open311Context) -> None:
    event, _ = accept({"service_code": "noise", "lat": "30.6", "long": "114.3"}, open311_ctx)
    assert event.ts == NOW


@pytest.mark.parametrize(
    ("crs", "convert"), [(CRS.GCJ02, wgs84_to_gcj02), (CRS.BD09, wgs84_to_bd09)], ids=["gcj02", "bd09"]
)
def test_a_crs_field_converts_the_coordinates_to_wgs84(open311_ctx: Open311Context, crs: CRS, convert: Any) -> None:
    lon, lat = convert(114.30, 30.60)
    event, record = accept({"service_code": "noise", "lat": lat, "long": lon, "crs": crs.value}, open311_ctx)
    assert (event.lon, event.lat) == pytest.approx((114.30, 30.60), abs=1e-9)
    assert (record.long, record.lat) == (event.lon, event.lat)


def test_the_header_override_applies_when_the_body_declares_no_crs(open311_ctx: Open311Context) -> None:
    lon, lat = wgs84_to_gcj02(114.30, 30.60)
    event, _ = accept({"service_code": "noise", "lat": lat, "long": lon}, open311_ctx, crs_override="gcj-02")
    assert (event.lon, event.lat) == pytest.approx((114.30, 30.60), abs=1e-9)


def test_an_address_naming_a_district_is_placed_inside_that_district(open311_ctx: Open311Context, engine: Any) -> None:
    for address, zone in (("武汉市江汉区解放大道 1 号", "420103"), ("Hongshan district, Luoyu Rd", "420111")):
        event, _ = accept({"service_code": "noise", "address_string": address}, open311_ctx)
        assert engine.enrich([event])[0].zones["districts"] == [zone]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"lat": "30.6", "long": "114.3"}, "service_code was not provided"),
        ({"service_code": "noise", "lat": "north", "long": "114.3"}, "lat: must be a number between -90 and 90"),
        ({"service_code": "noise", "lat": "91", "long": "114.3"}, "lat: must be a number between -90 and 90"),
        ({"service_code": "noise", "lat": "NaN", "long": "114.3"}, "lat: must be a number"),
        ({"service_code": "noise", "lat": "30.6"}, "lat and long must be sent together"),
        ({"service_code": "noise"}, "a location is required"),
        ({"service_code": "noise", "address_id": "545483"}, "address_id cannot be resolved"),
        ({"service_code": "noise", "address_string": "8TH AVE and JUDAH ST"}, "names no known district"),
        ({"service_code": "noise", "lat": 30.6, "long": 114.3, "description": "x" * 4001}, "at most 4000"),
        ({"service_code": "noise", "lat": 30.6, "long": 114.3, "media_url": "javascript:alert(1)"}, "http(s) URL"),
        ({"service_code": "noise", "lat": 30.6, "long": 114.3, "crs": "EPSG:3857"}, "unknown coordinate system"),
        ({"service_code": "noise", "lat": 30.6, "long": 114.3, "requested_datetime": "2026-07-01T10:03"}, "timezone"),
        ({"service_code": ["noise"], "lat": 30.6, "long": 114.3}, "service_code: must be a string"),
        ({"service_code": "noise", "lat": True, "long": 114.3}, "lat: must be a number"),
    ],
)
def test_invalid_requests_are_rejected_with_the_reason(
    open311_ctx: Open311Context, fields: dict[str, Any], expected: str
) -> None:
    rej = reject(fields, open311_ctx)
    assert rej.kind == "invalid"
    assert expected in rej.reason
    assert rej.original == b"raw"


def test_an_unknown_service_code_is_a_404_kind_naming_the_known_codes(open311_ctx: Open311Context) -> None:
    rej = reject({"service_code": "potholes", "lat": 30.6, "long": 114.3}, open311_ctx)
    assert rej.kind == "unknown_service"
    assert "'potholes' was not found" in rej.reason and "waterlogging" in rej.reason


def test_a_foreign_jurisdiction_is_not_found(services: dict[str, Service]) -> None:
    ctx = Open311Context(services, jurisdiction_id="wuhan.gov.cn")
    rej = reject({"jurisdiction_id": "city.gov", "service_code": "noise", "lat": 30.6, "long": 114.3}, ctx)
    assert rej.kind == "unknown_service" and "jurisdiction_id" in rej.reason
    got = parse_service_request(
        {"jurisdiction_id": "wuhan.gov.cn", "service_code": "noise", "lat": 30.6, "long": 114.3},
        ctx,
        request_id="x",
        received_at=NOW,
        raw=b"",
    )
    assert not isinstance(got, Rejected)
