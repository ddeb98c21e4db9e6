"""The one Settings tree: the only reader of the environment (prefix CITYOPS_, nesting ``__``).

Example: ``CITYOPS_KAFKA__BOOTSTRAP=127.0.0.1:9092 CITYOPS_STORE__PATH=var/city.duckdb cityops worker``.
"""

from __future__ import annotations

import importlib.resources
import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_core import to_jsonable_python
from pydantic_settings import BaseSettings, SettingsConfigDict

from sinks.alerts.settings import AlertsSettings
from sinks.settings import StoreSettings
from streams.gateways.settings import GatewaySettings

logger = logging.getLogger(__name__)


def default_pack() -> Path:
    """The bundled Wuhan demo pack."""
    return Path(str(importlib.resources.files("rules") / "packs" / "wuhan" / "pack.yaml"))


class KafkaSettings(BaseModel):
    """Broker connection and topic layout."""

    bootstrap: str = Field(default="127.0.0.1:9092", description="host:port[,host:port] of the brokers.")
    topic_prefix: str = Field(default="cityops", pattern=r"^[A-Za-z0-9._-]+$", description="Prefix of every topic.")
    partitions: int = Field(default=4, ge=1, le=1024, description="Partitions of every cityops topic.")
    replication_factor: int = Field(default=1, ge=1)
    app_id: str = Field(default="cityops-worker", description="Faust app id = worker consumer group.")
    session_timeout_s: float = Field(default=6.0, gt=0, description="Kept short: Tansu holds joins for half.")
    heartbeat_s: float = Field(default=2.0, gt=0)
    commit_interval_s: float = Field(default=0.5, gt=0)
    producer_max_batch_size: int = Field(
        default=1, ge=1, description="1 works around Tansu's ListOffsets bug so tables recover fully."
    )
    fetch_max_wait_ms: int = Field(
        default=20,
        ge=0,
        le=30_000,
        description=(
            "How long a fetch may wait for data (every consumer: worker, store, alerts). Tansu holds a "
            "fetch for the whole wait even when records arrive, so this bounds the latency of each hop; "
            "Apache Kafka answers as soon as data arrives: use 500 there (fewer empty fetches when idle)."
        ),
    )
    security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = Field(default=None, description="CA bundle (PEM) that signed the brokers' certificates.")
    ssl_certfile: Path | None = Field(default=None, description="Client certificate (PEM) for mutual TLS.")
    ssl_keyfile: Path | None = Field(default=None, description="Private key (PEM) of ssl_certfile.")
    ssl_check_hostname: bool = Field(default=True, description="Check the broker's name against its certificate.")

    @model_validator(mode="after")
    def _security_consistent(self) -> KafkaSettings:
        """SASL settings need a SASL protocol and vice versa; TLS files need a TLS protocol (never silently unused)."""
        sasl = self.security_protocol.startswith("SASL_")
        if sasl and not (self.sasl_mechanism and self.sasl_username and self.sasl_password):
            raise ValueError(
                f"kafka.security_protocol={self.security_protocol} needs sasl_mechanism, sasl_username and "
                "sasl_password"
            )
        if not sasl and (self.sasl_mechanism or self.sasl_username or self.sasl_password):
            raise ValueError(f"kafka.sasl_* settings are ignored with security_protocol={self.security_protocol}")
        tls_files = [f for f in ("ssl_cafile", "ssl_certfile", "ssl_keyfile") if getattr(self, f) is not None]
        if tls_files and not self.security_protocol.endswith("SSL"):
            raise ValueError(
                f"kafka.{', kafka.'.join(tls_files)} need security_protocol SSL or SASL_SSL, "
                f"not {self.security_protocol}"
            )
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ValueError("kafka.ssl_keyfile needs kafka.ssl_certfile")
        return self

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}.{name}"

    @property
    def raw_topic(self) -> str:
        return self.topic("events.raw")

    @property
    def events_topic(self) -> str:
        return self.topic("events")

    @property
    def incidents_topic(self) -> str:
        return self.topic("incidents")

    @property
    def deadletter_topic(self) -> str:
        return self.topic("deadletter")

    @property
    def actions_topic(self) -> str:
        """Operator actions (ack, assign, comment, resolve, close, reopen)."""
        return self.topic("actions")

    @property
    def updates_topic(self) -> str:
        """Incident transitions: the audit trail, published by the store writer."""
        return self.topic("incident-updates")

    @property
    def rules_topic(self) -> str:
        """Published rule packs (compacted: the latest pack per pack id)."""
        return self.topic("rules")

    @property
    def silences_topic(self) -> str:
        """Geo-scoped silences and maintenance windows (compacted, keyed by silence id)."""
        return self.topic("silences")

    def all_topics(self) -> list[str]:
        return [
            self.raw_topic,
            self.events_topic,
            self.incidents_topic,
            self.deadletter_topic,
            self.actions_topic,
            self.updates_topic,
            self.rules_topic,
            self.silences_topic,
        ]

    def producer_options(self) -> dict[str, Any]:
        """kafka-python producer options: client options plus the batch size.

        With the default ``producer_max_batch_size`` of 1 every record is its own batch, which
        keeps Tansu's offsets right (its ListOffsets is wrong for batches of several records).
        """
        return {**self.client_options(), "batch_size": self.producer_max_batch_size}

    def consumer_options(self) -> dict[str, Any]:
        """kafka-python consumer options: client options plus the fetch wait."""
        return {**self.client_options(), "fetch_max_wait_ms": self.fetch_max_wait_ms}

    def client_options(self) -> dict[str, Any]:
        """kafka-python options for this cluster (security included)."""
        opts: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap.split(","),
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            opts["sasl_mechanism"] = self.sasl_mechanism
            opts["sasl_plain_username"] = self.sasl_username
            opts["sasl_plain_password"] = self.sasl_password.get_secret_value() if self.sasl_password else None
        if self.security_protocol.endswith("SSL"):
            opts["ssl_check_hostname"] = self.ssl_check_hostname
            for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
                value = getattr(self, name)
                if value is not None:
                    opts[name] = str(value)
        return opts


