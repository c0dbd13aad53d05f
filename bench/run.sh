#!/usr/bin/env bash
# The benchmark suite, on 127.0.0.1 only: the same requests sent straight to the mock
# provider (direct), through nginx (proxy_pass), through a bare Pingora proxy built with
# the gateway's settings (bench/bare-pingora), and through the Perpetuo gateway (auth,
# routing, usage, logging). The proxy under test is pinned to CPU core 1 (one worker);
# the load generator and the mock share core 0; PostgreSQL is not pinned, except in the
# non-stream section, whose database backends are moved to core 0. The non-stream section's
# upstream is the mock's answer served by nginx from memory (`canned`, on core 0: much
# cheaper than the mock, so the load core is not the ceiling), when nginx is installed.
#
#   bench/run.sh [options]
#     --sections LIST   comma-separated, default all:
#                       nonstream,stream,translate,body,pgcpu,logs,cache,limits,tracing,startup,growth
#     --duration S      seconds per wrk run (default 10)
#     --levels LIST     wrk connections (default 1,16,64; the tracing section: 16,64 unless given)
#     --streams LIST    concurrent streams (default 100,1000,10000)
#     --rounds N        streams per worker, back to back (default 3)
#     --pieces N        content chunks per stream (default 20)
#     --chunk-ms MS     pacing between chunks (default 20)
#     --wide-chunk-ms MS  pacing at 5,000 streams and more (default 200: at 20 ms the
#                       load core cannot produce 10,000 streams' events)
#     --with-peer       also measure bare Pingora's native path (`--mode peer`) as `bare-peer`
#     --ramp-ms MS      open each level's streams over this time (default 0: one burst)
#     --growth-rows LIST  log rows loaded by the growth section, one run each, in this order
#                       (default 1000000,10000000; the smoke: 10000)
#     --growth-keys N   API keys it loads (default 100000; the smoke: 2000)
#     --growth-requests N  requests per admin read it times (default 100; the smoke: 3)
#     --tracing-rounds N  alternated rounds of the tracing section's configurations
#                       (default 3; the smoke: 1)
#     --limits-rounds N   alternated rounds of the limits section's paths (default 2; the
#                       smoke: 1); the limits section runs c=16,64 unless --levels is given
#     --before-bin DIR  the tracing section also runs DIR/perpetuo-gateway, the build before
#                       tracing, as the configuration `before` (same database, mock, admin)
#     --syscall-s S     seconds of the non-stream section's system call count per proxy
#                       (strace -c on nginx, bare Pingora and the gateway at c=16;
#                       default 5; 0 skips it; never in --smoke, skipped without strace)
#     --bin DIR         binaries (default target/release)
#     --out FILE        results (default bench/results/<UTC date>.md)
#     --smoke           every section for a second or so, at one level (c=16, 10 streams)
#                       and the debug binaries unless --bin is given; checks that every
#                       section produced figures (and that every request was logged),
#                       asserts nothing about speed; writes to a temporary file
#
# Needs: wrk, curl, python3, PostgreSQL (as for scripts/test) and its psql, the binaries
# perpetuo-gateway, perpetuo-admin, mock-provider, bare-pingora and stream-load
# (cargo build --release -p perpetuo-gateway -p perpetuo-admin -p mock-provider
#  -p bare-pingora -p stream-load; bare-pingora only for nonstream, stream and body,
#  stream-load only for stream and translate); nginx is optional (its rows are left out
#  without it).
# Every process it starts is stopped at the end, and its database dropped.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
. scripts/lib/pg.sh

SECTIONS="nonstream,stream,translate,body,pgcpu,logs,cache,limits,tracing,startup,growth"
DURATION=10
LEVELS="1,16,64"
LEVELS_GIVEN=0
TRACING_ROUNDS=3
LIMITS_ROUNDS=2
BEFORE_BIN=""
STREAMS="100,1000,10000"
ROUNDS=3
PIECES=20
CHUNK_MS=20
WIDE_CHUNK_MS=200
WIDE_FROM=5000
RAMP_MS=0
WITH_PEER=0
BIN=""
OUT=""
SMOKE=0
STARTUP_RUNS=5
GROWTH_ROWS="1000000,10000000"
GROWTH_KEYS=100000
GROWTH_REQUESTS=100
GROWTH_KEY_REQUESTS=3000
# The request_logs indexes added for the admin's reads at scale (migrations V15 on): the
# growth section measures the insert cost with and without them.
GROWTH_INDEXES="'request_logs_key_time_idx'"
AFTER1=1; AFTER2=4 # RSS read 1 s and 5 s after the streams end
SYSCALL_S=5
while [ $# -gt 0 ]; do
  case "$1" in
    --sections) SECTIONS="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --levels) LEVELS="$2"; LEVELS_GIVEN=1; shift 2 ;;
    --tracing-rounds) TRACING_ROUNDS="$2"; shift 2 ;;
    --limits-rounds) LIMITS_ROUNDS="$2"; shift 2 ;;
    --before-bin) BEFORE_BIN="$2"; shift 2 ;;
    --streams) STREAMS="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --pieces) PIECES="$2"; shift 2 ;;
    --chunk-ms) CHUNK_MS="$2"; shift 2 ;;
    --wide-chunk-ms) WIDE_CHUNK_MS="$2"; shift 2 ;;
    --ramp-ms) RAMP_MS="$2"; shift 2 ;;
    --with-peer) WITH_PEER=1; shift ;;
    --growth-rows) GROWTH_ROWS="$2"; shift 2 ;;
    --growth-keys) GROWTH_KEYS="$2"; shift 2 ;;
    --growth-requests) GROWTH_REQUESTS="$2"; shift 2 ;;
    --syscall-s) SYSCALL_S="$2"; shift 2 ;;
    --bin) BIN="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --smoke)
      SMOKE=1; DURATION=1; STREAMS="10"; ROUNDS=1; [ "$LEVELS_GIVEN" = 1 ] || LEVELS=16; PIECES=5; CHUNK_MS=2; STARTUP_RUNS=1; AFTER1=0.2; AFTER2=0.3
      GROWTH_ROWS=10000; GROWTH_KEYS=2000; GROWTH_REQUESTS=3; GROWTH_KEY_REQUESTS=50; TRACING_ROUNDS=1; LIMITS_ROUNDS=1
      SYSCALL_S=0
      shift ;;
    -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$BIN" ]; then
  if [ "$SMOKE" = 1 ]; then BIN="$ROOT/target/debug"; else BIN="$ROOT/target/release"; fi
fi
has() { case ",$SECTIONS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
# The proxies beside the gateway (nginx, bare Pingora) serve the sections that compare paths.
needs_paths() { has nonstream || has stream || has body || has cache; }
needed=(perpetuo-gateway perpetuo-admin mock-provider)
needs_paths && needed+=(bare-pingora)
{ has stream || has translate || has cache; } && needed+=(stream-load)
for b in "${needed[@]}"; do
  [ -x "$BIN/$b" ] || { echo "missing $BIN/$b: cargo build --release -p perpetuo-gateway -p perpetuo-admin -p mock-provider -p bare-pingora -p stream-load" >&2; exit 1; }
done
if [ -n "$BEFORE_BIN" ]; then
  BEFORE_BIN="$(cd "$BEFORE_BIN" && pwd)"
  [ -x "$BEFORE_BIN/perpetuo-gateway" ] || { echo "missing $BEFORE_BIN/perpetuo-gateway (--before-bin)" >&2; exit 1; }
fi
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }
# Work on core 1 for the proxy, core 0 for the rest; one core alone if that is all.
if [ "$(nproc)" -ge 2 ]; then PROXY_CPU=1; LOAD_CPU=0; else PROXY_CPU=0; LOAD_CPU=0; fi

