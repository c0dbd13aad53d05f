#!/usr/bin/env python3
"""The data-growth level of bench/run.sh: load one workspace with API keys and log rows
generated in PostgreSQL, then time the admin API's reads over it and the gateway's key
cache against those keys. Standard library only; SQL goes through psql.

  growth.py load --db URL --workspace ID --rows N --keys K [--days 90]
      API keys, log rows over the last `days` days (time-ordered ids, a mix of models,
      providers, front doors, statuses and keys) and the usage counters that sum them, as
      the gateway's writer would have left them. Prints one JSON line.
  growth.py queries --admin URL --token T --workspace ID --db URL --requests R
      p50/p95/p99 of each admin read, one JSON line per read.
  growth.py keys --gateway URL --metrics URL --keys K --requests R
      chat completions with keys drawn as the log rows draw them; the key cache's hits and
      misses from the gateway's metrics. Prints one JSON line.

Keys: `pp-` + the key's rank (8 digits) + `bench` + 30 `x`: 43 characters after `pp-`,
as a real key, so the gateway looks each one up. Rank 0 is the busiest key.
"""
import argparse
import base64
import http.client
import json
import os
import subprocess
import sys
import time
import urllib.parse

# model, provider entry (by name, as run.sh creates them), nano-USD per prompt and per
# completion token, share of requests. Every entry serves these names in the data (the
# mock entries list one model each; the rows are history, not what routing allows now).
MODELS = [
    ("gpt-4o-mini", "mock", 150, 600, 0.33),
    ("gpt-4o", "mock", 2500, 10000, 0.12),
    ("claude-3-5-haiku-latest", "mock-anthropic", 800, 4000, 0.20),
    ("claude-sonnet-4-5", "mock-anthropic", 3000, 15000, 0.08),
    ("gemini-2.0-flash", "mock-gemini", 100, 400, 0.15),
    ("gemini-2.5-pro", "mock-gemini", 1250, 10000, 0.04),
    ("text-embedding-3-small", "mock", 20, 0, 0.08),
]
KINDS = {"mock": "openai_compatible", "mock-anthropic": "anthropic", "mock-gemini": "gemini"}
# status, error_kind, share (the rest are 200)
STATUSES = [
    (429, "rate_limit_exceeded", 0.030),
    (400, "invalid_request", 0.015),
    (502, "upstream_error", 0.010),
    (503, "upstream_error", 0.008),
    (500, "upstream_error", 0.004),
    (504, "upstream_timeout", 0.003),
]
# Traffic by key: most of it from the busiest thousand keys (rank ~ 1000·u², u uniform),
# the rest spread over every key.
HOT_KEYS = 1000
HOT_SHARE = 0.9
# Keys that are revoked: every 50th rank from 5,000 on (none of the busiest).
REVOKED_FROM = 5000


# Seconds spent timing each of the reads that scan a workspace's every row (at least 5
# requests): enough for their p50, without making the level an hour long.
SCAN_SECONDS = 15


def key_text(rank):
    return f"pp-{rank:08d}bench" + "x" * 30


def psql(db, sql, *args):
    out = subprocess.run(["psql", db, "-v", "ON_ERROR_STOP=1", "-qAtX", *args],
                         input=sql, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"psql failed: {out.stderr.strip()}")
    return out.stdout.strip()


def cumulative(pairs, u):
    """SQL CASE over the column `u` (uniform in [0,1)) picking a value by its share."""
    acc, arms = 0.0, []
    for value, share in pairs[:-1]:
        acc += share
        arms.append(f"WHEN {u} < {acc:.6f} THEN {value}")
    return "CASE " + " ".join(arms) + f" ELSE {pairs[-1][0]} END"


