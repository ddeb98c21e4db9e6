"""The HTTP gateway (aiohttp): Open311 GeoReport v2, SensorThings Observations, CloudEvents.

Thin I/O around :mod:`rules.formats`: read the body within the size limit, check the API key
and the rate limit, call the pure parser, put one envelope on the raw topic and answer once
Kafka acknowledged it. Every refusal answers ``[{"code": N, "description": why}]`` and is
dead-lettered with the source ``http:POST /route#<n>@<boot>``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import orjson
from aiohttp import web

from rules.crs import CRS
from rules.decode import Rejected, encode_envelopes
from rules.formats.cloudevents_in import CloudEventContext
from rules.formats.mapping import AnyEvent, parse_crs
from rules.formats.open311 import Gazetteer, Open311Context, RequestRecord, error_body, services_from_pack
from rules.formats.sensorthings import LocationCache
from rules.pack import LoadedPack
from rules.pipeline import dead_letter
from rules.sources import by_source
from streams import metrics
from streams.gateways.limits import RateLimiter
from streams.gateways.observe import http_metrics
from streams.gateways.outbox import GatewayError, Outbox, OverloadedError
from streams.gateways.settings import is_loopback
from streams.gateways.status import StatusReader
from streams.settings import Settings

logger = logging.getLogger(__name__)

JSON = "application/json; charset=utf-8"
STATUS_OF_KIND = {
    "oversized": 413,
    "too_many": 413,
    "unauthorized": 403,
    "rate_limited": 429,
    "overloaded": 503,
    "unknown_service": 404,
    "unsupported": 415,
    "error": 500,
}
REMEMBERED_REQUESTS = 10_000


class Refusal(Exception):
    """A request is refused: the HTTP answer and the dead letter say ``reason``."""

    def __init__(
        self,
        kind: str,
        reason: str,
        *,
        retry_after: int | None = None,
        original: bytes | None = None,
        dead_lettered: bool = False,
    ) -> None:
        super().__init__(reason)
        self.dead_lettered = dead_lettered
        self.kind = kind
        self.reason = reason
        self.status = STATUS_OF_KIND.get(kind, 400)
        self.retry_after = retry_after
        self.original = original


@dataclass
class Call:
    """One POST being handled."""

    request: web.Request
    body: bytes
    source: str


def check_startup(settings: Settings, host: str) -> None:
    """Refuse to listen beyond loopback without API keys."""
    if not is_loopback(host) and not settings.gateway.http.api_keys:
        raise GatewayError(
            f"refusing to listen on {host} without API keys: set CITYOPS_GATEWAY__HTTP__API_KEYS "
            "(a JSON list) or bind 127.0.0.1"
        )


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", charset="utf-8", headers=headers
    )


class HttpGateway:
    """Builds the aiohttp application; holds the limiter, caches and counters."""

    def __init__(
        self, settings: Settings, outbox: Outbox, pack: LoadedPack, *, status: StatusReader | None = None
    ) -> None:
        self.settings = settings
        self.g = settings.gateway
        self.outbox = outbox
        self.raw_topic = settings.kafka.raw_topic
        self.dead_topic = settings.kafka.deadletter_topic
        services = services_from_pack(pack.spec, self.g.http.services)
        self.services = {s.service_code: s for s in services}
        layer = next(iter(pack.layers.values()), None)
        self.open311 = Open311Context(
            self.services,
            self.g.crs.open311,
            Gazetteer.from_layer(layer) if layer else None,
            self.g.http.jurisdiction_id,
        )
        self.cache = LocationCache(self.g.datastream_cache_size)
        self.ce = CloudEventContext(
            self.g.crs.cloudevents, self.g.http.max_payload_bytes, self.cache, self.g.sensorthings_metrics
        )
        self.limiter = RateLimiter(self.g.http.rate_per_s, self.g.http.rate_burst)
        self.keys = {k.get_secret_value() for k in self.g.http.api_keys}
        self.status = status
        self.requests: OrderedDict[str, RequestRecord] = OrderedDict()
        self.counts: Counter[str] = Counter()
        self.boot = format(int(time.time() * 1000), "x")
        self._n = itertools.count(1)

    # -- plumbing ----------------------------------------------------------------------------------
    def app(self) -> web.Application:
        from streams.gateways import actions, routes

        app = web.Application(client_max_size=self.g.http.max_payload_bytes + 1)
        routes.install(self, app)
        actions.install(self, app)
        return app

    def source(self, request: web.Request, route: str) -> str:
        return f"http:{request.method} {route}#{next(self._n)}@{self.boot}"

    async def read_body(self, request: web.Request) -> bytes:
        limit = self.g.http.max_payload_bytes
        length = request.content_length
        if length is not None and length > limit:
            raise Refusal("oversized", f"payload of {length} bytes exceeds the limit of {limit}", original=b"")
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = await request.content.read(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise Refusal(
                    "oversized", f"payload of more than {limit} bytes exceeds the limit", original=b"".join(chunks)
                )
        return b"".join(chunks)

    def endpoint(self, route: str, handle: Any) -> Any:
        """Wrap a POST handler: body limit, refusals answered and dead-lettered, bugs contained."""

        async def handler(request: web.Request) -> web.StreamResponse:
            source = self.source(request, route)
            body = b""
            try:
                body = await self.read_body(request)
                response: web.StreamResponse = await handle(Call(request, body, source))
                self.counts["accepted_requests"] += 1
                return response
            except Refusal as refusal:
                return self.refuse(refusal, source, body if refusal.original is None else refusal.original)
            except Exception as exc:  # a bug must not take the gateway down: answer 500, keep the bytes
                logger.exception("gateway bug source=%s", source)
                return self.refuse(Refusal("error", f"internal error: {exc!r}"), source, body)

        return handler

    def refuse(self, refusal: Refusal, source: str, original: bytes) -> web.Response:
        self.counts[f"refused_{refusal.kind}"] += 1
        logger.info(
            "refused source=%s status=%d kind=%s reason=%s", source, refusal.status, refusal.kind, refusal.reason
        )
        if not refusal.dead_lettered:
            self.outbox.dead_letter(self.dead_topic, dead_letter(refusal.reason, refusal.kind, source, original))
            metrics.DEAD_LETTERS.labels("gateway_http", refusal.kind).inc()
        headers = {"Retry-After": str(refusal.retry_after)} if refusal.retry_after is not None else None
        return json_response(error_body(refusal.status, refusal.reason), refusal.status, headers)

    def dead_letter_rejected(self, rejected: list[Rejected], source: str) -> None:
        for rej in rejected:
            where = source + (f"[{rej.index}]" if rej.index is not None else "")
            self.counts[f"rejected_{rej.kind}"] += 1
            self.outbox.dead_letter(self.dead_topic, dead_letter(rej.reason, rej.kind, where, rej.original))
            metrics.DEAD_LETTERS.labels("gateway_http", rej.kind).inc()

    # -- checks ------------------------------------------------------------------------------------
    def api_key_of(self, request: web.Request, fields: dict[str, Any] | None = None) -> str | None:
        for value in (
            request.headers.get("X-API-Key"),
            request.query.get("api_key"),
            (fields or {}).get("api_key"),
        ):
            if isinstance(value, str) and value:
                return value
        return None

    def admit(self, call: Call, fields: dict[str, Any] | None = None, *, cost: float = 1.0) -> None:
        """API key (403) and rate limit (429), in that order; rate-limited by key, else by address."""
        key = self.api_key_of(call.request, fields)
        known = key is not None and key in self.keys
        bucket = f"key:{key}" if known or (not self.keys and key) else f"addr:{call.request.remote}"
        wait = self.limiter.take(bucket, cost)
        if wait > 0:
            retry = RateLimiter.retry_after(wait, self.g.retry_after_s)
            raise Refusal(
                "rate_limited",
                f"rate limit of {self.g.http.rate_per_s:g}/s exceeded; retry in {retry}s",
                retry_after=retry,
            )
        if self.keys and not known:
            what = "Missing" if key is None else "Invalid"
            raise Refusal("unauthorized", f"{what} api_key -- send api_key (form field or query) or X-API-Key")

    def crs_default(self, call: Call, default: CRS) -> CRS:
        declared = parse_crs(call.request.headers.get("X-CRS"), default)
        if not isinstance(declared, CRS):
            raise Refusal("invalid", f"X-CRS header: {declared}")
        return declared

    # -- producing ---------------------------------------------------------------------------------
    async def produce(self, events: list[AnyEvent]) -> None:
        """Put the events on the raw topic as one envelope; 503 when Kafka is slow or full."""
        if len(events) > self.g.http.max_events_per_request:
            raise Refusal(
                "too_many", f"{len(events)} events in one request; at most {self.g.http.max_events_per_request}"
            )
        # One envelope per source key (usually one: a request is about one device or report), so that
        # each subject's events stay in order on one partition.
        groups = by_source(events, attrgetter("subject"), self.settings.kafka.partitions)

        async def send(key: bytes, group: list[AnyEvent]) -> None:
            # a group too large for one envelope goes as several, one after the other (same key, in order)
            for envelope in encode_envelopes(group, self.g.envelope_max_bytes):
                await self.outbox.send_async(self.raw_topic, envelope, key, timeout=self.g.ack_timeout_s)

        try:
            await asyncio.gather(*(send(key, group) for key, group in groups))
        except OverloadedError as exc:
            raise Refusal(
                "overloaded",
                f"Kafka is not keeping up ({exc}); send the request again later (events are counted once by id, "
                "so resending what part of it got through is safe)",
                retry_after=self.g.retry_after_s,
            ) from exc
        self.counts["events"] += len(events)
        metrics.EVENTS_IN.labels("gateway_http").inc(len(events))

    def remember(self, record: RequestRecord) -> None:
        self.requests[record.service_request_id] = record
        while len(self.requests) > REMEMBERED_REQUESTS:
            self.requests.popitem(last=False)

    async def blocking(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "outbox": self.outbox.stats(),
            "counts": dict(self.counts),
            "datastreams_cached": len(self.cache),
        }


def build_gateway(settings: Settings, outbox: Outbox | None = None) -> HttpGateway:
    """The gateway for these settings: the pack's services, Kafka outbox and the store's status reader."""
    from rules.pack import load_pack
    from sinks.read import StoreReader
    from streams.gateways.outbox import KafkaOutbox

    pack = load_pack(settings.rules.pack)
    if outbox is None:
        outbox = KafkaOutbox(
            settings.kafka,
            max_in_flight=settings.gateway.max_in_flight,
            linger_ms=settings.gateway.linger_ms,
            client_id="cityops-http-gateway",
            max_request_size=max(4_194_304, settings.gateway.http.max_payload_bytes * 2),
            warm_topics=(settings.kafka.raw_topic, settings.kafka.deadletter_topic),
        )
    reader = StoreReader(settings.store.quack_uri, settings.store.token.get_secret_value())
    gateway = HttpGateway(settings, outbox, pack)
    gateway.status = StatusReader(reader, gateway.services)
    return gateway


def run_http(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """Serve until SIGINT/SIGTERM."""
    http = settings.gateway.http
    host = host or http.host
    port = http.port if port is None else port
    check_startup(settings, host)
    logger.info("http gateway config %s", settings.gateway.model_dump(mode="json"))
    gateway = build_gateway(settings)
    app = gateway.app()
    server = http_metrics(settings, gateway, app)
    try:
        logger.info("http gateway listening on http://%s:%d raw_topic=%s", host, port, gateway.raw_topic)
        web.run_app(app, host=host, port=port, print=None, access_log=None)
    finally:
        if server is not None:
            server.stop()
        gateway.outbox.flush()
        gateway.outbox.close()


class BackgroundServer:
    """Serve an aiohttp app from a thread with its own event loop (tests, benchmarks, the demo)."""

    def __init__(self, app: web.Application, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="http-gateway", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> BackgroundServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
