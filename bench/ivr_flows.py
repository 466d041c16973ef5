#!/usr/bin/env python3
"""Self-service IVR flows per second, driven by SIPp with RFC 4733 keys from the captures
Debian's sip-tester ships.

A flow: call in, type a confirmation ID and #, press 5 (pause, or resume when paused), hear
it confirmed, hang up. Each SIPp process places 10 flows a second on its own callback (the ID
is baked into its scenario), so the rate is split over rate/10 processes. After the run every
callback's history is read back through the API: each successful flow must have left exactly
one committed change from the IVR.

The short call: answer, the greeting, 4 keys, hang up (nothing is committed).

Usage:
  cargo build --release
  python3 bench/ivr_flows.py --store sqlite --flows 100 --short 200 --seconds 60
  python3 bench/ivr_flows.py --store postgres://postgres@127.0.0.1:5432/bench ...
Prints Markdown rows; bench/README.md keeps the latest figures.
"""
import argparse, glob, json, os, random, re, shutil, subprocess, sys, tempfile, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sip_calls import ROOT, cpu_seconds, free_port, start_callbackd  # noqa: E402

TEMPLATE = os.path.join(ROOT, "bench", "sipp", "uac_flow.xml")
KEY_GAP_MS = 300  # >= 140 ms capture + 375 ms end timeout over two presses of one key


def api(url, method="GET", body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())


def callback_without_repeats(api_url, number):
    """A callback whose ID has no key twice in a row (a capture replayed at once for the same
    key is the same telephone-event)."""
    while True:
        cb = api(f"{api_url}/api/v1/callbacks", "POST", {"queue": "support", "address": number})
        cid = cb["confirmation_id"]
        if all(a != b for a, b in zip(cid, cid[1:])):
            return cid


def scenario(workdir, name, from_user, keys, hold_ms):
    actions = "".join(
        f'  <nop>\n    <action>\n      <exec play_pcap_audio="/usr/share/sip-tester/dtmf_2833_'
        f'{ {"#": "pound", "*": "star"}.get(k, k) }.pcap"/>\n    </action>\n  </nop>\n'
        f'  <pause milliseconds="{KEY_GAP_MS}"/>\n'
        for k in keys)
    text = (open(TEMPLATE).read().replace("FROM_USER", from_user)
            .replace("KEYS_ACTIONS", actions).replace("HOLD_MS", str(hold_ms)))
    path = os.path.join(workdir, name)
    open(path, "w").write(text)
    return path


def run_sipp(scenarios, port, rate_each, seconds, workdir):
    procs = []
    for i, sf in enumerate(scenarios):
        # Each process's media on a loopback address of its own: SIPp's pcap player binds a
        # raw socket to the media address for each key it plays, and the kernel hands a copy
        # of every UDP datagram to that address to each such socket open at the time.
        cmd = ["sipp", "-sf", sf, "-s", "5000", f"127.0.0.1:{port}", "-i", "127.0.0.1",
               "-mi", f"127.0.1.{1 + i}",
               "-p", str(free_port()), "-mp", str(free_port()), "-r", str(rate_each),
               "-m", str(rate_each * seconds), "-l", str(rate_each * 30), "-nostdin",
               "-timeout", f"{seconds * 3 + 60}s", "-trace_rtt", "-rtt_freq", "1",
               "-max_socket", "1000", "-trace_err"]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                      text=True, cwd=os.path.join(workdir, f"p{i}")))
    outs = [p.communicate()[0] for p in procs]
    counts = []
    for out in outs:
        ok = int(re.search(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", out).group(1))
        failed = int(re.search(r"Failed call\s*\|\s*\d+\s*\|\s*(\d+)", out).group(1))
        counts.append((ok, failed))
    rtts = []
    for path in glob.glob(os.path.join(workdir, "p*", "*_rtt.csv")):
        for line in open(path).read().splitlines()[1:]:
            parts = line.split(";")
            try:
                rtts.append(float(parts[1]))
            except (IndexError, ValueError):
                pass
        os.remove(path)
    rtts.sort()
    p99 = rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))] if rtts else float("nan")
    return counts, p99


def measure(kind, store, rate, seconds):
    workdir = tempfile.mkdtemp(prefix="callbackd-ivr-bench-")
    proc, port, api_url = start_callbackd(workdir, None if store == "sqlite" else store)
    try:
        processes = max(1, rate // 10)
        for i in range(processes):
            os.makedirs(os.path.join(workdir, f"p{i}"))
        ids, scenarios = [], []
        for i in range(processes):
            number = f"+1212555{1000 + i:04d}"
            if kind == "flow":
                cid = callback_without_repeats(api_url, number)
                ids.append(cid)
                scenarios.append(scenario(workdir, f"flow{i}.xml", number, cid + "#5", 2500))
            else:
                scenarios.append(scenario(workdir, f"short{i}.xml", number, "1234", 200))
        before, start = cpu_seconds(proc.pid), time.time()
        counts, p99 = run_sipp(scenarios, port, rate // processes, seconds, workdir)
        cores = (cpu_seconds(proc.pid) - before) / (time.time() - start)
        ok = sum(c[0] for c in counts)
        failed = sum(c[1] for c in counts)
        committed = "n/a"
        if kind == "flow":
            # Each successful flow left one IVR change attempt in the history, with its receipt
            # (flows on one callback race each other, so a pause can meet a callback another
            # flow just paused: that attempt is refused, and recorded all the same).
            # A failed call may have made its change before failing, hence at least.
            histories = [[e for e in api(f"{api_url}/api/v1/callbacks/{cid}")["history"]
                          if e["channel"] == "ivr" and e["receipt"]] for cid in ids]
            changes = [len(h) for h in histories]
            succeeded = sum(1 for h in histories for e in h if e["outcome"] == "success")
            committed = (f"yes ({succeeded} made, {sum(changes) - succeeded} refused)"
                         if all(ch >= c[0] for ch, c in zip(changes, counts))
                         else f"no ({sum(changes)} changes for {ok} flows)")
        backend = "SQLite" if store == "sqlite" else "PostgreSQL"
        print(f"| {kind} | {backend} | {rate} | {processes} | {seconds} | {ok} | {failed} | "
              f"{ok / seconds:.1f} | {p99:.0f} | {cores:.2f} | {committed} |", flush=True)
    finally:
        proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", default="sqlite", help="sqlite, or a postgres:// URL of an empty database")
    ap.add_argument("--flows", type=int, default=100, help="self-service flows per second")
    ap.add_argument("--short", type=int, default=200, help="short calls per second (0: skip)")
    ap.add_argument("--seconds", type=int, default=60)
    args = ap.parse_args()
    if not shutil.which("sipp"):
        sys.exit("sipp is not installed: apt-get install sip-tester")
    print("| call | store | offered/s | SIPp processes | seconds | successful | failed | completed/s | INVITE→200 p99 ms | callbackd cores | every change committed |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    if args.flows:
        measure("flow", args.store, args.flows, args.seconds)
    if args.short:
        measure("short", args.store, args.short, args.seconds)


if __name__ == "__main__":
    main()
