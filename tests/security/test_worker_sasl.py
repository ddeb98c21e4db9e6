"""A Faust worker, the store writer and the alerts process over SASL_SSL (SCRAM-SHA-512), as processes.

They authenticate through the test proxy (kafka_proxy.py), run the pipeline end to end, and the
password never shows in any of their logs (DEBUG level) nor in ``Settings.masked()``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from pydantic import SecretStr
from secure import USERS, SecureBroker, TlsFiles
from stack import Stack, make_settings

from streams.settings import KafkaSettings, Settings
from streams.simulate import build_scenario, produce

pytestmark = pytest.mark.integration

START = datetime.fromisoformat("2026-07-01T23:00:00+08:00")
PASSWORD = USERS["cityops"]


def secured(settings: Settings, bootstrap: str, tls: TlsFiles, password: str = PASSWORD) -> Settings:
    k = settings.kafka
    plain = k.model_dump(
        exclude={"security_protocol", "sasl_mechanism", "sasl_username", "sasl_password", "ssl_cafile"}
    )
    settings.kafka = KafkaSettings(
        **{**plain, "bootstrap": bootstrap},
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="cityops",
        sasl_password=SecretStr(password),
        ssl_cafile=tls.ca,
    )
    return settings


def test_worker_store_and_alerts_log_in_over_sasl_ssl_and_never_log_the_password(
    secure_broker: Callable[..., SecureBroker], tls_files: TlsFiles, tmp_path: Path
) -> None:
    broker = secure_broker(users=USERS, server_ssl=tls_files.server_context())
    settings = secured(make_settings(broker, tmp_path, "sasl"), broker.bootstrap, tls_files)  # type: ignore[arg-type]
    settings.log_level = "DEBUG"
    assert PASSWORD not in str(settings.masked())
    stack = Stack(settings, tmp_path / "logs")
    try:
        stack.start("store")
        stack.start("worker")
        stack.start("alerts")
        sent = produce(settings, build_scenario(settings, START, 60.0), speed=0)
        assert sent > 100
        stack.wait_for("incidents in the store", lambda: len(stack.stored_incidents()) > 0, timeout=120)
        app_id = settings.kafka.app_id
        stack.wait_for(
            "every process to have logged in",
            lambda: {"cityops-store", "cityops-alerts", f"{app_id}-rules"} <= broker.proxy.log.client_ids(),
        )
    finally:
        stack.close()
    log = broker.proxy.log
    assert log.users(ok=False) == set() and log.unauthenticated == []
    assert any(cid.startswith("faust") or cid == app_id for cid in log.client_ids()), log.client_ids()
    logs = {p.name: p.read_text(errors="replace") for p in (tmp_path / "logs").glob("*.log")}
    assert set(logs) == {"store.log", "worker.log", "alerts.log"}
    for name, text in logs.items():
        assert PASSWORD not in text, f"the Kafka password leaked into {name}"
        assert "effective settings" in text and '"sasl_password": "**********"' in text, name


def test_a_worker_with_a_wrong_password_is_refused(
    secure_broker: Callable[..., SecureBroker], tls_files: TlsFiles, tmp_path: Path
) -> None:
    broker = secure_broker(users=USERS, server_ssl=tls_files.server_context())
    good = secured(make_settings(broker, tmp_path, "sasl-bad"), broker.bootstrap, tls_files)  # type: ignore[arg-type]
    stack = Stack(good, tmp_path / "logs")  # creates the topics with the right password
    stack.settings = secured(good.model_copy(deep=True), broker.bootstrap, tls_files, password="wrong-password")
    before = len(broker.proxy.log.attempts)
    try:
        worker = stack.start("worker")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not broker.proxy.log.users(ok=False):
            time.sleep(0.5)
        assert broker.proxy.log.users(ok=False) == {"cityops"}
        assert all(not a.ok for a in broker.proxy.log.attempts[before:])
        assert worker.alive() or "wrong-password" not in stack.log_tail("worker", 400)
    finally:
        stack.close()
    assert "wrong-password" not in (tmp_path / "logs" / "worker.log").read_text(errors="replace")
