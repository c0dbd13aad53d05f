#!/usr/bin/env python3
"""HTTP checks of a running compose stack, through its published loopback ports only.
Used by .ci/compose-smoke.sh; each subcommand exits non-zero with a reason on failure.
Every wait is bounded."""
import argparse
import json
import re
import sys
import time
import urllib.error
import urllib.request

MODEL = "gpt-4o-mini"


def fail(msg):
    print(f"stack-check: {msg}", file=sys.stderr)
    sys.exit(1)


def request(method, url, body=None, token=None, timeout=30):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def json_ok(method, url, body=None, token=None, expect=(200, 201)):
    status, _, raw = request(method, url, body, token)
    if status not in expect:
        fail(f"{method} {url}: {status} {raw[:300]!r}")
    return json.loads(raw)


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def chat(gateway, key, stream=False):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello"}]}
    if stream:
        body["stream"] = True
    return request("POST", f"{gateway}/v1/chat/completions", body, key)


def setup(a):
    signup = json_ok("POST", f"{a.admin}/auth/signup",
                     {"email": "ops@example.com", "password": "correct horse battery staple 7"})
    token, ws = signup["token"], signup["workspace"]["id"]
    key = signup["api_key"]["key"]
    json_ok("POST", f"{a.admin}/workspaces/{ws}/providers",
            {"kind": "openai_compatible", "name": "mock", "api_key": "sk-mock-upstream",
             "base_url": a.mock_base_url, "priority": 1, "enabled": True}, token)
    status, headers, raw = request("GET", f"{a.admin}/")
    if status != 200 or b"<div id=\"root\"" not in raw:
        fail(f"GET / on the admin does not serve the dashboard: {status}")
    with open(a.state, "w", encoding="utf-8") as f:
        json.dump({"token": token, "workspace": ws, "key": key}, f)
    print(f"signed up, workspace {ws}, provider added ({a.mock_base_url}), dashboard served")


def traffic(a):
    st = load(a.state)
    status, headers, raw = chat(a.gateway, st["key"])
    if status != 200:
        fail(f"chat completion: {status} {raw[:300]!r}")
    answer = json.loads(raw)
    if not answer.get("choices") or not answer["choices"][0]["message"].get("content"):
        fail(f"chat completion without content: {raw[:300]!r}")
    lower = {k.lower(): v for k, v in headers.items()}
    for h in ("x-request-id", "x-perpetuo-provider"):
        if h not in lower:
            fail(f"chat completion without the {h} header")
    status, headers, raw = chat(a.gateway, st["key"], stream=True)
    if status != 200:
        fail(f"streamed chat completion: {status} {raw[:300]!r}")
    events = [line[6:] for line in raw.decode().splitlines() if line.startswith("data: ")]
    if not events or events[-1] != "[DONE]":
        fail(f"stream does not end with [DONE]: {raw[-300:]!r}")
    text = "".join((json.loads(e)["choices"] or [{}])[0].get("delta", {}).get("content") or ""
                   for e in events[:-1])
    if not text:
        fail("stream carried no content")
    status, _, _ = chat(a.gateway, "pk-not-a-real-key")
    if status != 401:
        fail(f"a bad key was answered {status}, not 401")
    print(f"chat: non-stream and stream ({len(events)} events) answered, bad key refused")


def logs(a):
    st = load(a.state)
    deadline = time.monotonic() + a.timeout
    while True:
        page = json_ok("GET", f"{a.admin}/workspaces/{st['workspace']}/logs?limit=50&count=true",
                       token=st["token"])
        if page["total"] >= a.at_least:
            statuses = sorted({row.get("status") for row in page["data"]}, key=str)
            print(f"logs: {page['total']} rows (statuses {statuses})")
            return
        if time.monotonic() > deadline:
            fail(f"only {page['total']} log rows after {a.timeout}s, expected {a.at_least}")
        time.sleep(0.5)


