"""Kafka security settings reach every client library; secrets stay masked; exposure is refused."""

from __future__ import annotations

import ssl
from pathlib import Path

import faust
import pytest
from click.testing import CliRunner
from pydantic import SecretStr, ValidationError

from sinks.alerts import WebhookEndpoint
from streams.app import build_runtime
from streams.cli import main
from streams.security import aiokafka_options, dashboard_exposure_problem, faust_credentials, ssl_context
from streams.settings import DashboardSettings, DashboardUser, KafkaSettings, Settings

PASSWORD = "pw-Very-Secret-123"


def sasl(**extra: object) -> KafkaSettings:
    return KafkaSettings(
        bootstrap="k1:9093,k2:9093,k3:9093",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="cityops",
        sasl_password=SecretStr(PASSWORD),
        **extra,  # type: ignore[arg-type]
    )


def test_client_options_carry_sasl_for_kafka_python() -> None:
    opts = sasl().client_options()
    assert opts == {
        "bootstrap_servers": ["k1:9093", "k2:9093", "k3:9093"],
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "cityops",
        "sasl_plain_password": PASSWORD,
    }


def test_client_options_carry_tls_files_and_hostname_check(tmp_path: Path) -> None:
    k = KafkaSettings(
        security_protocol="SSL",
        ssl_cafile=tmp_path / "ca.pem",
        ssl_certfile=tmp_path / "c.pem",
        ssl_check_hostname=False,
    )
    opts = k.client_options()
    assert opts["ssl_cafile"] == str(tmp_path / "ca.pem") and opts["ssl_certfile"] == str(tmp_path / "c.pem")
    assert opts["ssl_check_hostname"] is False and "ssl_keyfile" not in opts and "sasl_mechanism" not in opts


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"security_protocol": "SASL_SSL"}, "needs sasl_mechanism"),
        ({"sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password": "p"}, "are ignored"),
        ({"ssl_cafile": "/ca.pem"}, "need security_protocol SSL or SASL_SSL"),
        ({"security_protocol": "SSL", "ssl_keyfile": "/k.pem"}, "needs kafka.ssl_certfile"),
    ],
)
def test_inconsistent_security_settings_are_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        KafkaSettings.model_validate(fields)


def test_security_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {
        "CITYOPS_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "CITYOPS_KAFKA__SASL_MECHANISM": "SCRAM-SHA-256",
        "CITYOPS_KAFKA__SASL_USERNAME": "svc",
        "CITYOPS_KAFKA__SASL_PASSWORD": PASSWORD,
        "CITYOPS_KAFKA__SSL_CHECK_HOSTNAME": "false",
    }.items():
        monkeypatch.setenv(key, value)
    k = Settings().kafka
    assert isinstance(k.sasl_password, SecretStr) and k.sasl_password.get_secret_value() == PASSWORD
    assert (k.sasl_mechanism, k.ssl_check_hostname) == ("SCRAM-SHA-256", False)
    assert PASSWORD not in repr(k) and PASSWORD not in str(Settings().masked())


def test_aiokafka_options_and_the_tls_context() -> None:
    k = sasl().model_copy(update={"security_protocol": "SASL_SSL", "ssl_check_hostname": False})
    opts = aiokafka_options(k)
    assert opts["sasl_plain_password"] == PASSWORD and opts["security_protocol"] == "SASL_SSL"
    context = opts["ssl_context"]
    assert isinstance(context, ssl.SSLContext) and context.check_hostname is False
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert ssl_context(sasl()) is None


def test_the_faust_app_gets_broker_credentials_without_connecting(tmp_path: Path) -> None:
    s = Settings()
    s.kafka = sasl(replication_factor=3, producer_max_batch_size=16384)
    s.worker.data_dir = tmp_path
    conf = build_runtime(s).app.conf
    creds = conf.broker_credentials
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password, creds.mechanism.value) == ("cityops", PASSWORD, "SCRAM-SHA-512")
    assert creds.protocol.value == "SASL_PLAINTEXT" and PASSWORD not in repr(creds)
    tls = KafkaSettings(security_protocol="SSL")
    assert isinstance(faust_credentials(tls), faust.SSLCredentials)
    assert faust_credentials(KafkaSettings()) is None
    with_tls = sasl().model_copy(update={"security_protocol": "SASL_SSL"})
    creds = faust_credentials(with_tls)
    assert isinstance(creds, faust.SASLCredentials) and creds.protocol.value == "SASL_SSL"


def test_masked_settings_hide_every_secret_and_webhook_credentials() -> None:
    s = Settings()
    s.kafka = sasl()
    s.alerts.webhooks = [WebhookEndpoint(name="ops", url=f"https://bot:{PASSWORD}@hooks.example/x?token={PASSWORD}")]
    s.store.token = SecretStr(PASSWORD)
    s.gateway.http.api_keys = [SecretStr(PASSWORD)]
    s.gateway.mqtt.password = SecretStr(PASSWORD)
    doc = s.masked()
    assert PASSWORD not in str(doc)
    assert (
        doc["kafka"]["sasl_password"] == "**********"
        and doc["alerts"]["webhooks"][0]["url"] == "https://hooks.example/x"
    )


@pytest.mark.parametrize(
    ("host", "dashboard", "refused"),
    [
        ("127.0.0.1", DashboardSettings(demo_mode=True), None),
        ("localhost", DashboardSettings(), None),
        ("0.0.0.0", DashboardSettings(demo_mode=True), "demo mode"),
        ("10.1.2.3", DashboardSettings(), "without authentication"),
        ("0.0.0.0", DashboardSettings(oidc_provider="default"), None),
        ("0.0.0.0", DashboardSettings(users={"ops": DashboardUser(password_hash=SecretStr("scrypt$x"))}), None),
    ],
)
def test_the_dashboard_refuses_a_non_loopback_address_without_a_login(
    host: str, dashboard: DashboardSettings, refused: str | None
) -> None:
    problem = dashboard_exposure_problem(dashboard, host)
    assert (problem is None) if refused is None else (refused in (problem or ""))


def test_cityops_dashboard_refuses_to_start_on_all_interfaces_in_demo_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYOPS_DASHBOARD__HOST", "0.0.0.0")
    monkeypatch.setenv("CITYOPS_DASHBOARD__DEMO_MODE", "true")
    execs: list[object] = []
    monkeypatch.setattr("os.execvpe", lambda *a: execs.append(a))
    result = CliRunner().invoke(main, ["dashboard"])
    assert result.exit_code == 1 and "refusing to serve the dashboard on 0.0.0.0" in result.output
    assert execs == [], "streamlit was never started"
