#!/usr/bin/env bash
# Builds the Debian package target/debian/callbackd_VERSION-1_ARCH.deb with cargo-deb
# (installed from crates.io if missing): /usr/bin/callbackd, the systemd unit, the
# configuration /etc/callbackd/callbackd.toml (callbackd.toml with the installed paths), and
# the prompts, the dialplan and the chat bots under /usr/share/callbackd.
#   scripts/deb.sh          from a release build: the package to ship
#   scripts/deb.sh --dev    from the test build (target/debug), which scripts/test.sh uses to
#                           test the package without a release build of its own
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --no-default-features --locked --quiet

# The configuration as installed: everything it reads under /usr/share/callbackd, everything
# it writes under /var/lib/callbackd (the unit's StateDirectory).
mkdir -p target/deb
config=target/deb/callbackd.toml
sed -e 's|^dialplan = "dialplans/|dialplan = "/usr/share/callbackd/dialplans/|' \
    -e 's|^prompts = "prompts"|prompts = "/usr/share/callbackd/prompts"|' \
    -e 's|^bots = "chatbots/|bots = "/usr/share/callbackd/chatbots/|' \
    -e 's|^sip_trace = "sip-trace.pcap"|sip_trace = "/var/lib/callbackd/sip-trace.pcap"|' \
    -e 's|^url = "sqlite://callbackd.db"|url = "sqlite:///var/lib/callbackd/callbackd.db"|' \
    callbackd.toml > "$config"
for key in dialplan prompts bots sip_trace url; do
  grep -q "^$key = \"\(/\|sqlite:///\)" "$config" || { echo "scripts/deb.sh: callbackd.toml's $key is not where this script expects it" >&2; exit 1; }
done

if [ "${1:-}" = --dev ]; then
  cargo build --quiet --bin callbackd
  cargo deb --no-build --profile dev --quiet
else
  cargo deb --quiet
fi
ls target/debian/callbackd_*.deb
