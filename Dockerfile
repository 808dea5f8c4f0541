# The platform image: the `sfr` CLI, the Dagster code location (`dagster api grpc -m pipelines`),
# the webserver and the daemon, and the reward server, all from one image. Dependencies are the
# pinned set (requirements.lock) plus the `k8s` extra (dagster-k8s, the K8sRunLauncher).
# Build and push to your registry (none is reachable from the development machine):
#   docker build -t registry.example.com/sfreward-platform:0.1.0 .
# then use that name in deploy/k8s/*.yaml.
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home SFR_HOME=/srv/sfr \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

# pg_dump / pg_restore for `sfr labelstudio backup|restore` against a PostgreSQL server;
# no server in the image (a cluster runs its own).
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-client \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/sfr
# Dependencies first: this layer is rebuilt only when the pins change.
COPY pyproject.toml requirements.lock README.md ./
RUN mkdir -p pipelines sfreward annotation warehouse \
 && pip install -c requirements.lock '.[k8s]' \
 && pip uninstall -y sfreward-platform
COPY pipelines ./pipelines
COPY sfreward ./sfreward
COPY annotation ./annotation
COPY warehouse ./warehouse
RUN pip install --no-deps -c requirements.lock '.[k8s]' && pip check

# Never run as root; the workspace volume is mounted at $SFR_HOME.
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin sfr \
 && mkdir -p "$DAGSTER_HOME" "$SFR_HOME" && chown -R sfr:sfr "$DAGSTER_HOME" "$SFR_HOME"
USER 10001
WORKDIR /srv/sfr

# Dagster webserver, code-location gRPC, reward server.
EXPOSE 3000 4000 8000
CMD ["dagster", "api", "grpc", "-m", "pipelines", "-h", "0.0.0.0", "-p", "4000"]
