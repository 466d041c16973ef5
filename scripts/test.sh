#!/usr/bin/env bash
# Runs every test of callbackd on a fresh machine: installs what the tests need from Debian
# packages (PostgreSQL, SIPp from sip-tester, espeak-ng and sox for the DTMF talk-off test,
# iptables for the NAT test, Kamailio for the proxy in front, dnsmasq for trunk names, baresip
# for the two-softphone walkthrough, systemd-analyze for the unit file, Prometheus and promtool for
# the metrics, sngrep and tcpdump for the SIP trace, Chromium and Node.js for the pages) and playwright-core from npm, starts a throwaway
# PostgreSQL on loopback, checks formatting and lints, builds the Debian package with cargo-deb
# (installed from crates.io), runs the whole workspace's tests (one of which installs the
# package) and a short run of every fuzz target (scripts/fuzz.sh), and stops PostgreSQL again.
set -euo pipefail
cd "$(dirname "$0")/.."

need_packages=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_packages+=(postgresql)
command -v sipp >/dev/null 2>&1 || need_packages+=(sip-tester)
command -v espeak-ng >/dev/null 2>&1 || need_packages+=(espeak-ng)
command -v sox >/dev/null 2>&1 || need_packages+=(sox)
command -v iptables >/dev/null 2>&1 || need_packages+=(iptables)
command -v kamailio >/dev/null 2>&1 || need_packages+=(kamailio)
command -v dnsmasq >/dev/null 2>&1 || need_packages+=(dnsmasq-base)
command -v baresip >/dev/null 2>&1 || need_packages+=(baresip-core)
command -v systemd-analyze >/dev/null 2>&1 || need_packages+=(systemd)
command -v promtool >/dev/null 2>&1 || need_packages+=(prometheus)
command -v sngrep >/dev/null 2>&1 || need_packages+=(sngrep)
command -v tcpdump >/dev/null 2>&1 || need_packages+=(tcpdump)
[ -x /usr/bin/chromium ] || need_packages+=(chromium)
command -v node >/dev/null 2>&1 || need_packages+=(nodejs npm)
if [ ${#need_packages[@]} -gt 0 ]; then
  echo "== installing ${need_packages[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_packages[@]}" >/dev/null
fi

if [ ! -d tests/browser/node_modules/playwright-core ]; then
  echo "== installing playwright-core (npm)"
  npm ci --prefix tests/browser --no-audit --no-fund --silent
fi

pgdir=$(mktemp -d /tmp/callbackd-pg.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
trap 'scripts/pg.sh stop "$pgdir"; rm -rf "$pgdir"' EXIT
echo "== starting PostgreSQL on 127.0.0.1:$port"
CALLBACKD_TEST_POSTGRES=$(scripts/pg.sh start "$pgdir" "$port")
export CALLBACKD_TEST_POSTGRES

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== the Debian package, from the test build (scripts/deb.sh --dev; tests/debian_package.rs installs it)"
scripts/deb.sh --dev
echo "== cargo test"
cargo test --workspace "$@"
echo "== fuzz targets, a few seconds each"
scripts/fuzz.sh