def served(metrics_url):
    """2xx chat completions a replica has counted (health checks count as route "other")."""
    with urllib.request.urlopen(metrics_url, timeout=10) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if (line.startswith("perpetuo_requests_total{") and 'route="chat"' in line
                and 'status_class="2xx"' in line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def metrics(a):
    n = served(a.metrics)
    if n < a.at_least:
        fail(f"{a.metrics} counts {n} 2xx requests, expected at least {a.at_least}")
    print(f"metrics: {n:.0f} 2xx requests counted")


def spread(a):
    st = load(a.state)
    before = [served(m) for m in a.metrics]
    for i in range(a.requests):
        status, _, raw = chat(a.lb, st["key"], stream=bool(i % 2))
        if status != 200:
            fail(f"request {i} through the load balancer: {status} {raw[:200]!r}")
    after = [served(m) for m in a.metrics]
    per = [b - a_ for a_, b in zip(before, after)]
    if any(p < 1 for p in per) or sum(per) != a.requests:
        fail(f"{a.requests} requests through the load balancer were served {per} by the replicas")
    print(f"scale: {a.requests} requests through the load balancer, served {per} by the replicas")


def revoke(a):
    st = load(a.state)
    ws, token = st["workspace"], st["token"]
    created = json_ok("POST", f"{a.admin}/workspaces/{ws}/api-keys", {"name": "revoke-check"}, token)
    key, kid = created["key"], created["id"]
    for g in a.gateways:  # warm every replica's key cache
        status, _, raw = chat(g, key)
        if status != 200:
            fail(f"new key refused by {g} before revocation: {status} {raw[:200]!r}")
    json_ok("POST", f"{a.admin}/workspaces/{ws}/api-keys/{kid}/revoke", {}, token, expect=(200, 204))
    start = time.monotonic()
    pending = set(a.gateways)
    while pending:
        for g in sorted(pending):
            status, _, _ = chat(g, key)
            if status == 401:
                pending.discard(g)
        if pending and time.monotonic() - start > a.timeout:
            fail(f"revoked key still accepted by {sorted(pending)} after {a.timeout}s")
        if pending:
            time.sleep(0.2)
    print(f"revocation: refused by {len(a.gateways)} replicas within {time.monotonic() - start:.1f}s")


def prometheus(a):
    deadline = time.monotonic() + a.timeout
    up, n_rules, last = [], 0, ""
    while True:
        try:
            # Prometheus answers 503 until it has loaded its configuration, and
            # docker's port proxy resets connections until the server listens.
            t_status, _, t_raw = request("GET", f"{a.url}/api/v1/targets")
            r_status, _, r_raw = request("GET", f"{a.url}/api/v1/rules")
            if t_status == 200 and r_status == 200:
                targets = json.loads(t_raw)["data"]["activeTargets"]
                up = [t["labels"].get("instance") for t in targets if t.get("health") == "up"]
                n_rules = sum(len(g["rules"]) for g in json.loads(r_raw)["data"]["groups"])
            else:
                last = f"answers {t_status} / {r_status}"
        except OSError as e:
            last = f"not answering: {e}"
        if len(up) >= a.targets and n_rules >= 1:
            print(f"prometheus: {len(up)} gateway target(s) up {up}, {n_rules} alert rules loaded")
            return
        if time.monotonic() > deadline:
            fail(f"prometheus: {len(up)} targets up of {a.targets}, {n_rules} rules, after {a.timeout}s ({last})")
        time.sleep(1)


GRAFANA_LOGIN = ("GF_SECURITY_ADMIN_USER", "GF_SECURITY_ADMIN_PASSWORD")
# A compose value that is only a variable, with no default or an empty one: ${VAR}, ${VAR:-}.
BARE_VARIABLE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:?-)?\}$")
# A provisioning value taken from the environment: $VAR or ${VAR}.
ENV_REFERENCE = re.compile(r"^\$(\{[A-Za-z_][A-Za-z0-9_]*\}|[A-Za-z_][A-Za-z0-9_]*)$")
SECRET_KEY = re.compile(r"password|secret", re.IGNORECASE)


def environment(service):
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


