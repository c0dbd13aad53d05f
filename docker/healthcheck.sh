#!/bin/bash
# Container health check: GET /healthz on the port of the binary this container runs (the
# admin's answers 200 only while PostgreSQL is reachable). Plain bash, no HTTP client in
# the image.
set -eu
case "$(tr '\0' ' ' </proc/1/cmdline)" in
  *perpetuo-gateway*) addr="${GATEWAY_ADDR:-127.0.0.1:8000}" ;;
  *perpetuo-admin*) addr="${ADMIN_ADDR:-127.0.0.1:3000}" ;;
  *) exit 0 ;;
esac
exec 3<>"/dev/tcp/127.0.0.1/${addr##*:}"
printf 'GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3
IFS= read -r -t 4 status <&3
case "$status" in
  "HTTP/1."?" 200"*) exit 0 ;;
  *) exit 1 ;;
esac
