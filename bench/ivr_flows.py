#!/usr/bin/env python3
"""Self-service IVR flows per second, driven by SIPp.

A flow: call in, type a confirmation ID and #, press 5 (pause), hear it confirmed, hang up.
Every flow has a callback of its own, made through the API beforehand: its number and ID come
from an injection file (-inf), and its keys go as SIP INFO application/dtmf-relay (SIPp 3.6
cannot choose an RFC 4733 capture per call). The rate is split over rate/25 SIPp processes.
After the run every callback's history is read back through the API: each successful flow
must have committed its change, so the changes committed per second are counted.

The short call: answer, the greeting, 4 keys as RFC 4733 telephone-events from the captures
Debian's sip-tester ships, hang up (nothing is committed).

Usage:
  cargo build --release
  python3 bench/ivr_flows.py --store sqlite --flows 100 --short 200 --seconds 60
  python3 bench/ivr_flows.py --store postgres://postgres@127.0.0.1:5432/postgres ...
  python3 bench/ivr_flows.py --store postgres://... --nodes 1,3 --short 0 ...   (three nodes
      behind Kamailio's dispatcher, after one node alone)
Prints Markdown rows; bench/README.md keeps the latest figures.
"""
import argparse, concurrent.futures, glob, json, os, re, shutil, subprocess, sys, tempfile, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sip_calls import ROOT, cpu_seconds, free_port, start_callbackd, start_kamailio  # noqa: E402

TEMPLATE = os.path.join(ROOT, "bench", "sipp", "uac_flow.xml")
INFO_TEMPLATE = os.path.join(ROOT, "bench", "sipp", "uac_flow_info.xml")
KEY_GAP_MS = 300  # >= 140 ms capture + 375 ms end timeout over two presses of one key
FLOWS_PER_PROCESS = 25


def api(url, method="GET", body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())


def callbacks(api_url, count):
    """`count` callbacks, each with a number of its own: (number, confirmation ID)."""
    def make(i):
        number = f"+1212{550 + i // 10000}{i % 10000:04d}"
        cb = api(f"{api_url}/api/v1/callbacks", "POST", {"queue": "support", "address": number})
        return number, cb["confirmation_id"]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return list(pool.map(make, range(count)))


def info_scenario(workdir, name, hold_ms):
    """The flow with its keys as SIP INFO: [field1] to [field9] of the injection file (the
    confirmation ID), then # and 5."""
    keys = [f"[field{i}]" for i in range(1, 10)] + ["#", "5"]
    actions = "".join(
        f"""  <send retrans="500">
    <![CDATA[

      INFO [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      [routes]
      From: <sip:[field0]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: {2 + n} INFO
      Max-Forwards: 70
      Content-Type: application/dtmf-relay
      Content-Length: [len]

      Signal={key}
      Duration=160
    ]]>
  </send>
  <recv response="200"/>
  <pause milliseconds="{KEY_GAP_MS}"/>
""" for n, key in enumerate(keys))
    text = (open(INFO_TEMPLATE).read().replace("KEYS_ACTIONS", actions)
            .replace("CSeq: 2 BYE", f"CSeq: {2 + len(keys)} BYE").replace("HOLD_MS", str(hold_ms)))
    path = os.path.join(workdir, name)
    open(path, "w").write(text)
    return path


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
    """Runs each (scenario, injection file or None) in a SIPp process of its own."""
    procs = []
    for i, (sf, inf) in enumerate(scenarios):
        # Each process's media on a loopback address of its own: SIPp's pcap player binds a
        # raw socket to the media address for each key it plays, and the kernel hands a copy
        # of every UDP datagram to that address to each such socket open at the time.
        cmd = ["sipp", "-sf", sf, "-s", "5000", f"127.0.0.1:{port}", "-i", "127.0.0.1",
               "-mi", f"127.0.1.{1 + i}",
               "-p", str(free_port()), "-mp", str(free_port()), "-r", str(rate_each),
               "-m", str(rate_each * seconds), "-l", str(rate_each * 30), "-nostdin",
               "-timeout", f"{seconds * 3 + 60}s", "-trace_rtt", "-rtt_freq", "1",
               "-max_socket", "1000", "-trace_err"] + (["-inf", inf] if inf else [])
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


def machine_busy():
    """The machine's busy and total CPU time so far, in clock ticks (from /proc/stat)."""
    fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def fresh_database(server_url):
    """A new, empty database on the PostgreSQL server of `server_url` (whose database the
    connection starts from), so that no run inherits another's callbacks or limits."""
    name = f"bench_{int(time.time() * 1000)}"
    subprocess.run(["psql", server_url, "-qc", f"CREATE DATABASE {name}"], check=True)
    return server_url.rsplit("/", 1)[0] + "/" + name


