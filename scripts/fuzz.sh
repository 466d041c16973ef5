#!/usr/bin/env bash
# Short runs of every fuzz target in fuzz/ (CALLBACKD_FUZZ_SECONDS each, 10 by default), as the
# test command runs them; any crash fails the run, with libFuzzer's report and the input saved
# under fuzz/artifacts/. Installs cargo-fuzz from crates.io when it is missing. Each target
# starts from the inputs the project already has (the RFC 4475 and 5118 messages, the
# dialplans) and writes what it finds to a throwaway corpus. Longer runs: see README (Tests).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${CALLBACKD_FUZZ_SECONDS:-10}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --quiet
# cargo fuzz builds with sanitizer flags that a stable compiler takes only this way.
export RUSTC_BOOTSTRAP=1
corpus=$(mktemp -d /tmp/callbackd-fuzz.XXXXXX)
trap 'rm -rf "$corpus"' EXIT
seeds() {
  case $1 in
    sip_message | sip_user_agent) echo ../tests/data/sip-torture/rfc4475 ../tests/data/sip-torture/rfc5118 ;;
    dialplan) echo ../dialplans ;;
    *) ;;
  esac
}
for target in $(cargo fuzz list); do
  echo "== fuzz $target for ${seconds}s"
  mkdir -p "$corpus/$target"
  # shellcheck disable=SC2046
  if ! cargo fuzz run --release "$target" "$corpus/$target" $(seeds "$target") -- \
    -max_total_time="$seconds" -max_len=20000 -print_final_stats=1 >"$corpus/$target.log" 2>&1; then
    tail -n 60 "$corpus/$target.log"
    echo "fuzz target $target failed; the input that broke it is under fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E "stat::(number_of_executed_units|peak_rss_mb)" "$corpus/$target.log" || true
done
