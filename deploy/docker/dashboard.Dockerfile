# The Streamlit operations dashboard (`cityops dashboard`); it reads the store through Quack.
# Build from the repository root:  docker build -f deploy/docker/dashboard.Dockerfile -t cityops-dashboard:0.1.0 .
FROM python:3.11.7-slim-bookworm AS build
WORKDIR /src
COPY deploy/docker/constraints.txt /tmp/constraints.txt
COPY pyproject.toml README.md ./
COPY rules/ rules/
COPY sinks/ sinks/
COPY streams/ streams/
COPY dashboard/ dashboard/
RUN python -m venv /opt/cityops \
    && /opt/cityops/bin/pip install --no-cache-dir --constraint /tmp/constraints.txt /src

FROM python:3.11.7-slim-bookworm
LABEL org.opencontainers.image.title="cityops-dashboard" \
      org.opencontainers.image.source="deploy/docker/dashboard.Dockerfile" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 cityops \
    && useradd --system --uid 10001 --gid cityops --home-dir /var/lib/cityops --create-home cityops
COPY --from=build /opt/cityops /opt/cityops
# `cityops dashboard` refuses 0.0.0.0 unless CITYOPS_DASHBOARD__USERS or __OIDC_PROVIDER is set.
ENV PATH=/opt/cityops/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    CITYOPS_LOG_JSON=true \
    CITYOPS_DASHBOARD__HOST=0.0.0.0 \
    CITYOPS_DASHBOARD__PORT=8501 \
    CITYOPS_DASHBOARD__DEMO_MODE=false
USER 10001:10001
WORKDIR /var/lib/cityops
EXPOSE 8501
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=2)"]
ENTRYPOINT ["cityops"]
CMD ["dashboard"]
