# flipt-operator: one image for the operator (`flipt-operator run`) and the git-sync sidecar
# of Flipt pods (`flipt-operator git-sync`). Build: see docs/install.md ("Building the image").
#
# The base is pinned to a full Python/Debian version; pin it to a digest in your registry for
# byte-for-byte rebuilds:  --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- build: a virtualenv with the package and its dependencies (all wheels, no compiler) ----
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/flipt-operator
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN /opt/flipt-operator/bin/pip install --no-cache-dir . \
    && /opt/flipt-operator/bin/python -m compileall -q /opt/flipt-operator/lib

# ---- runtime: the virtualenv, git and ssh for the sidecar's transports, a non-root user ----
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="flipt-operator" \
      org.opencontainers.image.description="Kubernetes operator for the storage side of Flipt; also the git-sync sidecar" \
      org.opencontainers.image.licenses="Apache-2.0"
# Debian replaces package versions on security updates, so exact apt pins would break rebuilds;
# the base image tag (or digest) is what pins the distribution.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git openssh-client ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# 10001: the operator (the chart's runAsUser). 100:1000: the sidecar in Flipt pods runs as
# Flipt's user; ssh refuses to run for a uid without a passwd entry, so give it one.
RUN groupadd --system --gid 10001 flipt-operator \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/flipt-operator --create-home \
       --shell /usr/sbin/nologin flipt-operator \
    && (getent group 1000 >/dev/null || groupadd --gid 1000 flipt) \
    && (getent passwd 100 >/dev/null || useradd --uid 100 --gid 1000 --no-create-home \
       --home-dir /tmp --shell /usr/sbin/nologin git-sync)
COPY --from=build /opt/flipt-operator /opt/flipt-operator
ENV PATH=/opt/flipt-operator/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/flipt-operator \
    # Fewer glibc malloc arenas: the operator's threads otherwise each grow their own
    # (benchmarks/operator_scale.py measures resident memory with this setting).
    MALLOC_ARENA_MAX=2
USER 10001:10001
WORKDIR /home/flipt-operator
EXPOSE 8080 9090
ENTRYPOINT ["flipt-operator"]
CMD ["run"]
