"""The env of deploy/compose.yaml and of the k8s ConfigMap + Secret makes valid Settings for a 3-broker cluster.

The Settings are built exactly as a process in the container would build them (from CITYOPS_*
variables), and the Faust app is built from them without connecting to anything.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import faust
import pytest
from deployfiles import by_kind, compose, k8s_env

from streams.app import build_runtime
from streams.settings import Settings


def cityops_env(env: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in env.items() if k.startswith("CITYOPS_")}


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CITYOPS_WORKER__DATA_DIR", str(tmp_path / "faust"))
    return Settings()  # extra="forbid": a misspelt CITYOPS_* variable fails here


def compose_envs() -> dict[str, dict[str, str]]:
    services = compose()["services"]
    return {
        name: cityops_env(s.get("environment", {}))
        for name, s in services.items()
        if "CITYOPS_KAFKA__BOOTSTRAP" in s.get("environment", {})
    }


def check_cluster(s: Settings, workers: int) -> None:
    k = s.kafka
    brokers = k.bootstrap.split(",")
    assert len(brokers) == 3 and len(set(brokers)) == 3
    assert k.replication_factor == 3
    assert k.producer_max_batch_size != 1, "1 only works around a Tansu bug"
    assert k.partitions >= workers, "every worker needs at least one partition"
    assert k.session_timeout_s > 3 * k.heartbeat_s


def check_faust_app(s: Settings) -> faust.App:
    app = build_runtime(s).app
    conf = app.conf
    assert [str(u) for u in conf.broker] == [f"kafka://{b}" for b in s.kafka.bootstrap.split(",")]
    assert conf.topic_replication_factor == 3 and conf.topic_partitions == s.kafka.partitions
    # With a changelog table the Kafka setting applies (1 on Tansu keeps table recovery right);
    # without one (rule state rebuilt from the events topic) the worker batches by its own setting.
    batch = s.kafka.producer_max_batch_size if s.worker.state_changelog else s.worker.producer_batch_bytes
    assert conf.producer_max_batch_size == batch
    assert conf.broker_session_timeout == s.kafka.session_timeout_s
    return app


@pytest.mark.parametrize("service", sorted(compose_envs()))
def test_every_compose_service_gets_valid_settings(
    service: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    s = settings_from(compose_envs()[service], monkeypatch, tmp_path)
    check_cluster(s, workers=compose()["services"]["worker"]["deploy"]["replicas"])


def test_the_compose_worker_builds_a_faust_app_for_the_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    s = settings_from(compose_envs()["worker"], monkeypatch, tmp_path)
    assert s.metrics.host == "0.0.0.0" and s.log_json
    app = check_faust_app(s)
    assert app.conf.broker_credentials is None, "compose keeps Kafka on its private network"


def test_the_k8s_configmap_and_secret_give_sasl_ssl_settings_for_the_cluster(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = k8s_env()
    cafile = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
    assert Path(cafile).exists()
    env["CITYOPS_KAFKA__SSL_CAFILE"] = cafile  # the pod mounts the Kafka CA there; any PEM bundle here
    s = settings_from(env, monkeypatch, tmp_path)
    [worker] = [d for d in by_kind("Deployment") if d["metadata"]["name"] == "cityops-worker"]
    check_cluster(s, workers=worker["spec"]["replicas"])
    assert s.kafka.security_protocol == "SASL_SSL" and s.kafka.sasl_mechanism == "SCRAM-SHA-512"
    assert s.kafka.sasl_password is not None and "REPLACE_ME" not in str(s.masked())
    assert s.kafka.client_options()["ssl_cafile"] == cafile
    creds = check_faust_app(s).conf.broker_credentials
    assert isinstance(creds, faust.SASLCredentials) and creds.protocol.value == "SASL_SSL"
    assert creds.ssl_context is not None and creds.ssl_context.check_hostname


def test_k8s_pods_mount_the_ca_file_the_settings_name() -> None:
    cafile = k8s_env()["CITYOPS_KAFKA__SSL_CAFILE"]
    for workload in by_kind("Deployment") + by_kind("StatefulSet") + by_kind("Job"):
        for c in workload["spec"]["template"]["spec"]["containers"]:
            mounts = [m["mountPath"] for m in c.get("volumeMounts", [])]
            assert any(cafile.startswith(m + "/") for m in mounts), (workload["metadata"]["name"], cafile)