def make_keys(a, ws, user):
    """The keys, once per run: created over the 180 days before now, the busiest the oldest;
    some with limits, a label, an owner; every 50th past REVOKED_FROM revoked."""
    psql(a.db, f"""
SET session_replication_role = replica; -- no NOTIFY per key: a bulk import, not 100,000 edits
DROP TABLE IF EXISTS bench_keys;
CREATE TABLE bench_keys AS
SELECT r AS rank,
       (lpad(to_hex((extract(epoch FROM at) * 1000)::bigint), 12, '0') || '7' || substr(h, 1, 3) || '8' || substr(h, 4, 15))::uuid AS id,
       at
FROM (SELECT r, now() - interval '180 days' * (1 - (r::float8 / {a.keys})) AS at, md5('key' || r) AS h
      FROM generate_series(0, {a.keys} - 1) r) s;
INSERT INTO api_keys (id, workspace_id, name, prefix, key_hash, created_by, created_at, revoked_at,
                      rpm_limit, tpm_limit, budget_nusd, budget_period, label, owner_email)
SELECT id, '{ws}', 'bench-key-' || rank, substr(txt, 1, 11), sha256(convert_to(txt, 'UTF8')), '{user}',
       at, CASE WHEN rank >= {REVOKED_FROM} AND rank % 50 = 0 THEN now() - interval '1 day' END,
       CASE WHEN rank % 10 = 0 THEN 100000 END, CASE WHEN rank % 10 = 0 THEN 100000000 END,
       CASE WHEN rank % 20 = 0 THEN 1000000000000 END, 'month',
       CASE WHEN rank % 3 = 0 THEN 'team ' || (rank % 97) END,
       CASE WHEN rank % 4 = 0 THEN 'owner' || (rank % 1000) || '@example.com' END
FROM (SELECT rank, id, at, 'pp-' || lpad(rank::text, 8, '0') || 'bench' || repeat('x', 30) AS txt FROM bench_keys) k;
""")


