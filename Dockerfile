# The Strongroom broker: `docker build -t strongroom .` (see docs/production.md).
#
# Multi-stage: the builder makes a virtualenv in /opt/strongroom, the final stage copies only that venv onto
# a fresh base. It runs as uid 10001, works with `docker run --read-only` (no tmpfs needed, `serve --workers N`
# included), and keeps its state only in the volumes /data, /keys and /checkpoints: nothing secret
# is ever written into a layer, and the build context is an allow-list (.dockerignore).
#
# BASE must be a Debian-family image with python3 (3.11+), its venv module and pip (22.3+) on PATH, the same
# in both stages; the default is the official slim Python. PIP_OPTIONS is passed to pip in the builder, e.g.
# `--build-arg PIP_OPTIONS="--no-index --find-links=/src/wheelhouse"` with wheels in ./wheelhouse for an
# offline build.
ARG BASE=python:3.11-slim

FROM ${BASE} AS builder
ARG PIP_OPTIONS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY . /src
# The base's own pip installs into the venv (`--python`, pip 22.3+), so the venv carries no pip or setuptools
# of its own (fewer files to copy, nothing for the broker's Python to install packages with).
RUN set -eu; \
    python3 -m venv --without-pip /opt/strongroom; \
    python3 -m pip --python /opt/strongroom/bin/python install $PIP_OPTIONS /src; \
    install -m 0644 /src/deploy/healthcheck.py /opt/strongroom/healthcheck.py

FROM ${BASE}
RUN set -eu; \
    groupadd --system --gid 10001 strongroom; \
    useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin strongroom; \
    mkdir -p /data /keys /checkpoints; \
    chown 10001:10001 /data /keys /checkpoints; \
    chmod 0700 /data /keys /checkpoints
COPY --from=builder /opt/strongroom /opt/strongroom
# Settings (README "Configuration"): production rules on (PostgreSQL and a real keyring required), the
# keyring and the audit signing key in /keys, checkpoints in /checkpoints, anything else in /data.
ENV PATH=/opt/strongroom/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    STRONGROOM_PRODUCTION=true \
    STRONGROOM_DATA_DIR=/data \
    STRONGROOM_KEY_FILE=/keys/keyring.json \
    STRONGROOM_AUDIT_SIGNING_KEY_FILE=/keys/audit-signing-key.pem \
    STRONGROOM_AUDIT_CHECKPOINT_DIR=/checkpoints \
    STRONGROOM_HOST=0.0.0.0 \
    STRONGROOM_PORT=8750
VOLUME ["/data", "/keys", "/checkpoints"]
USER 10001:10001
WORKDIR /data
EXPOSE 8750
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/opt/strongroom/bin/python", "/opt/strongroom/healthcheck.py"]
ENTRYPOINT ["strongroom-server"]
# Plain HTTP off loopback is refused unless STRONGROOM_ALLOW_PLAIN_HTTP=true (behind a TLS proxy) or
# STRONGROOM_TLS_CERT_FILE/STRONGROOM_TLS_KEY_FILE are set.
CMD ["serve"]
