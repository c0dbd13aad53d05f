#!/usr/bin/env bash
# Builds the Docker image and checks the compose stack for real: installs Debian's
# docker.io and docker-compose, starts dockerd when it is not running, makes the base
# images locally (no container registry is reachable from CI), builds the image once,
# checks the Prometheus files, runs .ci/compose-smoke.sh, and removes everything it made.
# PERPETUO_SKIP_CONTAINERS=1 skips it; PERPETUO_KEEP_CI_IMAGES=1 keeps the base images
# and the built image for the next local run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [ "${PERPETUO_SKIP_CONTAINERS:-0}" = "1" ]; then
  echo "== containers: skipped (PERPETUO_SKIP_CONTAINERS=1)"
  exit 0
fi
STEP_START="$(date +%s)"
log() { echo "== containers [$(( $(date +%s) - STEP_START ))s]: $*"; }

if [ "$(id -u)" = "0" ]; then SUDO=""; else SUDO="sudo"; fi
# The Debian package's own CLI: the legacy builder, no buildx needed.
DOCKER=/usr/bin/docker
CI_PREFIX="perpetuo-ci"
IMAGE="${PERPETUO_IMAGE:-perpetuo:ci}"
WORK="$(mktemp -d /tmp/perpetuo-containers.XXXXXX)"
DOCKERD_PID=""
IMAGES_BEFORE=""

cleanup() {
  local rc=$?
  set +e
  if [ -n "${BASES_PID:-}" ]; then kill "$BASES_PID" 2>/dev/null; wait "$BASES_PID" 2>/dev/null; fi
  if [ -n "$IMAGES_BEFORE" ] && $DOCKER info >/dev/null 2>&1; then
    # Containers left by an interrupted build hold their images: remove the ones this
    # step made first.
    $DOCKER ps -aq --no-trunc | sort -u | comm -13 "$CONTAINERS_BEFORE" - | xargs -r $DOCKER rm -f >/dev/null 2>&1
  fi
  if [ "${PERPETUO_KEEP_CI_IMAGES:-0}" != "1" ] && [ -n "$IMAGES_BEFORE" ] && $DOCKER info >/dev/null 2>&1; then
    # Every image this step made (bases, the image, intermediate stages), nothing else.
    # Several passes: a parent goes only once its children are gone.
    for _ in 1 2 3 4 5; do
      $DOCKER images -aq --no-trunc | sort -u | comm -13 "$IMAGES_BEFORE" - >"$WORK/images-new"
      [ -s "$WORK/images-new" ] || break
      xargs -r $DOCKER rmi -f <"$WORK/images-new" >/dev/null 2>&1
    done
  fi
  if [ -n "$DOCKERD_PID" ]; then
    $SUDO kill "$DOCKERD_PID" 2>/dev/null
    for _ in $(seq 1 30); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 1; done
  fi
  $SUDO rm -rf "$WORK"
  log "finished (exit $rc) in $(( $(date +%s) - STEP_START ))s"
  exit $rc
}
trap cleanup EXIT
trap "exit 143" TERM INT

# --- tools -------------------------------------------------------------------------------
need=()
[ -x /usr/bin/docker ] || need+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
if [ "${#need[@]}" -gt 0 ]; then
  log "installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive timeout 600 $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

log "promtool checks"
promtool check config conf/prometheus.yml
promtool check rules conf/alerts.yml
python3 .ci/check-metric-names.py --source gateway/src/metrics.rs

# --- docker daemon -----------------------------------------------------------------------
if ! $DOCKER info >/dev/null 2>&1; then
  log "starting dockerd"
  $SUDO dockerd >"$WORK/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  for _ in $(seq 1 60); do $DOCKER info >/dev/null 2>&1 && break; sleep 1; done
  $DOCKER info >/dev/null 2>&1 || { tail -20 "$WORK/dockerd.log"; exit 1; }
fi

CONTAINERS_BEFORE="$WORK/containers-before"
$DOCKER ps -aq --no-trunc | sort -u >"$CONTAINERS_BEFORE"
IMAGES_BEFORE="$WORK/images-before"
$DOCKER images -aq --no-trunc | sort -u >"$IMAGES_BEFORE"

# --- base images -------------------------------------------------------------------------
# The Debian mirror apt already uses.
mirror() {
  local m
  m="$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -1)"
  [ -n "$m" ] || m="$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '$3 ~ /^bookworm$/ {print $2}' | head -1)"
  echo "${m:-http://deb.debian.org/debian}"
}
have_image() { $DOCKER image inspect "$1" >/dev/null 2>&1; }

