#!/usr/bin/env python3
"""Figures of bench/run.sh: reads wrk's output, and renders the run's results as markdown.

  report.py wrk FILE --section S --path P --level N [--extra JSON]
      one JSON line: rps, p50/p90/p99 ms, requests, non2xx, socket errors
  report.py render RESULTS.jsonl --out FILE.md [--check SECTIONS]
      the markdown report (tables with ratios to direct, nginx and bare Pingora);
      --check fails (exit 1) when a listed section produced no figures, or when the
      log reconciliation does not hold. It says nothing about speed.

Python 3 standard library only.
"""
import argparse
import json
import re
import statistics
import sys

# ---------------------------------------------------------------------------- wrk


def wrk_ms(text, pattern):
    m = re.search(pattern + r"\s+([\d.]+)(us|ms|s)\b", text)
    if not m:
        return None
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v


def parse_wrk(text):
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    requests = re.search(r"(\d+) requests in", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "requests": int(requests.group(1)) if requests else 0,
        "p50": wrk_ms(text, r"\s50%"),
        "p90": wrk_ms(text, r"\s90%"),
        "p99": wrk_ms(text, r"\s99%"),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(x) for x in sock.groups()) if sock else 0,
    }


# ------------------------------------------------------------------------- render


def fmt(v, digits=2):
    if v is None:
        return "—"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}".replace(",", " ")
        return f"{v:.{digits}f}"
    return str(v)


def ratio(a, b):
    if a is None or b in (None, 0):
        return None
    return a / b


def pct(share):
    return None if share is None else f"{share * 100:.0f} %"


def parse_strace(text):
    """`strace -c` summary → {syscall: calls}."""
    calls = {}
    for line in text.splitlines():
        t = line.split()
        if len(t) < 5 or not t[0][0].isdigit() or t[-1] == "total":
            continue
        try:
            calls[t[-1]] = calls.get(t[-1], 0) + int(t[3])
        except ValueError:
            continue
    return calls


def per_request_us(r):
    """The path's process's CPU time over a wrk run ÷ the requests it answered."""
    if not r or r.get("proc_cpu_s") is None or not r.get("requests"):
        return None
    return r["proc_cpu_s"] * 1e6 / r["requests"]


def per_event_us(r):
    """The process's CPU time over a streaming level ÷ the SSE events its clients received."""
    if not r or r.get("cpu_s") is None or not r.get("events"):
        return None
    return r["cpu_s"] * 1e6 / r["events"]


def mib(kb):
    return None if kb in (None, 0) else kb / 1024


