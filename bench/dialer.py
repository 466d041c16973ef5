#!/usr/bin/env python3
"""The outbound dialer's speed: how soon an agent turning ready gets a call, and how many
callbacks one or two nodes place a second.

latency: one agent (a UDP socket in this script that answers every INVITE with 486 Busy Here,
so the agent goes not ready and the callback back in line) and one due callback. Each sample
sets the agent ready through the API and times, on one monotonic clock, from just before the
PUT is sent to the INVITE's arrival: the API's commit, the dialer's wake-up, the claim's
transaction and the INVITE's way out.

modify: two nodes on PostgreSQL, one agent (SIPp) and customers that ring forever (a UDP
socket in this script). Each sample creates a callback, waits for its customer's INVITE,
then pauses it through the API of the node that is not dialing it, and times from just
before that request to the CANCEL reaching the customer: the commit, the notification, the
dialing node's look at the callback, and the CANCEL's way out.

throughput: AGENTS agents (all answered by one SIPp UAS that waits for callbackd's BYE) and
customers (one SIPp UAS that answers, stays TALK seconds and hangs up). Callbacks are created
through the API at RATE a second for SECONDS (split over the nodes); afterwards every
callback must be completed with one connected attempt, and every node must be back at rest
(GET /api/v1/status: no calls, dialogs, bridges, RTP ports or attempts, and its sockets, file
descriptors and busy store connections as before the load); otherwise the script exits 1.
The whisper and the greeting are off, so a callback is two INVITEs, a bridge and two BYEs.

Usage:
  cargo build --release
  python3 bench/dialer.py latency --store sqlite --samples 300
  python3 bench/dialer.py modify --store postgres://postgres@127.0.0.1:5432/postgres --samples 100
  python3 bench/dialer.py throughput --store postgres://postgres@127.0.0.1:5432/postgres \\
      --nodes 2 --rate 100 --seconds 60
Prints Markdown rows; bench/README.md keeps the latest figures.
"""
import argparse, concurrent.futures, json, os, shutil, socket, subprocess, sys, tempfile, threading, time, urllib.request, uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sip_calls import ROOT, cpu_seconds, free_port, start_callbackd  # noqa: E402


def api(base, path, method="GET", body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())


DIALER = [
    ('# sip_domains = ["pbx.example.com"]', 'sip_domains = ["127.0.0.1"]'),
    ('wrap_up = "10s"', 'wrap_up = "0s"'),
    ("whisper = true", "whisper = false"),
    ("greeting = true", "greeting = false"),
    ('rtp_ports = "20000-29999"', 'rtp_ports = "10000-59999"'),
]


def fresh_store(store, workdir, tag):
    if store == "sqlite":
        return f"sqlite://{workdir}/{tag}.db"
    admin = store
    name = f"bench_{tag}_{uuid.uuid4().hex[:8]}"
    subprocess.run(["psql", admin, "-qc", f"CREATE DATABASE {name}"], check=True)
    return admin.rsplit("/", 1)[0] + "/" + name


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def busy_agent(sock, invites):
    """Answers every INVITE with 486 and notes when it came."""
    while True:
        data, peer = sock.recvfrom(65536)
        at = time.monotonic()
        text = data.decode(errors="replace")
        if not text.startswith("INVITE "):
            continue
        head = text.split("\r\n\r\n", 1)[0].split("\r\n")
        keep = [h for h in head[1:] if h.split(":", 1)[0].strip().lower() in ("via", "from", "to", "call-id", "cseq")]
        keep = [h + ";tag=busy" if h.lower().startswith("to:") else h for h in keep]
        sock.sendto(("SIP/2.0 486 Busy Here\r\n" + "\r\n".join(keep) + "\r\nContent-Length: 0\r\n\r\n").encode(), peer)
        invites.append(at)


