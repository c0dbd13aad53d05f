#!/usr/bin/env bash
# Side-by-side load test on 127.0.0.1: the same chat-completion request, non-stream and
# then streamed, sent with wrk (1) straight to the mock provider, (2) through a plain
# nginx proxy, (3) through the Perpetuo gateway (auth from cache, routing, usage
# extraction, log writing). Reports
# requests/s, p50/p99 latency, the ratios to the direct run, and peak RSS of the proxies.
#
#   bench/run.sh [duration_seconds=10] [connections=32]
#
# Needs: release builds (cargo build --release -p perpetuo-gateway -p perpetuo-admin
# -p mock-provider), wrk, PostgreSQL (as for scripts/test), optionally nginx, python3.
# Everything runs on 127.0.0.1, is bounded by the duration, and is stopped at the end.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
. scripts/lib/pg.sh

DURATION="${1:-10}"
CONNS="${2:-32}"
BIN="$ROOT/target/release"
for b in perpetuo-gateway perpetuo-admin mock-provider; do
  [ -x "$BIN/$b" ] || { echo "missing $BIN/$b: cargo build --release -p perpetuo-gateway -p perpetuo-admin -p mock-provider" >&2; exit 1; }
done
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }

WORK="$(mktemp -d)"
mkdir -p "$WORK/tmp"
pids=()
DB=""
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "$DB" ] && "$(pg_bin psql)" "$PGURL" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_http() { for _ in $(seq 1 200); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.05; done; echo "not up: $1" >&2; return 1; }
rss_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

PGURL="$(pg_test_url)"
DB="perpetuo_bench_$$"
"$(pg_bin psql)" "$PGURL" -qc "CREATE DATABASE $DB" >/dev/null
export DATABASE_URL="${PGURL%/*}/$DB"
export PERPETUO_MASTER_KEY="$(head -c 32 /dev/urandom | base64)"
export JWT_SECRET="bench-secret-bench-secret-bench-secret-00"
export ALLOWED_PRIVATE_UPSTREAMS="127.0.0.0/8"
export RUST_LOG=warn
export DATA_DIR="$WORK/data"

MOCK_PORT=$(free_port); ADMIN_PORT=$(free_port); GW_PORT=$(free_port); METRICS_PORT=$(free_port); NGINX_PORT=$(free_port)
# The load generator and the mock share core 0; each proxy under test gets core 1.
taskset -c 0 "$BIN/mock-provider" --addr "127.0.0.1:$MOCK_PORT" --chunk-delay-ms 0 >/dev/null & pids+=($!)
ADMIN_ADDR="127.0.0.1:$ADMIN_PORT" "$BIN/perpetuo-admin" >/dev/null 2>&1 & pids+=($!)
wait_http "http://127.0.0.1:$ADMIN_PORT/healthz"

signup=$(curl -fsS -X POST "http://127.0.0.1:$ADMIN_PORT/auth/signup" -H 'content-type: application/json' \
  -d '{"email":"bench@example.com","password":"bench-password"}')
TOKEN=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])' <<<"$signup")
WS=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["workspace"]["id"])' <<<"$signup")
KEY=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"]["key"])' <<<"$signup")
KID=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"]["id"])' <<<"$signup")
curl -fsS -X POST "http://127.0.0.1:$ADMIN_PORT/workspaces/$WS/providers" -H "authorization: Bearer $TOKEN" \
  -H 'content-type: application/json' \
  -d "{\"kind\":\"openai_compatible\",\"name\":\"mock\",\"api_key\":\"sk-bench\",\"base_url\":\"http://127.0.0.1:$MOCK_PORT/v1\"}" >/dev/null

start_gateway() { # extra environment assignments for the gateway, if any
  env "$@" GATEWAY_ADDR="127.0.0.1:$GW_PORT" METRICS_ADDR="127.0.0.1:$METRICS_PORT" \
    GATEWAY_SERVER_CONF="$ROOT/bench/scripts/gateway.yaml" \
    taskset -c 1 "$BIN/perpetuo-gateway" & GW_PID=$!; pids+=($GW_PID)
  wait_http "http://127.0.0.1:$GW_PORT/healthz"
}
start_gateway

HAVE_NGINX=0
if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
  NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
  sed -e "s#@DIR@#$WORK#g" -e "s#@MOCK_PORT@#$MOCK_PORT#g" -e "s#@NGINX_PORT@#$NGINX_PORT#g" \
    bench/scripts/nginx.conf.tmpl > "$WORK/nginx.conf"
  taskset -c 1 "$NGINX" -c "$WORK/nginx.conf" -p "$WORK" & NGINX_PID=$!; pids+=($NGINX_PID)
  sleep 0.5
  HAVE_NGINX=1
fi