LOAD_AT_START="$(cut -d' ' -f1-3 /proc/loadavg)"
WORK="$(mktemp -d)"
mkdir -p "$WORK/tmp"
RESULTS="$WORK/results.jsonl"
: > "$RESULTS"
pids=()
DB=""
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -n "$DB" ] && "$(pg_bin psql)" "$PGURL" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_http() { for _ in $(seq 1 400); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.05; done; echo "not up: $1" >&2; return 1; }
wait_port() { for _ in $(seq 1 400); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "not listening: $1" >&2; return 1; }
status_kb() { # pid field: VmRSS or VmHWM in kB, 0 when gone
  local k v _u
  while read -r k v _u; do [ "$k" = "$2:" ] && { echo "$v"; return; }; done < "/proc/$1/status" 2>/dev/null || true
  echo 0
}
stop() { # pid [signal]: stops a process this script started, and forgets it
  local p keep=()
  kill "-${2:-TERM}" "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true
  for p in "${pids[@]}"; do [ "$p" != "$1" ] && keep+=("$p"); done
  pids=("${keep[@]}")
}
record() { echo "$1" >> "$RESULTS"; }
say() { echo "== $*" >&2; }

# --- the database, the admin API, a user, a key, and the mock as three providers ------
PGURL="$(pg_test_url)"
DB="perpetuo_bench_$$"
PSQL="$(pg_bin psql)"
"$PSQL" "$PGURL" -qc "CREATE DATABASE $DB" >/dev/null
export DATABASE_URL="${PGURL%/*}/$DB"
export PERPETUO_MASTER_KEY="$(head -c 32 /dev/urandom | base64)"
export JWT_SECRET="bench-secret-bench-secret-bench-secret-00"
export ALLOWED_PRIVATE_UPSTREAMS="127.0.0.0/8"
export RUST_LOG=warn
export DATA_DIR="$WORK/data"
sql() { "$PSQL" "$DATABASE_URL" -qAtc "$1"; }

MOCK_PORT=$(free_port); ADMIN_PORT=$(free_port); GW_PORT=$(free_port); METRICS_PORT=$(free_port)
NGINX_PORT=$(free_port); BARE_PORT=$(free_port); PEER_PORT=$(free_port)
CANNED_PORT=$(free_port); NGINX_CANNED_PORT=$(free_port); BARE_CANNED_PORT=$(free_port)
ANSWER_PORT=$(free_port)
CLK_TCK=$(getconf CLK_TCK)
MOCK_CONTENT="Benchmarks measure what a system does under load, so that changes can be compared fairly and honestly."

start_mock() { # chunk delay in ms
  taskset -c "$LOAD_CPU" "$BIN/mock-provider" --addr "127.0.0.1:$MOCK_PORT" --chunk-delay-ms "$1" \
    --pieces "$PIECES" --content "$MOCK_CONTENT" >/dev/null & MOCK_PID=$!; pids+=($MOCK_PID)
  wait_port "$MOCK_PORT"
}
start_mock "$CHUNK_MS"
ADMIN_ADDR="127.0.0.1:$ADMIN_PORT" "$BIN/perpetuo-admin" >"$WORK/admin.log" 2>&1 & pids+=($!)
wait_http "http://127.0.0.1:$ADMIN_PORT/healthz"
signup=$(curl -fsS -X POST "http://127.0.0.1:$ADMIN_PORT/auth/signup" -H 'content-type: application/json' \
  -d '{"email":"bench@example.com","password":"bench-password"}')
json_get() { python3 -c 'import json,sys; v=json.load(sys.stdin)
for k in sys.argv[1].split("."): v=v[k]
print(v)' "$1"; }
TOKEN=$(json_get token <<<"$signup")
WS=$(json_get workspace.id <<<"$signup")
KEY=$(json_get api_key.key <<<"$signup")
KID=$(json_get api_key.id <<<"$signup")
add_provider() { # kind name base_url model
  curl -fsS -X POST "http://127.0.0.1:$ADMIN_PORT/workspaces/$WS/providers" -H "authorization: Bearer $TOKEN" \
    -H 'content-type: application/json' \
    -d "{\"kind\":\"$1\",\"name\":\"$2\",\"api_key\":\"sk-bench\",\"base_url\":\"$3\",\"models\":[\"$4\"]}" >/dev/null
}
OPENAI_MODEL="gpt-4o-mini"; CLAUDE_MODEL="claude-3-5-haiku-latest"; GEMINI_MODEL="gemini-2.0-flash"
add_provider openai_compatible mock "http://127.0.0.1:$MOCK_PORT/v1" "$OPENAI_MODEL"
add_provider anthropic mock-anthropic "http://127.0.0.1:$MOCK_PORT/v1" "$CLAUDE_MODEL"
add_provider gemini mock-gemini "http://127.0.0.1:$MOCK_PORT/v1beta" "$GEMINI_MODEL"
CANNED_MODEL="bench-canned"
add_provider openai_compatible canned "http://127.0.0.1:$CANNED_PORT/v1" "$CANNED_MODEL"

GW_ENV=(GATEWAY_ADDR="127.0.0.1:$GW_PORT" METRICS_ADDR="127.0.0.1:$METRICS_PORT"
  GATEWAY_SERVER_CONF="$ROOT/bench/scripts/gateway.yaml" MAX_CONNECTIONS=20000 MAX_CONNECTIONS_PER_IP=0)
# The smoke measures nothing about draining: its gateways stop without a grace period
# (their log rows are still written before they exit).
[ "$SMOKE" = 1 ] && GW_ENV+=(SHUTDOWN_GRACE_SECONDS=0)
GW_BIN="" # another gateway binary than $BIN's (the tracing section's `before`)
start_gateway() {
  env "${GW_ENV[@]}" taskset -c "$PROXY_CPU" "${GW_BIN:-$BIN/perpetuo-gateway}" >>"$WORK/gateway.log" 2>&1 & GW_PID=$!; pids+=($GW_PID)
  wait_http "http://127.0.0.1:$GW_PORT/healthz"
}
start_gateway
BARE_PID=""
if needs_paths; then
  taskset -c "$PROXY_CPU" "$BIN/bare-pingora" --listen "127.0.0.1:$BARE_PORT" --upstream "127.0.0.1:$MOCK_PORT" \
    --conf "$ROOT/bench/scripts/gateway.yaml" >/dev/null 2>"$WORK/bare.log" & BARE_PID=$!; pids+=($BARE_PID)
  wait_port "$BARE_PORT"
fi
PEER_PID=""
if [ "$WITH_PEER" = 1 ] && needs_paths; then
  taskset -c "$PROXY_CPU" "$BIN/bare-pingora" --listen "127.0.0.1:$PEER_PORT" --upstream "127.0.0.1:$MOCK_PORT" \
    --conf "$ROOT/bench/scripts/gateway.yaml" --mode peer >/dev/null 2>"$WORK/bare-peer.log" & PEER_PID=$!; pids+=($PEER_PID)
  wait_port "$PEER_PORT"
fi
nginx_worker() { # master pid → its one worker's pid (worker_processes 1)
  local w; w=$(cat "/proc/$1/task/$1/children" 2>/dev/null | awk '{print $1}'); echo "${w:-$1}"
}
NGINX_PID=""
NGINX="$(command -v nginx || true)"; [ -z "$NGINX" ] && [ -x /usr/sbin/nginx ] && NGINX=/usr/sbin/nginx
if [ -n "$NGINX" ] && needs_paths; then
  sed -e "s#@DIR@#$WORK#g" -e "s#@MOCK_PORT@#$MOCK_PORT#g" -e "s#@NGINX_PORT@#$NGINX_PORT#g" \
    -e "s#@CANNED_PORT@#$CANNED_PORT#g" -e "s#@NGINX_CANNED_PORT@#$NGINX_CANNED_PORT#g" \
    bench/scripts/nginx.conf.tmpl > "$WORK/nginx.conf"
  taskset -c "$PROXY_CPU" "$NGINX" -c "$WORK/nginx.conf" -p "$WORK" -e "$WORK/nginx-error.log" 2>/dev/null & NGINX_PID=$!; pids+=($NGINX_PID)
  wait_port "$NGINX_PORT"
  # Memory is the worker's (worker_processes 1), not the master's.
  NGINX_WORKER=$(nginx_worker "$NGINX_PID")
fi

# path name → URL base and the process to watch (direct: the mock itself)
PATHS=(direct); [ -n "$NGINX_PID" ] && PATHS+=(nginx); [ -n "$BARE_PID" ] && PATHS+=(bare); [ -n "$PEER_PID" ] && PATHS+=(bare-peer); PATHS+=(gateway)
base_of() { case "$1" in direct) echo "http://127.0.0.1:$MOCK_PORT" ;; nginx) echo "http://127.0.0.1:$NGINX_PORT" ;;
  bare) echo "http://127.0.0.1:$BARE_PORT" ;; bare-peer) echo "http://127.0.0.1:$PEER_PORT" ;; gateway) echo "http://127.0.0.1:$GW_PORT" ;; esac; }
