#!/usr/bin/env python3
"""Trunk fail-over: how long after a trunk's primary target stops the first call goes through
the secondary, how long until calls stop paying for the dead primary, and how long after the
primary returns calls go back to it.

dnsmasq serves `_sip._udp.trunk.test` with the primary at priority 10 and the secondary at
20; two more release callbackds are the targets (they answer calls and OPTIONS, which SIPp's
UAS does not); a release callbackd places test calls through the trunk (`POST
/api/v1/test-calls`, one after the other) with OPTIONS keep-alives every --qualify seconds.
The primary is killed mid-run, and later started again on its port.

Usage: cargo build --release && python3 bench/failover.py [--qualify 5] [--seconds 30]
"""
import argparse, json, os, shutil, signal, subprocess, sys, tempfile, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sip_calls import free_port, start_callbackd  # noqa: E402


def target(work, name, port):
    """A callbackd answering on SIP `port`: a trunk target."""
    return start_callbackd(work, name=name, sip=port)[0]


def test_call(api):
    """One test call held 0 s through the trunk: (answered, seconds it took)."""
    body = json.dumps({"to": "sip:+12125550100@trunk.test", "hold_seconds": 0}).encode()
    req = urllib.request.Request(f"{api}/api/v1/test-calls", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    start = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            answered = json.load(r).get("answered", False)
    except Exception:
        answered = False
    return answered, time.monotonic() - start


def target_state(api, address):
    with urllib.request.urlopen(f"{api}/api/v1/trunks", timeout=5) as r:
        for t in json.load(r)["trunks"][0]["targets"]:
            if t["address"] == address:
                return t["state"]
    return None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--qualify", type=int, default=5, help="seconds between keep-alives")
    p.add_argument("--seconds", type=int, default=30, help="how long the primary stays down")
    a = p.parse_args()
    if not shutil.which("dnsmasq") and not os.path.exists("/usr/sbin/dnsmasq"):
        sys.exit("dnsmasq is missing (apt-get install dnsmasq-base)")
    work = tempfile.mkdtemp(prefix="callbackd-failover-")
    primary_port, secondary_port, dns_port = free_port(), free_port(), free_port()
    dns = subprocess.Popen(["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--listen-address=127.0.0.1",
                            "--bind-interfaces", "--no-resolv", "--no-hosts", "--local-ttl=5", f"--port={dns_port}",
                            f"--srv-host=_sip._udp.trunk.test,primary.trunk.test,{primary_port},10,0",
                            f"--srv-host=_sip._udp.trunk.test,secondary.trunk.test,{secondary_port},20,0",
                            "--host-record=primary.trunk.test,127.0.0.1", "--host-record=secondary.trunk.test,127.0.0.1"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    primary, secondary = target(work, "primary", primary_port), target(work, "secondary", secondary_port)
    trunk = (f'\n[trunks.carrier]\nhost = "trunk.test"\ncaller_id = "+12125550000"\nqualify = "{a.qualify}s"\n\n'
             f'[[routes]]\ntrunks = ["carrier"]\n\n[dns]\nservers = ["127.0.0.1:{dns_port}"]\n\n[queues.support]')
    server, _, api = start_callbackd(work, changes=[
        ('# sip_domains = ["pbx.example.com"]', 'sip_domains = ["trunk.test"]'),
        ("[queues.support]", trunk),
    ])
    try:
        time.sleep(2 * a.qualify + 1)
        assert target_state(api, f"127.0.0.1:{primary_port}") == "up", "the primary is not up"
        baseline = [test_call(api)[1] for _ in range(5)]
        primary.send_signal(signal.SIGKILL)
        primary.wait()
        stopped = time.monotonic()
        first_through_secondary = marked_down = prompt_again = None
        slow = 0
        while time.monotonic() - stopped < a.seconds:
            started = time.monotonic() - stopped
            answered, took = test_call(api)
            if answered and first_through_secondary is None:
                first_through_secondary = started + took
            if marked_down is None and target_state(api, f"127.0.0.1:{primary_port}") == "down":
                marked_down = time.monotonic() - stopped
            if took > 1.5:
                slow += 1
            elif answered and marked_down is not None and prompt_again is None:
                prompt_again = time.monotonic() - stopped
        # Back on its port: how long until the keep-alives mark it up, and calls go to it.
        primary = target(work, "primary-again", primary_port)
        returned = time.monotonic()
        came_back = None
        while time.monotonic() - returned < 4 * a.qualify + 10:
            if target_state(api, f"127.0.0.1:{primary_port}") == "up":
                came_back = time.monotonic() - returned
                break
            time.sleep(0.1)
        print(f"| keep-alives every | {a.qualify} s |")
        print(f"| a call through the trunk, both targets up (median of 5) | {sorted(baseline)[2] * 1000:.0f} ms |")
        print(f"| primary stopped → first call answered through the secondary | {first_through_secondary:.2f} s |")
        print(f"| primary stopped → marked down by the keep-alives | {marked_down:.2f} s |")
        print(f"| calls that paid the 2 s wait for the silent primary | {slow} |")
        print(f"| primary back → marked up, calls go to it again | {came_back:.2f} s |" if came_back else "| primary back | not marked up within the wait |")
    finally:
        for proc in (server, secondary, dns, primary):
            if proc.poll() is None:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
