#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster on 127.0.0.1 for the tests and prints its admin URL.
# Usage: scripts/pg.sh start DIR PORT | scripts/pg.sh stop DIR
# PostgreSQL refuses to run as root, so the cluster runs as the `postgres` system user.
set -euo pipefail
cmd=$1 dir=$2
as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi; }
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$bindir/initdb" ] || { echo "PostgreSQL server binaries not found under /usr/lib/postgresql (apt-get install postgresql)" >&2; exit 1; }
case $cmd in
start)
  port=$3
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres "$dir"
  as_pg "'$bindir/initdb' -D '$dir/data' -A trust -U postgres --no-sync >'$dir/initdb.log' 2>&1"
  as_pg "'$bindir/pg_ctl' -D '$dir/data' -w -o \"-p $port -k '$dir' -c listen_addresses=127.0.0.1 -c fsync=${CALLBACKD_PG_FSYNC:-off} -c max_connections=300\" -l '$dir/log' start >/dev/null"
  echo "postgres://postgres@127.0.0.1:$port/postgres"
  ;;
stop)
  as_pg "'$bindir/pg_ctl' -D '$dir/data' -m fast stop >/dev/null" || true
  ;;
esac
