"""Operator actions from the dashboard: sent through ``sinks.actions.ActionSender`` (the actions topic),
then confirmed by polling ``StoreReader.action(action_id)`` until the store writer has applied it.

Nothing here changes the store directly: the store writer is its only writer. The sender is one
per Kafka address and process (``st.cache_resource``); the action waiting for confirmation lives in
the session (``PENDING_KEY``), and a small fragment polls for it without blocking the page.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, cast

import streamlit as st
from kafka.errors import KafkaError

from dashboard import data
from dashboard.i18n import Lang, t
from rules.lifecycle import Action
from rules.silences import Silence
from sinks.actions import ActionError, ActionSender
from sinks.errors import SinkError
from streams.settings import Settings

logger = logging.getLogger(__name__)

PENDING_KEY = "pending_action"
OUTCOME_KEY = "action_outcome"
CONFIRM_TIMEOUT_S = 30.0
POLL_S = 1.0
SEND_TIMEOUT_MS = 5_000


@dataclass(frozen=True)
class KafkaAddress:
    """Where actions go. Hashable (a cache key); the options may hold a SASL password, kept out of repr."""

    options_json: str
    actions_topic: str
    silences_topic: str

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaAddress:
        # An operator waits on the send: give up on an unreachable broker after seconds, not kafka-python's 60 s.
        options = {
            **settings.kafka.client_options(),
            "max_block_ms": SEND_TIMEOUT_MS,
            "bootstrap_timeout_ms": SEND_TIMEOUT_MS,
            "request_timeout_ms": 10_000,
        }
        return cls(json.dumps(options, sort_keys=True), settings.kafka.actions_topic, settings.kafka.silences_topic)

    def __repr__(self) -> str:
        return f"KafkaAddress(actions_topic={self.actions_topic!r}, silences_topic={self.silences_topic!r})"


@data.cache_resource()
def sender(store: data.StoreAddress, kafka: KafkaAddress) -> ActionSender:
    """The process-wide sender for one store and Kafka address (its producer is made on first use)."""
    logger.info("dashboard action sender created actions_topic=%s", kafka.actions_topic)
    return ActionSender(data.reader(store), json.loads(kafka.options_json), kafka.actions_topic, kafka.silences_topic)


def _broker(settings: Settings) -> str:
    return settings.kafka.bootstrap


def _drop(settings: Settings) -> None:
    """Close and forget the sender after a broker error, so its producer does not retry forever."""
    store, kafka = data.StoreAddress.from_settings(settings), KafkaAddress.from_settings(settings)
    sender(store, kafka).close()
    cast(Any, sender).clear()


def send(settings: Settings, action: Action, lang: Lang) -> str | None:
    """Validate and publish ``action``; remember it for confirmation. Returns an error text, or None."""
    try:
        sender(data.StoreAddress.from_settings(settings), KafkaAddress.from_settings(settings)).send(action)
    except ActionError as exc:
        return t("actions.refused", lang, reason=str(exc))
    except SinkError as exc:  # the store is unreachable or refused the check
        return t("actions.store_error", lang, error=str(exc).splitlines()[0])
    except KafkaError as exc:
        logger.error("dashboard action not sent action_id=%s error=%s", action.action_id, exc)
        _drop(settings)
        return t("actions.broker_error", lang, broker=_broker(settings), error=type(exc).__name__)
    st.session_state[PENDING_KEY] = {
        "action_id": action.action_id,
        "incident_id": action.incident_id,
        "action": action.action,
        "sent": time.monotonic(),
    }
    return None


def send_silence(settings: Settings, silence: Silence, lang: Lang) -> str | None:
    """Publish a new or expired silence. Returns an error text, or None."""
    try:
        sender(data.StoreAddress.from_settings(settings), KafkaAddress.from_settings(settings)).silence(silence)
    except KafkaError as exc:
        logger.error("dashboard silence not sent silence_id=%s error=%s", silence.silence_id, exc)
        _drop(settings)
        return t("actions.broker_error", lang, broker=_broker(settings), error=type(exc).__name__)
    return None


def pending(incident_id: str) -> dict[str, Any] | None:
    """The action on ``incident_id`` still waiting for the store, if any."""
    item = st.session_state.get(PENDING_KEY)
    return item if isinstance(item, dict) and item.get("incident_id") == incident_id else None


def poll(settings: Settings, lang: Lang) -> None:
    """One look at the store for the pending action (a fragment calls this every ``POLL_S``).

    When the store has it, the outcome is kept for the next run and the whole page reruns, so the
    new state and the actions it allows are shown.
    """
    item = st.session_state.get(PENDING_KEY)
    if not isinstance(item, dict):
        return
    try:
        row = data.reader(data.StoreAddress.from_settings(settings)).action(str(item["action_id"]))
    except SinkError:
        row = None
    if row is None:
        waited = time.monotonic() - float(item["sent"])
        if waited < CONFIRM_TIMEOUT_S:
            st.info(t("actions.waiting", lang, action=t(f"action.{item['action']}", lang)), icon=":material/sync:")
            return
        st.session_state.pop(PENDING_KEY, None)
        st.session_state[OUTCOME_KEY] = ("warning", t("actions.timeout", lang, seconds=f"{CONFIRM_TIMEOUT_S:.0f}"))
    else:
        st.session_state.pop(PENDING_KEY, None)
        if row["outcome"] == "applied":
            done = t(f"action.{row['action']}", lang)
            st.session_state[OUTCOME_KEY] = ("success", t("actions.applied", lang, action=done))
        else:
            st.session_state[OUTCOME_KEY] = ("error", t("actions.rejected", lang, reason=row["reason"]))
        logger.info("dashboard action confirmed action_id=%s outcome=%s", row["action_id"], row["outcome"])
        for cached in (data.incident, data.history, data.queue, data.count, data.points, data.zone_counts, data.counts):
            cast(Any, cached).clear()  # st.cache_data adds clear()
    st.rerun()


def show_outcome() -> None:
    """The outcome of the last confirmed action, once."""
    outcome = st.session_state.pop(OUTCOME_KEY, None)
    if outcome is None:
        return
    kind, text = outcome
    {"success": st.success, "warning": st.warning}.get(kind, st.error)(text)
