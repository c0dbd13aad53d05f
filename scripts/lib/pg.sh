# Shared PostgreSQL helpers for the run and test scripts (sourced, not executed).
#
# pg_private_url: starts (or reuses) a private cluster in $PERPETUO_DEV_DIR/pgdata
# ($ROOT/.dev unless set) on port $PERPETUO_PG_PORT (default 54329) and prints its URL.
# Runs initdb/pg_ctl as the `postgres` user when this script runs as root, since
# PostgreSQL refuses root.
# pg_private_running: whether something already answers on that port.
# pg_private_stop: stops the private cluster (fast shutdown).

PERPETUO_PG_PORT="${PERPETUO_PG_PORT:-54329}"
PERPETUO_DEV_DIR="${PERPETUO_DEV_DIR:-$ROOT/.dev}"

pg_bin() {
  local name="$1" found
  found="$(command -v "$name" 2>/dev/null || true)"
  if [ -z "$found" ]; then
    found="$(ls -1 /usr/lib/postgresql/*/bin/"$name" 2>/dev/null | sort -V | tail -n 1 || true)"
  fi
  [ -n "$found" ] || { echo "error: $name not found; install PostgreSQL (e.g. apt-get install postgresql)" >&2; return 1; }
  echo "$found"
}

as_pg_user() {
  if [ "$(id -u)" = "0" ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    su postgres -s /bin/sh -c "$*"
  else
    sh -c "$*"
  fi
}

pg_reachable() {
  # $1 = URL
  local pg_isready
  pg_isready="$(pg_bin pg_isready 2>/dev/null)" || return 1
  "$pg_isready" -q -d "$1" -t 2 >/dev/null 2>&1
}

pg_private_url() {
  local dir="$PERPETUO_DEV_DIR" data sock url initdb pg_ctl
  data="$dir/pgdata"
  sock="$dir/pgsock"
  url="postgres://postgres@127.0.0.1:${PERPETUO_PG_PORT}/postgres"
  if pg_reachable "$url"; then echo "$url"; return 0; fi
  initdb="$(pg_bin initdb)" || return 1
  pg_ctl="$(pg_bin pg_ctl)" || return 1
  mkdir -p "$dir" "$sock"
  if [ "$(id -u)" = "0" ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    chown postgres "$dir" "$sock"
    chmod 755 "$dir"
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    echo "creating a private PostgreSQL cluster in $data" >&2
    as_pg_user "'$initdb' -D '$data' -U postgres -A trust -E UTF8 --no-instructions" >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; return 1; }
  fi
  as_pg_user "'$pg_ctl' -D '$data' -l '$dir/postgres.log' -w -t 30 \
    -o \"-p $PERPETUO_PG_PORT -k '$sock' -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off\" start" \
    >&2 || { tail -n 20 "$dir/postgres.log" >&2; return 1; }
  echo "$url"
}

pg_private_running() {
  pg_reachable "postgres://postgres@127.0.0.1:${PERPETUO_PG_PORT}/postgres"
}

pg_private_stop() {
  local pg_ctl data="$PERPETUO_DEV_DIR/pgdata"
  pg_ctl="$(pg_bin pg_ctl)" || return 1
  as_pg_user "'$pg_ctl' -D '$data' -m fast -w -t 30 stop" >/dev/null
}

# A URL for tests: $TEST_DATABASE_URL, else $DATABASE_URL, else the server on
# 127.0.0.1:5432, else the private cluster.
pg_test_url() {
  local u
  for u in "${TEST_DATABASE_URL:-}" "${DATABASE_URL:-}" "postgres://postgres@127.0.0.1:5432/postgres"; do
    if [ -n "$u" ] && pg_reachable "$u"; then echo "$u"; return 0; fi
  done
  pg_private_url
}
