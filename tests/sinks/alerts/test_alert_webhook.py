"""Webhooks against a real local HTTP server that fails on purpose: retries, backoff, dead letters, counters."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from alert_helpers import make
from pydantic import SecretStr, ValidationError

from sinks.alerts.payload import AlertPayload, build_payload
from sinks.alerts.webhook import WebhookDeadLetter, WebhookEndpoint, WebhookSink
from streams.broker import free_port


@dataclass
class Script:
    """What the server answers: `fail_first` times `fail_status`, then 200."""

    fail_first: int = 0
    fail_status: int = 500
    retry_after: str | None = None
    delay_s: float = 0.0
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Server:
    def __init__(self) -> None:
        self.script = Script()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                s = server.script
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with s.lock:
                    s.requests.append((dict(self.headers.items()), body))
                    failing = len(s.requests) <= s.fail_first
                if s.delay_s:
                    time.sleep(s.delay_s)
                with contextlib.suppress(OSError):  # the client may have timed out and gone
                    self.send_response(s.fail_status if failing else 200)
                    if failing and s.retry_after is not None:
                        self.send_header("Retry-After", s.retry_after)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook?token=abc"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    try:
        yield s
    finally:
        s.close()


class Harness:
    def __init__(self, *endpoints: WebhookEndpoint) -> None:
        self.dead: list[WebhookDeadLetter] = []
        self.sleeps: list[float] = []
        self.sink = WebhookSink(endpoints, dead_letter=self.dead.append, sleep=self.sleeps.append, rand=lambda: 0.5)


def endpoint(url: str, **changes: object) -> WebhookEndpoint:
    return WebhookEndpoint.model_validate(
        {
            "name": "ops",
            "url": url,
            "max_attempts": 4,
            "backoff_base_s": 1.0,
            "backoff_max_s": 3.0,
            "jitter": 0.5,
            "timeout_s": 2.0,
            **changes,
        }
    )


PAYLOAD: AlertPayload = build_payload("new", make(), None)


def test_retries_with_backoff_until_the_server_recovers(server: Server) -> None:
    server.script.fail_first = 2
    h = Harness(endpoint(server.url, headers={"Authorization": "Bearer s3cret"}))
    [delivery] = h.sink.deliver(PAYLOAD, ["all"])
    assert delivery.ok
    assert delivery.attempts == 3
    assert delivery.status == 200
    assert len(server.script.requests) == 3
    # exponential: 1 s, 2 s, each reduced by jitter * rand = 0.5 * 0.5
    assert h.sleeps == [0.75, 1.5]
    assert list(delivery.delays) == [0.75, 1.5]
    assert vars(h.sink.counters["ops"]) == {"delivered": 1, "retried": 2, "failed": 0}
    assert h.dead == []
    headers, body = server.script.requests[-1]
    assert json.loads(body) == json.loads(PAYLOAD.model_dump_json())
    assert headers["Content-Type"] == "application/json"
    assert headers["Idempotency-Key"] == headers["X-Cityops-Message-Id"] == PAYLOAD.message_id
    assert headers["Authorization"] == "Bearer s3cret"
    assert {h[1] for h in server.script.requests} == {body}  # every attempt sends the same bytes


def test_gives_up_after_max_attempts_into_the_dead_letter(server: Server) -> None:
    server.script.fail_first = 100
    h = Harness(endpoint(server.url))
    [delivery] = h.sink.deliver(PAYLOAD)
    assert not delivery.ok
    assert delivery.attempts == 4
    assert len(server.script.requests) == 4
    assert h.sleeps == [0.75, 1.5, 2.25]  # 1, 2, then 4 capped at backoff_max 3; jitter takes a quarter
    assert vars(h.sink.counters["ops"]) == {"delivered": 0, "retried": 3, "failed": 1}
    [dead] = h.dead
    assert (dead.endpoint, dead.attempts, dead.status, dead.reason) == ("ops", 4, 500, "HTTP 500")
    assert dead.message_id == PAYLOAD.message_id
    assert dead.body == PAYLOAD.model_dump_json().encode()
    assert "token" not in dead.url  # no secrets from the query string


def test_a_client_error_is_not_retried(server: Server) -> None:
    server.script.fail_first = 100
    server.script.fail_status = 400
    h = Harness(endpoint(server.url))
    [delivery] = h.sink.deliver(PAYLOAD)
    assert (delivery.ok, delivery.attempts, delivery.status) == (False, 1, 400)
    assert h.sleeps == []
    assert len(h.dead) == 1
    assert vars(h.sink.counters["ops"]) == {"delivered": 0, "retried": 0, "failed": 1}


def test_429_is_retried_and_retry_after_is_honoured_up_to_the_cap(server: Server) -> None:
    server.script.fail_first = 2
    server.script.fail_status = 429
    server.script.retry_after = "2"
    h = Harness(endpoint(server.url, backoff_max_s=10.0))
    [delivery] = h.sink.deliver(PAYLOAD)
    assert delivery.ok
    assert h.sleeps == [2.0, 2.0]  # Retry-After beats 0.75 and 1.5
    server.script.requests.clear()
    server.script.retry_after = "60"
    h2 = Harness(endpoint(server.url, backoff_max_s=5.0))
    h2.sink.deliver(PAYLOAD)
    assert h2.sleeps == [5.0, 5.0]


def test_connection_refused_is_retried_then_dead_lettered() -> None:
    h = Harness(endpoint(f"http://127.0.0.1:{free_port()}/nothing-listens", max_attempts=3))
    [delivery] = h.sink.deliver(PAYLOAD)
    assert (delivery.ok, delivery.attempts, delivery.status) == (False, 3, None)
    assert len(h.sleeps) == 2
    [dead] = h.dead
    assert "Connection refused" in dead.reason or "ConnectionRefused" in dead.reason


def test_a_slow_server_times_out_and_is_retried(server: Server) -> None:
    server.script.delay_s = 0.6
    h = Harness(endpoint(server.url, timeout_s=0.2, max_attempts=2))
    began = time.monotonic()
    [delivery] = h.sink.deliver(PAYLOAD)
    assert not delivery.ok
    assert delivery.attempts == 2
    assert time.monotonic() - began < 2.0
    assert "timed out" in h.dead[0].reason.lower()


def test_routes_select_endpoints_and_disabled_ones_get_nothing(server: Server) -> None:
    h = Harness(
        endpoint(server.url, name="floods", routes=["flood"]),
        endpoint(server.url, name="everything"),
        endpoint(server.url, name="off", enabled=False),
    )
    assert [d.endpoint for d in h.sink.deliver(PAYLOAD, ["all", "flood"])] == ["floods", "everything"]
    assert [d.endpoint for d in h.sink.deliver(PAYLOAD, ["all"])] == ["everything"]
    assert len(server.script.requests) == 3
    assert {n: c.delivered for n, c in h.sink.counters.items()} == {"floods": 1, "everything": 2, "off": 0}


def test_real_sleep_is_used_by_default_and_jitter_stays_in_bounds() -> None:
    sink = WebhookSink([], dead_letter=lambda d: None)
    ep = endpoint("http://127.0.0.1:1/", backoff_base_s=1.0, backoff_max_s=8.0, jitter=1.0)
    delays = [sink.backoff(ep, 3) for _ in range(200)]
    assert all(0.0 <= d <= 4.0 for d in delays)
    assert max(delays) - min(delays) > 1.0  # it is random
    assert sink.sleep is time.sleep


def test_endpoint_config_is_validated_and_secrets_are_masked() -> None:
    with pytest.raises(ValidationError, match="http"):
        WebhookEndpoint(name="x", url="ftp://example/")
    with pytest.raises(ValidationError):
        WebhookEndpoint(name="x", url="http://h/", max_attempts=0)
    with pytest.raises(ValidationError):
        WebhookEndpoint(name="x", url="http://h/", jitter=1.5)
    ep = WebhookEndpoint(name="x", url="http://h/", headers={"Authorization": SecretStr("Bearer t0p")})
    assert "t0p" not in ep.model_dump_json()
    assert ep.headers["Authorization"].get_secret_value() == "Bearer t0p"
    with pytest.raises(ValueError, match="duplicate endpoint names"):
        WebhookSink([ep, ep], dead_letter=lambda d: None)