def measure(kind, store, rate, seconds, nodes=1, keep=False):
    """One row: `rate` calls of `kind` a second for `seconds`, to one node, or through
    Kamailio's dispatcher (docs/operations/kamailio-dispatcher.cfg) to `nodes` nodes sharing
    the store (a fresh database of the PostgreSQL server `store` names, or a fresh SQLite
    file). With `keep`, the nodes log at info and the work folder stays."""
    workdir = tempfile.mkdtemp(prefix="callbackd-ivr-bench-")
    url = None if store == "sqlite" else fresh_database(store)
    started = [start_callbackd(workdir, url, name=f"node{n}", log=keep) for n in range(nodes)]
    procs = [proc for proc, _, _ in started]
    port, api_url = started[0][1], started[0][2]
    if nodes > 1:
        listed = os.path.join(workdir, "nodes.list")
        with open(listed, "w") as f:
            for _, node_port, _ in started:
                f.write(f"1 sip:127.0.0.1:{node_port}\n")
        kamailio, port = start_kamailio(workdir, "docs/operations/kamailio-dispatcher.cfg",
                                        {'"NODES"': f'"{listed}"'})
        procs.append(kamailio)
    try:
        per_process = FLOWS_PER_PROCESS if kind == "flow" else 10
        processes = max(1, rate // per_process)
        for i in range(processes):
            os.makedirs(os.path.join(workdir, f"p{i}"))
        scenarios, ids = [], []
        if kind == "flow":
            made = callbacks(api_url, rate * seconds)
            ids = [cid for _, cid in made]
            flow = info_scenario(workdir, "flow.xml", 2500)
            for i in range(processes):
                inf = os.path.join(workdir, f"p{i}", "callbacks.csv")
                with open(inf, "w") as f:
                    f.write("SEQUENTIAL\n")
                    for number, cid in made[i::processes]:
                        f.write(";".join([number] + list(cid)) + "\n")
                scenarios.append((flow, inf))
        else:
            for i in range(processes):
                number = f"+1212555{1000 + i:04d}"
                scenarios.append((scenario(workdir, f"short{i}.xml", number, "1234", 200), None))
        pids = [p.pid for p in procs[:nodes]]
        proxy = procs[nodes].pid if nodes > 1 else None
        before, start = sum(map(cpu_seconds, pids)), time.time()
        proxy_before = cpu_seconds(proxy) if proxy else 0
        busy_before = machine_busy()
        counts, p99 = run_sipp(scenarios, port, rate // processes, seconds, workdir)
        elapsed = time.time() - start
        cores = (sum(map(cpu_seconds, pids)) - before) / elapsed
        proxy_cores = f"{(cpu_seconds(proxy) - proxy_before) / elapsed:.2f}" if proxy else ""
        busy_after = machine_busy()
        busy = 100 * (busy_after[0] - busy_before[0]) / max(1, busy_after[1] - busy_before[1])
        ok = sum(c[0] for c in counts)
        failed = sum(c[1] for c in counts)
        committed = "n/a"
        if kind == "flow":
            # Each successful flow committed its change, with its receipt, on a callback no
            # other flow touched. A failed call may have made its change before failing.
            def made_by_phone(cid):
                history = api(f"{api_url}/api/v1/callbacks/{cid}")["history"]
                return sum(1 for e in history if e["channel"] == "ivr" and e["outcome"] == "success")
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                changes = sum(pool.map(made_by_phone, ids))
            verdict = "yes" if ok <= changes <= ok + failed else "NO"
            committed = f"{verdict}: {changes} ({changes / seconds:.1f}/s)"
        backend = "SQLite" if store == "sqlite" else "PostgreSQL"
        print(f"| {kind} | {backend} | {nodes} | {rate} | {processes} | {seconds} | {ok} | {failed} | "
              f"{ok / seconds:.1f} | {p99:.0f} | {cores:.2f} | {proxy_cores} | {busy:.0f} | {committed} |",
              flush=True)
    finally:
        for proc in procs:
            subprocess.run(["pkill", "-P", str(proc.pid)], check=False)
            proc.kill()
        if keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", default="sqlite",
                    help="sqlite, or a postgres:// URL to a server where each run makes a database of its own")
    ap.add_argument("--keep", action="store_true", help="keep the work folder, with each node's log")
    ap.add_argument("--flows", type=int, default=100, help="self-service flows per second")
    ap.add_argument("--short", type=int, default=200, help="short calls per second (0: skip)")
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--nodes", default="1",
                    help="comma-separated node counts to run in turn: 1 is a node alone, more go "
                         "behind Kamailio's dispatcher and need a PostgreSQL store")
    args = ap.parse_args()
    nodes = [int(n) for n in args.nodes.split(",")]
    if any(n > 1 for n in nodes) and args.store == "sqlite":
        sys.exit("several nodes share a PostgreSQL store: --store postgres://...")
    if not shutil.which("sipp"):
        sys.exit("sipp is not installed: apt-get install sip-tester")
    print("| call | store | nodes | offered/s | SIPp processes | seconds | successful | failed | completed/s | INVITE→200 p99 ms | callbackd cores | Kamailio cores | machine busy % | changes committed (per second) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for n in nodes:
        if args.flows:
            measure("flow", args.store, args.flows, args.seconds, n, args.keep)
        if args.short:
            measure("short", args.store, args.short, args.seconds, n, args.keep)


if __name__ == "__main__":
    main()
