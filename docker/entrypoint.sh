#!/bin/sh
# Container entry point: refuses to start while a secret is missing or still holds the
# placeholder of .env.example (values are never printed), then runs the command.
set -eu
refuse() {
  echo "perpetuo: $1 $2; set it in .env (see .env.example) and start again" >&2
  exit 78
}
secret() { printenv "$1" || true; }

for var in JWT_SECRET PERPETUO_MASTER_KEY DATABASE_URL; do
  case "$(secret "$var")" in
    *change-me*) refuse "$var" "still holds the placeholder from .env.example" ;;
  esac
done
case "${1:-}" in
  perpetuo-admin | */perpetuo-admin) required="DATABASE_URL JWT_SECRET PERPETUO_MASTER_KEY" ;;
  perpetuo-gateway | */perpetuo-gateway) required="DATABASE_URL PERPETUO_MASTER_KEY" ;;
  *) required="" ;;
esac
for var in $required; do
  [ -n "$(secret "$var")" ] || refuse "$var" "is not set"
done
# A URL with an empty password (user:@host) is what compose builds when POSTGRES_PASSWORD is unset.
case "$(secret DATABASE_URL)" in
  *://*:@*) refuse "DATABASE_URL" "has an empty password (POSTGRES_PASSWORD)" ;;
esac
# Compose passes optional variables through as empty strings; empty means unset here.
[ -n "$(secret PERPETUO_MASTER_KEY_PREVIOUS)" ] || unset PERPETUO_MASTER_KEY_PREVIOUS
exec "$@"
