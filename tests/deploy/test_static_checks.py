"""deploy/ passes the static checks CI can run without a Docker engine or a cluster."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from deployfiles import COMPOSE, COMPOSE_VARS, DOCKERFILES, K8S, REPO

BIN = Path(sys.executable).parent


def run(*cmd: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, check=False, env=env)


def test_compose_file_follows_the_compose_specification() -> None:
    result = run(str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_fails_the_schema_when_broken(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("restart: unless-stopped", "restart: [sometimes]", 1))
    result = run(str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(broken))
    assert result.returncode != 0, "the schema check is real"


def test_docker_compose_config_where_the_plugin_exists() -> None:
    """`docker compose config` needs the compose plugin; this machine's docker CLI has none (checked here)."""
    docker = shutil.which("docker")
    if docker is None or run(docker, "compose", "version").returncode != 0:
        assert (
            run(str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)).returncode == 0
        )
        return
    import os

    result = run(docker, "compose", "-f", str(COMPOSE), "config", "--quiet", env={**os.environ, **COMPOSE_VARS})
    assert result.returncode == 0, result.stderr


def test_kubernetes_manifests_validate_strictly_against_the_bundled_schemas() -> None:
    files = sorted(str(p) for p in K8S.glob("*.yaml"))
    assert len(files) >= 8
    result = run(str(BIN / "kubernetes-validate"), "--strict", "--quiet", *files)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_pass_hadolint(dockerfile: Path) -> None:
    result = run(str(BIN / "hadolint"), str(dockerfile))
    assert result.returncode == 0, result.stdout + result.stderr


def test_make_deploy_check_runs_the_same_checks() -> None:
    result = run("bash", "scripts/deploy_check.sh", env={"BIN": str(BIN), "PATH": "/usr/bin:/bin:/usr/local/bin"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hadolint clean" in result.stdout