def ringing_customer(sock, invites, cancels):
    """Rings (180) at every INVITE and never answers; answers a CANCEL with 200 and the INVITE
    with 487, noting when the INVITE and the CANCEL came."""
    pending = {}
    while True:
        data, peer = sock.recvfrom(65536)
        at = time.monotonic()
        text = data.decode(errors="replace")
        method = text.split(" ", 1)[0]
        if method not in ("INVITE", "CANCEL"):
            continue
        head = text.split("\r\n\r\n", 1)[0].split("\r\n")
        keep = [h for h in head[1:] if h.split(":", 1)[0].strip().lower() in ("via", "from", "to", "call-id", "cseq")]
        call_id = next(h.split(":", 1)[1].strip() for h in keep if h.lower().startswith("call-id"))
        tagged = [h + ";tag=ring" if h.lower().startswith("to:") else h for h in keep]
        reply = lambda status, lines: sock.sendto(
            (f"SIP/2.0 {status}\r\n" + "\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode(), peer)
        if method == "INVITE":
            pending[call_id] = tagged
            invites.append((at, call_id))
            reply("180 Ringing", tagged)
        else:
            cancels.append((at, call_id))
            reply("200 OK", keep)
            if call_id in pending:
                reply("487 Request Terminated", pending.pop(call_id))


def modify(args):
    """Pause on one node, a callback another node is dialing: from just before the API call
    to the CANCEL reaching the ringing customer."""
    workdir = tempfile.mkdtemp(prefix="callbackd-dialer-")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    invites, cancels = [], []
    threading.Thread(target=ringing_customer, args=(sock, invites, cancels), daemon=True).start()
    agents, aport = sipp_uas(os.path.join(ROOT, "tests/sipp/uas_answer.xml"), workdir, args.samples * 2, "127.0.1.2")
    url = fresh_store(args.store, workdir, "modify")
    nodes = []
    try:
        for i in range(2):
            nodes.append(start_callbackd(workdir, url, DIALER + [('# node = "callbackd-1"', f'node = "node-{i}"')], f"node{i}"))
        bases = {f"node-{i}": n[2] for i, n in enumerate(nodes)}
        first = nodes[0][2]
        api(first, "/api/v1/agents", "POST", {"id": "a", "name": "a", "skills": ["billing"], "address": f"sip:a@127.0.0.1:{aport}"})
        api(first, "/api/v1/agents/a/state", "PUT", {"state": "ready"})
        port = sock.getsockname()[1]
        samples = []
        for k in range(args.samples):
            before = len(invites)
            cb = api(first, "/api/v1/callbacks", "POST", {"queue": "support", "media": "sip", "address": f"sip:c{k}@127.0.0.1:{port}"})
            while len(invites) == before:
                time.sleep(0.001)
            call_id = invites[-1][1]
            dialing = api(first, f"/api/v1/callbacks/{cb['confirmation_id']}")["dial_attempts"][0]["node"]
            other = next(b for n, b in bases.items() if n != dialing)
            t0 = time.monotonic()
            api(other, f"/api/v1/callbacks/{cb['confirmation_id']}/modifications", "POST", {"action": "pause"})
            while not any(c == call_id for _, c in cancels):
                time.sleep(0.0005)
            samples.append((next(at for at, c in cancels if c == call_id) - t0) * 1000)
            while api(first, "/api/v1/agents/a")["state"] != "ready":
                time.sleep(0.005)
        print(f"| {args.store.split('://')[0]} | 2 | {len(samples)} | {pct(samples, 0.5):.1f} ms | "
              f"{pct(samples, 0.99):.1f} ms | {max(samples):.1f} ms |")
    finally:
        for n in nodes:
            n[0].kill()
        agents.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def latency(args):
    workdir = tempfile.mkdtemp(prefix="callbackd-dialer-")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    invites = []
    threading.Thread(target=busy_agent, args=(sock, invites), daemon=True).start()
    url = fresh_store(args.store, workdir, "latency")
    node, _, base = start_callbackd(workdir, url, DIALER, "latency")
    try:
        api(base, "/api/v1/callbacks", "POST", {"queue": "support", "media": "sip", "address": "sip:c@127.0.0.1:9"})
        port = sock.getsockname()[1]
        api(base, "/api/v1/agents", "POST", {"id": "a", "name": "a", "skills": ["billing"], "address": f"sip:a@127.0.0.1:{port}"})
        samples = []
        for _ in range(args.samples):
            before = len(invites)
            t0 = time.monotonic()
            api(base, "/api/v1/agents/a/state", "PUT", {"state": "ready"})
            while len(invites) == before:
                time.sleep(0.0005)
            samples.append((invites[-1] - t0) * 1000)
            while api(base, "/api/v1/agents/a")["state"] != "not_ready":
                time.sleep(0.005)
        print(f"| {args.store.split('://')[0].split(':')[0]} | {len(samples)} | {pct(samples, 0.5):.1f} ms | "
              f"{pct(samples, 0.99):.1f} ms | {max(samples):.1f} ms |")
    finally:
        node.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def sipp_uas(scenario, workdir, calls, media_ip):
    """SIPp answering with `scenario`, its media on `media_ip`: a loopback address of its own,
    since SIPp's pcap player binds a raw socket to it for each capture it plays, and the kernel
    hands a copy of every UDP datagram to that address to each such socket open at the time."""
    port = free_port()
    proc = subprocess.Popen(["sipp", "-sf", scenario, "-i", "127.0.0.1", "-mi", media_ip,
                             "-p", str(port), "-mp", str(free_port()),
                             "-m", str(calls), "-nostdin", "-max_socket", "5000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir)
    time.sleep(0.5)
    return proc, port


def throughput(args):
    workdir = tempfile.mkdtemp(prefix="callbackd-dialer-")
    # The customers hang up TALK after answering: a capture of 200 ms of silence, then a pause.
    silence = os.path.join(workdir, "silence.pcap")
    with open(silence, "wb") as f:
        f.write(silence_pcap())
    text = open(os.path.join(ROOT, "tests/sipp/uas_customer.xml")).read()
    talk_ms = max(0, int(args.talk * 1000) - 1200)
    customer_sf = os.path.join(workdir, "customer.xml")
    open(customer_sf, "w").write(text.replace("PCAP_FILE", silence).replace("TALK_MS", str(talk_ms)))
    total = args.rate * args.seconds
    customers, cport = sipp_uas(customer_sf, workdir, total * 2, "127.0.1.1")
    agents, aport = sipp_uas(os.path.join(ROOT, "tests/sipp/uas_answer.xml"), workdir, total * 2, "127.0.1.2")
    url = fresh_store(args.store, workdir, "throughput")
    nodes = []
    try:
        for i in range(args.nodes):
            nodes.append(start_callbackd(workdir, url, DIALER + [('# node = "callbackd-1"', f'node = "node-{i}"')], f"node{i}"))
        bases = [n[2] for n in nodes]
        for i in range(args.agents):
            api(bases[0], "/api/v1/agents", "POST", {"id": f"a{i}", "name": f"a{i}", "skills": ["billing"],
                                                    "address": f"sip:a{i}@127.0.0.1:{aport}"})
            api(bases[i % len(bases)], f"/api/v1/agents/a{i}/state", "PUT", {"state": "ready"})
        # What each node holds at rest, to compare with afterwards.
        baseline = [api(base, "/api/v1/status") for base in bases]
        cpu_before = [cpu_seconds(n[0].pid) for n in nodes]
        start = time.monotonic()

        def feed(k):
            due = start + k / args.rate
            while time.monotonic() < due:
                time.sleep(0.0005)
            return api(bases[k % len(bases)], "/api/v1/callbacks", "POST",
                       {"queue": "support", "media": "sip", "address": f"sip:c{k}@127.0.0.1:{cport}"})

        # A few requests in flight at once, so one slow answer does not hold the rate back.
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            ids = [cb["confirmation_id"] for cb in pool.map(feed, range(total))]
        fed = time.monotonic() - start
        while True:
            counts = api(bases[0], "/api/v1/queues/support")["counts"]
            if counts["completed"] + counts["failed"] >= total or time.monotonic() - start > args.seconds + 120:
                break
            time.sleep(0.5)
        elapsed = time.monotonic() - start
        cpu = [(cpu_seconds(n[0].pid) - b) / elapsed for n, b in zip(nodes, cpu_before)]
        outcomes = {}
        for cid in ids:
            cb = api(bases[0], f"/api/v1/callbacks/{cid}")
            for a in cb["dial_attempts"]:
                outcomes[a["outcome"]] = outcomes.get(a["outcome"], 0) + 1
        counts = api(bases[0], "/api/v1/queues/support")["counts"]
        # Afterwards every node must be back at rest: no calls, dialogs, bridges, RTP ports or
        # attempts; no more store connections busy than before the load; and no more sockets
        # and files than before but for the store's pool, which may have grown (a PostgreSQL
        # connection is a socket; an SQLite one holds the database, its log and its shared
        # memory open).
        def at_rest(status, before):
            grown = status["store"]["connections"] - before["store"]["connections"]
            busy = lambda s: s["store"]["connections"] - s["store"]["idle"]
            return (all(status["sip"][g] == 0 for g in ("calls", "dialogs", "bridges", "rtp_ports"))
                    and status["dialer"]["attempts"] == 0
                    and busy(status) <= busy(before)
                    and status["sockets"] - before["sockets"] <= max(grown, 0)
                    and status["file_descriptors"] - before["file_descriptors"] <= 3 * max(grown, 0))
        rest, all_idle = [], True
        for base, before in zip(bases, baseline):
            deadline = time.monotonic() + 30
            while True:
                status = api(base, "/api/v1/status")
                idle = at_rest(status, before)
                if idle or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            all_idle = all_idle and idle
            rest.append(f"{'at rest' if idle else 'NOT at rest'}: {status['sockets']} sockets "
                        f"({before['sockets']} before), {status['file_descriptors']} file descriptors "
                        f"({before['file_descriptors']} before), {status['store']['connections']} store "
                        f"connections ({status['store']['idle']} idle)")
        print(f"| {args.store.split('://')[0]} | {args.nodes} | {args.agents} | {args.rate}/s for {args.seconds} s | "
              f"{counts['completed']} of {total} in {elapsed:.0f} s (fed in {fed:.0f} s) | "
              f"{', '.join(f'{k} {v}' for k, v in sorted(outcomes.items()))} | "
              f"{' + '.join(f'{c:.2f}' for c in cpu)} cores | {'; '.join(rest)} |", flush=True)
        if counts["completed"] != total or set(outcomes) != {"connected"} or not all_idle:
            sys.exit("not every callback was connected at its first attempt, or a node is not at rest")
    finally:
        for n in nodes:
            n[0].kill()
        customers.kill()
        agents.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def silence_pcap():
    """200 ms of PCMU silence as a pcap of RTP from 127.0.0.1 (for SIPp's play_pcap_audio)."""
    import struct
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    for i in range(10):
        rtp = struct.pack(">BBHII", 0x80, 0, i, i * 160, 0x12345678) + b"\xff" * 160
        udp = struct.pack(">HHHH", 6000, 6000, 8 + len(rtp), 0) + rtp
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                         bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1])) + udp
        frame = b"\x00" * 12 + b"\x08\x00" + ip
        us = i * 20000
        out += struct.pack("<IIII", us // 1000000, us % 1000000, len(frame), len(frame)) + frame
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["latency", "modify", "throughput"])
    ap.add_argument("--store", default="sqlite")
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--nodes", type=int, default=1)
    ap.add_argument("--agents", type=int, default=300)
    ap.add_argument("--rate", type=int, default=100)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--talk", type=float, default=2.0, help="seconds a customer stays on the line")
    args = ap.parse_args()
    if not shutil.which("sipp"):
        sys.exit("sipp is not installed: apt-get install sip-tester")
    {"latency": latency, "modify": modify, "throughput": throughput}[args.mode](args)


if __name__ == "__main__":
    main()