class WorkerSettings(BaseModel):
    """The stream worker."""

    max_message_bytes: int = Field(default=1_048_576, ge=1024, description="Larger raw messages are dead-lettered.")
    data_dir: Path = Field(default=Path("var/faust"), description="Faust's local data directory.")
    expire_interval_s: float = Field(default=30.0, gt=0, description="How often old rule state is dropped.")
    tick_s: float = Field(default=5.0, gt=0, description="How often each partition gets a time tick.")
    rebuild_state: bool = Field(
        default=True,
        description="At start, re-apply each events partition's history to the rule state (idempotent); "
        "guards against a changelog that lost its tail. Start-up time grows with the topic's retention.",
    )
    rebuild_timeout_s: float = Field(default=120.0, gt=0, description="Give up a partition's rebuild after this.")
    send_retry_s: float = Field(
        default=300.0,
        ge=0,
        description="How long the worker keeps sending a record again whose send failed (backoff 0.2 s doubling "
        "to 5 s) before it gives up, logs it and stops checkpoints; 0 = never retry.",
    )
    checkpoint_interval_s: float = Field(
        default=10.0,
        ge=0,
        description="Without a changelog: how often the detect agent writes its rule state and offsets to "
        "data_dir (after flushing the producer), so a restart with the same partitions replays only the "
        "tail of the raw and events topics; 0 turns checkpoints off (a restart rebuilds from offset 0).",
    )
    handoff_events: int = Field(
        default=20_000,
        ge=0,
        description="How many events of the envelopes it sent to its own events partitions the worker holds (about "
        "4 KB of memory each when full, a fixed cost: docs/operations.md), so that its detect stage reading such "
        "an envelope back (byte for byte the same) takes them instead of parsing it; when full, envelopes are "
        "parsed. 0 = always parse.",
    )
    detect_run_messages: int = Field(
        default=16,
        ge=1,
        le=1024,
        description="How many queued events messages the detect agent takes at a time; consecutive ones of one "
        "partition and stream that the handoff holds are evaluated as one batch (rules.pipeline.detect_run), "
        "the same incidents as one by one at a fraction of the fixed cost per batch. 1 = one message at a time "
        "(always so with state_changelog).",
    )
    detect_run_wait_ms: float = Field(
        default=5.0,
        gt=0,
        le=1000,
        description="How long the detect agent waits for more messages when fewer than detect_run_messages are "
        "queued (added to the latency of a quiet stream; a longer wait wakes an idle worker less often).",
    )
    state_changelog: bool = Field(
        default=False,
        description="Also keep rule state in a Faust table with a changelog topic (one record per changed entry; "
        "on Tansu it needs kafka.producer_max_batch_size=1). Off: state lives in memory and rebuild_state "
        "restores it from the events topic, which already holds every input of it.",
    )
    producer_batch_bytes: int = Field(
        default=262_144,
        ge=1,
        description="Producer batch size of the worker (events, incidents) when state_changelog is off; "
        "with it on, kafka.producer_max_batch_size applies.",
    )
    producer_linger_ms: float = Field(
        default=10.0,
        ge=0,
        description="How long the worker's producer waits to fill a batch: incidents are many small "
        "records, and one request per record costs a broker round trip each.",
    )
    gc_threshold: int = Field(
        default=50_000,
        ge=0,
        description="Generation-0 threshold of Python's cyclic GC in the worker (Python's 700 costs a large "
        "share of the hot path); 0 keeps Python's default.",
    )
    clock: Literal["wall", "event"] = Field(
        default="wall",
        description="wall: ticks also advance the watermark with the wall clock (live); event: only event time "
        "moves it (replays, tests), so the live pipeline gives exactly replay's incidents.",
    )

    @model_validator(mode="after")
    def _state_recoverable(self) -> WorkerSettings:
        """Rule state must survive a restart: from a changelog, or rebuilt from the events topic."""
        if not (self.state_changelog or self.rebuild_state):
            raise ValueError("worker.rebuild_state=false needs worker.state_changelog=true (state would be lost)")
        return self


