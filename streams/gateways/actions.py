"""``POST /incidents/{id}/actions``: operator actions over HTTP (ack, assign, comment, resolve, ...).

The body is JSON ``{"action": "ack", "actor": "zhang.san", "note": "...", "assignee": "..."}``.
The action is validated against the store (unknown incident: 404, illegal transition: 409) and
published on the actions topic; the store writer applies it. Answers 202 with the action id.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import orjson
from aiohttp import web
from pydantic import ValidationError

from sinks.actions import ActionError, ActionSender, new_action
from sinks.errors import StoreUnavailableError
from sinks.read import StoreReader
from streams.gateways.http import Call, HttpGateway, Refusal, json_response

logger = logging.getLogger(__name__)
INCIDENT_ID = re.compile(r"^[0-9a-f]{24}$")


def install(gw: HttpGateway, app: web.Application) -> None:
    sender: dict[str, ActionSender] = {}

    def get_sender() -> ActionSender:
        if "s" not in sender:
            s = gw.settings
            reader = StoreReader(s.store.quack_uri, s.store.token.get_secret_value())
            sender["s"] = ActionSender(
                reader, s.kafka.producer_options(), s.kafka.actions_topic, s.kafka.silences_topic
            )
        return sender["s"]

    async def post_action(call: Call) -> web.Response:
        gw.admit(call)
        incident_id = call.request.match_info["id"]
        if not INCIDENT_ID.match(incident_id):
            return json_response([{"code": 404, "description": f"unknown incident {incident_id!r}"}], 404)
        try:
            doc: Any = orjson.loads(call.body)
            if not isinstance(doc, dict):
                raise ValueError("the body must be a JSON object")
            action = new_action(
                incident_id,
                doc.get("action"),  # type: ignore[arg-type]  # validated by the Action model
                str(doc.get("actor") or ""),
                note=str(doc.get("note") or ""),
                assignee=doc.get("assignee"),
            )
        except (orjson.JSONDecodeError, ValueError, ValidationError) as exc:
            raise Refusal("invalid", f"not a valid action: {exc}") from exc
        try:
            await gw.blocking(get_sender().send, action)
        except StoreUnavailableError as exc:
            raise Refusal("overloaded", str(exc), retry_after=gw.g.retry_after_s) from exc
        except ActionError as exc:
            status = 404 if str(exc).startswith("unknown incident") else 409
            return json_response([{"code": status, "description": str(exc)}], status)
        logger.info(
            "action accepted action_id=%s incident=%s action=%s actor=%s",
            action.action_id,
            incident_id,
            action.action,
            action.actor,
        )
        return json_response({"action_id": action.action_id, "incident_id": incident_id, "action": action.action}, 202)

    app.router.add_post("/incidents/{id}/actions", gw.endpoint("/incidents/{id}/actions", post_action))
