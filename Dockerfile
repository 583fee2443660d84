# syntax=docker/dockerfile:1
# Palisade's container image.
#
#   docker build -t palisade .                         # the gateway (the last stage, `runtime`)
#   docker build -t palisade-demo --target demo .      # the demo backend, for deploy/compose.yaml
#   docker run --rm -v "$PWD/gateway.toml:/etc/palisade/gateway.toml:ro" palisade check /etc/palisade/gateway.toml
#
# No config is baked in: mount one at /etc/palisade/gateway.toml (a ConfigMap, a bind mount).
# Only the files the build needs are copied, by name: never the git history, `.env` files, keys
# or certificates (and .dockerignore keeps them out of the build context too).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# --- build -------------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
# Pingora builds zlib-ng with cmake and a C compiler (the rust image has the compiler).
# Unpinned on purpose (hadolint DL3008): the release's current package, security fixes included.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
# Build settings (mimalloc's arenas committed on use: less memory at start).
COPY .cargo/config.toml ./.cargo/config.toml
COPY src ./src
# The vendored crates with Palisade's patches (vendor/*/PATCHES.md).
COPY vendor ./vendor
COPY benches ./benches
COPY examples ./examples
# build.rs reads these instead of asking git (there is no .git in the image):
#   docker build --build-arg PALISADE_GIT_SHA=$(git rev-parse --short=12 HEAD) ...
ARG PALISADE_GIT_SHA=unknown
ARG PALISADE_BUILD_ID=docker
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin palisade --example demo_backend \
 && install -D -m 0755 target/release/palisade /out/palisade \
 && install -D -m 0755 target/release/examples/demo_backend /out/demo_backend

# --- the demo backend (deploy/compose.yaml's `demo` service); not part of the gateway image ----
FROM debian:${DEBIAN_RELEASE}-slim AS demo
RUN useradd --system --uid 10002 --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin demo
COPY --from=builder /out/demo_backend /usr/local/bin/demo_backend
COPY deploy/docker/healthcheck /usr/local/bin/healthcheck
USER 10002:10002
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=4s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/healthcheck", "127.0.0.1:3000", "/health"]
ENTRYPOINT ["/usr/local/bin/demo_backend"]
CMD ["0.0.0.0:3000"]

# --- the gateway --------------------------------------------------------------------------------
# debian slim rather than distroless: the HEALTHCHECK needs bash (for /dev/tcp), and the image
# still has no curl, wget, compiler or package cache.
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# ca-certificates: upstreams with `tls = true` and rediss:// are verified against the system roots.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin palisade \
 && install -d -o root -g palisade -m 0750 /etc/palisade \
 && install -d -o palisade -g palisade -m 0750 /etc/palisade/certs
COPY --from=builder /out/palisade /usr/local/bin/palisade
COPY deploy/docker/healthcheck /usr/local/bin/healthcheck
# A numeric user, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
WORKDIR /etc/palisade
# 8080 plain HTTP, 8443 HTTPS, 9901 admin (/healthz /readyz /metrics /version). Ports below
# 1024 would need CAP_NET_BIND_SERVICE; map 80/443 to these instead.
EXPOSE 8080 8443 9901
# Liveness, not readiness: a gateway whose upstreams are down is alive and must not be restarted.
# Set PALISADE_HEALTH_ADDR when the admin listener is not on port 9901.
HEALTHCHECK --interval=10s --timeout=4s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/healthcheck"]
# SIGTERM drains in-flight requests for up to [server] shutdown_grace (default 30s): give
# `docker stop` a longer --time (compose: stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/palisade"]
CMD ["run", "--config", "/etc/palisade/gateway.toml"]
