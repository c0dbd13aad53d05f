#!/usr/bin/env bash
# Time from exec to the first 200 from /healthz of the release gateway, five times.
#   bench/startup.sh   (needs target/release/perpetuo-gateway and a reachable PostgreSQL)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
. scripts/lib/pg.sh
BIN="$ROOT/target/release/perpetuo-gateway"
[ -x "$BIN" ] || { echo "build it first: cargo build --release -p perpetuo-gateway" >&2; exit 1; }
export DATABASE_URL="$(pg_test_url)"
export PERPETUO_MASTER_KEY="$(head -c 32 /dev/urandom | base64)"
export RUST_LOG=warn
DATA="$(mktemp -d)"; trap 'rm -rf "$DATA"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
for i in 1 2 3 4 5; do
  GP=$(port); MP=$(port)
  start=$(date +%s%N)
  DATA_DIR="$DATA/$i" GATEWAY_ADDR="127.0.0.1:$GP" METRICS_ADDR="127.0.0.1:$MP" "$BIN" >/dev/null 2>&1 & pid=$!
  until curl -fsS "http://127.0.0.1:$GP/healthz" >/dev/null 2>&1; do sleep 0.002; done
  end=$(date +%s%N)
  kill -INT "$pid"; wait "$pid" 2>/dev/null || true
  echo "run $i: $(( (end - start) / 1000000 )) ms from exec to healthy"
done
