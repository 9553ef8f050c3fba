# One image for both roles:
#   docker run ringkv:0.1.0 node --node-id n1 ...     (the default command is `ringkv node`)
#   docker run ringkv:0.1.0 operator                  (`ringkv operator`)
# BASE_IMAGE: any Debian-based Python 3.11 image with pip; e2e/kind/build-images.sh passes
# one built locally (no registry is reachable there).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /build
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install . \
    && rm -rf /build \
    && groupadd --gid 10001 ringkv \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/ringkv ringkv \
    && mkdir -p /var/lib/ringkv \
    && chown ringkv:ringkv /var/lib/ringkv

USER 10001:10001
WORKDIR /var/lib/ringkv
# client API, peer port, operator metrics, operator liveness
EXPOSE 7001 8001 9090 8080
ENTRYPOINT ["ringkv"]
CMD ["node"]
