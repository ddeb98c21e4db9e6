"""Hostile requests at the running HTTP gateway: never a crash or a 5xx, every refusal explained and dead-lettered."""

from __future__ import annotations

import http.client
from collections.abc import Iterator

import orjson
import pytest
from gateway_client import dead_letters, request, served, settings_for_tests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.gateways.http import HttpGateway
from streams.gateways.outbox import MemoryOutbox
from streams.settings import Settings

ROUTES = ["/requests.json", "/sensorthings/v1.1/Observations", "/cloudevents"]
CTYPES = [
    "application/json",
    "application/x-www-form-urlencoded",
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
    "text/plain",
    "multipart/form-data; boundary=x",
    "",
]
HEADERS = st.dictionaries(
    st.sampled_from(["ce-specversion", "ce-id", "ce-source", "ce-type", "ce-crs", "X-CRS", "X-API-Key", "ce-time"]),
    st.one_of(
        st.sampled_from(["1.0", "GCJ02", "x", "2026-07-01T00:00:00Z", "bd-09"]),
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20),
    ),
    max_size=5,
)
LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    st.sampled_from([114.3, 30.6, 1e308, "NaN", "x" * 300]),
)
KEYS = st.sampled_from(
    [
        "service_code",
        "lat",
        "long",
        "kind",
        "id",
        "ts",
        "lon",
        "value",
        "result",
        "Datastream",
        "@iot.id",
        "data",
        "specversion",
        "type",
        "source",
        "events",
        "crs",
        "category",
    ]
)
JSONS = st.recursive(LEAF, lambda k: st.lists(k, max_size=3) | st.dictionaries(KEYS, k, max_size=5), max_leaves=15)
BODIES = st.one_of(
    st.binary(max_size=200),
    JSONS.map(orjson.dumps),
    st.dictionaries(KEYS, st.text(max_size=10), max_size=4).map(
        lambda d: "&".join(f"{k}={v}" for k, v in d.items()).encode(errors="surrogatepass")
    ),
    st.sampled_from(
        [
            b"[" * 1100 + b"]" * 1100,
            b'{"lat": NaN}',
            b'{"value": Infinity}',
            b"\xff\xfe\xfd",
            b"service_code=noise&lat=30.6&long=114.3",
            b'{"events": 5}',
            b"x" * 9000,
        ]
    ),
)


@pytest.fixture(scope="module")
def gateway() -> Iterator[tuple[HttpGateway, MemoryOutbox, str, Settings]]:
    s = settings_for_tests(max_payload_bytes=8192, rate_per_s=1e6, rate_burst=1_000_000)
    with served(s, MemoryOutbox(max_in_flight=100_000)) as (gw, box, url):
        yield gw, box, url, s


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(route=st.sampled_from(ROUTES), ctype=st.sampled_from(CTYPES), headers=HEADERS, body=BODIES)
def test_every_hostile_post_is_answered_and_every_refusal_dead_lettered(
    gateway: tuple[HttpGateway, MemoryOutbox, str, Settings],
    route: str,
    ctype: str,
    headers: dict[str, str],
    body: bytes,
) -> None:
    _gw, box, url, s = gateway
    before = len(dead_letters(box, s))
    try:
        reply = request(url, "POST", route, body, {**headers, "Content-Type": ctype} if ctype else headers)
    except http.client.HTTPException as exc:  # pragma: no cover - would be a server crash
        raise AssertionError(f"the gateway dropped the connection: {exc}") from exc
    assert reply.status < 500, reply.body
    after = dead_letters(box, s)
    if reply.status >= 400:
        [problem] = reply.json
        assert problem["code"] == reply.status and problem["description"]
        assert len(after) > before
        assert any(problem["description"] in d.reason or d.reason in problem["description"] for d in after[before:])
    else:
        assert reply.status in (201, 202)
        if reply.status == 202 and reply.json["rejected"]:
            assert len(after) - before == len(reply.json["rejected"])


def test_the_gateway_is_still_healthy_after_the_fuzzing(
    gateway: tuple[HttpGateway, MemoryOutbox, str, Settings],
) -> None:
    gw, _, url, _ = gateway
    assert request(url, "GET", "/health").json["status"] == "ok"
    assert gw.counts.get("refused_error", 0) == 0