pid_of() { case "$1" in direct) echo "$MOCK_PID" ;; nginx) echo "$NGINX_WORKER" ;; bare) echo "$BARE_PID" ;; bare-peer) echo "$PEER_PID" ;; gateway) echo "$GW_PID" ;; esac; }
key_of() { [ "$1" = gateway ] && echo "$KEY" || true; }

chat_body() { # model stream(true|false)
  if [ "$2" = true ]; then
    printf '{"model":"%s","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write one short sentence about benchmarks."}]}' "$1"
  else
    printf '{"model":"%s","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write one short sentence about benchmarks."}]}' "$1"
  fi
}
CLAUDE_BODY='{"model":"'$CLAUDE_MODEL'","max_tokens":256,"system":"You are a helpful assistant.","messages":[{"role":"user","content":"Write one short sentence about benchmarks."}]}'
CLAUDE_STREAM_BODY='{"model":"'$CLAUDE_MODEL'","max_tokens":256,"stream":true,"system":"You are a helpful assistant.","messages":[{"role":"user","content":"Write one short sentence about benchmarks."}]}'
GEMINI_BODY='{"systemInstruction":{"parts":[{"text":"You are a helpful assistant."}]},"contents":[{"role":"user","parts":[{"text":"Write one short sentence about benchmarks."}]}]}'

# Client-side count of the gateway's answers, for the log reconciliation.
GW_ANSWERED=0
count_gateway() { GW_ANSWERED=$((GW_ANSWERED + $1)); }

cpu_ticks() { # "busy total steal" clock ticks of CPU core $1 since boot, from /proc/stat
  awk -v c="cpu$1" '$1 == c {print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9, $9}' /proc/stat
}
proc_cpu() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; } # utime + stime, clock ticks
cpu_share() { # "busy total steal" before and after, field (1 busy, 3 steal) → its share of the time between
  awk -v a="$1" -v b="$2" -v f="$3" 'BEGIN {split(a, x, " "); split(b, y, " "); t = y[2] - x[2]; printf "%.3f\n", (t > 0 ? (y[f] - x[f]) / t : 0)}'
}
wrk_run() { # section path level url key [body_file] [extra json fields]
  local section="$1" path="$2" level="$3" url="$4" key="$5" bodyfile="${6:-}" extra="${7:-}" out line l0 p0 l1 p1 cpu
  local pid="${PROC_PID:-$(pid_of "${path%%-*}")}" t0 t1
  out="$WORK/wrk-$section-$path-$level.txt"
  l0=$(cpu_ticks "$LOAD_CPU"); p0=$(cpu_ticks "$PROXY_CPU"); t0=$(proc_cpu "$pid")
  BENCH_KEY="$key" BENCH_BODY_FILE="$bodyfile" taskset -c "$LOAD_CPU" \
    wrk -t1 -c"$level" -d"${DURATION}s" --latency -s bench/scripts/post.lua "$url" > "$out"
  # The busy share of the load core (wrk, the mock) and of the proxy's core over the run,
  # and the share the hypervisor took from each (steal, counted in busy).
  l1=$(cpu_ticks "$LOAD_CPU"); p1=$(cpu_ticks "$PROXY_CPU"); t1=$(proc_cpu "$pid")
  # The path's own process: its CPU time over the run (user + system, every thread).
  cpu="\"load_cpu_busy\":$(cpu_share "$l0" "$l1" 1),\"proxy_cpu_busy\":$(cpu_share "$p0" "$p1" 1)"
  cpu="$cpu,\"proc_cpu_s\":$(awk -v a="$t0" -v b="$t1" -v t="$CLK_TCK" 'BEGIN {printf "%.3f", (b - a) / t}')"
  cpu="$cpu,\"load_cpu_steal\":$(cpu_share "$l0" "$l1" 3),\"proxy_cpu_steal\":$(cpu_share "$p0" "$p1" 3)"
  if [ -n "$extra" ]; then extra="${extra%\}},$cpu}"; else extra="{$cpu}"; fi
  line=$(python3 bench/scripts/report.py wrk "$out" --section "$section" --path "$path" --level "$level" --extra "$extra")
  record "$line"
  case "$path" in gateway*) count_gateway "$(json_get requests <<<"$line")" ;; esac
  echo "   $section $path c=$level: $(json_get rps <<<"$line") req/s, p99 $(json_get p99 <<<"$line") ms, non-2xx $(json_get non2xx <<<"$line")" >&2
}
warm() { # url key body_file
  if [ "$SMOKE" = 1 ]; then
    # Nothing is measured: one request does what a warm-up must (fills a cache entry,
    # opens the upstream connection) without a second of wrk for every configuration.
    local args=(-sS -o /dev/null -H 'content-type: application/json' --data-binary "@$3")
    [ -n "$2" ] && args+=(-H "authorization: Bearer $2")
    [ -n "${BENCH_HEADERS:-}" ] && while IFS= read -r h; do [ -n "$h" ] && args+=(-H "$h"); done <<<"$BENCH_HEADERS"
    curl "${args[@]}" "$1"
    case "$1" in *":$GW_PORT/"*) count_gateway 1 ;; esac
    return 0
  fi
  BENCH_KEY="$2" BENCH_BODY_FILE="$3" taskset -c "$LOAD_CPU" wrk -t1 -c4 -d1s -s bench/scripts/post.lua "$1" > "$WORK/warm.txt"
  case "$1" in *":$GW_PORT/"*) count_gateway "$(python3 bench/scripts/report.py wrk "$WORK/warm.txt" --section warm --path warm --level 4 | json_get requests)" ;; esac
}
# Until the gateway's answer to a request shows a change made in the database (it
# reaches the gateway by NOTIFY): a header present, absent or of a value, polled, at most 10 s.
until_header() { # url key body_file header present|absent|value
  local i v
  for i in $(seq 1 100); do
    v=$(curl -sS -o /dev/null -D - -H 'content-type: application/json' -H "authorization: Bearer $2" \
      --data-binary "@$3" "$1" | tr -d '\r' | awk -v h="$4:" 'tolower($1) == h {print $2}')
    count_gateway 1
    case "$5" in present) [ -n "$v" ] && return 0 ;; absent) [ -z "$v" ] && return 0 ;; "$v") return 0 ;; esac
    sleep 0.1
  done
  echo "the gateway did not see the change ($4 $5 after 10 s)" >&2; return 1
}
body_file() { # name content → path
  printf '%s' "$2" > "$WORK/$1.json"; echo "$WORK/$1.json"
}

# The non-stream and tracing sections' upstream: the mock's own answer to its request,
# served by nginx from memory on the load core, with nginx, bare Pingora and the gateway in
# front of it.
CANNED_PID=""
if [ -n "$NGINX" ] && { has nonstream || has tracing; }; then
  answer=$(curl -fsS "http://127.0.0.1:$MOCK_PORT/v1/chat/completions" -H 'content-type: application/json' \
    -d "$(chat_body "$CANNED_MODEL" false)")
  python3 - "$answer" "$WORK" "$CANNED_PORT" bench/scripts/canned.conf.tmpl > "$WORK/canned.conf" <<'PY'
