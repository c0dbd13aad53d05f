#!/usr/bin/env bash
# Brings docker-compose.yml up from the already built image and checks it end to end,
# talking only to its ports published on 127.0.0.1: Grafana's login checked statically (no
# default left; its image cannot be built here); placeholder secrets refused; health;
# sign-up, provider, chat completions (stream and not), log rows, /metrics and the metric
# names the alerts and dashboard use; the observability profile's Prometheus; the scale
# profile's two replicas behind nginx, both serving and both refusing a revoked key.
# Everything it starts is removed at exit. Called by .ci/containers.sh, which provides
# DOCKER, IMAGE, CI_PREFIX and WORK.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
: "${DOCKER:=/usr/bin/docker}" "${CI_PREFIX:=perpetuo-ci}" "${IMAGE:=perpetuo:ci}"
: "${WORK:?WORK must name a scratch directory}"
START="$(date +%s)"
log() { echo "== compose [$(( $(date +%s) - START ))s]: $*"; }
check() { python3 .ci/stack-check.py "$@"; }

PROJECT="perpetuo-ci-$$"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# A /24 for the stack's network that no route of this machine uses.
SUBNET=""
for third in 231 232 233 234 235; do
  if ! ip -4 route | grep -q "^172\.30\.$third\."; then
    SUBNET="172.30.$third.0/24"
    MOCK_IP="172.30.$third.200"
    LB_ADDR="172.30.$third.250"
    break
  fi
done
[ -n "$SUBNET" ] || { echo "no free subnet for the compose network" >&2; exit 1; }

MOCK_BIN="$ROOT/target/debug/mock-provider"
[ -x "$MOCK_BIN" ] || timeout 1200 cargo build --locked -p mock-provider --bin mock-provider

ADMIN_PORT="$(free_port)"; GATEWAY_PORT="$(free_port)"; GATEWAY_PORT_2="$(free_port)"
METRICS_PORT="$(free_port)"; METRICS_PORT_2="$(free_port)"; LB_PORT="$(free_port)"
PROMETHEUS_PORT="$(free_port)"
secret() { python3 -c "import base64, os; print(base64.b64encode(os.urandom($1)).decode())"; }
ENV_FILE="$WORK/compose.env"
cat >"$ENV_FILE" <<ENV
POSTGRES_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
JWT_SECRET=$(secret 48)
PERPETUO_MASTER_KEY=$(secret 32)
PERPETUO_IMAGE=$IMAGE
POSTGRES_IMAGE=$CI_PREFIX/postgres:latest
REDIS_IMAGE=$CI_PREFIX/redis:latest
NGINX_IMAGE=$CI_PREFIX/nginx:latest
PROMETHEUS_IMAGE=$CI_PREFIX/prometheus:latest
CI_BASE_IMAGE=$CI_PREFIX/debian:bookworm
MOCK_BIN=$MOCK_BIN
COMPOSE_SUBNET=$SUBNET
LB_ADDR=$LB_ADDR
MOCK_IP=$MOCK_IP
ALLOWED_PRIVATE_UPSTREAMS=$SUBNET
ADMIN_PORT=$ADMIN_PORT
GATEWAY_PORT=$GATEWAY_PORT
GATEWAY_PORT_2=$GATEWAY_PORT_2
METRICS_PORT=$METRICS_PORT
METRICS_PORT_2=$METRICS_PORT_2
LB_PORT=$LB_PORT
PROMETHEUS_PORT=$PROMETHEUS_PORT
POSTGRES_PORT=$(free_port)
REDIS_PORT=$(free_port)
ENV

compose() {
  timeout 300 docker-compose -p "$PROJECT" --env-file "$ENV_FILE" \
    -f docker-compose.yml -f .ci/compose.ci.yml --profile scale --profile observability "$@"
}
teardown() {
  local rc=$?
  set +e
  if [ "$rc" != 0 ]; then
    echo "-- compose logs (last lines per service)" >&2
    compose logs --no-color --tail=40 >&2
  fi
  compose down -v --remove-orphans --timeout 20 >/dev/null 2>&1
  timeout 60 docker-compose -p "$PROJECT-refuse" --env-file "$WORK/refuse.env" -f docker-compose.yml \
    down -v --remove-orphans >/dev/null 2>&1
  exit $rc
}
trap teardown EXIT
trap "exit 143" TERM INT