class MetricsSettings(BaseModel):
    """Prometheus ``/metrics`` (and ``/healthz``) per process; port 0 = off. See docs/operations.md."""

    host: str = Field(default="127.0.0.1", description="Address the metrics servers bind (0.0.0.0 in containers).")
    worker_port: int = Field(default=0, ge=0, le=65535, description="`cityops worker` (one port per host).")
    store_port: int = Field(default=0, ge=0, le=65535, description="`cityops store`.")
    alerts_port: int = Field(default=0, ge=0, le=65535, description="`cityops alerts`.")
    gateway_http_port: int = Field(default=0, ge=0, le=65535, description="`cityops gateway http`.")
    gateway_mqtt_port: int = Field(default=0, ge=0, le=65535, description="`cityops gateway mqtt`.")


class RulesSettings(BaseModel):
    """Which pack the worker runs."""

    pack: Path = Field(default_factory=default_pack, description="Rule pack YAML file.")


DashboardRole = Literal["viewer", "operator", "rule_author"]


class DashboardUser(BaseModel):
    """A dashboard login (see docs/dashboard.md): a password hash and the user's roles."""

    password_hash: SecretStr = Field(description="From `cityops dashboard hash-password` (scrypt, salted).")
    roles: list[DashboardRole] = Field(default=["viewer"], description="viewer, operator, rule_author")
    display_name: str | None = None


class DashboardSettings(BaseModel):
    """The Streamlit operations view."""

    host: str = "127.0.0.1"
    port: int = Field(default=8501, ge=1, le=65535)
    language: Literal["zh-CN", "en"] = "zh-CN"
    display_crs: Literal["WGS84", "GCJ02", "BD09"] = Field(
        default="GCJ02",
        description="Coordinate system of the positions shown to operators: what their map apps expect "
        "(GCJ-02: Amap/Tencent, BD-09: Baidu, WGS-84: GPS). Outside mainland China GCJ-02 equals WGS-84.",
    )
    timezone: str = "Asia/Shanghai"
    refresh_s: float = Field(default=3.0, gt=0)
    demo_mode: bool = Field(
        default=False, description="No login, every visitor may act (labelled on every page); `cityops demo` sets it."
    )
    users: dict[str, DashboardUser] = Field(
        default_factory=dict, description='Logins as JSON: {"name": {"password_hash": "scrypt$...", "roles": [...]}}.'
    )
    oidc_provider: str | None = Field(
        default=None, description="Offer `st.login` with this [auth] provider of secrets.toml ('default': unnamed)."
    )
    oidc_roles: dict[str, list[DashboardRole]] = Field(default_factory=dict, description="Roles per OIDC e-mail.")
    oidc_default_roles: list[DashboardRole] = Field(default=["viewer"])
    packs_dir: Path = Field(
        default_factory=lambda: default_pack().parent.parent, description="Backtests offer the *.yaml packs under it."
    )
    sensor_silent_s: float = Field(default=300.0, gt=0, description="A sensor quiet this long is shown as silent.")
    track_active_s: float = Field(default=120.0, gt=0, description="A track with a fix this recent is drawn.")
    sla_ack_minutes: dict[str, float] = Field(
        default={"critical": 5.0, "high": 15.0, "medium": 60.0, "low": 240.0, "info": 1440.0},
        description="Acknowledge within this many minutes, per severity (queue SLA timers).",
    )
    consumer_lag: bool = Field(default=False, description="Show consumer lag; only for brokers with right end offsets.")
    backtest_max_events: int = Field(default=500_000, ge=1, description="Largest backtest run from the dashboard.")


class Settings(BaseSettings):
    """Root of all settings."""

    model_config = SettingsConfigDict(
        env_prefix="CITYOPS_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    rules: RulesSettings = Field(default_factory=RulesSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)
    alerts: AlertsSettings = Field(default_factory=AlertsSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = False

    def to_env(self) -> dict[str, str]:
        """These settings as CITYOPS_* variables for child processes: one JSON value per section.

        Secrets are included (children need them); never log the result.
        """
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = _plain(getattr(self, name))
            env[f"CITYOPS_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
        return env

    def masked(self) -> dict[str, Any]:
        """For logging: every secret shown as ********, webhook URLs without credentials or query."""
        doc = self.model_dump(mode="json")
        for hook, endpoint in zip(doc["alerts"]["webhooks"], self.alerts.webhooks, strict=True):
            hook["url"] = endpoint.safe_url()
        return doc


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings from the environment (cached). Tests build their own ``Settings(...)``."""
    settings = Settings()
    logger.info("settings %s", settings.masked())
    return settings


def _plain(value: Any) -> Any:
    """A JSON-able copy of a settings value with secrets revealed."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, BaseModel):
        return {k: _plain(getattr(value, k)) for k in type(value).model_fields if getattr(value, k) is not None}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return to_jsonable_python(value)
