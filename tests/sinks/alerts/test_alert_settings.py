"""The alerts settings section: defaults, validation, and a round trip through the environment."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr, ValidationError

from sinks.alerts import AlertsSettings, Route, WebhookEndpoint
from sinks.alerts.cap import CapOptions
from sinks.alerts.sdm import SdmMapping, SdmOptions
from streams.settings import Settings


def test_defaults() -> None:
    a = AlertsSettings()
    assert [r.name for r in a.routes] == ["all", "flood", "critical"]
    assert a.webhooks == []
    assert a.format_options().tz == ZoneInfo("Asia/Shanghai")
    assert a.deadletter_topic_name("city") == "city.deadletter"


def test_unknown_timezone_is_rejected() -> None:
    with pytest.raises(ValidationError, match="unknown timezone 'Mars/Olympus'"):
        AlertsSettings(timezone="Mars/Olympus")


def test_the_section_survives_to_env_for_child_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings()
    s.alerts = AlertsSettings(
        routes=[Route(name="z", topic="{prefix}.z", format="sdm-alert", zone_ids=["420102"], min_severity="low")],
        webhooks=[WebhookEndpoint(name="w", url="https://h.example/x", headers={"Authorization": SecretStr("k3y")})],
        timezone="Europe/Madrid",
        cap=CapOptions(sender="ops@city.example", status="Exercise", categories={"flood": "Geo"}),
        sdm=SdmOptions(categories={"flood": SdmMapping(category="naturalDisaster")}),
    )
    for key, value in s.to_env().items():
        monkeypatch.setenv(key, value)
    again = Settings().alerts
    assert again == s.alerts
    assert again.webhooks[0].headers["Authorization"].get_secret_value() == "k3y"
    assert "k3y" not in str(Settings().masked())
