#!/usr/bin/env bash
# Store benchmark: starts a PostgreSQL with fsync on (durable, as in production) on a free
# loopback port, runs bench/store.rs against it and against SQLite, prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
pgdir=$(mktemp -d /tmp/callbackd-bench-pg.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
trap 'scripts/pg.sh stop "$pgdir"; rm -rf "$pgdir"' EXIT
CALLBACKD_TEST_POSTGRES=$(CALLBACKD_PG_FSYNC=on scripts/pg.sh start "$pgdir" "$port")
export CALLBACKD_TEST_POSTGRES
cargo bench --bench store
