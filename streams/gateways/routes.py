"""The endpoints of the HTTP gateway; each parses with :mod:`rules.formats` and produces once."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl
from uuid import uuid4

from aiohttp import web

from rules.decode import Rejected
from rules.formats.cloudevents_in import BATCH, STRUCTURED, events_from_cloudevents, from_binary, from_structured
from rules.formats.mapping import parse_json
from rules.formats.open311 import (
    error_body,
    parse_service_request,
    post_response,
    request_view,
    service_definition,
)
from rules.formats.sensorthings import parse_observation
from sinks.errors import QueryError, StoreUnavailableError
from streams.gateways.http import Call, HttpGateway, Refusal, json_response

logger = logging.getLogger(__name__)

MAX_FORM_FIELDS = 200
#: The ids this gateway issues (``o311-`` and 20 hex digits); other ids are never looked up.
REQUEST_ID = re.compile(r"^o311-[0-9a-f]{20}$")


def install(gw: HttpGateway, app: web.Application) -> None:
    """Register every route of the gateway on ``app``."""

    async def services(request: web.Request) -> web.Response:
        _jurisdiction(gw, request)
        return json_response([s.model_dump() for s in gw.services.values()])

    async def service(request: web.Request) -> web.Response:
        _jurisdiction(gw, request)
        found = gw.services.get(request.match_info["code"])
        if found is None:
            return json_response(error_body(404, f"service_code {request.match_info['code']!r} was not found"), 404)
        return json_response(service_definition(found))

    async def get_request(request: web.Request) -> web.Response:
        return await _get_request(gw, request)

    async def health(request: web.Request) -> web.Response:
        return json_response(gw.health())

    async def xml(request: web.Request) -> web.Response:
        return json_response(error_body(400, "only the JSON format is served: use .json instead of .xml"), 400)

    app.router.add_get("/services.json", _guard(services))
    app.router.add_get("/services/{code}.json", _guard(service))
    app.router.add_post("/requests.json", gw.endpoint("/requests.json", lambda call: _post_request(gw, call)))
    app.router.add_get("/requests/{id}.json", _guard(get_request))
    app.router.add_post(
        "/sensorthings/v1.1/Observations",
        gw.endpoint("/sensorthings/v1.1/Observations", lambda call: _post_observation(gw, call)),
    )
    app.router.add_post("/cloudevents", gw.endpoint("/cloudevents", lambda call: _post_cloudevents(gw, call)))
    app.router.add_get("/health", health)
    app.router.add_route("*", r"/{path:.*\.xml}", xml)


def _guard(handler: Any) -> Any:
    async def wrapped(request: web.Request) -> web.Response:
        try:
            response: web.Response = await handler(request)
            return response
        except Refusal as refusal:
            headers = {"Retry-After": str(refusal.retry_after)} if refusal.retry_after is not None else None
            return json_response(error_body(refusal.status, refusal.reason), refusal.status, headers)

    return wrapped


def _jurisdiction(gw: HttpGateway, request: web.Request) -> None:
    wanted = gw.open311.jurisdiction_id
    given = request.query.get("jurisdiction_id")
    if wanted is not None and given and given != wanted:
        raise Refusal("unknown_service", f"jurisdiction_id {given!r} was not found")


def _fields(call: Call) -> dict[str, Any]:
    """Form-encoded or JSON fields of an Open311 POST (first value wins for repeated form keys)."""
    ctype = call.request.content_type.lower()
    if ctype == "application/json" or ctype.endswith("+json"):
        doc = parse_json(call.body, max_bytes=len(call.body) + 1)
        if isinstance(doc, Rejected):
            raise Refusal(doc.kind, doc.reason)
        if not isinstance(doc, dict):
            raise Refusal("invalid", f"a service request must be a JSON object, got {type(doc).__name__}")
        return doc
    if ctype not in ("application/x-www-form-urlencoded", "application/octet-stream", ""):
        raise Refusal(
            "unsupported",
            f"Content-Type {ctype!r} is not supported: send application/x-www-form-urlencoded or application/json",
        )
    try:
        text = call.body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FORM_FIELDS)
    except UnicodeDecodeError as exc:
        raise Refusal("bad_json", f"form body is not UTF-8: {exc}") from exc
    except ValueError as exc:
        raise Refusal("invalid", f"form body: {exc}") from exc
    fields: dict[str, Any] = {}
    for name, value in pairs:
        fields.setdefault(name, value)
    return fields


async def _post_request(gw: HttpGateway, call: Call) -> web.Response:
    fields = _fields(call)
    gw.admit(call, fields)
    request_id = f"o311-{uuid4().hex[:20]}"
    parsed = parse_service_request(
        fields,
        gw.open311,
        request_id=request_id,
        received_at=datetime.now(UTC).replace(microsecond=0),
        raw=call.body,
        crs_override=call.request.headers.get("X-CRS"),
    )
    if isinstance(parsed, Rejected):
        raise Refusal(parsed.kind, parsed.reason)
    event, record = parsed
    await gw.produce([event])
    gw.remember(record)
    return json_response(post_response(request_id), 201)


async def _get_request(gw: HttpGateway, request: web.Request) -> web.Response:
    request_id = request.match_info["id"]
    wait = gw.limiter.take(f"addr:{request.remote}")
    if wait > 0:
        raise Refusal("rate_limited", "rate limit exceeded", retry_after=int(wait) + 1)
    record = gw.requests.get(request_id)
    if record is None and not REQUEST_ID.match(request_id):
        raise Refusal("unknown_service", f"service_request_id {request_id[:100]!r} was not found")
    if gw.status is None:
        if record is None:
            raise Refusal("unknown_service", f"service_request_id {request_id!r} was not found")
        return json_response([request_view(record, "open", status_notes=None, updated=None)])
    try:
        if record is None:
            record = await gw.blocking(gw.status.request, request_id)
        if record is None:
            raise Refusal("unknown_service", f"service_request_id {request_id!r} was not found")
        status = await gw.blocking(gw.status.status, request_id)
    except StoreUnavailableError as exc:
        raise Refusal(
            "overloaded", f"the incident store is unreachable ({exc})", retry_after=gw.g.retry_after_s
        ) from exc
    except QueryError as exc:
        logger.warning("status lookup failed id=%r error=%s", request_id, exc)
        raise Refusal("invalid", f"service_request_id {request_id!r} could not be looked up") from exc
    return json_response([request_view(record, status.status, status_notes=status.notes, updated=status.updated)])


async def _post_observation(gw: HttpGateway, call: Call) -> web.Response:
    gw.admit(call)
    crs = gw.crs_default(call, gw.g.crs.sensorthings)
    doc = parse_json(call.body, max_bytes=gw.g.http.max_payload_bytes)
    if isinstance(doc, Rejected):
        raise Refusal(doc.kind, doc.reason)
    got = parse_observation(
        doc,
        cache=gw.cache,
        metrics=gw.g.sensorthings_metrics,
        default_crs=crs,
        received_at=datetime.now(UTC),
        raw=call.body,
    )
    if isinstance(got, Rejected):
        raise Refusal(got.kind, got.reason)
    await gw.produce([got])
    location = f"/sensorthings/v1.1/Observations('{got.id}')"
    body = {"@iot.id": got.id, "@iot.selfLink": location, "result": got.value, "phenomenonTime": got.ts.isoformat()}
    return json_response(body, 201, {"Location": location})


async def _post_cloudevents(gw: HttpGateway, call: Call) -> web.Response:
    ctype = call.request.headers.get("Content-Type", "")
    if ctype.lower().startswith((STRUCTURED, BATCH)):
        items = from_structured(call.body, ctype, max_bytes=gw.g.http.max_payload_bytes)
    elif any(k.lower() == "ce-specversion" for k in call.request.headers):
        items = [from_binary(dict(call.request.headers), call.body)]
    else:
        raise Refusal(
            "invalid",
            "not a CloudEvent: send Content-Type application/cloudevents+json "
            "(structured mode) or ce-specversion, ce-id, ce-source and ce-type headers (binary mode)",
        )
    gw.admit(call, cost=max(1, len(items)))
    ctx = gw.ce
    declared = gw.crs_default(call, ctx.default_crs)
    if declared is not ctx.default_crs:
        ctx = type(ctx)(declared, ctx.max_bytes, ctx.cache, ctx.metrics)
    decoded = events_from_cloudevents(items, ctx, received_at=datetime.now(UTC))
    if not decoded.events:
        reasons = "; ".join(r.reason for r in decoded.rejected[:5]) or "no events in the CloudEvent data"
        if len(decoded.rejected) > 1:
            gw.dead_letter_rejected(decoded.rejected, call.source)
            raise Refusal("invalid", reasons, dead_lettered=True)
        first = decoded.rejected[0] if decoded.rejected else None
        raise Refusal(first.kind if first else "invalid", reasons)
    await gw.produce(decoded.events)
    gw.dead_letter_rejected(decoded.rejected, call.source)
    rejected = [{"index": r.index, "reason": r.reason} for r in decoded.rejected]
    return json_response({"accepted": len(decoded.events), "rejected": rejected}, 202)
