# cityops processes: worker, store, alerts, gateway http|mqtt, topics create (one image, the command picks).
# Build from the repository root:  docker build -f deploy/docker/cityops.Dockerfile -t cityops:0.1.0 .
FROM python:3.11.7-slim-bookworm AS build
WORKDIR /src
COPY deploy/docker/constraints.txt /tmp/constraints.txt
COPY pyproject.toml README.md ./
COPY rules/ rules/
COPY sinks/ sinks/
COPY streams/ streams/
COPY dashboard/ dashboard/
# every dependency pinned to the tested version (scripts/docker_constraints.py)
RUN python -m venv /opt/cityops \
    && /opt/cityops/bin/pip install --no-cache-dir --constraint /tmp/constraints.txt /src

FROM python:3.11.7-slim-bookworm
LABEL org.opencontainers.image.title="cityops" \
      org.opencontainers.image.source="deploy/docker/cityops.Dockerfile" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 cityops \
    && useradd --system --uid 10001 --gid cityops --home-dir /var/lib/cityops --create-home cityops \
    && mkdir -p /data && chown cityops:cityops /data
COPY --from=build /opt/cityops /opt/cityops
# Every process serves /metrics, /healthz and /readyz on 9100 (each container has its own port space).
ENV PATH=/opt/cityops/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    CITYOPS_LOG_JSON=true \
    CITYOPS_METRICS__HOST=0.0.0.0 \
    CITYOPS_METRICS__WORKER_PORT=9100 \
    CITYOPS_METRICS__STORE_PORT=9100 \
    CITYOPS_METRICS__ALERTS_PORT=9100 \
    CITYOPS_METRICS__GATEWAY_HTTP_PORT=9100 \
    CITYOPS_METRICS__GATEWAY_MQTT_PORT=9100 \
    CITYOPS_WORKER__DATA_DIR=/var/lib/cityops/faust \
    CITYOPS_STORE__PATH=/data/cityops.duckdb
USER 10001:10001
WORKDIR /var/lib/cityops
EXPOSE 9100 8080 9494
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9100/healthz', timeout=2)"]
ENTRYPOINT ["cityops"]
CMD ["worker"]