def table(header, rows):
    out = ["", "| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    for r in rows:
        out.append("| " + " | ".join(fmt(c) for c in r) + " |")
    return "\n".join(out) + "\n"


def render(rows):
    by = lambda section: [r for r in rows if r.get("section") == section]
    machine = (by("machine") or [{}])[-1]
    md = []
    md.append(f"# Benchmark run, {machine.get('date', '')}\n\n")
    if machine.get("smoke"):
        md.append("**Smoke run**: seconds-long, small stream counts, possibly debug binaries. "
                  "The figures only show that every section works; they are not results.\n\n")
    md.append(table(["machine", ""], [[k, str(v)] for k, v in machine.items() if k not in ("section", "date")]))
    md.append("\nEverything on 127.0.0.1. The proxy under test (one worker) runs on CPU "
              f"{machine.get('proxy_cpu', '?')}; wrk or stream-load and the mock provider on CPU "
              f"{machine.get('load_cpu', '?')}; PostgreSQL unpinned. Compare figures within this run only: "
              "the ratios are the result.\n\n")

    paths_order = ["direct", "nginx", "bare", "bare-peer", "gateway"]

    ns = by("nonstream")
    if ns:
        md.append("\n## Non-stream chat completion (wrk -t1, keep-alive)\n\n")
        setup = (by("nonstream-setup") or [{}])[-1]
        if setup:
            md.append(f"Upstream: {setup.get('upstream', '?')}; `direct` is that upstream without a proxy. "
                      f"The database's backends serving the run ({setup.get('db_backends_pinned', 0)}) were moved to the "
                      "load core.\n\n")
        md.append("`vs nginx` and `vs bare` are req/s ratios; `added p99` is p99 minus direct's p99 at the same "
                  "level, and `÷ nginx added` divides the path's added p99 by nginx's; `load busy` and `proxy busy` "
                  "are the busy shares of the load core (wrk, the upstream) and of the proxy's core over the run: a "
                  "load core near 100 % means the load side, not the proxy, was the ceiling; `CPU µs/req` is the path's "
                  "own process's CPU time (user + system, every thread) over the run ÷ the requests answered "
                  "(`direct`: the upstream's).\n\n")
        levels = sorted({r["level"] for r in ns})
        out = []
        for level in levels:
            at = {r["path"]: r for r in ns if r["level"] == level}
            d, n, b = at.get("direct"), at.get("nginx"), at.get("bare")
            for p in paths_order:
                r = at.get(p)
                if not r:
                    continue
                added = r["p99"] - d["p99"] if d and r.get("p99") is not None and d.get("p99") is not None else None
                nadded = n["p99"] - d["p99"] if n and d and n.get("p99") is not None and d.get("p99") is not None else None
                out.append([f"c={level}", p, r["rps"], r["p50"], r["p99"], r["non2xx"] + r.get("socket_errors", 0),
                            ratio(r["rps"], d and d["rps"]), ratio(r["rps"], n and n["rps"]), ratio(r["rps"], b and b["rps"]),
                            added, ratio(added, nadded) if nadded and nadded > 0 else None,
                            pct(r.get("load_cpu_busy")), pct(r.get("proxy_cpu_busy")), per_request_us(r)])
        md.append(table(["level", "path", "req/s", "p50 ms", "p99 ms", "errors", "vs direct", "vs nginx", "vs bare",
                         "added p99 ms", "÷ nginx added", "load busy", "proxy busy", "CPU µs/req"], out))
        rss = by("rss")
        if rss:
            md.append("\nMemory after the non-stream runs (`direct` is the mock provider):\n\n")
            md.append(table(["path", "RSS MiB", "peak RSS MiB"], [[r["path"], mib(r["rss_kb"]), mib(r["hwm_kb"])] for r in rss]))

    sc = by("syscalls-count")
    if sc:
        md.append("\n### System calls per proxied request\n\n")
        md.append("`strace -f -c` attached to each proxy (every thread) during a c=16 wrk run of the same request; "
                  "calls divided by the requests wrk completed in that run (slowed by strace: a count, not a speed). "
                  "The gateway's count includes its background threads (the log writer's database traffic, "
                  "metrics).\n\n")
        names = ["sendto", "recvfrom", "writev", "readv", "write", "read", "epoll_wait", "getpeername", "futex"]
        out = []
        for r in sc:
            n = r["requests"] or 0
            calls = r.get("calls", {})
            per = lambda v: v / n if n else None
            other = sum(v for k, v in calls.items() if k not in names)
            out.append([r["path"], n, per(sum(calls.values()))] + [per(calls.get(k, 0)) for k in names] + [per(other)])
        md.append(table(["path", "requests", "per request"] + names + ["other"], out))

    after = machine.get("rss_after_s", [1, 5])

    def stream_table(rs, base_of):
        out = []
        for r in rs:
            base = base_of(r)
            ttft, ttfb = r.get("ttft_ms", {}), r.get("ttfb_ms", {})
            added = ttft.get("p99") - base["ttft_ms"]["p99"] if base and ttft.get("p99") is not None and base.get("ttft_ms") else None
            per_stream = None
            if r.get("peak_rss_kb") and r.get("rss_before_kb") is not None and r.get("level"):
                per_stream = max(r["peak_rss_kb"] - r["rss_before_kb"], 0) / r["level"]
            failed = r.get("failed", 0)
            if failed:
                failed = f'{failed} ({", ".join(f"{k} {v}" for k, v in r.get("failures", {}).items())})'
            out.append([r["path"], r["level"], f'{r.get("completed", 0)}/{r.get("streams", 0)}', failed, r.get("stalled", 0),
                        ttfb.get("p50"), ttfb.get("p99"), ttft.get("p50"), ttft.get("p90"), ttft.get("p99"), ttft.get("max"),
                        added, mib(r.get("peak_rss_kb")), per_stream, mib(r.get("rss_after_1s_kb")), mib(r.get("rss_after_5s_kb")),
                        per_event_us(r)])
        return table(["path", "streams", "completed", "failed", "stalled", "TTFB p50", "TTFB p99", "TTFT p50", "TTFT p90",
                      "TTFT p99", "TTFT max", "added TTFT p99", "peak RSS MiB", "KiB/stream", f"RSS +{after[0]:g} s", f"RSS +{after[1]:g} s",
                      "CPU µs/event"], out)

    st = by("stream")
    if st:
        md.append("\n## Streaming (stream-load, OpenAI SSE, streams back to back)\n\n")
        md.append("Each level keeps N streams in flight, each worker running its streams back to back on one "
                  "kept-alive connection; the mock sends a role chunk then content chunks at the pace shown. "
                  "Times in ms over completed streams, from the request (connecting included for a worker's first). "
                  "TTFT is the first content chunk, not the role-only preamble. A completed stream ended with usage "
                  "and `[DONE]`. `added TTFT p99` is over direct's at the same level. `KiB/stream` is (peak RSS − RSS "
                  "before the level) ÷ N. `direct`'s memory columns are the mock's. `CPU µs/event` is the process's "
                  "CPU time over the level (user + system, every thread) ÷ the SSE events its clients received "
                  "(`direct`: the mock's).\n\n")
        levels = sorted({r["level"] for r in st})
        ratios = []
        for level in levels:
            rs = sorted([r for r in st if r["level"] == level], key=lambda r: paths_order.index(r["path"]) if r["path"] in paths_order else 9)
            direct = next((r for r in rs if r["path"] == "direct"), None)
            md.append(f"\n**{level} concurrent streams**, role chunk + {rs[0].get('pieces', '?')} chunks × {rs[0].get('pace_ms', '?')} ms\n\n")
            md.append(stream_table(rs, lambda r: direct))
            nginx = next((r for r in rs if r["path"] == "nginx"), None)
            if direct and nginx and direct.get("ttft_ms") and nginx.get("ttft_ms"):
                nadded = nginx["ttft_ms"]["p99"] - direct["ttft_ms"]["p99"]
                for r in rs:
                    if r["path"] in ("bare", "bare-peer", "gateway") and r.get("ttft_ms"):
                        added = r["ttft_ms"]["p99"] - direct["ttft_ms"]["p99"]
                        ratios.append([level, r["path"], added, nadded, ratio(added, nadded) if nadded > 0 else None,
                                       ratio(r.get("peak_rss_kb"), nginx.get("peak_rss_kb")),
                                       ratio(per_event_us(r), per_event_us(nginx))])
        if ratios:
            md.append("\nAgainst nginx (added TTFT p99 over direct, peak RSS, and CPU time per event):\n\n")
            md.append(table(["streams", "path", "added TTFT p99 ms", "nginx added ms", "÷ nginx added", "peak RSS ÷ nginx",
                             "CPU/event ÷ nginx"], ratios))

    tr = by("translate")
    trs = by("translate-stream")
    if tr or trs:
        md.append("\n## Translation paths (the client speaks OpenAI; the provider entry is Anthropic or Gemini)\n\n")
        md.append("`direct-*` sends the provider's own format straight to the mock. `vs gateway-openai` compares "
                  "with the same gateway passing OpenAI through unchanged; `vs direct` with the mock in that format.\n")
        if tr:
            at = {r["path"]: r for r in tr}
            out = []
            for r in tr:
                fmt_ = r.get("format")
                d = at.get(f"direct-{fmt_}")
                out.append([r["path"], r["level"], r["rps"], r["p50"], r["p99"], r["non2xx"] + r.get("socket_errors", 0),
                            ratio(r["rps"], at.get("gateway-openai", {}).get("rps")),
                            ratio(r["rps"], d["rps"]) if d and r["path"].startswith("gateway") else None])
            md.append(table(["path (non-stream)", "c", "req/s", "p50 ms", "p99 ms", "errors", "vs gateway-openai", "vs direct"], out))
        if trs:
            at = {r["path"]: r for r in trs}
            md.append("\n")
            md.append(stream_table(trs, lambda r: at.get(f"direct-{r.get('format')}") if r["path"].startswith("gateway") else None))

    bd = by("body")
    if bd:
        size = bd[0].get("body_bytes", 0)
        md.append(f"\n## Large request body ({size} bytes, non-stream, wrk c={bd[0]['level']})\n\n")
        at = {r["path"]: r for r in bd}
        out = [[r["path"], r["rps"], r["p50"], r["p99"], r["non2xx"] + r.get("socket_errors", 0),
                ratio(r["rps"], at.get("direct", {}).get("rps")), ratio(r["rps"], at.get("nginx", {}).get("rps")),
                ratio(r["rps"], at.get("bare", {}).get("rps")), r["rps"] * size / 2**20] for r in bd]
        md.append(table(["path", "req/s", "p50 ms", "p99 ms", "errors", "vs direct", "vs nginx", "vs bare", "MiB/s in"], out))

    pg = by("pgcpu")
    if pg:
        r = pg[-1]
        hz = r.get("ticks_per_s") or 100
        per = lambda ticks: ticks * 1000 / hz / r["rows"] * 1000 if r["rows"] else None
        md.append("\n## PostgreSQL CPU per 1,000 logged requests\n\n")
        md.append(f"From `/proc/<pid>/stat` (utime + stime, {hz} ticks/s) before and after a gateway run, "
                  "divided by the rows it added to `request_logs`. \"This database\" sums the backends connected "
                  "to the run's database (the gateway's pool and listener, the admin API's pool); \"cluster\" adds "
                  "every process of the server, including other databases' work on a shared machine. "
                  f"pg_stat_statements installed: {'yes' if r.get('pg_stat_statements') else 'no'}.\n\n")
        md.append(table(["rows logged", "CPU ms, this database", "CPU ms, cluster", "ms per 1,000 rows, this database", "ms per 1,000 rows, cluster"],
                        [[r["rows"], r["ours_ticks"] * 1000 / hz, r["cluster_ticks"] * 1000 / hz, per(r["ours_ticks"]), per(r["cluster_ticks"])]]))

    lg = by("logs")
    if lg:
        r = lg[-1]
        ok = reconciled(r)
        md.append("\n## Log reconciliation\n\n")
        md.append("Answers counted by the load tools (wrk's completed requests, every stream started, cold-start "
                  "probes) are a lower bound: requests cut when wrk stops are answered and logged too.\n\n")
        md.append(table(["answers counted by clients", "perpetuo_requests_total", "rows written (metric)", "dropped", "rejected",
                         "spooled", "rows in request_logs", "holds"],
                        [[r["client_answered"], r["requests_metric"], r["written_metric"], r["dropped_metric"], r.get("rejected_metric"),
                          r.get("spooled_metric"), r["db_rows"], "yes" if ok else "**no**"]]))

    ca = by("cache")
    if ca:
        md.append("\n## Response cache (non-stream, wrk -t1, logging on)\n\n")
        md.append("The same request repeated: `gateway` asks the gateway not to use its cache (`Cache-Control: "
                  "no-store`, proxied to the mock), `gateway-hit` is answered from the in-process cache, "
                  "`gateway-hit-redis` from Redis at 127.0.0.1:6379; `nginx` proxies to the mock; `bare-answer` "
                  "is bare Pingora answering every request with the mock's answer from memory, no upstream: "
                  "the least an answer from memory costs on Pingora, so `vs gateway proxied` of `bare-answer` "
                  "bounds what any hit can reach. `CPU µs/req` is the row's own process's CPU time ÷ its "
                  "requests (nginx: its worker); `load busy` and `proxy busy` are the busy shares of the load "
                  "core (wrk, the mock, the database's backends when moved there) and of the proxy's core over "
                  "the row: a row whose load core is near 100 % is bound by the load side, not the proxy.\n\n")
        out = []
        for level in sorted({r["level"] for r in ca}):
            at = {r["path"]: r for r in ca if r["level"] == level}
            g, n = at.get("gateway"), at.get("nginx")
            for p in ["nginx", "bare-answer", "gateway", "gateway-hit", "gateway-hit-redis"]:
                r = at.get(p)
                if r:
                    cpu = per_request_us(r)
                    out.append([f"c={level}", p, r["rps"], r["p50"], r["p99"], r["non2xx"] + r.get("socket_errors", 0),
                                ratio(r["rps"], g and g["rps"]), ratio(r["p99"], n and n["p99"]),
                                pct(r.get("load_cpu_busy")), pct(r.get("proxy_cpu_busy")),
                                round(cpu, 2) if cpu is not None else "—"])
        md.append(table(["level", "path", "req/s", "p50 ms", "p99 ms", "errors", "vs gateway proxied",
                         "p99 ÷ nginx p99", "load busy", "proxy busy", "CPU µs/req"], out))
        for r in by("cache-lookup"):
            md.append(f"\nRedis lookups during `{r['path']}`: {r['lookups']}, mean {r['mean_us']} µs each "
                      "(`perpetuo_cache_lookup_seconds`).\n")
        cs = by("cache-stream")
        if cs:
            md.append("\nStreams (role chunk and content chunks, paced by the mock when proxied; a hit replays "
                      "the stored events at once):\n\n")
            md.append(table(["path", "streams", "completed", "TTFT p50 ms", "TTFT p99 ms", "peak RSS MiB"],
                            [[r["path"], r.get("streams"), r.get("completed"), r.get("ttft_ms", {}).get("p50"),
                              r.get("ttft_ms", {}).get("p99"), mib(r.get("peak_rss_kb", 0))] for r in cs]))

    li = by("limits")
    if li:
        md.append(render_limits(li))

    md.append(render_tracing(by("tracing"), by("tracing-export"), (by("tracing-setup") or [{}])[-1]))

    fails = by("failures")
    if fails:
        rows = fails[-1].get("rows") or []
        md.append("\n## Failed requests the gateway logged with the bench key (the whole run)\n\n")
        if rows:
            md.append(table(["error kind", "status", "rows"], [[r["error_kind"], r["status"], r["n"]] for r in rows]))
        else:
            md.append("None.\n")

    su = by("startup")
    if su:
        r = su[-1]
        runs = sorted(r["first_answer_us"])
        md.append("\n## Cold start\n\n")
        md.append("From exec of the gateway to its first proxied `200` (a chat completion through the "
                  "mock: key lookup in PostgreSQL, entry load, upstream connect), and to its first healthy `/healthz`.\n\n")
        md.append(table(["runs", "first answer ms (min / median / max)", "healthz ms (median)"],
                        [[len(runs), f"{runs[0]/1000:.0f} / {runs[len(runs)//2]/1000:.0f} / {runs[-1]/1000:.0f}",
                          sorted(r["healthz_us"])[len(runs)//2] / 1000]]))

    gl = by("growth-load")
    if gl:
        md.append("\n## Data growth\n\n")
        md.append("One workspace loaded in PostgreSQL (`bench/scripts/growth.py`): API keys, log rows spread over "
                  "90 days in time order (seven models on three provider entries, four front doors, 7 % errors, "
                  "90 % of the traffic from the busiest thousand keys), and the usage counters that sum them; then "
                  "VACUUM (ANALYZE). Each admin read is timed one request at a time on one keep-alive connection, "
                  "after one warm-up request (milliseconds, client side).\n\n")
        md.append(table(["log rows", "counter rows", "keys", "logs on disk MiB", "counters MiB", "rollup rows", "load s (keys / rows / counters / vacuum)", "counters and rollup = rows"],
                        [[r["rows"], r["counter_rows"], r["keys"], r["logs_bytes"] / 2**20, r["counters_bytes"] / 2**20,
                          r.get("rollup_rows") if r.get("rollup_rows") is not None else "-",
                          f"{r['keys_s']} / {r['rows_s']} / {r['counters_s']} / {r['vacuum_s']}",
                          "yes" if consistent(r) else "**no**"] for r in gl]))
        gq = by("growth-query")
        sizes = sorted({r["table_rows"] for r in gq})
        names = list(dict.fromkeys(r["query"] for r in gq))
        at = {(r["query"], r["table_rows"]): r for r in gq}
        cell = lambda r: "-" if r is None else f"{fmt(r['p50'])} / {'**' if r['p95'] > 150 else ''}{fmt(r['p95'])}{'**' if r['p95'] > 150 else ''}"
        md.append("\n### Admin reads, p50 / p95 ms (bold: p95 above 150 ms)\n\n")
        md.append(table(["read"] + [f"{n:,} rows" for n in sizes] + ["requests", "rows answered"],
                        [[q] + [cell(at.get((q, n))) for n in sizes] + [at[(q, sizes[-1])]["n"], at[(q, sizes[-1])]["rows"]] for q in names]))
    gi = by("growth-insert")
    if gi:
        hz = gi[0].get("ticks_per_s") or 100
        per = lambda r, k: r[k] * 1000 / hz / r["rows"] * 1000 if r["rows"] else None
        md.append("\n### PostgreSQL CPU per 1,000 logged requests as the table grows\n\n")
        md.append("As in the pgcpu section (non-stream through the gateway, wrk c=16); the rows in request_logs "
                  "are the planner's estimate.\n\n")
        md.append(table(["phase", "rows in request_logs", "rows logged", "ms per 1,000 rows, this database", "ms per 1,000 rows, cluster"],
                        [[r["phase"], r["table_rows"], r["rows"], per(r, "ours_ticks"), per(r, "cluster_ticks")] for r in gi]))
    gs = by("growth-startup")
    if gs:
        r = gs[-1]
        runs = sorted(r["first_answer_us"])
        md.append(f"\n### Cold start with {r.get('keys', '?'):,} keys in the database\n\n")
        md.append(table(["runs", "first answer ms (min / median / max)", "healthz ms (median)"],
                        [[len(runs), f"{runs[0]/1000:.0f} / {runs[len(runs)//2]/1000:.0f} / {runs[-1]/1000:.0f}",
                          sorted(r["healthz_us"])[len(runs)//2] / 1000]]))
    gk = by("growth-keys")
    if gk:
        r = gk[-1]
        md.append("\n### Key cache under traffic from many keys\n\n")
        md.append(f"A freshly started gateway; {r['requests']:,} chat completions one at a time, each with a key drawn as the "
                  f"log rows draw them from {r['keys']:,} keys. Misses are lookups in PostgreSQL.\n\n")
        cache = r.get("cache", {})
        md.append(table(["requests", "answers", "hits", "misses", "miss rate", "p50 ms", "p95 ms", "p99 ms"],
                        [[r["requests"], ", ".join(f"{k}: {v}" for k, v in sorted(r["statuses"].items())),
                          int(cache.get("hit", 0)), int(cache.get("miss", 0)), r.get("miss_rate"), r["p50"], r["p95"], r["p99"]]]))
    return "".join(md)


TRACING_CONFIGS = {
    "off": "tracing off (no OTEL_* variables)",
    "before": "the build before tracing",
    "1pct": "`traceidratio` 0.01, to the mock's collector",
    "100pct": "`always_on`, to the mock's collector",
    "blackhole": "`always_on`, to a collector that accepts and never answers (export timeout 2 s)",
}


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def render_limits(rows):
    """The limits section: per level and path the median over the rounds, and its ratio to
    the gateway without limits in the same run."""
    def median(xs):
        xs = sorted(xs)
        return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2
    rounds = max(r.get("round", 1) for r in rows)
    out = ["\n## Limits on the key (non-stream, medians over %d alternated round%s)\n\n"
           % (rounds, "" if rounds == 1 else "s"),
           "Per round and level: the key without limits (`gateway`), with limits high enough never to "
           "refuse in process (`gateway-limits`), and the same limits shared through Redis at "
           "127.0.0.1:6379 (`gateway-redis`, the gateway restarted with `REDIS_URL`).\n\n"]
    body = []
    for level in sorted({r["level"] for r in rows}):
        at = {}
        for r in rows:
            if r["level"] == level:
                at.setdefault(r["path"], []).append(r)
        base = median([r["rps"] for r in at.get("gateway", [])]) if at.get("gateway") else None
        for path in ("gateway", "gateway-limits", "gateway-redis"):
            rs = at.get(path)
            if not rs:
                continue
            rps = median([r["rps"] for r in rs])
            body.append([f"c={level}", path, round(rps), " / ".join(str(round(r["rps"])) for r in rs),
                         median([r["p99"] for r in rs]),
                         sum(r["non2xx"] + r.get("socket_errors", 0) for r in rs),
                         ratio(rps, base),
                         " / ".join(f"{r.get('load_cpu_busy', 0):.0%}" for r in rs),
                         " / ".join(f"{r.get('proxy_cpu_busy', 0):.0%}" for r in rs)])
    out.append(table(["level", "path", "req/s (median)", "req/s per round", "p99 ms (median)", "errors",
                      "vs gateway without limits", "load core busy", "proxy core busy"], body))
    return "".join(out)


def render_tracing(rows, exports, setup):
    """The tracing section: per configuration and level the median over the rounds, the
    ratios to `off` (and `off`'s to `before`), the issue's targets, then every round."""
    if not rows:
        return ""
    ex = {(r["path"], r["level"], r["round"]): r for r in exports}
    order = [c for c in TRACING_CONFIGS if any(r["path"] == c for r in rows)]
    rounds = sorted({r["round"] for r in rows})
    md = ["\n## Tracing: what it costs (non-stream, wrk -t1, the gateway restarted per configuration)\n\n"]
    if setup:
        md.append(f"Upstream: {setup.get('upstream', '?')}. After each start the database's backends serving the "
                  "run are moved to the load core (the log rows' cost to PostgreSQL, which grows with the table "
                  "through the run, does not land on the proxy's core).\n\n")
    md.append(f"{len(rounds)} round(s); in each, the gateway is restarted (and warmed) once per configuration, in "
              f"this order: {', '.join(f'`{c}`' for c in order)}. " + "; ".join(f"`{c}`: {TRACING_CONFIGS[c]}" for c in order)
              + ". `spans / request`: spans the collector received during the run ÷ requests wrk completed (4 "
              "spans a traced request: SERVER, authenticate, route, one attempt); `dropped`: "
              "`perpetuo_trace_spans_dropped_total` gained during the run; `gateway CPU µs / request`: the "
              "gateway process's utime + stime (its export thread included) ÷ requests; `load core` and `proxy "
              "core`: busy share of the two CPU cores over the run (`/proc/stat`, whatever ran there); `proxy core "
              "stolen`: the share of the run the hypervisor gave the proxy's core to another guest (steal, "
              "counted in busy). The gateway's CPU per request is the steadiest figure on a shared host: "
              "req/s and p99 move with what else runs there.\n\n")
    levels = sorted({r["level"] for r in rows})
    out, targets = [], []
    for level in levels:
        at = {c: [r for r in rows if r["path"] == c and r["level"] == level] for c in order}
        med = {c: {k: median([r.get(k) for r in rs]) for k in ("rps", "p50", "p99", "load_cpu_busy", "proxy_cpu_busy", "proxy_cpu_steal")}
               for c, rs in at.items() if rs}
        off, before = med.get("off", {}), med.get("before", {})
        for c in order:
            rs = at.get(c)
            if not rs:
                continue
            m = med[c]
            es = [ex.get((c, level, r["round"])) for r in rs]
            es = [e for e in es if e]
            requests = sum(r["requests"] for r in rs)
            spans = sum(e.get("spans", 0) for e in es) if es else None
            cpu_us = median([e["gateway_cpu_s"] * 1e6 / r["requests"] for r in rs for e in [ex.get((c, level, r["round"]))]
                             if e and r["requests"]])
            vs = ratio(m["rps"], off.get("rps")) if c != "off" else ratio(m["rps"], before.get("rps"))
            traced = c not in ("off", "before")
            out.append([f"c={level}", c, m["rps"], m["p50"], m["p99"], sum(r["non2xx"] + r.get("socket_errors", 0) for r in rs),
                        f"{fmt(vs)} (÷ before)" if c == "off" and vs is not None else None if c == "before" else vs,
                        ratio(m["p99"], off.get("p99")) if c != "off" else None,
                        ratio(spans, requests) if spans is not None and traced else None,
                        sum(e.get("dropped", 0) for e in es) if es and traced else None,
                        cpu_us, m["load_cpu_busy"], m["proxy_cpu_busy"], m["proxy_cpu_steal"]])
        goal = lambda name, value, ok: targets.append([f"c={level}", name, value, "" if value is None or ok is None else ("met" if ok(value) else "**missed**")])
        if before:
            goal("off ÷ before, req/s (within 5 %)", ratio(off.get("rps"), before.get("rps")), lambda v: abs(v - 1) <= 0.05)
        if "1pct" in med:
            goal("1 % ÷ off, req/s (no target)", ratio(med["1pct"]["rps"], off.get("rps")), None)
        if "100pct" in med:
            goal("100 % ÷ off, req/s (≥ 0.90)", ratio(med["100pct"]["rps"], off.get("rps")), lambda v: v >= 0.9)
        if "blackhole" in med:
            goal("blackhole p99 ÷ off p99 (≤ 1.10)", ratio(med["blackhole"]["p99"], off.get("p99")), lambda v: v <= 1.1)
            if "100pct" in med:
                goal("blackhole p99 ÷ 100 % p99 (no target: the same spans, the collector silent)",
                     ratio(med["blackhole"]["p99"], med["100pct"]["p99"]), None)
    md.append("Medians over the rounds (ratios: of the medians; `vs off` is req/s, for `off` itself req/s ÷ `before`):\n")
    md.append(table(["level", "configuration", "req/s", "p50 ms", "p99 ms", "errors", "vs off", "p99 ÷ off p99",
                     "spans / request", "dropped", "gateway CPU µs / request", "load core", "proxy core", "proxy core stolen"], out))
    if targets:
        md.append("\nThe targets, on the medians:\n")
        md.append(table(["level", "ratio", "value", ""], [[a, b, c, d] for a, b, c, d in targets]))
    per = []
    for r in sorted(rows, key=lambda r: (r["round"], r["level"], order.index(r["path"]) if r["path"] in order else 9)):
        off = next((o for o in rows if o["path"] == "off" and o["level"] == r["level"] and o["round"] == r["round"]), None)
        e = ex.get((r["path"], r["level"], r["round"]), {})
        traced = r["path"] not in ("off", "before")
        per.append([r["round"], f"c={r['level']}", r["path"], r["rps"], r["p50"], r["p99"], r["non2xx"] + r.get("socket_errors", 0),
                    ratio(r["rps"], off and off["rps"]) if r["path"] != "off" else None,
                    ratio(r["p99"], off and off["p99"]) if r["path"] != "off" else None,
                    *([e.get("spans"), e.get("exports"), e.get("dropped")] if traced else [None] * 3),
                    e["gateway_cpu_s"] * 1e6 / r["requests"] if e and r["requests"] else None,
                    r.get("load_cpu_busy"), r.get("proxy_cpu_busy"), r.get("proxy_cpu_steal")])
    lost = {c: sum(e.get("log_rows_lost_total", 0) for e in exports if e["path"] == c) for c in order}
    written = {c: sum(e.get("log_rows_written_total", 0) for e in exports if e["path"] == c) for c in order}
    if any(written.values()):
        md.append("\nLog rows (`perpetuo_log_rows_written_total`, and dropped + rejected, read after each row, "
                  "summed): " + "; ".join(f"`{c}` {written[c]:,} written, {lost[c]} lost" for c in order) + ".\n")
    md.append("\nEvery round (`vs off`: req/s ÷ `off`'s in the same round and level):\n")
    md.append(table(["round", "level", "configuration", "req/s", "p50 ms", "p99 ms", "errors", "vs off", "p99 ÷ off p99", "spans received",
                     "exports", "dropped", "gateway CPU µs / request", "load core", "proxy core", "proxy core stolen"], per))
    return "".join(md)


def consistent(r):
    """The growth level's counters, and rollup where there is one, sum its rows."""
    return r["counted_requests"] == r["rows"] and r.get("rollup_requests") in (None, r["rows"])


def reconciled(r):
    return (r["db_rows"] == r["written_metric"] and r["dropped_metric"] == 0
            and r["db_rows"] >= r["client_answered"] > 0)


def check(rows, sections):
    problems = []
    by = lambda s: [r for r in rows if r.get("section") == s]
    for s in sections:
        if s == "nonstream":
            rs = by("nonstream")
            if not rs or any(r["requests"] <= 0 or r["rps"] <= 0 for r in rs):
                problems.append("nonstream: a path produced no requests")
            if not by("rss") or any(r["rss_kb"] <= 0 for r in by("rss")):
                problems.append("nonstream: no RSS figures")
        elif s == "stream":
            rs = by("stream")
            if not rs or any(r.get("completed", 0) <= 0 or not r.get("ttft_ms", {}).get("count") or r.get("peak_rss_kb", 0) <= 0 for r in rs):
                problems.append("stream: a path completed no stream (or has no TTFT / peak RSS)")
        elif s == "translate":
            if not by("translate") or any(r["requests"] <= 0 for r in by("translate")):
                problems.append("translate: a non-stream path produced no requests")
            if not by("translate-stream") or any(r.get("completed", 0) <= 0 for r in by("translate-stream")):
                problems.append("translate: a streamed path completed no stream")
        elif s == "body":
            if not by("body") or any(r["requests"] <= 0 for r in by("body")):
                problems.append("body: a path produced no requests")
        elif s == "pgcpu":
            if not by("pgcpu") or by("pgcpu")[-1]["rows"] <= 0:
                problems.append("pgcpu: no rows logged")
        elif s == "logs":
            if not by("logs"):
                problems.append("logs: no figures")
            elif not reconciled(by("logs")[-1]):
                problems.append(f"logs: reconciliation does not hold: {by('logs')[-1]}")
        elif s == "cache":
            rs = by("cache")
            if not rs or any(r["requests"] <= 0 or r["non2xx"] > 0 for r in rs):
                problems.append("cache: a path produced no requests (or errors)")
            if not by("cache-stream") or any(r.get("completed", 0) <= 0 for r in by("cache-stream")):
                problems.append("cache: a streamed path completed no stream")
        elif s == "limits":
            if not by("limits") or any(r["requests"] <= 0 for r in by("limits")):
                problems.append("limits: a path produced no requests")
        elif s == "growth":
            gl, gq = by("growth-load"), by("growth-query")
            if not gl or any(r["rows"] < r["rows_asked"] for r in gl):
                problems.append("growth: the rows were not loaded")
            elif not all(consistent(r) for r in gl):
                problems.append("growth: the usage counters (or the rollup) do not sum the rows")
            if not gq or any(r["n"] <= 0 for r in gq):
                problems.append("growth: an admin read was not timed")
            if not by("growth-insert") or any(r["rows"] <= 0 for r in by("growth-insert")):
                problems.append("growth: no rows logged for the insert cost")
            if not by("growth-startup") or not by("growth-keys") or by("growth-keys")[-1]["statuses"].get("200", 0) <= 0:
                problems.append("growth: no cold start or key cache figures")
        elif s == "tracing":
            rs = by("tracing")
            missing = [c for c in ("off", "1pct", "100pct", "blackhole") if not any(r["path"] == c for r in rs)]
            if missing or any(r["requests"] <= 0 or r["non2xx"] > 0 for r in rs):
                problems.append(f"tracing: a configuration produced no requests (or errors); missing: {missing}")
            ex = by("tracing-export")
            if not any(e["path"] == "100pct" and e.get("spans", 0) > 0 for e in ex):
                problems.append("tracing: the collector received no spans at 100 %")
            if any(e.get("log_rows_written_total", 0) <= 0 or e.get("log_rows_lost_total", 0) > 0 for e in ex):
                problems.append("tracing: a configuration's gateway logged no rows, or lost some")
        elif s == "startup":
            if not by("startup") or min(by("startup")[-1]["first_answer_us"]) <= 0:
                problems.append("startup: no figures")
    return problems


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("wrk")
    w.add_argument("file")
    w.add_argument("--section", required=True)
    w.add_argument("--path", required=True)
    w.add_argument("--level", type=int, required=True)
    w.add_argument("--extra", default="{}")
    st = sub.add_parser("strace")
    st.add_argument("file")
    st.add_argument("--path", required=True)
    st.add_argument("--requests", type=int, required=True)
    r = sub.add_parser("render")
    r.add_argument("results")
    r.add_argument("--out", required=True)
    r.add_argument("--check", default="")
    a = ap.parse_args()
    if a.cmd == "wrk":
        d = {"section": a.section, "path": a.path, "level": a.level}
        d.update(parse_wrk(open(a.file).read()))
        d.update(json.loads(a.extra))
        print(json.dumps(d))
        return 0
    if a.cmd == "strace":
        calls = parse_strace(open(a.file).read())
        print(json.dumps({"section": "syscalls-count", "path": a.path, "requests": a.requests, "calls": calls}))
        return 0
    rows = [json.loads(l) for l in open(a.results) if l.strip()]
    open(a.out, "w").write(render(rows))
    if a.check:
        problems = check(rows, [s for s in a.check.split(",") if s])
        for p in problems:
            print(f"smoke check failed: {p}", file=sys.stderr)
        if problems:
            return 1
        print("smoke check: every section produced figures", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
