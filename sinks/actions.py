"""Sending operator actions and silences: validated against the store, then put on Kafka.

The dashboard, the CLI and the HTTP endpoint all go through here. An unknown incident or an
illegal transition is refused at once with a clear error; the store writer validates again when
it applies the action (idempotently, by ``action_id``).
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from kafka import KafkaProducer

from rules.lifecycle import Action, ActionName, TransitionError, apply_action
from rules.silences import Silence
from sinks.errors import SinkError
from sinks.read import StoreReader

logger = logging.getLogger(__name__)


class ActionError(SinkError):
    """An action was refused: unknown incident, illegal transition, or the store rejected it."""


def new_action(
    incident_id: str, action: ActionName, actor: str, *, note: str = "", assignee: str | None = None
) -> Action:
    return Action(
        action_id=uuid.uuid4().hex,
        incident_id=incident_id,
        action=action,
        actor=actor,
        at=datetime.now(UTC),
        note=note,
        assignee=assignee,
    )


class ActionSender:
    """Validates and publishes actions and silences (one Kafka producer per sender)."""

    def __init__(self, reader: StoreReader, kafka_options: dict[str, Any], actions_topic: str, silences_topic: str):
        self.reader = reader
        self.actions_topic = actions_topic
        self.silences_topic = silences_topic
        self._options = kafka_options
        self._producer: KafkaProducer | None = None

    def _send(self, topic: str, key: str, value: bytes) -> None:
        if self._producer is None:
            self._producer = KafkaProducer(client_id="cityops-actions", acks="all", **self._options)
        self._producer.send(topic, key=key.encode(), value=value).get(timeout=10)

    def send(self, action: Action, *, wait_s: float = 0.0) -> dict[str, Any] | None:
        """Validate, publish, and (with ``wait_s``) wait until the store applied it.

        Raises:
            ActionError: unknown incident, illegal transition, or rejected by the store.
        """
        current = self.reader.incident(action.incident_id)
        if current is None:
            raise ActionError(f"unknown incident {action.incident_id}")
        try:
            apply_action(current["status"], action)
        except TransitionError as exc:
            raise ActionError(str(exc)) from exc
        self._send(self.actions_topic, action.incident_id, action.model_dump_json().encode())
        logger.info(
            "action sent action_id=%s incident=%s action=%s actor=%s",
            action.action_id,
            action.incident_id,
            action.action,
            action.actor,
        )
        if wait_s <= 0:
            return None
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            row = self.reader.action(action.action_id)
            if row is not None:
                if row["outcome"] != "applied":
                    raise ActionError(f"the store rejected the action: {row['reason']}")
                return row
            time.sleep(0.2)
        raise ActionError(
            f"the store did not apply action {action.action_id} within {wait_s:.0f}s (is `cityops store` running?)"
        )

    def silence(self, silence: Silence) -> None:
        """Publish (or update, e.g. expire) a silence."""
        self._send(self.silences_topic, silence.silence_id, silence.model_dump_json().encode())
        logger.info("silence sent silence_id=%s expired=%s", silence.silence_id, silence.expired)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)
