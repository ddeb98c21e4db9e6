"""Readers of deploy/: the compose file with its variables filled in, and the Kubernetes manifests."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
K8S = DEPLOY / "k8s"
DOCKERFILES = sorted((DEPLOY / "docker").glob("*.Dockerfile"))

#: What an operator exports before `docker compose up` (see the head of compose.yaml).
COMPOSE_VARS = {
    "CITYOPS_STORE_TOKEN": "a-long-random-token-0123456789",
    "CITYOPS_GATEWAY_API_KEYS": '["key-1"]',
    "CITYOPS_DASHBOARD_USERS": '{"ops": {"password_hash": "scrypt$x", "roles": ["operator"]}}',
    "CITYOPS_MQTT_HOST": "mqtt.example.internal",
    "CITYOPS_MQTT_USERNAME": "cityops",
    "CITYOPS_MQTT_PASSWORD": "mqtt-secret",
}
_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:[?-])(?P<arg>[^}]*))?\}")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` (an unset required one raises)."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m["name"], m["op"], m["arg"]
        if env.get(name):
            return env[name]
        if op == ":-":
            return arg or ""
        raise KeyError(f"compose needs ${{{name}}}: {arg}")

    return _VAR.sub(one, text)


def _interpolate_tree(node: Any, env: dict[str, str]) -> Any:
    """Compose interpolates string values after parsing the YAML (so a JSON value stays a string)."""
    if isinstance(node, dict):
        return {k: _interpolate_tree(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate_tree(v, env) for v in node]
    if isinstance(node, str):
        return interpolate(node, env)
    return node


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = _interpolate_tree(yaml.safe_load(COMPOSE.read_text()), env or COMPOSE_VARS)
    return doc


def manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in manifests() if d["kind"] == kind]


def workloads() -> list[dict[str, Any]]:
    return [d for d in manifests() if d["kind"] in ("Deployment", "StatefulSet", "Job")]


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    items: list[dict[str, Any]] = spec["containers"]
    return items


def k8s_env() -> dict[str, str]:
    """The CITYOPS_* variables the ConfigMap and the Secret give every process."""
    [config] = by_kind("ConfigMap")
    [secret] = by_kind("Secret")
    return {**config["data"], **secret["stringData"]}