def load(a):
    started = time.perf_counter()
    ws = a.workspace
    providers = dict(line.split("|") for line in psql(
        a.db, f"SELECT name, id FROM provider_keys WHERE workspace_id = '{ws}'").splitlines())
    missing = [p for p in KINDS if p not in providers]
    if missing:
        sys.exit(f"the workspace has no provider entry named {missing}")
    user = psql(a.db, f"SELECT user_id FROM workspace_members WHERE workspace_id = '{ws}' LIMIT 1")
    days = a.days
    # Partitions for the whole range (the gateway keeps months ahead; history needs the past).
    psql(a.db, f"SELECT perpetuo_ensure_log_partitions(now() - interval '{days + 1} days', 4)")

    t = time.perf_counter()
    if psql(a.db, "SELECT to_regclass('bench_keys') IS NULL") == "t":
        make_keys(a, ws, user)
    keys_s = time.perf_counter() - t

    model_arm = cumulative([(i, m[4]) for i, m in enumerate(MODELS)], "um")
    status_arm = cumulative([(s[0], s[2]) for s in STATUSES] + [(200, 1 - sum(s[2] for s in STATUSES))], "us")
    kinds_of = {s[0]: s[1] for s in STATUSES}
    arr = lambda xs: "ARRAY[" + ",".join(xs) + "]"
    names = arr([f"'{m[0]}'" for m in MODELS])
    pnames = arr([f"'{m[1]}'" for m in MODELS])
    pids = arr([f"'{providers[m[1]]}'::uuid" for m in MODELS])
    pkinds = arr([f"'{KINDS[m[1]]}'" for m in MODELS])
    pin = arr([str(m[2]) for m in MODELS])
    pout = arr([str(m[3]) for m in MODELS])
    emb = next(i for i, m in enumerate(MODELS) if m[0].startswith("text-embedding")) + 1
    err_kind = "CASE status " + " ".join(f"WHEN {s} THEN '{k}'" for s, k in kinds_of.items()) + " END"

    # Rows in time order, in chunks (one transaction each), as the writer appends them.
    t = time.perf_counter()
    chunk = max(1, min(a.rows, 500_000))
    for lo in range(0, a.rows, chunk):
        hi = min(a.rows, lo + chunk)
        psql(a.db, f"""
SET synchronous_commit = off;
INSERT INTO request_logs (id, created_at, workspace_id, api_key_id, provider_id, provider_name, provider_kind,
    route, model_requested, model_served, status, error_kind, streamed, prompt_tokens, completion_tokens,
    total_tokens, cost_nusd, usage_source, latency_ms, ttfb_ms, attempts)
SELECT (lpad(to_hex((extract(epoch FROM at) * 1000)::bigint), 12, '0') || '7' || substr(h, 1, 3) || '8' || substr(h, 4, 15))::uuid,
       at, '{ws}', k.key_id, ({pids})[m], ({pnames})[m], ({pkinds})[m],
       CASE WHEN m = {emb} THEN 'embeddings' WHEN v < 0.15 THEN 'messages' WHEN v < 0.25 THEN 'responses' ELSE 'chat' END,
       ({names})[m], ({names})[m], status, {err_kind}, m <> {emb} AND v > 0.4,
       pt, ct, pt + ct, CASE WHEN status < 400 THEN pt::int8 * ({pin})[m] + ct::int8 * ({pout})[m] ELSE 0 END,
       CASE WHEN status < 400 THEN 'provider' ELSE 'none' END, lat, CASE WHEN m <> {emb} AND v > 0.4 THEN lat / 4 END,
       jsonb_build_array(jsonb_build_object('provider_id', ({pids})[m], 'provider_name', ({pnames})[m],
           'status', status, 'latency_ms', lat, 'error_kind', {err_kind}))
FROM (
    SELECT i, at, h, m, v, status, key, lat,
           CASE WHEN status < 400 THEN 50 + (w * w * 4000)::int ELSE 0 END AS pt,
           CASE WHEN status < 400 AND m <> {emb} THEN 10 + (v * 800)::int ELSE 0 END AS ct
    FROM (
        SELECT i, at, md5(i::text) AS h, v, w, (200 + w * w * 8000)::int AS lat,
               {model_arm} + 1 AS m, {status_arm} AS status,
               CASE WHEN random() < {HOT_SHARE} THEN floor({HOT_KEYS} * power(random(), 2))::int
                    ELSE floor({a.keys} * random())::int END AS key
        FROM (SELECT i, now() - interval '{days} days' + interval '{days} days' * ((i + random()) / {a.rows}) AS at,
                     random() AS v, random() AS w, random() AS um, random() AS us
              FROM generate_series({lo}, {hi} - 1) i) g
    ) s
) r JOIN (SELECT rank, id AS key_id FROM bench_keys) k ON k.rank = r.key
ORDER BY at;
""")
        print(f"   growth: {hi:,} rows of {a.rows:,}", file=sys.stderr)
    rows_s = time.perf_counter() - t

    # The counters the gateway's writer keeps, summed from the rows (see core/src/db/usage.rs),
    t = time.perf_counter()
    # where the schema has the response cache (V17 on), by its rule: a hit is a request, its
    # tokens and savings are the cache's, not the token and cost counters'.
    cached = psql(a.db, """SELECT EXISTS (SELECT 1 FROM information_schema.columns
                                         WHERE table_name = 'usage_counters' AND column_name = 'cache_hits')""") == "t"
    own = "FILTER (WHERE cache IS DISTINCT FROM 'hit')" if cached else ""
    cache_cols = ", cache_hits, cache_hit_tokens, cache_saved_nusd" if cached else ""
    cache_sums = (", count(*) FILTER (WHERE cache = 'hit'), COALESCE(sum(total_tokens) FILTER (WHERE cache = 'hit'), 0),"
                  " COALESCE(sum(COALESCE(cache_saved_nusd, 0)) FILTER (WHERE cache = 'hit'), 0)") if cached else ""
    rolled_sums = ", sum(cache_hits), sum(cache_hit_tokens), sum(cache_saved_nusd)" if cached else ""

    def added(table):
        cols = ["requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens", "cost_nusd"]
        cols += ["cache_hits", "cache_hit_tokens", "cache_saved_nusd"] if cached else []
        return ",\n    ".join(f"{c} = {table}.{c} + EXCLUDED.{c}" for c in cols)
    # only the generated rows: the gateway's own (earlier sections) are counted already.
    psql(a.db, f"""
SET work_mem = '256MB';
INSERT INTO usage_counters (workspace_id, bucket, api_key_id, provider_id, model, requests, errors,
                            prompt_tokens, completion_tokens, total_tokens, cost_nusd{cache_cols})
SELECT workspace_id, date_trunc('hour', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', api_key_id, provider_id,
       COALESCE(model_served, model_requested, ''), count(*), count(*) FILTER (WHERE status >= 400),
       COALESCE(sum(prompt_tokens) {own}, 0), COALESCE(sum(completion_tokens) {own}, 0),
       COALESCE(sum(total_tokens) {own}, 0), COALESCE(sum(COALESCE(cost_nusd, 0)) {own}, 0){cache_sums}
FROM request_logs l JOIN bench_keys k ON k.id = l.api_key_id
WHERE l.workspace_id = '{ws}'
GROUP BY 1, 2, 3, 4, 5
ON CONFLICT ON CONSTRAINT usage_counters_key DO UPDATE SET
    {added("usage_counters")};
""")
    # ... and their sums without the key, where the schema has them (V15 on).
    if psql(a.db, "SELECT to_regclass('usage_rollup') IS NOT NULL") == "t":
        psql(a.db, f"""
SET work_mem = '256MB';
INSERT INTO usage_rollup (workspace_id, bucket, provider_id, model, requests, errors,
                          prompt_tokens, completion_tokens, total_tokens, cost_nusd{cache_cols})
SELECT workspace_id, bucket, provider_id, model, sum(requests), sum(errors), sum(prompt_tokens),
       sum(completion_tokens), sum(total_tokens), sum(cost_nusd){rolled_sums}
FROM usage_counters c JOIN bench_keys k ON k.id = c.api_key_id
WHERE c.workspace_id = '{ws}'
GROUP BY 1, 2, 3, 4
ON CONFLICT ON CONSTRAINT usage_rollup_key DO UPDATE SET
    {added("usage_rollup")};
""")
    counters_s = time.perf_counter() - t
    # As autovacuum would have left a table that grew over 90 days: statistics, the
    # visibility map. Done here so that it does not run during the measurements.
    t = time.perf_counter()
    rollup = psql(a.db, "SELECT to_regclass('usage_rollup') IS NOT NULL") == "t"
    psql(a.db, "VACUUM (ANALYZE) request_logs; VACUUM (ANALYZE) usage_counters; VACUUM (ANALYZE) api_keys"
         + ("; VACUUM (ANALYZE) usage_rollup" if rollup else ""))
    vacuum_s = time.perf_counter() - t
    check = psql(a.db, f"""
SELECT (SELECT count(*) FROM request_logs WHERE workspace_id = '{ws}'),
       (SELECT COALESCE(sum(requests), 0) FROM usage_counters WHERE workspace_id = '{ws}'),
       (SELECT count(*) FROM usage_counters WHERE workspace_id = '{ws}'),
       (SELECT count(*) FROM api_keys WHERE workspace_id = '{ws}'),
       pg_total_relation_size('request_logs') + (SELECT COALESCE(sum(pg_total_relation_size(c.oid)), 0)
           FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'request_logs'::regclass),
       pg_total_relation_size('usage_counters'),
       {f"(SELECT COALESCE(sum(requests), 0) FROM usage_rollup WHERE workspace_id = '{ws}')" if rollup else "-1"},
       {f"(SELECT count(*) FROM usage_rollup WHERE workspace_id = '{ws}')" if rollup else "-1"}""").split("|")
    rows, counted, counter_rows, keys, logs_bytes, counters_bytes, rolled, rollup_rows = (int(x) for x in check)
    print(json.dumps({
        "section": "growth-load", "rows_asked": a.rows, "keys_asked": a.keys, "days": days,
        "rows": rows, "counted_requests": counted, "counter_rows": counter_rows, "keys": keys,
        "rollup_requests": rolled if rollup else None, "rollup_rows": rollup_rows if rollup else None,
        "logs_bytes": logs_bytes, "counters_bytes": counters_bytes, "keys_s": round(keys_s, 1),
        "rows_s": round(rows_s, 1), "counters_s": round(counters_s, 1), "vacuum_s": round(vacuum_s, 1),
        "total_s": round(time.perf_counter() - started, 1)}))


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


