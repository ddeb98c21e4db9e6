"""Structure of the images, the compose file and the Kubernetes manifests (what a linter cannot see)."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from deployfiles import DEPLOY, DOCKERFILES, REPO, by_kind, compose, containers, workloads

sys.path.insert(0, str(REPO / "scripts"))
import docker_constraints


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_are_pinned_non_root_and_health_checked(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert bases and all(re.fullmatch(r"python:3\.11\.\d+-slim-\w+", b) for b in bases), bases
    assert "latest" not in text
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the last USER is not root"
    assert re.search(r"^HEALTHCHECK\s", text, re.MULTILINE)
    assert "--constraint /tmp/constraints.txt" in text and "--no-cache-dir" in text


def test_image_constraints_are_the_tested_versions() -> None:
    assert (DEPLOY / "docker" / "constraints.txt").read_text() == docker_constraints.render(), (
        "deploy/docker/constraints.txt is stale: run .venv/bin/python scripts/docker_constraints.py"
    )
    pins = dict(line.split("==") for line in docker_constraints.render().splitlines()[1:])
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        name, version = dep.split("==")
        assert pins[re.sub(r"[-_.]+", "-", name).lower()] == version, dep


def test_compose_runs_three_kraft_brokers_n_workers_one_store_and_prometheus() -> None:
    doc = compose()
    services = doc["services"]
    brokers = [s for n, s in services.items() if n.startswith("kafka-")]
    assert len(brokers) == 3
    for b in brokers:
        env = b["environment"]
        assert (
            env["KAFKA_PROCESS_ROLES"] == "broker,controller" and env["KAFKA_CONTROLLER_QUORUM_VOTERS"].count("@") == 3
        )
        assert b["image"].startswith("apache/kafka:") and not b["image"].endswith(":latest")
    assert services["worker"]["deploy"]["replicas"] >= 2
    store = services["store"]
    assert store["deploy"]["replicas"] == 1 and any(v.endswith(":/data") for v in store["volumes"])
    assert {"alerts", "gateway-http", "gateway-mqtt", "dashboard", "prometheus", "topics"} <= set(services)
    scrape = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    targets = set()
    for job in scrape["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            targets |= {(n, sd["port"]) for n in sd["names"]}
        for sc in job.get("static_configs", []):
            targets |= {(t.split(":")[0], int(t.split(":")[1])) for t in sc["targets"]}
    assert {name for name, _ in targets} == {"worker", "store", "alerts", "gateway-http", "gateway-mqtt"}
    assert {port for _, port in targets} == {9100}


def test_every_workload_has_probes_resources_and_runs_as_non_root() -> None:
    for w in workloads():
        pod = w["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, w["metadata"]["name"]
        for c in containers(w):
            name = f"{w['metadata']['name']}/{c['name']}"
            res = c["resources"]
            assert {"cpu", "memory"} <= set(res["requests"]) and {"cpu", "memory"} <= set(res["limits"]), name
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, name
            if w["kind"] != "Job":
                assert "livenessProbe" in c and "readinessProbe" in c, name
                ports = {p["name"] for p in c.get("ports", [])}
                for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                    if probe in c:
                        assert c[probe]["httpGet"]["port"] in ports, (name, probe)


def test_the_store_is_a_single_stateful_writer_with_a_volume() -> None:
    [store] = by_kind("StatefulSet")
    assert store["spec"]["replicas"] == 1
    [claim] = store["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    mounts = {m["name"]: m["mountPath"] for m in containers(store)[0]["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/data"
    env = {e["name"]: e.get("value") for e in containers(store)[0]["env"]}
    assert env["CITYOPS_STORE__PATH"].startswith("/data/")
    names = {d["metadata"]["name"] for d in workloads()}
    assert not any(d["kind"] == "Deployment" and "store" in d["metadata"]["name"] for d in workloads()), names


def test_images_in_compose_and_kubernetes_are_the_ones_the_dockerfiles_build() -> None:
    doc = compose()
    built = {s["image"] for s in doc["services"].values() if "build" in s}
    assert built == {"cityops:0.1.0", "cityops-dashboard:0.1.0"}
    used = {c["image"] for w in workloads() for c in containers(w)}
    assert used == built
    for service in doc["services"].values():
        if "build" in service:
            assert (REPO / service["build"]["dockerfile"]).exists()