health() { $DOCKER inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$(compose ps -q "$1")"; }
wait_healthy() { # seconds, services…
  local limit="$1"; shift
  local deadline=$(( $(date +%s) + limit ))
  for svc in "$@"; do
    until [ "$(health "$svc")" = "healthy" ]; do
      if [ "$(date +%s)" -gt "$deadline" ]; then
        echo "$svc is $(health "$svc") after ${limit}s" >&2
        return 1
      fi
      sleep 2
    done
  done
}

log "validating the compose file, the Grafana provisioning and Grafana's login"
docker-compose -f docker-compose.yml config -q
docker-compose -f docker-compose.yml --env-file .env.example --profile observability config -q
compose config -q
check grafana-login
python3 - <<'PY'
import glob, json, yaml
ds = yaml.safe_load(open("conf/grafana/provisioning/datasources/prometheus.yml"))["datasources"]
uids = {d["uid"] for d in ds}
prov = yaml.safe_load(open("conf/grafana/provisioning/dashboards/perpetuo.yml"))["providers"]
assert prov and all(p["options"]["path"] for p in prov), "dashboard provider without a path"
for path in glob.glob("conf/grafana/dashboards/*.json"):
    dash = json.load(open(path))
    for panel in dash["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] in uids, f"{path}: panel {panel['title']!r} uses an unknown data source"
        assert panel["targets"], f"{path}: panel {panel['title']!r} has no query"
print("grafana provisioning: data source and dashboards consistent")
PY
python3 .ci/tracing-stack-check.py

log "placeholder secrets from .env.example are refused"
{ cat .env.example; grep -E "^PERPETUO_IMAGE=" "$ENV_FILE"; } >"$WORK/refuse.env"
for svc in admin gateway; do
  set +e
  out="$(timeout 120 docker-compose -p "$PROJECT-refuse" --env-file "$WORK/refuse.env" -f docker-compose.yml \
    run --rm --no-deps "$svc" 2>&1)"
  rc=$?
  set -e
  if [ "$rc" != 78 ] || ! grep -q "placeholder" <<<"$out"; then
    echo "$svc started with the example's placeholder secrets (exit $rc): $out" >&2
    exit 1
  fi
done
timeout 60 docker-compose -p "$PROJECT-refuse" --env-file "$WORK/refuse.env" -f docker-compose.yml \
  down -v --remove-orphans >/dev/null 2>&1

log "up: postgres redis admin gateway (+ mock provider)"
compose up -d --no-build mock postgres redis admin gateway >/dev/null
wait_healthy 240 postgres redis admin gateway
log "healthy"
uid="$($DOCKER exec "$(compose ps -q gateway)" id -u)"
[ "$uid" != 0 ] || { echo "the gateway runs as root" >&2; exit 1; }
$DOCKER exec "$(compose ps -q gateway)" sh -c 'touch "$DATA_DIR/.w" && rm "$DATA_DIR/.w"' \
  || { echo "DATA_DIR is not writable by the runtime user" >&2; exit 1; }

STATE="$WORK/stack.json"
ADMIN="http://127.0.0.1:$ADMIN_PORT"
check setup --admin "$ADMIN" --mock-base-url "http://$MOCK_IP:9000/v1" --state "$STATE"
check traffic --gateway "http://127.0.0.1:$GATEWAY_PORT" --state "$STATE"
check logs --admin "$ADMIN" --state "$STATE" --at-least 2
check metrics --metrics "http://127.0.0.1:$METRICS_PORT/metrics" --at-least 2
python3 .ci/check-metric-names.py --url "http://127.0.0.1:$METRICS_PORT/metrics"

log "profile observability: Prometheus (Grafana has no Debian package: its files are checked above)"
compose up -d --no-build prometheus >/dev/null
check prometheus --url "http://127.0.0.1:$PROMETHEUS_PORT" --targets 1 --timeout 90

log "profile scale: second replica and nginx"
compose up -d --no-build gateway-2 lb >/dev/null
wait_healthy 180 gateway-2
deadline=$(( $(date +%s) + 60 ))
until curl -fsS --max-time 5 -o /dev/null "http://127.0.0.1:$LB_PORT/healthz"; do
  [ "$(date +%s)" -lt "$deadline" ] || { echo "the load balancer does not answer" >&2; exit 1; }
  sleep 1
done
check spread --lb "http://127.0.0.1:$LB_PORT" --state "$STATE" --requests 20 \
  --metrics "http://127.0.0.1:$METRICS_PORT/metrics" "http://127.0.0.1:$METRICS_PORT_2/metrics"
check revoke --admin "$ADMIN" --state "$STATE" --timeout 10 \
  --gateways "http://127.0.0.1:$GATEWAY_PORT" "http://127.0.0.1:$GATEWAY_PORT_2"
check prometheus --url "http://127.0.0.1:$PROMETHEUS_PORT" --targets 2 --timeout 90

log "down"