def secret_literals(node, where):
    """Keys named like a password or secret holding a literal value, anywhere in `node`."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if (isinstance(key, str) and SECRET_KEY.search(key) and isinstance(value, (str, int))
                    and str(value) != "" and not ENV_REFERENCE.match(str(value))):
                found.append(f"{where}: {key}")
            found += secret_literals(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found += secret_literals(item, f"{where}[{i}]")
    return found


def dotenv(path):
    values = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, value = line.split("=", 1)
                values[key.strip()] = value.split("#", 1)[0].strip()
    return values


def grafana_login(a):
    """Static: Grafana never starts with a default login. Its user and password come from
    the environment with no default in every compose file; the container's guard refuses
    an empty, placeholder or default password (run here through /bin/sh, as the image
    would, with `true` in place of Grafana); no provisioning file holds a literal password."""
    import glob
    import os
    import subprocess
    import yaml

    problems = []
    guard = None
    for path in a.compose:
        with open(path, encoding="utf-8") as f:
            services = (yaml.safe_load(f) or {}).get("services") or {}
        for name, service in services.items():
            env = environment(service or {})
            # Grafana itself: the image grafana/grafana*, not another of Grafana Labs' images
            # (grafana/tempo).
            image = str((service or {}).get("image", ""))
            is_grafana = "grafana" in name or re.search(r"grafana/grafana", image) is not None
            for key, value in env.items():
                if not (key.startswith("GF_") and SECRET_KEY.search(key)):
                    continue
                if value is None or not BARE_VARIABLE.match(str(value)):
                    problems.append(f"{path}: {name}.environment.{key} = {value!r} has a literal "
                                    "value or a default; take it from .env with no default")
            if path == a.compose[0] and is_grafana:
                for key in GRAFANA_LOGIN:
                    if key not in env:
                        problems.append(f"{path}: {name} does not set {key} (Grafana's default is admin)")
                    elif not BARE_VARIABLE.match(str(env[key])):
                        problems.append(f"{path}: {name}.environment.{key} = {env[key]!r} has a "
                                        "literal value or a default; take it from .env with no default")
                entrypoint = (service or {}).get("entrypoint")
                if (isinstance(entrypoint, list) and len(entrypoint) >= 3
                        and entrypoint[:2] == ["/bin/sh", "-c"]):
                    guard = entrypoint[2]
                else:
                    problems.append(f"{path}: {name} has no /bin/sh -c login guard as its entrypoint")
    if guard is not None:
        if re.search(r"(?<!\$)\$(?!\$)", guard.replace("$$", "")):
            problems.append("the guard has a single $: compose would interpolate it; write $$")
        script = guard.replace("$$", "$")
        example = dotenv(a.env_example)
        refused = [("admin", "admin"), ("ops", "admin"), ("", "a long enough password"), ("admin", ""),
                   ("admin", "change-me"), ("ops", "short"), ("grafana-admin", "grafana-admin"),
                   ("", ""),
                   (example.get("GRAFANA_ADMIN_USER", ""), example.get("GRAFANA_ADMIN_PASSWORD", ""))]
        for user, password in refused:
            run = subprocess.run(["/bin/sh", "-c", script, "grafana-login", "true"],
                                 env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                      GRAFANA_LOGIN[0]: user, GRAFANA_LOGIN[1]: password},
                                 capture_output=True, text=True, timeout=10)
            if run.returncode != 78 or "GRAFANA_ADMIN_PASSWORD" not in run.stderr:
                problems.append(f"the guard let user {user!r} with password {password!r} start "
                                f"(exit {run.returncode})")
        run = subprocess.run(["/bin/sh", "-c", script, "grafana-login", "true"],
                             env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                  GRAFANA_LOGIN[0]: "ops", GRAFANA_LOGIN[1]: "correct horse battery"},
                             capture_output=True, text=True, timeout=10)
        if run.returncode != 0:
            problems.append(f"the guard refused a good login (exit {run.returncode}: {run.stderr.strip()})")
    for path in sorted(glob.glob(f"{a.grafana_dir}/**/*", recursive=True)):
        if os.path.isdir(path):
            continue
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if path.endswith((".yml", ".yaml")):
            for doc in yaml.safe_load_all(text):
                problems += secret_literals(doc, path)
        elif path.endswith(".json"):
            problems += secret_literals(json.loads(text), path)
        else:
            problems += [f"{path}: {m.group(1)}" for m in
                         re.finditer(r"(?im)^\s*([a-z_]*(?:password|secret)[a-z_]*)\s*=\s*\S", text)]
        if re.search(r"admin:admin", text):
            problems.append(f"{path}: admin:admin")
    if problems:
        fail("Grafana login:\n  " + "\n  ".join(dict.fromkeys(problems)))
    print("grafana login: from .env with no default, the guard refuses empty, placeholder and "
          "default passwords, no literal password in the provisioning files")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("setup"); p.add_argument("--admin", required=True)
    p.add_argument("--mock-base-url", required=True); p.add_argument("--state", required=True)
    p.set_defaults(run=setup)
    p = sub.add_parser("traffic"); p.add_argument("--gateway", required=True)
    p.add_argument("--state", required=True); p.set_defaults(run=traffic)
    p = sub.add_parser("logs"); p.add_argument("--admin", required=True)
    p.add_argument("--state", required=True); p.add_argument("--at-least", type=int, default=2)
    p.add_argument("--timeout", type=float, default=30); p.set_defaults(run=logs)
    p = sub.add_parser("metrics"); p.add_argument("--metrics", required=True)
    p.add_argument("--at-least", type=int, default=2); p.set_defaults(run=metrics)
    p = sub.add_parser("spread"); p.add_argument("--lb", required=True)
    p.add_argument("--metrics", nargs=2, required=True); p.add_argument("--state", required=True)
    p.add_argument("--requests", type=int, default=20); p.set_defaults(run=spread)
    p = sub.add_parser("revoke"); p.add_argument("--admin", required=True)
    p.add_argument("--gateways", nargs="+", required=True); p.add_argument("--state", required=True)
    p.add_argument("--timeout", type=float, default=10); p.set_defaults(run=revoke)
    p = sub.add_parser("prometheus"); p.add_argument("--url", required=True)
    p.add_argument("--targets", type=int, default=1); p.add_argument("--timeout", type=float, default=60)
    p.set_defaults(run=prometheus)
    p = sub.add_parser("grafana-login", help="static: no default Grafana login (no network)")
    p.add_argument("--compose", nargs="+", default=["docker-compose.yml", ".ci/compose.ci.yml"])
    p.add_argument("--env-example", default=".env.example")
    p.add_argument("--grafana-dir", default="conf/grafana")
    p.set_defaults(run=grafana_login)
    a = ap.parse_args()
    a.run(a)


if __name__ == "__main__":
    main()
