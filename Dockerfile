# Perpetuo in one image: `perpetuo-admin` (admin API + dashboard; applies the database
# migrations when it starts) and `perpetuo-gateway`. The command chooses which one runs:
#   docker run … perpetuo perpetuo-admin
#   docker run … perpetuo perpetuo-gateway
# Base images are build arguments so a mirror or a pinned digest can replace them.
ARG RUST_IMAGE=rust:1-bookworm
ARG NODE_IMAGE=node:22-bookworm-slim
ARG RUNTIME_IMAGE=debian:bookworm-slim

# --- Rust toolchain + native build tools (pingora's dependencies need cmake) -------------
FROM ${RUST_IMAGE} AS rust-base
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src

# --- The dependency recipe: manifests and lockfile, every target's source a stub --------
# (third_party holds dependencies we carry patched: copied whole, they build with the rest
# of the dependencies.)
# Its content changes only when a manifest or the lockfile does, so the dependency layer
# below is rebuilt only then (the cargo-chef idea, without BuildKit cache mounts).
FROM rust-base AS recipe
COPY . .
RUN set -eu; \
    mkdir -p /recipe; \
    cp Cargo.toml Cargo.lock /recipe/; \
    cp -r third_party /recipe/; \
    for manifest in $(find . -name Cargo.toml -not -path './target/*' -not -path './third_party/*' -not -path '*/node_modules/*' | sort); do \
      dir="$(dirname "$manifest")"; \
      mkdir -p "/recipe/$dir"; \
      cp "$manifest" "/recipe/$dir/"; \
      if [ -f "$dir/build.rs" ]; then cp "$dir/build.rs" "/recipe/$dir/"; fi; \
      if [ -f "$dir/src/lib.rs" ]; then mkdir -p "/recipe/$dir/src"; : > "/recipe/$dir/src/lib.rs"; fi; \
      for bin in "$dir/src/main.rs" "$dir"/src/bin/*.rs; do \
        if [ -f "$bin" ]; then mkdir -p "/recipe/$(dirname "$bin")"; echo 'fn main() {}' > "/recipe/$bin"; fi; \
      done; \
    done

# --- Release build: dependencies first (cached), then the workspace ----------------------
FROM rust-base AS builder
COPY --from=recipe /recipe/ ./
RUN cargo build --release --locked -p perpetuo-admin -p perpetuo-gateway
COPY wire wire
COPY core core
COPY admin-api admin-api
COPY gateway gateway
COPY bench/mock-provider bench/mock-provider
COPY conf conf
COPY migrations migrations
# The real sources must look newer than the stubs the dependency layer compiled.
RUN find . -name '*.rs' -not -path './target/*' -exec touch {} + \
 && cargo build --release --locked -p perpetuo-admin -p perpetuo-gateway \
 && cp target/release/perpetuo-admin target/release/perpetuo-gateway /usr/local/bin/

# --- Dashboard ---------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS dashboard
WORKDIR /dashboard
COPY dashboard/package.json dashboard/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY dashboard/ ./
RUN npm run build

# --- Runtime -----------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 perpetuo \
 && useradd --system --uid 10001 --gid perpetuo --home-dir /var/lib/perpetuo --shell /usr/sbin/nologin perpetuo \
 && mkdir -p /var/lib/perpetuo \
 && chown perpetuo:perpetuo /var/lib/perpetuo
COPY --from=builder /usr/local/bin/perpetuo-admin /usr/local/bin/perpetuo-gateway /usr/local/bin/
COPY --from=dashboard /dashboard/dist /usr/share/perpetuo/dashboard
COPY conf/gateway.yaml conf/pricing.toml /etc/perpetuo/
COPY docker/entrypoint.sh /usr/local/bin/perpetuo-entrypoint
COPY docker/healthcheck.sh /usr/local/bin/perpetuo-healthcheck
# Inside a container the services listen on every interface; publish only what you need.
ENV ADMIN_ADDR=0.0.0.0:3000 \
    GATEWAY_ADDR=0.0.0.0:8000 \
    METRICS_ADDR=0.0.0.0:9091 \
    DASHBOARD_DIR=/usr/share/perpetuo/dashboard \
    GATEWAY_SERVER_CONF=/etc/perpetuo/gateway.yaml \
    PRICING_FILE=/etc/perpetuo/pricing.toml \
    DATA_DIR=/var/lib/perpetuo \
    RUST_LOG=info
WORKDIR /var/lib/perpetuo
VOLUME ["/var/lib/perpetuo"]
USER perpetuo:perpetuo
EXPOSE 3000 8000 9091
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["perpetuo-healthcheck"]
ENTRYPOINT ["perpetuo-entrypoint"]
CMD ["perpetuo-admin"]