import sys
answer, work, port, tmpl = sys.argv[1:]
assert "$" not in answer, "the canned answer would read as nginx variables"
quoted = answer.replace("\\", "\\\\").replace("'", "\\'")
print(open(tmpl).read().replace("@DIR@", work).replace("@CANNED_PORT@", port).replace("@ANSWER@", quoted))
PY
  taskset -c "$LOAD_CPU" "$NGINX" -c "$WORK/canned.conf" -p "$WORK" -e "$WORK/canned-error.log" 2>/dev/null & CANNED_PID=$!; pids+=($CANNED_PID)
  wait_port "$CANNED_PORT"
  CANNED_WORKER=$(nginx_worker "$CANNED_PID")
  taskset -c "$PROXY_CPU" "$BIN/bare-pingora" --listen "127.0.0.1:$BARE_CANNED_PORT" --upstream "127.0.0.1:$CANNED_PORT" \
    --conf "$ROOT/bench/scripts/gateway.yaml" >/dev/null 2>"$WORK/bare-canned.log" & BARE_CANNED_PID=$!; pids+=($BARE_CANNED_PID)
  wait_port "$BARE_CANNED_PORT"
fi

# --- non-stream: c=1/16/64 for every path, RSS of every proxy --------------------------
# The database's backends serving this run, moved to the load core (PostgreSQL's own
# background processes stay where they are): what the log writer costs PostgreSQL does not
# land on the proxy's core.
pin_db_backends() {
  local n=0 p
  for p in $(sql "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"); do
    taskset -p -c "$LOAD_CPU" "$p" >/dev/null 2>&1 && n=$((n + 1))
  done
  echo "$n"
}
# System calls per request: strace -c on one proxy for a c=16 wrk run.
syscall_count() { # path pid url key body_file
  local f="$WORK/strace-$1.txt" spid line
  strace -f -c -qq -o "$f" -p "$2" 2>/dev/null & spid=$!
  sleep 1 # attaching to every thread
  PROC_PID="$2" DURATION="$SYSCALL_S" wrk_run syscalls "$1" 16 "$3" "$4" "$5"
  kill -INT "$spid" 2>/dev/null || true; wait "$spid" 2>/dev/null || true
  line=$(tail -n 1 "$RESULTS")
  record "$(python3 bench/scripts/report.py strace "$f" --path "$1" --requests "$(json_get requests <<<"$line")")"
}

if has nonstream; then
  # path → its URL and process for this section: the canned upstream when there is one.
  NS_PATHS=("${PATHS[@]}"); NS_MODEL="$OPENAI_MODEL"; NS_UPSTREAM="mock provider"
  if [ -n "$CANNED_PID" ]; then
    NS_PATHS=(direct nginx bare gateway); NS_MODEL="$CANNED_MODEL"; NS_UPSTREAM="canned (nginx from memory, load core)"
  fi
  ns_base_of() {
    if [ -z "$CANNED_PID" ]; then base_of "$1"; return; fi
    case "$1" in direct) echo "http://127.0.0.1:$CANNED_PORT" ;; nginx) echo "http://127.0.0.1:$NGINX_CANNED_PORT" ;;
      bare) echo "http://127.0.0.1:$BARE_CANNED_PORT" ;; *) base_of "$1" ;; esac
  }
  ns_pid_of() {
    if [ -z "$CANNED_PID" ]; then pid_of "$1"; return; fi
    case "$1" in direct) echo "$CANNED_WORKER" ;; bare) echo "$BARE_CANNED_PID" ;; *) pid_of "$1" ;; esac
  }
  say "non-stream chat completion, wrk -t1, ${DURATION}s per run, c=$LEVELS, upstream: $NS_UPSTREAM"
  B=$(body_file chat "$(chat_body "$NS_MODEL" false)")
  for p in "${NS_PATHS[@]}"; do warm "$(ns_base_of "$p")/v1/chat/completions" "$(key_of "$p")" "$B"; done
  PINNED=$(pin_db_backends)
  record "{\"section\":\"nonstream-setup\",\"upstream\":\"$NS_UPSTREAM\",\"db_backends_pinned\":$PINNED}"
  for c in ${LEVELS//,/ }; do
    for p in "${NS_PATHS[@]}"; do
      PROC_PID=$(ns_pid_of "$p") wrk_run nonstream "$p" "$c" "$(ns_base_of "$p")/v1/chat/completions" "$(key_of "$p")" "$B"
    done
  done
  for p in "${NS_PATHS[@]}"; do
    pid=$(ns_pid_of "$p")
    record "{\"section\":\"rss\",\"phase\":\"nonstream\",\"path\":\"$p\",\"rss_kb\":$(status_kb "$pid" VmRSS),\"hwm_kb\":$(status_kb "$pid" VmHWM)}"
  done
  if [ "$SYSCALL_S" != 0 ] && [ "$SMOKE" = 0 ] && command -v strace >/dev/null; then
    say "system calls per request (strace -c, c=16, ${SYSCALL_S}s per proxy)"
    for p in "${NS_PATHS[@]}"; do
      [ "$p" = direct ] && continue
      syscall_count "$p" "$(ns_pid_of "$p")" "$(ns_base_of "$p")/v1/chat/completions" "$(key_of "$p")" "$B"
    done
  fi
fi

# --- streaming: N concurrent streams, back to back, per path ---------------------------
stream_run() { # section path level url dialect bodyfile key [extra json]
  local section="$1" path="$2" n="$3" url="$4" dialect="$5" bodyfile="$6" key="$7" extra="${8:-}"
  local pid peakfile sampler line before peak after1 after5 cpu0 cpu1 args=()
  case "$path" in bare-peer) pid=$PEER_PID ;; *) pid=$(pid_of "${path%%-*}") ;; esac
  before=$(status_kb "$pid" VmRSS)
  cpu0=$(proc_cpu "$pid")
  peakfile="$WORK/peak-$section-$path-$n"
  echo 0 > "$peakfile"
  ( peak=0; while [ -e "/proc/$pid" ]; do
      v=$(status_kb "$pid" VmRSS); [ "$v" -gt "$peak" ] && { peak=$v; echo "$peak" > "$peakfile.new"; mv "$peakfile.new" "$peakfile"; }
      sleep 0.05; done ) & sampler=$!
  [ -n "$key" ] && args+=(-H "authorization: Bearer $key")
  [ -n "${STREAM_HEADER:-}" ] && args+=(-H "$STREAM_HEADER")
  line=$(taskset -c "$LOAD_CPU" "$BIN/stream-load" --url "$url" --dialect "$dialect" --body-file "$bodyfile" \
    "${args[@]}" --concurrency "$n" --streams $((n * ROUNDS)) --ramp-ms "$RAMP_MS" --stall-ms 30000 --timeout-ms 300000 --json 2>/dev/null) || true
  # The process's CPU time over the level (user + system, every thread), for its cost per event.
  cpu1=$(proc_cpu "$pid")
  kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true
  peak=$(cat "$peakfile" 2>/dev/null); peak=${peak:-0}
  sleep "$AFTER1"; after1=$(status_kb "$pid" VmRSS)
  sleep "$AFTER2"; after5=$(status_kb "$pid" VmRSS)
  [ -z "$line" ] && line='{"streams":0,"completed":0,"failed":0,"stalled":0}'
  line=$(python3 -c 'import json,sys
d=json.loads(sys.argv[1]); d.update(json.loads(sys.argv[2]))
print(json.dumps(d))' "$line" "{\"section\":\"$section\",\"path\":\"$path\",\"level\":$n,\"rss_before_kb\":$before,\"peak_rss_kb\":${peak:-0},\"rss_after_1s_kb\":$after1,\"rss_after_5s_kb\":$after5,\"cpu_s\":$(awk -v a="$cpu0" -v b="$cpu1" -v t="$CLK_TCK" 'BEGIN {printf "%.3f", (b - a) / t}')${extra:+,$extra}}")
  record "$line"
  case "$path" in gateway*) count_gateway "$(json_get streams <<<"$line")" ;; esac
  echo "   $section $path n=$n: completed $(json_get completed <<<"$line")/$(json_get streams <<<"$line"), ttft p99 $(python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get("ttft_ms",{}).get("p99","-"))' "$line") ms, peak RSS $(( ${peak:-0} / 1024 )) MiB" >&2
}

