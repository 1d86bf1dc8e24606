#!/usr/bin/env bash
# Start a throwaway PostgreSQL cluster for the consent-registry tests and print the URL.
#
#   eval "$(.ci/postgres.sh)"      # exports DEIDFLOW_TEST_PG_URL
#
# On a fresh Debian machine as root it apt-installs postgresql if missing; the cluster lives in
# a temp directory owned by the postgres user (PostgreSQL refuses to run as root), listens on
# 127.0.0.1 only, port 55432 so that it never collides with a system cluster on 5432.
# Idempotent: a second call finds the running cluster and only prints the export line.
# Everything except the export line goes to stderr so that `eval` sees one command.
set -euo pipefail

PORT="${DEIDFLOW_PG_PORT:-55432}"
DIR="${DEIDFLOW_PG_DIR:-${TMPDIR:-/tmp}/deidflow-pg-$PORT}"
DB="${DEIDFLOW_PG_DB:-deidflow_test}"
PGUSER_NAME=deidflow
PGPASS=deidflow-test   # throwaway cluster on loopback only: not a secret
log() { echo "postgres.sh: $*" >&2; }

find_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  done
  command -v initdb >/dev/null 2>&1 && { dirname "$(command -v initdb)"; return 0; }
  return 1
}

BIN="$(find_bin || true)"
if [ -z "$BIN" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    log "PostgreSQL is not installed and we are not root; install 'postgresql' or run as root"
    exit 1
  fi
  log "installing postgresql (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
  BIN="$(find_bin)"
fi

# Run cluster commands as the postgres user when we are root, as ourselves otherwise.
if [ "$(id -u)" -eq 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
  as_owner() { runuser -u postgres -- "$@"; }
  OWNER=postgres
else
  as_owner() { "$@"; }
  OWNER="$(id -un)"
fi

DATA="$DIR/data"
SOCK="$DIR/socket"
if [ ! -s "$DATA/PG_VERSION" ]; then
  log "initdb in $DATA"
  mkdir -p "$DIR"
  chown "$OWNER" "$DIR"
  chmod 700 "$DIR"
  as_owner mkdir -p "$SOCK"
  as_owner "$BIN/initdb" -D "$DATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    -E UTF8 --locale=C.UTF-8 >&2
fi

if ! as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  log "starting on 127.0.0.1:$PORT"
  as_owner "$BIN/pg_ctl" -D "$DATA" -l "$DIR/server.log" -w -t 60 start \
    -o "-h 127.0.0.1 -p $PORT -k $SOCK -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" >&2
fi

psql_owner() { as_owner "$BIN/psql" -h "$SOCK" -p "$PORT" -U postgres -v ON_ERROR_STOP=1 -qAt "$@"; }
if [ "$(psql_owner -d postgres -c "SELECT 1 FROM pg_roles WHERE rolname='$PGUSER_NAME'")" != 1 ]; then
  psql_owner -d postgres -c "CREATE ROLE $PGUSER_NAME LOGIN PASSWORD '$PGPASS' CREATEDB" >&2
fi
if [ "$(psql_owner -d postgres -c "SELECT 1 FROM pg_database WHERE datname='$DB'")" != 1 ]; then
  psql_owner -d postgres -c "CREATE DATABASE $DB OWNER $PGUSER_NAME" >&2
fi

echo "export DEIDFLOW_TEST_PG_URL=postgresql+psycopg://$PGUSER_NAME:$PGPASS@127.0.0.1:$PORT/$DB"