BASE="$CI_PREFIX/debian:bookworm"
if ! have_image "$BASE"; then
  log "debootstrap bookworm (minbase) from $(mirror)"
  $SUDO timeout 900 debootstrap --variant=minbase bookworm "$WORK/rootfs" "$(mirror)" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log"; exit 1; }
  $SUDO rm -rf "$WORK"/rootfs/var/lib/apt/lists/* "$WORK"/rootfs/var/cache/apt/archives/*.deb
  $SUDO tar -C "$WORK/rootfs" -c . | $DOCKER import \
    --change 'LABEL org.perpetuo.ci=1' --change 'ENV LANG=C.UTF-8' --change 'CMD ["bash"]' - "$BASE" >/dev/null
  $SUDO rm -rf "$WORK/rootfs"
fi

# The machine's CA bundle: outgoing HTTPS here is re-signed by a local authority. Only the
# CI build bases get it.
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
build_base() { # name, then files or directories to put in the build context
  local name="$1"; shift
  local tag="$CI_PREFIX/$name:latest" ctx="$WORK/ctx-$name"
  have_image "$tag" && return 0
  log "building base $tag"
  mkdir -p "$ctx"
  cp ".ci/images/$name.Dockerfile" "$ctx/Dockerfile"
  for f in "$@"; do cp -a "$f" "$ctx/"; done
  timeout 900 $DOCKER build --force-rm --label org.perpetuo.ci=1 --build-arg "BASE=$BASE" -t "$tag" "$ctx" \
    >"$WORK/base-$name.log" 2>&1 || { tail -30 "$WORK/base-$name.log"; return 1; }
  rm -rf "$ctx"
}

cp "$CA_BUNDLE" "$WORK/ca-bundle.crt"
# Debian's rustc is too old for the workspace: the builder base gets this machine's
# toolchain; likewise Node.js.
if ! have_image "$CI_PREFIX/rust:latest"; then
  TOOLCHAIN="$(dirname "$(dirname "$(rustup which cargo)")")"
  mkdir -p "$WORK/toolchain"
  cp -a "$TOOLCHAIN/bin" "$TOOLCHAIN/lib" "$WORK/toolchain/"
  if [ -d "$TOOLCHAIN/libexec" ]; then cp -a "$TOOLCHAIN/libexec" "$WORK/toolchain/"; fi
  build_base rust "$WORK/ca-bundle.crt" "$WORK/toolchain"
  rm -rf "$WORK/toolchain"
fi
if ! have_image "$CI_PREFIX/node:latest"; then
  NODE_BIN="$(readlink -f "$(command -v node)")"
  cp "$NODE_BIN" "$WORK/node"
  cp -a "$(dirname "$NODE_BIN")/../lib/node_modules/npm" "$WORK/npm"
  build_base node "$WORK/ca-bundle.crt" "$WORK/node" "$WORK/npm"
fi
# The stack's own bases build beside the image, which does not need them.
(
  build_base postgres .ci/images/postgres-entrypoint.sh
  build_base redis
  build_base nginx
  build_base prometheus
) >"$WORK/bases.log" 2>&1 &
BASES_PID=$!
# Debian has no Grafana package: the smoke runs the observability profile without it and
# checks the Grafana files statically.

# --- the image ---------------------------------------------------------------------------
if ! have_image "$IMAGE" || [ "${PERPETUO_KEEP_CI_IMAGES:-0}" != "1" ]; then
  log "building $IMAGE"
  timeout 2400 $DOCKER build --force-rm \
    --build-arg "RUST_IMAGE=$CI_PREFIX/rust:latest" \
    --build-arg "NODE_IMAGE=$CI_PREFIX/node:latest" \
    --build-arg "RUNTIME_IMAGE=$BASE" \
    -t "$IMAGE" . >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; exit 1; }
  log "built $IMAGE ($($DOCKER image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%d MB", $1/1e6}'))"
fi

wait "$BASES_PID" || { cat "$WORK/bases.log"; exit 1; }
BASES_PID=""
cat "$WORK/bases.log"

# --- the stack ---------------------------------------------------------------------------
export DOCKER CI_PREFIX IMAGE WORK
.ci/compose-smoke.sh
log "passed"
