#!/usr/bin/env python3
"""Static checks of the observability profile's tracing files (the collector and Tempo
have no Debian package and no reachable registry, so they are not run in CI): the files
parse, the collector receives OTLP/HTTP on the port the gateway is told to send to, it
exports to the port Tempo receives on, and Grafana's Tempo data source is Tempo's HTTP
port. Trace delivery itself is proved by the gateway tests' OTLP receiver."""
import re
import sys

import yaml


def fail(msg):
    print(f"tracing stack: {msg}", file=sys.stderr)
    sys.exit(1)


def port(endpoint):
    m = re.search(r":(\d+)$", endpoint)
    return int(m.group(1)) if m else None


compose = yaml.safe_load(open("docker-compose.yml"))
services = compose["services"]
for name in ("otel-collector", "tempo"):
    if "observability" not in services.get(name, {}).get("profiles", []):
        fail(f"{name} is not in the observability profile")

collector = yaml.safe_load(open("conf/otel-collector.yaml"))
http = collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
example = open(".env.example").read()
m = re.search(r"OTEL_EXPORTER_OTLP_ENDPOINT=http://otel-collector:(\d+)", example)
if not m or int(m.group(1)) != port(http):
    fail(f".env.example's OTEL_EXPORTER_OTLP_ENDPOINT does not reach the collector's OTLP/HTTP receiver ({http})")
pipeline = collector["service"]["pipelines"]["traces"]
for exporter in pipeline["exporters"]:
    if exporter not in collector["exporters"]:
        fail(f"the traces pipeline exports to an undefined exporter {exporter}")
if "otlp" not in pipeline["receivers"]:
    fail("the traces pipeline does not receive OTLP")
to_tempo = collector["exporters"]["otlp/tempo"]["endpoint"]

tempo = yaml.safe_load(open("conf/tempo.yaml"))
tempo_grpc = tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
if not to_tempo.startswith("tempo:") or port(to_tempo) != port(tempo_grpc):
    fail(f"the collector exports to {to_tempo}, Tempo receives on {tempo_grpc}")
tempo_http = tempo["server"]["http_listen_port"]

ds = yaml.safe_load(open("conf/grafana/provisioning/datasources/tempo.yml"))["datasources"]
urls = [d["url"] for d in ds if d["type"] == "tempo"]
if urls != [f"http://tempo:{tempo_http}"]:
    fail(f"Grafana's Tempo data source {urls} is not Tempo's HTTP port {tempo_http}")
if "{trace_id}" not in example.split("TRACE_URL_TEMPLATE=", 1)[-1].split("\n", 1)[0]:
    fail(".env.example's TRACE_URL_TEMPLATE does not name {trace_id}")
gateway_env = compose["x-gateway"]["environment"]
if "OTEL_EXPORTER_OTLP_ENDPOINT" not in gateway_env:
    fail("the gateways are not given OTEL_EXPORTER_OTLP_ENDPOINT")
if "OTEL_EXPORTER_OTLP_ENDPOINT" not in compose["services"]["admin"]["environment"]:
    fail("the admin API is not given OTEL_EXPORTER_OTLP_ENDPOINT")
print("tracing stack: collector, Tempo and Grafana's data source agree")