class Client:
    """One keep-alive connection, as a dashboard's browser keeps."""

    def __init__(self, base, headers):
        u = urllib.parse.urlsplit(base)
        self.host, self.port, self.headers = u.hostname, u.port, headers
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
            try:
                t = time.perf_counter()
                self.conn.request(method, path, body=body, headers={**self.headers, **(headers or {})})
                r = self.conn.getresponse()
                data = r.read()
                return r.status, data, (time.perf_counter() - t) * 1000
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise


def rfc3339(epoch):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def older_cursor(epoch):
    """A cursor naming the position `epoch` (the server's format: 'o', microseconds
    big-endian, 16 id bytes): the page of rows just older than it."""
    micros = int(epoch * 1_000_000)
    raw = b"o" + micros.to_bytes(8, "big", signed=True) + b"\xff" * 16
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def a_keys_mid(a):
    """The rank of the key in the middle of the list (50,000 of 100,000)."""
    return int(psql(a.db, "SELECT count(*) / 2 FROM bench_keys"))


def queries(a):
    ws = a.workspace
    now = time.time()
    day = 86400
    # A key of middling traffic among the busy ones, and one seldom used: both real ids.
    mid_key = psql(a.db, "SELECT id FROM bench_keys WHERE rank = 300")
    rare_key = psql(a.db, "SELECT id FROM bench_keys WHERE rank = (SELECT count(*) * 54321 / 100000 FROM bench_keys)")
    at, kid = psql(a.db, f"SELECT (extract(epoch FROM at) * 1000000)::int8, id FROM bench_keys WHERE rank = {a_keys_mid(a)}").split("|")
    key_cursor = base64.urlsafe_b64encode(b"k" + int(at).to_bytes(8, "big", signed=True) + bytes.fromhex(kid.replace("-", ""))).decode().rstrip("=")
    q = urllib.parse.urlencode
    logs = f"/workspaces/{ws}/logs"
    cases = [
        ("logs: first page", f"{logs}?limit=50"),
        ("logs: model (12 % of rows)", f"{logs}?limit=50&" + q({"model": "gpt-4o"})),
        ("logs: model (4 % of rows)", f"{logs}?limit=50&" + q({"model": "gemini-2.5-pro"})),
        ("logs: status 429 (3 %)", f"{logs}?limit=50&status=429"),
        ("logs: status 504 (0.3 %)", f"{logs}?limit=50&status=504"),
        ("logs: key (busy, rank 300)", f"{logs}?limit=50&api_key_id={mid_key}"),
        ("logs: key (seldom used, rank 54 % down)", f"{logs}?limit=50&api_key_id={rare_key}"),
        ("logs: one day, 45 days ago", f"{logs}?limit=50&" + q({"from": rfc3339(now - 45 * day), "to": rfc3339(now - 44 * day)})),
        ("logs: deep page by cursor (60 days back)", f"{logs}?limit=50&cursor={older_cursor(now - 60 * day)}"),
        ("usage: 30 days", f"/workspaces/{ws}/usage?" + q({"from": rfc3339(now - 30 * day), "to": rfc3339(now)})),
        ("usage: 90 days", f"/workspaces/{ws}/usage?" + q({"from": rfc3339(now - 90 * day), "to": rfc3339(now)})),
        ("usage by provider: 30 days", f"/workspaces/{ws}/usage/by-provider?" + q({"from": rfc3339(now - 30 * day), "to": rfc3339(now)})),
        ("usage by provider: 90 days", f"/workspaces/{ws}/usage/by-provider?" + q({"from": rfc3339(now - 90 * day), "to": rfc3339(now)})),
        # The worst cases, timed for fewer seconds: a filter no row matches reads every row
        # of the workspace (no index on model or status), and so does a count.
        ("logs: a model no row has (scans everything)", f"{logs}?limit=50&" + q({"model": "gpt-4o-typo"}), SCAN_SECONDS),
        ("logs: first page with count=true", f"{logs}?limit=50&count=true", SCAN_SECONDS),
        ("api keys: first page (50)", f"/workspaces/{ws}/api-keys?limit=50"),
        ("api keys: a page by cursor (mid-list)", f"/workspaces/{ws}/api-keys?limit=50&cursor={key_cursor}"),
        ("api keys: the whole list", f"/workspaces/{ws}/api-keys"),
    ]
    c = Client(a.admin, {"authorization": f"Bearer {a.token}"})
    for name, path, *budget in cases:
        n = a.requests
        max_seconds = budget[0] if budget else a.max_seconds
        status, body, _ = c.request("GET", path)  # warm: plan cache, pages in memory
        if status != 200:
            sys.exit(f"{name}: {path} answered {status}: {body[:300]!r}")
        times = []
        deadline = time.perf_counter() + max_seconds
        for _ in range(n):
            status, body, ms = c.request("GET", path)
            if status != 200:
                sys.exit(f"{name}: {path} answered {status}: {body[:300]!r}")
            times.append(ms)
            if time.perf_counter() > deadline and len(times) >= 5:
                break
        doc = json.loads(body)
        rows = len(doc["data"]) if isinstance(doc.get("data"), list) else len(doc.get("series", []))
        line = {"section": "growth-query", "query": name, "path": path.replace(ws, "{ws}"), "n": len(times),
                "p50": round(pct(times, 50), 2), "p95": round(pct(times, 95), 2), "p99": round(pct(times, 99), 2),
                "max": round(max(times), 2), "rows": rows, "bytes": len(body)}
        print(json.dumps(line), flush=True)
        print(f"   growth: {name}: p50 {line['p50']} ms, p95 {line['p95']} ms ({len(times)} requests, {rows} rows)", file=sys.stderr)


