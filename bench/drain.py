#!/usr/bin/env python3
"""How long a node takes to stop with 200 calls in progress (SIGTERM, then the drain).

Two cases, each on a fresh release callbackd with its own SQLite store:
- the calls end on their own (held 20 s by SIPp) well within the drain time: the node should
  exit as the last call ends, every call completing as the caller wished;
- the drain time (5 s) runs out first (calls held 60 s): the node hangs up every call left
  and exits.
After each stop the call records are exported, to count the calls and how they ended.

Usage: cargo build --release && python3 bench/drain.py [--calls 200]
"""
import argparse, json, os, shutil, signal, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sip_calls import ROOT, SCENARIO, free_port, start_callbackd  # noqa: E402


def case(workdir, calls, hold_ms, drain):
    name = f"drain-{drain}"
    callbackd, port, _ = start_callbackd(
        workdir, f"sqlite://{workdir}/{name}.db", name=name,
        changes=[('drain_timeout = "5m"', f'drain_timeout = "{drain}"')])
    sipp = subprocess.Popen(["sipp", "-sf", SCENARIO, "-s", "5000", f"127.0.0.1:{port}", "-i", "127.0.0.1",
                             "-p", str(free_port()), "-mp", str(free_port()), "-r", "200", "-m", str(calls),
                             "-l", str(calls), "-d", str(hold_ms), "-nostdin", "-timeout", "120s"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=workdir)
    # All calls set up (200 a second), and a little more.
    time.sleep(calls / 200 + 2)
    signalled = time.time()
    callbackd.send_signal(signal.SIGTERM)
    code = callbackd.wait(timeout=300)
    stopped = time.time() - signalled
    out = sipp.communicate(timeout=120)[0]
    ok = next((l.split("|")[2].strip() for l in out.splitlines() if l.strip().startswith("Successful call")), "?")
    exported = subprocess.run([os.path.join(ROOT, "target/release/callbackd"), "calls", "export", "--format", "jsonl",
                               "--config", os.path.join(workdir, f"{name}.toml")],
                              capture_output=True, text=True, check=True).stdout
    reasons = {}
    for line in exported.splitlines():
        reason = json.loads(line)["end_reason"]
        reasons[reason] = reasons.get(reason, 0) + 1
    left = (hold_ms / 1000) - (calls / 200 + 2)
    return dict(calls=calls, hold=hold_ms / 1000, drain=drain, left=left, stopped=stopped, code=code, ok=ok,
                reasons=", ".join(f"{n} {r}" for r, n in sorted(reasons.items())))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=200)
    args = ap.parse_args()
    if not shutil.which("sipp"):
        sys.exit("sipp is not installed: apt-get install sip-tester")
    workdir = tempfile.mkdtemp(prefix="callbackd-drain-")
    try:
        rows = [case(workdir, args.calls, 20000, "5m"), case(workdir, args.calls, 60000, "5s")]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("| calls | held (s) | drain_timeout | hold left at SIGTERM (s) | SIGTERM to exit (s) | exit code | SIPp successful | call records |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['calls']} | {r['hold']:.0f} | {r['drain']} | {r['left']:.0f} | {r['stopped']:.1f} | {r['code']} | {r['ok']} | {r['reasons']} |")


if __name__ == "__main__":
    main()
