# syntax=docker/dockerfile:1
# The reorg-aware broadcaster as a container.
#
#   docker build -t broadcaster .
#   docker run --read-only -v /srv/broadcaster/broadcaster.toml:/etc/broadcaster/broadcaster.toml:ro \
#       -v /srv/broadcaster/state:/var/lib/broadcaster -p 9650:9650 -p 8650:8650 broadcaster
#
# In the config, listen on 0.0.0.0 ([api] and [metrics]) so the published ports reach the service,
# put [journal] path under /var/lib/broadcaster (the only writable volume), and point [signer] url
# at the enclave (vsock://CID:PORT needs the host's vsock device passed through).
# Private keys never enter this image: they live in the enclave signer.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------- builder: wheels + venv
FROM ${PYTHON_IMAGE} AS builder
# A compiler for dependencies without a wheel for this platform (safe-pysha3, coincurve).
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Dependencies first (cached while only the code changes), then the project itself.
COPY pyproject.toml README.md ./
COPY broadcaster/ broadcaster/
COPY heads/ heads/
COPY nonce/ nonce/
COPY signer_client/ signer_client/
COPY enclave/ enclave/
RUN python -m pip wheel --wheel-dir /wheels . \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-index --find-links /wheels reorg-broadcaster \
    && /opt/venv/bin/broadcaster --help >/dev/null

# ---------------------------------------------------------------- runtime: slim, non-root
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 broadcaster \
    && useradd --system --uid 10001 --gid broadcaster --home-dir /var/lib/broadcaster \
        --shell /usr/sbin/nologin broadcaster \
    && mkdir -p /etc/broadcaster /var/lib/broadcaster \
    && chown broadcaster:broadcaster /var/lib/broadcaster
COPY --from=builder /opt/venv /opt/venv
COPY config/broadcaster.example.toml /etc/broadcaster/broadcaster.example.toml
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BROADCASTER_HEALTH_URL=http://127.0.0.1:9650/healthz
WORKDIR /var/lib/broadcaster
VOLUME ["/var/lib/broadcaster"]
# 8650: intent API (websocket), 9650: /metrics and /healthz (the [api]/[metrics] listen ports).
EXPOSE 8650 9650
USER broadcaster:broadcaster
# /healthz on the metrics port: 200 while healthy, 503/500 otherwise. Override
# BROADCASTER_HEALTH_URL when [metrics] listen uses another port.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['BROADCASTER_HEALTH_URL'], timeout=2)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["broadcaster", "run", "--config", "/etc/broadcaster/broadcaster.toml"]
