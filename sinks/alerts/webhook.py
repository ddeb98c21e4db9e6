"""Webhook sink: POST each alert's JSON to configured HTTP endpoints, with retries and a dead letter.

Per endpoint: up to ``max_attempts`` POSTs; between them an exponential backoff
``min(backoff_max_s, backoff_base_s * 2**(n-1))`` reduced by a random fraction up to ``jitter``
(0 = no jitter, 1 = "full jitter"). A ``Retry-After`` in seconds on 429/503 is honoured up to
``backoff_max_s``. Connection errors, timeouts, 408, 425, 429 and 5xx are retried; any other
status outside 2xx fails at once (retrying cannot fix it). A message that is not delivered goes to
the dead-letter callback: it is never dropped silently.

Requests carry ``Content-Type: application/json``, ``Idempotency-Key`` and
``X-Cityops-Message-Id`` (the deterministic message id, for de-duplication by the receiver) and
the endpoint's configured headers. Synchronous, standard library only (``urllib.request``), with
an injectable ``sleep`` and random source for tests.
"""

from __future__ import annotations

import http.client
import logging
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from email.message import Message

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from sinks.alerts.payload import AlertPayload

logger = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 425, 429})


class WebhookEndpoint(BaseModel):
    """One HTTP endpoint that receives alerts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Unique name, used in logs and counters.")
    url: str = Field(description="http:// or https:// URL that accepts POST.")
    headers: dict[str, SecretStr] = Field(
        default_factory=dict, description="Extra request headers (e.g. Authorization); masked in logs."
    )
    routes: list[str] = Field(default_factory=list, description="Route names whose messages it gets; empty = all.")
    timeout_s: float = Field(default=5.0, gt=0, le=300)
    max_attempts: int = Field(default=5, ge=1, le=100, description="POSTs per message before dead-lettering.")
    backoff_base_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=30.0, ge=0)
    jitter: float = Field(default=0.5, ge=0, le=1, description="Fraction of each delay that is random.")
    enabled: bool = True

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urllib.parse.urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"webhook url {value!r} must be an http:// or https:// URL with a host")
        return value

    def safe_url(self) -> str:
        """The URL without credentials or query string, for logs."""
        parts = urllib.parse.urlsplit(self.url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"

    def wants(self, route_names: Iterable[str]) -> bool:
        if not self.enabled:
            return False
        return not self.routes or any(r in self.routes for r in route_names)


@dataclass
class EndpointCounters:
    """Per-endpoint totals: messages delivered, retries made, messages given up (dead-lettered)."""

    delivered: int = 0
    retried: int = 0
    failed: int = 0


@dataclass(frozen=True)
class WebhookDeadLetter:
    """A message an endpoint did not accept after every attempt."""

    endpoint: str
    url: str
    message_id: str
    body: bytes
    attempts: int
    status: int | None
    reason: str


@dataclass(frozen=True)
class Delivery:
    """The outcome of delivering one message to one endpoint."""

    endpoint: str
    ok: bool
    attempts: int
    status: int | None
    delays: tuple[float, ...] = field(default_factory=tuple)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # a redirect answers a POST with HTTPError (3xx): not followed, not retried


def _retry_after(headers: Message | None) -> float | None:
    raw = headers.get("Retry-After") if headers is not None else None
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


class WebhookSink:
    """Delivers alert payloads to every endpoint that wants them."""

    def __init__(
        self,
        endpoints: Sequence[WebhookEndpoint],
        *,
        dead_letter: Callable[[WebhookDeadLetter], None],
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        names = [e.name for e in endpoints]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"webhooks: duplicate endpoint names {dupes}")
        self.endpoints = tuple(endpoints)
        self.dead_letter = dead_letter
        self.sleep = sleep
        self.rand = rand
        self.counters: dict[str, EndpointCounters] = {e.name: EndpointCounters() for e in self.endpoints}
        self._opener = urllib.request.build_opener(_NoRedirect())

    def backoff(self, endpoint: WebhookEndpoint, retry: int) -> float:
        """Delay before retry number ``retry`` (1 = the first retry)."""
        delay = min(endpoint.backoff_max_s, endpoint.backoff_base_s * 2.0 ** (retry - 1))
        return delay * (1.0 - endpoint.jitter * self.rand())

    def deliver(self, payload: AlertPayload, route_names: Iterable[str] = ()) -> list[Delivery]:
        """POST ``payload`` to every enabled endpoint that takes one of ``route_names``."""
        names = list(route_names)
        body = payload.model_dump_json().encode()
        return [self.post(e, body, payload.message_id) for e in self.endpoints if e.wants(names)]

    def _attempt(self, endpoint: WebhookEndpoint, body: bytes, msg_id: str) -> tuple[int | None, str, float | None]:
        headers = {k: v.get_secret_value() for k, v in endpoint.headers.items()}
        headers.update({"Content-Type": "application/json", "Idempotency-Key": msg_id, "X-Cityops-Message-Id": msg_id})
        request = urllib.request.Request(endpoint.url, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=endpoint.timeout_s) as response:
                response.read()
                return int(response.status), "ok", None
        except urllib.error.HTTPError as exc:
            with exc:
                return int(exc.code), f"HTTP {exc.code}", _retry_after(exc.headers)
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, timeout, DNS, bad response
            return None, f"{type(exc).__name__}: {exc}", None

    def post(self, endpoint: WebhookEndpoint, body: bytes, msg_id: str) -> Delivery:
        """Deliver one body to one endpoint, retrying; dead-letters it when every attempt failed."""
        counters = self.counters[endpoint.name]
        delays: list[float] = []
        status: int | None = None
        reason = ""
        attempt = 0
        while attempt < endpoint.max_attempts:
            attempt += 1
            status, reason, retry_after = self._attempt(endpoint, body, msg_id)
            if status is not None and 200 <= status < 300:
                counters.delivered += 1
                return Delivery(endpoint.name, True, attempt, status, tuple(delays))
            retryable = status is None or status in RETRYABLE_STATUS or status >= 500
            if not retryable or attempt >= endpoint.max_attempts:
                break
            delay = self.backoff(endpoint, attempt)
            if retry_after is not None:
                delay = min(max(delay, retry_after), endpoint.backoff_max_s)
            logger.info(
                "webhook retry endpoint=%s url=%s message=%s attempt=%d reason=%s delay_s=%.2f",
                endpoint.name, endpoint.safe_url(), msg_id, attempt, reason, delay,
            )  # fmt: skip
            counters.retried += 1
            delays.append(delay)
            self.sleep(delay)
        counters.failed += 1
        logger.warning(
            "webhook gave up endpoint=%s url=%s message=%s attempts=%d reason=%s",
            endpoint.name, endpoint.safe_url(), msg_id, attempt, reason,
        )  # fmt: skip
        self.dead_letter(WebhookDeadLetter(endpoint.name, endpoint.safe_url(), msg_id, body, attempt, status, reason))
        return Delivery(endpoint.name, False, attempt, status, tuple(delays))