export BENCH_BODY='{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write one short sentence about benchmarks."}]}'
run() { # name url key
  local out
  out=$(BENCH_KEY="$3" taskset -c 0 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s bench/scripts/post.lua "$2")
  echo "$out" > "$WORK/$1.txt"
  python3 - "$1" "$WORK/$1.txt" <<'PY'
import re, sys
name, path = sys.argv[1], sys.argv[2]
text = open(path).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
def lat(p):
    m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", text)
    v, u = float(m.group(1)), m.group(2)
    return v / 1000 if u == "us" else v * 1000 if u == "s" else v
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
print(f"{name} {rps:.0f} {lat(50):.3f} {lat(99):.3f} {errs.group(1) if errs else 0}")
PY
}

# Warm up each path (connection pools, key cache), then measure.
BENCH_KEY="$KEY" wrk -t1 -c4 -d1s -s bench/scripts/post.lua "http://127.0.0.1:$GW_PORT/v1/chat/completions" >/dev/null
results=()
results+=("$(run direct "http://127.0.0.1:$MOCK_PORT/v1/chat/completions" "")")
[ "$HAVE_NGINX" = 1 ] && results+=("$(run nginx "http://127.0.0.1:$NGINX_PORT/v1/chat/completions" "")")
results+=("$(run gateway "http://127.0.0.1:$GW_PORT/v1/chat/completions" "$KEY")")
# The same request streamed (SSE, 8 events, usage chunk asked for by the gateway).
export BENCH_BODY='{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write one short sentence about benchmarks."}]}'
results+=("$(run direct-sse "http://127.0.0.1:$MOCK_PORT/v1/chat/completions" "")")
[ "$HAVE_NGINX" = 1 ] && results+=("$(run nginx-sse "http://127.0.0.1:$NGINX_PORT/v1/chat/completions" "")")
results+=("$(run gateway-sse "http://127.0.0.1:$GW_PORT/v1/chat/completions" "$KEY")")
GW_RSS=$(rss_kb "$GW_PID")
NGINX_RSS=0; [ "$HAVE_NGINX" = 1 ] && NGINX_RSS=$(rss_kb "$NGINX_PID")
sleep 1
LOGGED=$(curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" | awk '/^perpetuo_log_rows_written_total / {print $2}')
DROPPED=$(curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" | awk '/^perpetuo_log_rows_dropped_total/ {s+=$2} END {print s+0}')

# The same non-stream request with limits set on the key (every check runs, none refuses):
# in process, then shared through Redis when one answers on 127.0.0.1:6379.
export BENCH_BODY='{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write one short sentence about benchmarks."}]}'
curl -fsS -X PUT "http://127.0.0.1:$ADMIN_PORT/workspaces/$WS/api-keys/$KID" -H "authorization: Bearer $TOKEN" \
  -H 'content-type: application/json' \
  -d '{"limits":{"rpm":2000000000,"tpm":2000000000,"max_concurrency":1000000,"budget_usd":1000000,"budget_period":"month"}}' >/dev/null
sleep 1.5 # the change reaches the gateway by NOTIFY
BENCH_KEY="$KEY" wrk -t1 -c4 -d1s -s bench/scripts/post.lua "http://127.0.0.1:$GW_PORT/v1/chat/completions" >/dev/null
results+=("$(run gateway-limits "http://127.0.0.1:$GW_PORT/v1/chat/completions" "$KEY")")
if (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  kill "$GW_PID" 2>/dev/null; wait "$GW_PID" 2>/dev/null || true
  start_gateway REDIS_URL="redis://127.0.0.1:6379" REDIS_KEY_PREFIX="perpetuo-bench-$$:"
  BENCH_KEY="$KEY" wrk -t1 -c4 -d1s -s bench/scripts/post.lua "http://127.0.0.1:$GW_PORT/v1/chat/completions" >/dev/null
  results+=("$(run gateway-redis "http://127.0.0.1:$GW_PORT/v1/chat/completions" "$KEY")")
fi

python3 - "$DURATION" "$CONNS" "$GW_RSS" "$NGINX_RSS" "${LOGGED:-0}" "${DROPPED:-0}" "${results[@]}" <<'PY'
import sys
dur, conns, gw_rss, nginx_rss, logged, dropped = sys.argv[1:7]
rows = [r.split() for r in sys.argv[7:]]
by_name = {r[0]: r for r in rows}
print(f"wrk, {conns} connections, {dur} s per run, chat completion, non-stream and SSE (release builds, 127.0.0.1)")
print(f"{'path':<12} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} {'req/s vs direct':>16} {'p50 vs direct':>14} {'p99 vs direct':>14}")
for name, rps, p50, p99, errs in rows:
    base = by_name["direct-sse" if name.endswith("-sse") else "direct"]
    print(f"{name:<12} {float(rps):>8.0f} {float(p50):>8.3f} {float(p99):>8.3f} {errs:>8} "
          f"{float(rps)/float(base[1]):>16.2f} {float(p50)/float(base[2]):>14.2f} {float(p99)/float(base[3]):>14.2f}")
print(f"peak RSS: gateway {int(gw_rss)/1024:.1f} MiB" + (f", nginx {int(nginx_rss)/1024:.1f} MiB" if int(nginx_rss) else ""))
print(f"gateway log rows written: {logged}, dropped: {dropped}")
PY