if has stream; then
  S=$(body_file chat-stream "$(chat_body "$OPENAI_MODEL" true)")
  for n in ${STREAMS//,/ }; do
    pace=$CHUNK_MS; [ "$n" -ge "$WIDE_FROM" ] && pace=$WIDE_CHUNK_MS
    # A fresh mock per level, paced for it; the proxies keep running (warm).
    stop "$MOCK_PID"; start_mock "$pace"
    say "streaming: $n concurrent streams x $ROUNDS rounds, role chunk + $PIECES chunks x $pace ms"
    for p in "${PATHS[@]}"; do
      stream_run stream "$p" "$n" "$(base_of "$p")/v1/chat/completions" openai "$S" "$(key_of "$p")" "\"pace_ms\":$pace,\"pieces\":$PIECES"
    done
  done
  [ "$(python3 -c 'import sys; print(max(int(x) for x in sys.argv[1].split(",")))' "$STREAMS")" -ge "$WIDE_FROM" ] && { stop "$MOCK_PID"; start_mock "$CHUNK_MS"; }
fi

# --- the Anthropic and Gemini translation paths (the client speaks OpenAI) ------------
if has translate; then
  c=16; n=100; [ "$SMOKE" = 1 ] && n=10
  say "translation paths: non-stream c=$c, streaming $n x $ROUNDS"
  BO=$(body_file t-openai "$(chat_body "$OPENAI_MODEL" false)")
  BA=$(body_file t-claude "$(chat_body "$CLAUDE_MODEL" false)")
  BG=$(body_file t-gemini "$(chat_body "$GEMINI_MODEL" false)")
  DA=$(body_file d-claude "$CLAUDE_BODY"); DG=$(body_file d-gemini "$GEMINI_BODY")
  GW="http://127.0.0.1:$GW_PORT/v1/chat/completions"; M="http://127.0.0.1:$MOCK_PORT"
  warm "$GW" "$KEY" "$BA"; warm "$GW" "$KEY" "$BG"
  wrk_run translate direct-anthropic "$c" "$M/v1/messages" "" "$DA" '{"format":"anthropic"}'
  wrk_run translate direct-gemini "$c" "$M/v1beta/models/$GEMINI_MODEL:generateContent" "" "$DG" '{"format":"gemini"}'
  wrk_run translate gateway-openai "$c" "$GW" "$KEY" "$BO" '{"format":"openai"}'
  wrk_run translate gateway-anthropic "$c" "$GW" "$KEY" "$BA" '{"format":"anthropic"}'
  wrk_run translate gateway-gemini "$c" "$GW" "$KEY" "$BG" '{"format":"gemini"}'
  SO=$(body_file ts-openai "$(chat_body "$OPENAI_MODEL" true)")
  SA=$(body_file ts-claude "$(chat_body "$CLAUDE_MODEL" true)")
  SG=$(body_file ts-gemini "$(chat_body "$GEMINI_MODEL" true)")
  DSA=$(body_file ds-claude "$CLAUDE_STREAM_BODY")
  stream_run translate-stream direct-anthropic "$n" "$M/v1/messages" anthropic "$DSA" "" '"format":"anthropic"'
  stream_run translate-stream direct-gemini "$n" "$M/v1beta/models/$GEMINI_MODEL:streamGenerateContent?alt=sse" gemini "$DG" "" '"format":"gemini"'
  stream_run translate-stream gateway-openai "$n" "$GW" openai "$SO" "$KEY" '"format":"openai"'
  stream_run translate-stream gateway-anthropic "$n" "$GW" openai "$SA" "$KEY" '"format":"anthropic"'
  stream_run translate-stream gateway-gemini "$n" "$GW" openai "$SG" "$KEY" '"format":"gemini"'
fi

# --- a 1 MiB request body --------------------------------------------------------------
if has body; then
  c=16
  say "1 MiB request body, non-stream, c=$c"
  BIG=$(body_file big "$(python3 -c 'import json; print(json.dumps({"model":"'$OPENAI_MODEL'","messages":[{"role":"user","content":("lorem ipsum dolor sit amet " * 40330)[:1048576]}]}))')")
  # A debug build takes most of a second for the first 1 MiB answers: the smoke's runs
  # last two seconds, not one, so that each path answers some.
  keep="$DURATION"; [ "$SMOKE" = 1 ] && DURATION=2
  for p in "${PATHS[@]}"; do
    wrk_run body "$p" "$c" "$(base_of "$p")/v1/chat/completions" "$(key_of "$p")" "$BIG" "{\"body_bytes\":$(stat -c %s "$BIG")}"
  done
  DURATION="$keep"
fi

# --- PostgreSQL CPU per 1,000 logged requests ------------------------------------------
metric_sum() { curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" | awk -v m="$1" '$1 == m || index($1, m "{") == 1 {s += $2} END {printf "%d\n", s}'; }
wait_logged() { # until the DB holds as many rows as the gateway says it wrote, and that stops moving
  local last=-1 now rows i
  for i in $(seq 1 100); do
    now=$(metric_sum perpetuo_log_rows_written_total); rows=$(sql "SELECT count(*) FROM request_logs")
    [ "$now" = "$last" ] && [ "$rows" -ge "$now" ] && [ "$(metric_sum perpetuo_log_queue_depth)" = 0 ] && return 0
    last=$now; sleep 0.3
  done
}
pg_cpu_ticks() { # our database's backends | the whole cluster: utime+stime in clock ticks
  local pids all=0 ours=0 pid master
  pids=$(sql "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
  for pid in $pids; do ours=$((ours + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0))); done
  # The postmaster: the parent of the (long-lived) checkpointer.
  master=$(awk '{print $4}' "/proc/$(sql "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'")/stat" 2>/dev/null || echo 0)
  if [ "$master" != 0 ]; then
    # The postmaster's own time and its reaped children's (cutime, cstime: backends that
    # ended), plus the live children's.
    all=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$master/stat" 2>/dev/null || echo 0)
    for pid in $(cat "/proc/$master/task/$master/children" 2>/dev/null); do
      all=$((all + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
    done
  fi
  echo "$ours $all"
}
if has pgcpu; then
  c=16
  say "PostgreSQL CPU per 1,000 logged requests (gateway, non-stream, c=$c, ${DURATION}s)"
  B=$(body_file pg "$(chat_body "$OPENAI_MODEL" false)")
  wait_logged
  rows0=$(sql "SELECT count(*) FROM request_logs"); read -r ours0 all0 <<<"$(pg_cpu_ticks)"
  wrk_run pgcpu gateway "$c" "http://127.0.0.1:$GW_PORT/v1/chat/completions" "$KEY" "$B"
  wait_logged
  rows1=$(sql "SELECT count(*) FROM request_logs"); read -r ours1 all1 <<<"$(pg_cpu_ticks)"
  record "{\"section\":\"pgcpu\",\"rows\":$((rows1 - rows0)),\"ticks_per_s\":$(getconf CLK_TCK),\"ours_ticks\":$((ours1 - ours0)),\"cluster_ticks\":$((all1 - all0)),\"pg_stat_statements\":$(sql "SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'")}"
  echo "   $((rows1 - rows0)) rows; CPU ticks of this database's backends $((ours1 - ours0)), whole cluster $((all1 - all0))" >&2
fi

# --- log reconciliation: rows = answers, nothing dropped --------------------------------
if has logs; then
  say "log reconciliation"
  wait_logged
  record "{\"section\":\"logs\",\"client_answered\":$GW_ANSWERED,\"requests_metric\":$(metric_sum perpetuo_requests_total),\"written_metric\":$(metric_sum perpetuo_log_rows_written_total),\"dropped_metric\":$(metric_sum perpetuo_log_rows_dropped_total),\"rejected_metric\":$(metric_sum perpetuo_log_rows_rejected_total),\"spooled_metric\":$(metric_sum perpetuo_log_rows_spooled_total),\"db_rows\":$(sql "SELECT count(*) FROM request_logs")}"
  tail -n 1 "$RESULTS" | sed 's/^/   /' >&2
fi

# --- the response cache: hits beside proxied answers, in process and through Redis ------
# The same request repeated, logging on: `gateway` is the gateway asked not to use its
# cache (`Cache-Control: no-store`: proxied to the mock), `gateway-hit` answers from it,
# nginx proxies, and `bare-answer` is bare Pingora answering every request with the mock's
# answer from memory (no upstream): the floor under any hit on Pingora. Streams: the same
# stream request, proxied and replayed from the cache.
metric_of() { curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
if has cache; then
  n=100; [ "$SMOKE" = 1 ] && n=10
  say "response cache: non-stream c=$LEVELS, streams $n x $ROUNDS"
  sql "UPDATE workspaces SET cache_mode = 'on' WHERE id = '$WS'" >/dev/null
  B=$(body_file cache "$(chat_body "$OPENAI_MODEL" false)")
  GW="http://127.0.0.1:$GW_PORT/v1/chat/completions"
  until_header "$GW" "$KEY" "$B" x-perpetuo-cache present
  warm "$GW" "$KEY" "$B"
  BENCH_HEADERS="cache-control: no-store" warm "$GW" "$KEY" "$B"
  PINNED=$(pin_db_backends)
  record "{\"section\":\"cache-setup\",\"db_backends_pinned\":$PINNED}"
  curl -fsS -o "$WORK/cache-answer.json" -H 'content-type: application/json' --data-binary "@$B" \
    "http://127.0.0.1:$MOCK_PORT/v1/chat/completions"
  taskset -c "$PROXY_CPU" "$BIN/bare-pingora" --listen "127.0.0.1:$ANSWER_PORT" --mode answer \
    --answer-file "$WORK/cache-answer.json" --conf "$ROOT/bench/scripts/gateway.yaml" \
    >/dev/null 2>"$WORK/bare-answer.log" & ANSWER_PID=$!; pids+=($ANSWER_PID)
  wait_port "$ANSWER_PORT"
  for c in ${LEVELS//,/ }; do
    [ -n "$NGINX_PID" ] && wrk_run cache nginx "$c" "http://127.0.0.1:$NGINX_PORT/v1/chat/completions" "" "$B"
    PROC_PID="$ANSWER_PID" wrk_run cache bare-answer "$c" "http://127.0.0.1:$ANSWER_PORT/v1/chat/completions" "" "$B"
    BENCH_HEADERS="cache-control: no-store" wrk_run cache gateway "$c" "$GW" "$KEY" "$B"
    wrk_run cache gateway-hit "$c" "$GW" "$KEY" "$B"
  done
  stop "$ANSWER_PID"
  S=$(body_file cache-stream "$(chat_body "$OPENAI_MODEL" true)")
  curl -fsS -o /dev/null -H "authorization: Bearer $KEY" -H 'content-type: application/json' --data-binary "@$S" "$GW"
  STREAM_HEADER="cache-control: no-store" stream_run cache-stream gateway "$n" "$GW" openai "$S" "$KEY" '"cache":"no-store"'
  stream_run cache-stream gateway-hit "$n" "$GW" openai "$S" "$KEY" '"cache":"on"'
  if (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
    stop "$GW_PID"
    base_env=("${GW_ENV[@]}")
    GW_ENV+=(CACHE_REDIS_URL="redis://127.0.0.1:6379" REDIS_KEY_PREFIX="perpetuo-bench-$$:")
    start_gateway
    warm "$GW" "$KEY" "$B"
    sleep 0.5 # the entry's write to Redis is in the background
    l0=$(metric_of perpetuo_cache_lookup_seconds_sum); n0=$(metric_of perpetuo_cache_lookup_seconds_count)
    wrk_run cache gateway-hit-redis 16 "$GW" "$KEY" "$B"
    l1=$(metric_of perpetuo_cache_lookup_seconds_sum); n1=$(metric_of perpetuo_cache_lookup_seconds_count)
    record "{\"section\":\"cache-lookup\",\"path\":\"gateway-hit-redis\",\"lookups\":$(python3 -c "print(int(float('$n1') - float('$n0')))"),\"mean_us\":$(python3 -c "d=float('$n1')-float('$n0'); print(round((float('$l1')-float('$l0'))/d*1e6, 1) if d else 0)")}"
    stop "$GW_PID"
    GW_ENV=("${base_env[@]}")
    start_gateway
  else
    echo "   no Redis on 127.0.0.1:6379: the Redis row is left out" >&2
  fi
  sql "UPDATE workspaces SET cache_mode = 'off' WHERE id = '$WS'" >/dev/null
  until_header "$GW" "$KEY" "$B" x-perpetuo-cache absent
fi

# --- limits on the key, in process and through Redis (after the reconciliation: the
# gateway is restarted for Redis, and its counters start again) ---------------------------
# Per round and level, alternated: `gateway` (the key without limits), `gateway-limits`
# (limits high enough never to refuse, in process), `gateway-redis` (the same limits shared
# through Redis on 127.0.0.1:6379, the gateway restarted with REDIS_URL).
set_key_limits() { # json
  curl -fsS -X PUT "http://127.0.0.1:$ADMIN_PORT/workspaces/$WS/api-keys/$KID" -H "authorization: Bearer $TOKEN" \
    -H 'content-type: application/json' -d "$1" >/dev/null
  local seen=absent; [ "$1" = '{}' ] || seen=$(json_get limits.rpm <<<"$1")
  until_header "http://127.0.0.1:$GW_PORT/v1/chat/completions" "$KEY" "$B" x-ratelimit-limit-requests "$seen"
}
if has limits; then
  LLEVELS="16,64"; [ "$SMOKE" = 1 ] && LLEVELS=16; [ "$LEVELS_GIVEN" = 1 ] && LLEVELS="$LEVELS"
  say "limits: the same non-stream request, c=$LLEVELS, $LIMITS_ROUNDS alternated rounds: without limits, with limits in process, through Redis"
  B=$(body_file limits "$(chat_body "$OPENAI_MODEL" false)")
  GW="http://127.0.0.1:$GW_PORT/v1/chat/completions"
  # Limits high enough never to refuse, so that every check and settlement runs.
  HIGH='{"limits":{"rpm":2000000000,"tpm":2000000000,"max_concurrency":1000000,"budget_usd":1000000,"budget_period":"month"}}'
  REDIS_UP=0; (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null && REDIS_UP=1
  [ "$REDIS_UP" = 1 ] || echo "   no Redis on 127.0.0.1:6379: the shared-limits rows are left out" >&2
  for r in $(seq 1 "$LIMITS_ROUNDS"); do
    for c in ${LLEVELS//,/ }; do
      set_key_limits '{}'
      warm "$GW" "$KEY" "$B"
      wrk_run limits gateway "$c" "$GW" "$KEY" "$B" "{\"round\":$r}"
      set_key_limits "$HIGH"
      warm "$GW" "$KEY" "$B"
      wrk_run limits gateway-limits "$c" "$GW" "$KEY" "$B" "{\"round\":$r}"
      if [ "$REDIS_UP" = 1 ]; then
        stop "$GW_PID"
        base_env=("${GW_ENV[@]}")
        GW_ENV+=(REDIS_URL="redis://127.0.0.1:6379" REDIS_KEY_PREFIX="perpetuo-bench-$$-$r-$c:")
        start_gateway
        warm "$GW" "$KEY" "$B"
        wrk_run limits gateway-redis "$c" "$GW" "$KEY" "$B" "{\"round\":$r}"
        stop "$GW_PID"
        GW_ENV=("${base_env[@]}")
        start_gateway
      fi
    done
  done
  set_key_limits '{}'
fi

# --- tracing: what exporting spans costs ------------------------------------------------
# The gateway restarted for each configuration, in alternated rounds: `off` (no OTEL_*
# variables), `before` (--before-bin: the build before tracing), `1pct` and `100pct`
# (trace-id ratio 0.01, always on) exporting to the mock's OTLP/HTTP route (it answers
# 200 and counts the spans), and `blackhole` (always on) exporting to a listener that
# accepts connections and never reads or answers, each export timing out after 2 s.
# After each row: the spans the collector received during it, the spans the gateway
# dropped (perpetuo_trace_spans_dropped_total), the gateway process's CPU time, and its
# log rows written and lost since its start (every configuration logs every request).
otlp_stats() { curl -fsS "http://127.0.0.1:$MOCK_PORT/otlp/stats"; }
if has tracing; then
  TLEVELS="16,64"; [ "$SMOKE" = 1 ] && TLEVELS=16; [ "$LEVELS_GIVEN" = 1 ] && TLEVELS="$LEVELS"
  configs=(off); [ -n "$BEFORE_BIN" ] && configs+=(before); configs+=(1pct 100pct blackhole)
  # The canned upstream when there is one, as in the non-stream section: the mock on the
  # load core would make the load side the ceiling.
  TMODEL="$OPENAI_MODEL"; TUPSTREAM="mock provider"
  [ -n "$CANNED_PID" ] && { TMODEL="$CANNED_MODEL"; TUPSTREAM="canned (nginx from memory, load core)"; }
  say "tracing: ${configs[*]}, $TRACING_ROUNDS alternated rounds, non-stream c=$TLEVELS, ${DURATION}s per run, upstream: $TUPSTREAM"
  record "{\"section\":\"tracing-setup\",\"upstream\":\"$TUPSTREAM\"}"
  B=$(body_file tracing "$(chat_body "$TMODEL" false)")
  GW="http://127.0.0.1:$GW_PORT/v1/chat/completions"
  # The key without the limits section's limits (every configuration starts afresh from the database).
  curl -fsS -X PUT "http://127.0.0.1:$ADMIN_PORT/workspaces/$WS/api-keys/$KID" -H "authorization: Bearer $TOKEN" \
    -H 'content-type: application/json' -d '{}' >/dev/null
  HOLE_PORT=$(free_port)
  taskset -c "$LOAD_CPU" python3 -c 'import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1024)
held = []
while True:
    held.append(s.accept()[0])  # held open, never read, never answered' "$HOLE_PORT" & pids+=($!)
  wait_port "$HOLE_PORT"
  base_env=("${GW_ENV[@]}")
  for r in $(seq 1 "$TRACING_ROUNDS"); do
    for cfg in "${configs[@]}"; do
      stop "$GW_PID"
      GW_ENV=("${base_env[@]}"); GW_BIN=""
      case "$cfg" in
        before) GW_BIN="$BEFORE_BIN/perpetuo-gateway" ;;
        1pct) GW_ENV+=(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$MOCK_PORT" OTEL_TRACES_SAMPLER=traceidratio OTEL_TRACES_SAMPLER_ARG=0.01) ;;
        100pct) GW_ENV+=(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$MOCK_PORT" OTEL_TRACES_SAMPLER=always_on) ;;
        blackhole) GW_ENV+=(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$HOLE_PORT" OTEL_TRACES_SAMPLER=always_on OTEL_EXPORTER_OTLP_TIMEOUT=2000) ;;
      esac
      start_gateway
      warm "$GW" "$KEY" "$B"
      # This gateway's connections to the database are new: their backends too.
      pin_db_backends >/dev/null
      for c in ${TLEVELS//,/ }; do
        o0=$(otlp_stats); d0=$(metric_sum perpetuo_trace_spans_dropped_total); g0=$(proc_cpu "$GW_PID")
        wrk_run tracing "$cfg" "$c" "$GW" "$KEY" "$B" "{\"round\":$r}"
        o1=$(otlp_stats); d1=$(metric_sum perpetuo_trace_spans_dropped_total); g1=$(proc_cpu "$GW_PID")
        record "$(python3 -c 'import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
d = {"section": "tracing-export", "path": sys.argv[3], "level": int(sys.argv[4]), "round": int(sys.argv[5])}
d.update({k: b[k] - a[k] for k in ("spans", "exports", "bytes", "undecoded")})
d.update(dropped=int(sys.argv[7]) - int(sys.argv[6]), dropped_total=int(sys.argv[7]),
         gateway_cpu_s=(int(sys.argv[9]) - int(sys.argv[8])) / int(sys.argv[10]),
         log_rows_written_total=int(sys.argv[11]), log_rows_lost_total=int(sys.argv[12]))
print(json.dumps(d))' "$o0" "$o1" "$cfg" "$c" "$r" "$d0" "$d1" "$g0" "$g1" "$(getconf CLK_TCK)" \
          "$(metric_sum perpetuo_log_rows_written_total)" \
          "$(( $(metric_sum perpetuo_log_rows_dropped_total) + $(metric_sum perpetuo_log_rows_rejected_total) ))")"
        echo "   $(tail -n 1 "$RESULTS")" >&2
      done
    done
  done
  stop "$GW_PID"
  GW_ENV=("${base_env[@]}"); GW_BIN=""
  start_gateway
fi

# --- cold start: exec → first proxied answer --------------------------------------------
cold_starts() { # section runs [extra json]: stops the gateway, starts it `runs` times; the last stays up
  local section="$1" n="$2" extra="${3:-}" i start h end runs=() healthy=() CB
  stop "$GW_PID"
  CB=$(chat_body "$OPENAI_MODEL" false)
  for i in $(seq 1 "$n"); do
    start=$(date +%s%N); h=""
    env "${GW_ENV[@]}" taskset -c "$PROXY_CPU" "$BIN/perpetuo-gateway" >>"$WORK/gateway.log" 2>&1 & GW_PID=$!; pids+=($GW_PID)
    for _ in $(seq 1 5000); do
      if [ -z "$h" ] && curl -fsS -o /dev/null "http://127.0.0.1:$GW_PORT/healthz" 2>/dev/null; then h=$(date +%s%N); fi
      if [ -n "$h" ] && curl -fsS -o /dev/null -H "authorization: Bearer $KEY" -H 'content-type: application/json' \
        -d "$CB" "http://127.0.0.1:$GW_PORT/v1/chat/completions" 2>/dev/null; then break; fi
      sleep 0.002
    done
    end=$(date +%s%N)
    runs+=($(( (end - start) / 1000 ))); healthy+=($(( (h - start) / 1000 )))
    count_gateway 1
    [ "$i" -lt "$n" ] && stop "$GW_PID" INT
  done
  record "{\"section\":\"$section\",\"first_answer_us\":[$(IFS=,; echo "${runs[*]}")],\"healthz_us\":[$(IFS=,; echo "${healthy[*]}")]${extra:+,$extra}}"
  echo "   first proxied answer (µs): ${runs[*]}; healthy (µs): ${healthy[*]}" >&2
}
if has startup; then
  say "cold start: exec → first proxied answer, $STARTUP_RUNS runs"
  cold_starts startup "$STARTUP_RUNS"
fi

# --- data growth: one workspace with millions of log rows and 100,000 API keys ----------
# The rows, keys and usage counters are generated in PostgreSQL (bench/scripts/growth.py
# says how); the admin API's reads are timed over them, one request at a time on one
# keep-alive connection. The gateway side: PostgreSQL CPU per logged row before the load
# and at each size (as pgcpu measures it), a cold start with the keys in place, and the key
# cache's miss rate under traffic drawn from the keys as the rows draw them. Each size is
# loaded afresh (logs and counters emptied), so that rows lie in time order as the writer
# appends them. Run last: it empties request_logs.
wait_flushed() { # until the gateway's writer has nothing queued and its row count stops moving
  local last=-1 now i
  for i in $(seq 1 100); do
    now=$(metric_sum perpetuo_log_rows_written_total)
    [ "$now" = "$last" ] && [ "$(metric_sum perpetuo_log_queue_depth)" = 0 ] && return 0
    last=$now; sleep 0.3
  done
}
insert_cost() { # phase label: PostgreSQL CPU per row the gateway logs, non-stream c=16
  local phase="$1" w0 w1 ours0 all0 ours1 all1 table_rows
  table_rows=$(sql "SELECT COALESCE(sum(GREATEST(c.reltuples, 0)), 0)::int8 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'request_logs'::regclass")
  wait_flushed
  w0=$(metric_sum perpetuo_log_rows_written_total); read -r ours0 all0 <<<"$(pg_cpu_ticks)"
  wrk_run growth-wrk gateway 16 "http://127.0.0.1:$GW_PORT/v1/chat/completions" "$KEY" "$GB" "{\"phase\":\"$phase\"}"
  wait_flushed
  w1=$(metric_sum perpetuo_log_rows_written_total); read -r ours1 all1 <<<"$(pg_cpu_ticks)"
  record "{\"section\":\"growth-insert\",\"phase\":\"$phase\",\"table_rows\":$table_rows,\"rows\":$((w1 - w0)),\"ticks_per_s\":$(getconf CLK_TCK),\"ours_ticks\":$((ours1 - ours0)),\"cluster_ticks\":$((all1 - all0))}"
  echo "   insert cost, $phase: $((w1 - w0)) rows, CPU ticks of this database's backends $((ours1 - ours0)), cluster $((all1 - all0))" >&2
}
if has growth; then
  say "data growth: ${GROWTH_ROWS} log rows over 90 days, $GROWTH_KEYS API keys"
  GB=$(body_file growth "$(chat_body "$OPENAI_MODEL" false)")
  [ -e "/proc/$GW_PID" ] || start_gateway
  warm "http://127.0.0.1:$GW_PORT/v1/chat/completions" "$KEY" "$GB"
  insert_cost "before the load"
  first=1
  for n in ${GROWTH_ROWS//,/ }; do
    [ "$first" = 1 ] || sql "TRUNCATE request_logs, usage_counters$(sql "SELECT CASE WHEN to_regclass('usage_rollup') IS NOT NULL THEN ', usage_rollup' ELSE '' END")"
    first=0
    python3 bench/scripts/growth.py load --db "$DATABASE_URL" --workspace "$WS" --rows "$n" --keys "$GROWTH_KEYS" >> "$RESULTS"
    tail -n 1 "$RESULTS" | sed 's/^/   /' >&2
    python3 bench/scripts/growth.py queries --admin "http://127.0.0.1:$ADMIN_PORT" --token "$TOKEN" --workspace "$WS" \
      --db "$DATABASE_URL" --requests "$GROWTH_REQUESTS" \
      | python3 -c 'import json,sys
for l in sys.stdin: d=json.loads(l); d["table_rows"]=int(sys.argv[1]); print(json.dumps(d))' "$n" >> "$RESULTS"
    insert_cost "$n rows"
  done
  say "growth: cold start with $GROWTH_KEYS keys in place, $STARTUP_RUNS runs"
  cold_starts growth-startup "$STARTUP_RUNS" "\"keys\":$GROWTH_KEYS"
  python3 bench/scripts/growth.py keys --gateway "http://127.0.0.1:$GW_PORT" --metrics "http://127.0.0.1:$METRICS_PORT" \
    --keys "$GROWTH_KEYS" --requests "$GROWTH_KEY_REQUESTS" >> "$RESULTS"
  count_gateway "$GROWTH_KEY_REQUESTS"
  tail -n 1 "$RESULTS" | sed 's/^/   /' >&2
  # The indexes added for these reads, weighed: the same insert run without them.
  added=$(sql "SELECT string_agg(indexname, ',') FROM pg_indexes WHERE tablename = 'request_logs' AND indexname IN ($GROWTH_INDEXES)")
  if [ -n "$added" ]; then
    for ix in ${added//,/ }; do sql "DROP INDEX $ix"; done
    insert_cost "${GROWTH_ROWS##*,} rows, without $added"
  fi
fi

# --- the gateway's failed requests over the whole run with the bench key, by kind (the database is dropped
# at the end, so they are read here) -----------------------------------------------------
FAILS=$(sql "SELECT coalesce(jsonb_agg(f), '[]'::jsonb) FROM (SELECT error_kind, status, count(*) AS n FROM request_logs WHERE workspace_id = '$WS' AND api_key_id = '$KID' AND error_kind IS NOT NULL GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 20) f" 2>/dev/null | tr -d '\n' || true)
record "{\"section\":\"failures\",\"rows\":${FAILS:-[]}}"

# --- the machine, then the report -------------------------------------------------------
ver() { "$@" 2>&1 | head -n 1 || true; }
python3 - "$RESULTS" <<PY
import json, sys, os, subprocess
def out(*cmd):
    try: return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip() or subprocess.run(cmd, capture_output=True, text=True, timeout=10).stderr.strip()
    except Exception: return ""
cpu = next((l.split(":",1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = next((l.split(":",1)[1].strip() for l in open("/proc/meminfo") if l.startswith("MemTotal")), "?")
import time
d = {"section": "machine", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "nproc": os.cpu_count(), "cpu": cpu, "memory": mem,
     "kernel": os.uname().release, "load_avg_at_start": "$LOAD_AT_START".split(), "load_avg_at_end": open("/proc/loadavg").read().split()[:3],
     "rustc": out("rustc", "-V"), "nginx": "$( [ -n "$NGINX" ] && ver "$NGINX" -v)", "wrk": "$(ver wrk -v)",
     "postgres": "$(sql 'SHOW server_version' 2>/dev/null || true)", "commit": out("git", "-C", "$ROOT", "rev-parse", "--short", "HEAD"),
     "dirty": bool(out("git", "-C", "$ROOT", "status", "--porcelain", "--untracked-files=no")),
     "bin": "$BIN", "smoke": $SMOKE == 1, "duration_s": $DURATION, "levels": "$LEVELS", "streams": "$STREAMS",
     "rounds": $ROUNDS, "pieces": $PIECES, "chunk_ms": $CHUNK_MS, "wide_chunk_ms": $WIDE_CHUNK_MS, "wide_from": $WIDE_FROM, "ramp_ms": $RAMP_MS, "with_peer": $WITH_PEER == 1,
     "rss_after_s": [$AFTER1, $AFTER1 + $AFTER2], "proxy_cpu": $PROXY_CPU, "load_cpu": $LOAD_CPU, "sections": "$SECTIONS",
     "tracing_rounds": $TRACING_ROUNDS, "before_bin": "$BEFORE_BIN"}
open(sys.argv[1], "a").write(json.dumps(d) + "\n")
PY
if [ -z "$OUT" ]; then
  if [ "$SMOKE" = 1 ]; then OUT="$WORK/smoke.md"; else mkdir -p bench/results; OUT="bench/results/$(date -u +%Y-%m-%dT%H%M).md"; fi
fi
check=(); [ "$SMOKE" = 1 ] && check=(--check "$SECTIONS")
python3 bench/scripts/report.py render "$RESULTS" --out "$OUT" "${check[@]}"
[ "$SMOKE" = 1 ] && cat "$OUT" || echo "results written to $OUT" >&2