def metric(base, name):
    c = Client(base, {})
    _, body, _ = c.request("GET", "/metrics")
    out = {}
    for line in body.decode().splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) + 1:].rsplit("} ", 1)
            out[labels] = out.get(labels, 0) + float(value)
    return out


def keys(a):
    import random
    rnd = random.Random(7)
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hi."}]})
    c = Client(a.gateway, {"content-type": "application/json"})
    before = metric(a.metrics, "perpetuo_key_cache_total")
    statuses, times = {}, []
    for _ in range(a.requests):
        if rnd.random() < HOT_SHARE:
            rank = int(HOT_KEYS * rnd.random() ** 2)
        else:
            rank = int(a.keys * rnd.random())
        status, _, ms = c.request("POST", "/v1/chat/completions", body, {"authorization": f"Bearer {key_text(rank)}"})
        statuses[status] = statuses.get(status, 0) + 1
        times.append(ms)
    after = metric(a.metrics, "perpetuo_key_cache_total")
    by = {}
    for labels, v in after.items():
        result = labels.split('"')[1] if '"' in labels else labels
        by[result] = by.get(result, 0) + v - before.get(labels, 0)
    looked = sum(by.values())
    print(json.dumps({"section": "growth-keys", "requests": a.requests, "keys": a.keys, "statuses": statuses,
                      "cache": by, "miss_rate": round(by.get("miss", 0) / looked, 4) if looked else None,
                      "p50": round(pct(times, 50), 2), "p95": round(pct(times, 95), 2), "p99": round(pct(times, 99), 2)}))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    lo = sub.add_parser("load")
    lo.add_argument("--db", required=True)
    lo.add_argument("--workspace", required=True)
    lo.add_argument("--rows", type=int, required=True)
    lo.add_argument("--keys", type=int, required=True)
    lo.add_argument("--days", type=int, default=90)
    qu = sub.add_parser("queries")
    qu.add_argument("--admin", required=True)
    qu.add_argument("--token", required=True)
    qu.add_argument("--workspace", required=True)
    qu.add_argument("--db", required=True)
    qu.add_argument("--requests", type=int, default=100)
    qu.add_argument("--max-seconds", type=float, default=60, help="per query, at least 5 requests")
    ke = sub.add_parser("keys")
    ke.add_argument("--gateway", required=True)
    ke.add_argument("--metrics", required=True)
    ke.add_argument("--keys", type=int, required=True)
    ke.add_argument("--requests", type=int, default=2000)
    a = ap.parse_args()
    {"load": load, "queries": queries, "keys": keys}[a.cmd](a)


if __name__ == "__main__":
    main()
