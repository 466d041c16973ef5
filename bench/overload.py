#!/usr/bin/env python3
"""Goodput past capacity: basic calls (bench/sipp/uac_hold.xml with -d 0) from SIPp against
callbackd, first rising to find the rate callbackd carries with no failed call (its capacity,
measured in this run), then at 1x, 2x and 5x that rate. Past capacity callbackd refuses new
calls with a stateless 503 once SIP messages wait too long to be handled, so the calls it takes
complete: goodput (successful calls a second) should stay at 90% or more of capacity.

callbackd runs on one core and the SIPp clients on the other (taskset), so the generator's own
CPU is not what limits the answering side; SIPp's UAS answers the same load first, as the
reference, under the same pinning.

Usage: cargo build --release && python3 bench/overload.py [--step 500] [--seconds 20]
Prints a Markdown table; bench/README.md keeps the latest figures.
"""
import argparse, os, shutil, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sip_calls import drive, start_callbackd, start_reference  # noqa: E402


def pin(pid, core):
    subprocess.run(["taskset", "-a", "-p", "-c", str(core), str(pid)], check=True, stdout=subprocess.DEVNULL)


def run(port, pid, rate, seconds, workdir):
    r = drive(port, pid, rate, seconds, workdir, prefix=("taskset", "-c", "1"))
    r["goodput"] = r["achieved"]
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--step", type=int, default=500, help="calls/s added at each step of the search")
    ap.add_argument("--search-seconds", type=int, default=10)
    ap.add_argument("--seconds", type=int, default=20)
    args = ap.parse_args()
    if not shutil.which("sipp") or not shutil.which("taskset"):
        sys.exit("needs sipp (apt-get install sip-tester) and taskset (util-linux)")
    workdir = tempfile.mkdtemp(prefix="callbackd-overload-")
    rows = []
    try:
        callbackd, cport, _ = start_callbackd(workdir)
        pin(callbackd.pid, 0)
        reference, rport = start_reference()
        pin(reference.pid, 0)
        try:
            # Capacity: the highest rate with every call successful and nearly all achieved.
            capacity, rate = 0, args.step
            while True:
                r = run(cport, callbackd.pid, rate, args.search_seconds, workdir)
                print(f"search {rate}/s: {r['ok']} ok, {r['failed']} failed, {r['goodput']:.0f}/s, "
                      f"callbackd {r['target_cpu']:.2f} cores", file=sys.stderr)
                if r["failed"] or r["goodput"] < 0.97 * rate:
                    break
                capacity = r["goodput"]
                rate += args.step
                time.sleep(3)
            if not capacity:
                sys.exit("callbackd failed calls at the first step; lower --step")
            for factor in (1, 2, 5):
                offered = int(capacity * factor)
                for name, port, pid in (("SIPp UAS (reference)", rport, reference.pid),
                                        ("callbackd", cport, callbackd.pid)):
                    time.sleep(5)
                    r = run(port, pid, offered, args.seconds, workdir)
                    r.update(name=name, factor=factor)
                    rows.append(r)
                    print(f"{name} {factor}x: {r}", file=sys.stderr)
        finally:
            callbackd.kill()
            reference.kill()
        print(f"Capacity measured in this run (no failed call, callbackd on one core): {capacity:.0f} calls/s.")
        print()
        print("| answering | load | offered calls/s | successful | failed | retransmissions | goodput calls/s | goodput / capacity | INVITE→200 p99 ms | answering CPU (cores) |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in rows:
            print(f"| {r['name']} | {r['factor']}x | {r['rate']} | {r['ok']} | {r['failed']} | {r['retrans']} | "
                  f"{r['goodput']:.0f} | {r['goodput'] / capacity:.0%} | {r['p99']:.0f} | {r['target_cpu']:.2f} |")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
