#!/usr/bin/env python3
"""Fails when the alert rules or the Grafana dashboards use a perpetuo_* metric name the
gateway does not export.

  check-metric-names.py --source gateway/src/metrics.rs          names the code declares
  check-metric-names.py --url http://127.0.0.1:9091/metrics      names a running gateway serves
"""
import argparse
import glob
import re
import sys
import urllib.request

NAME = re.compile(r"\bperpetuo_[a-z0-9_]+\b")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
USERS = ["conf/alerts.yml", *sorted(glob.glob("conf/grafana/dashboards/*.json"))]


def used_names():
    used = {}
    for path in USERS:
        with open(path, encoding="utf-8") as f:
            for name in NAME.findall(f.read()):
                used.setdefault(name, set()).add(path)
    return used


def declared_in_source(path):
    """Metric names in string literals of the metrics module; histograms add their series."""
    text = open(path, encoding="utf-8").read()
    names = set()
    for m in re.finditer(r'(\w+)\(\s*"(perpetuo_[a-z0-9_]+)"', text):
        constructor, name = m.groups()
        names.add(name)
        if constructor == "histogram":
            names.update(name + s for s in HISTOGRAM_SUFFIXES)
    return names


def exported_by(url):
    """Sample names of a scrape, plus the series of every histogram family it declares."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = resp.read().decode("utf-8")
    names = set()
    for line in body.splitlines():
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) >= 4:
                names.add(parts[2])
                if parts[3] == "histogram":
                    names.update(parts[2] + s for s in HISTOGRAM_SUFFIXES)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def main():
    ap = argparse.ArgumentParser()
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--source", help="the gateway's metrics module")
    group.add_argument("--url", help="a running gateway's /metrics")
    args = ap.parse_args()
    known = declared_in_source(args.source) if args.source else exported_by(args.url)
    used = used_names()
    if not used:
        print("no perpetuo_* metric names found in " + ", ".join(USERS), file=sys.stderr)
        return 1
    missing = {n: files for n, files in used.items() if n not in known}
    for name, files in sorted(missing.items()):
        print(f"{name}: used in {', '.join(sorted(files))} but not exported "
              f"({args.source or args.url})", file=sys.stderr)
    if missing:
        return 1
    print(f"metric names: {len(used)} used in {len(USERS)} files, all exported "
          f"({args.source or args.url})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
