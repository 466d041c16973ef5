#!/usr/bin/env python3
"""Sustained basic calls per second (INVITE, 200, ACK, BYE) driven by SIPp against callbackd,
side by side with two references answering the same load in the same run: SIPp's own UAS
(`sipp -sn uas`) and Kamailio answering statelessly (bench/kamailio_uas.cfg); callbackd with
its metrics and call records off (`api.metrics = false`, `log.call_records = false`) beside
callbackd with both on and its metrics scraped every 5 s, for their cost; and callbackd's memory per idle established call.

Usage: cargo build --release && python3 bench/sip_calls.py [--rates 500,1000,2000] [--seconds 15]
Prints a Markdown table; bench/README.md keeps the latest figures.
"""
import argparse, glob, os, re, shutil, signal, socket, subprocess, sys, tempfile, threading, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENARIO = os.path.join(ROOT, "bench", "sipp", "uac_hold.xml")


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cpu_seconds(pid):
    """CPU time of `pid` and of its children (Kamailio answers from worker processes)."""
    total = 0
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat == f"/proc/{pid}/stat" or int(fields[1]) == pid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def config_text(sip, store_url):
    """The default configuration on loopback: the API on a free port, SIP over UDP on `sip`,
    the store at `store_url`."""
    # Relative paths are taken from the config file's folder: make the checkout's absolute.
    return (open(os.path.join(ROOT, "callbackd.toml")).read()
            .replace('dialplan = "dialplans/', f'dialplan = "{ROOT}/dialplans/')
            .replace('prompts = "prompts"', f'prompts = "{ROOT}/prompts"')
            .replace('bots = "chatbots/', f'bots = "{ROOT}/chatbots/')
            .replace('listen = "127.0.0.1:8080"', 'listen = "127.0.0.1:0"')
            .replace('udp = ["127.0.0.1:5060"]', f'udp = ["127.0.0.1:{sip}"]')
            .replace('tcp = ["127.0.0.1:5060"]', 'tcp = []')
            .replace('url = "sqlite://callbackd.db"', f'url = "{store_url}"'))


def start_callbackd(workdir, store_url=None, changes=(), name="bench", sip=None, log=False):
    """A release callbackd with the limits raised (and each (from, to) of `changes` made to
    its configuration), on SIP port `sip` or a free one, logging at `info` to
    `workdir/NAME.log` when `log`, else warnings nowhere; returns it, its SIP port and its API
    URL."""
    sip = sip or free_port()
    text = (config_text(sip, store_url or f"sqlite://{workdir}/bench.db")
            .replace("max_calls = 500", "max_calls = 50000")
            .replace("max_calls_per_second = 200", "max_calls_per_second = 50000")
            # SIPp's load comes from loopback as a trunk's would: a trusted network, exempt
            # from the per-source limits.
            .replace('trusted = []', 'trusted = ["127.0.0.0/8"]'))
    for old, new in changes:
        assert old in text, old
        text = text.replace(old, new)
    path = os.path.join(workdir, f"{name}.toml")
    open(path, "w").write(text)
    env = dict(os.environ, CALLBACKD_LOG=os.environ.get("CALLBACKD_LOG", "info") if log else "warn")
    stderr = open(os.path.join(workdir, f"{name}.log"), "w") if log else subprocess.DEVNULL
    # On loopback for a benchmark: no API token to pass around.
    proc = subprocess.Popen([os.path.join(ROOT, "target/release/callbackd"), "serve", "--no-auth", "--config", path],
                            stdout=subprocess.PIPE, stderr=stderr, env=env, text=True, cwd=ROOT)
    api = None
    for line in proc.stdout:
        if line.startswith("callbackd: HTTP API on"):
            api = line.split(" on ", 1)[1].strip()
            break
    return proc, sip, api


def start_reference():
    port = free_port()
    proc = subprocess.Popen(["sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(port), "-nostdin",
                             "-mp", str(free_port())], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return proc, port


def start_kamailio(workdir, config="bench/kamailio_uas.cfg", fill=None):
    """Kamailio running `config` (a path from the checkout) on a free port, with LISTEN,
    MODULES and each key of `fill` put in place ("{port}" in a value is its port); by default
    answering basic calls statelessly with two workers, one per core. Returns it and its port."""
    modules = next(m for m in glob.glob("/usr/lib/*/kamailio/modules") if os.path.exists(f"{m}/sl.so"))
    port = free_port()
    fill = fill or {"CHILDREN": "2", "CONTACT": "sip:127.0.0.1:{port}"}
    text = (open(os.path.join(ROOT, config)).read()
            .replace("LISTEN", f"udp:127.0.0.1:{port}")
            .replace("MODULES", modules))
    for key, value in fill.items():
        assert key in text, key
        text = text.replace(key, value.format(port=port))
    path = os.path.join(workdir, "kamailio.cfg")
    open(path, "w").write(text)
    # 512 MB of shared memory: Debian's default of 64 MB holds about 7,000 transactions,
    # which a proxy in front of 100 self-service flows a second (14 transactions each, kept
    # some seconds after they end) runs out of.
    proc = subprocess.Popen(["kamailio", "-f", path, "-m", "512", "-DD", "-E", "-Y", workdir],
                            stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(workdir, "kamailio.log"), "w"))
    time.sleep(1)
    assert proc.poll() is None, "kamailio did not start"
    return proc, port


def drive(target_port, target_pid, rate, seconds, workdir, extra=(), prefix=()):
    """One SIPp client (or several when the rate is high) at `rate` calls/s for `seconds`;
    `prefix` goes before each SIPp command (taskset, to pin the generator)."""
    clients = max(1, (rate + 999) // 1000)
    per = rate // clients
    calls = per * seconds
    procs = []
    cpu_before = cpu_seconds(target_pid)
    start = time.time()
    for i in range(clients):
        cmd = [*prefix, "sipp", "-sf", SCENARIO, "-s", "5000", f"127.0.0.1:{target_port}", "-i", "127.0.0.1",
               "-p", str(free_port()), "-mp", str(free_port()), "-r", str(per), "-m", str(calls),
               "-l", str(per * 4), "-d", "0", "-nostdin", "-timeout", str(seconds * 4) + "s",
               "-trace_rtt", "-rtt_freq", "1", "-max_socket", "1000", *extra]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=workdir))
    outs = [p.communicate()[0] for p in procs]
    elapsed = time.time() - start
    target_cpu = (cpu_seconds(target_pid) - cpu_before) / elapsed
    ok = failed = retrans = 0
    for out in outs:
        ok += int(re.search(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", out).group(1))
        failed += int(re.search(r"Failed call\s*\|\s*\d+\s*\|\s*(\d+)", out).group(1))
        for line in out.splitlines():
            if "---------->" in line or "<----------" in line:
                # Columns after the arrow: Messages, Retrans, Timeout, Unexpected, Lost.
                after = line.split("---------->")[-1].split("<----------")[-1]
                nums = [int(t) for t in after.split() if t.isdigit()]
                if len(nums) >= 2:
                    retrans += nums[1]
    rtts = []
    for path in glob.glob(os.path.join(workdir, "*_rtt.csv")):
        for line in open(path).read().splitlines()[1:]:
            parts = line.split(";")
            if len(parts) >= 2:
                try:
                    rtts.append(float(parts[1]))
                except ValueError:
                    pass
        os.remove(path)
    rtts.sort()
    pct = lambda p: rtts[min(len(rtts) - 1, int(len(rtts) * p))] if rtts else float("nan")
    return dict(rate=rate, clients=clients, ok=ok, failed=failed, retrans=retrans, achieved=ok / elapsed,
                p50=pct(0.5), p99=pct(0.99), target_cpu=target_cpu)


def loss_run(minutes, rate):
    """Basic calls under 10% packet loss (SIPp drops a tenth of what it sends and receives)."""
    workdir = tempfile.mkdtemp(prefix="callbackd-bench-")
    callbackd, cport, _ = start_callbackd(workdir)
    try:
        seconds = int(minutes * 60)
        r = drive(cport, callbackd.pid, rate, seconds, workdir, extra=("-lost", "10"))
        print(f"10% loss, {minutes:g} min at {rate} calls/s: {r['ok']} successful, {r['failed']} failed, "
              f"{r['retrans']} retransmissions by SIPp, INVITE→200 p50 {r['p50']:.0f} ms, p99 {r['p99']:.0f} ms "
              f"(with retransmissions), callbackd CPU {r['target_cpu']:.2f} cores.")
    finally:
        callbackd.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="500,1000,2000")
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--idle-calls", type=int, default=2000)
    ap.add_argument("--loss-minutes", type=float, default=0,
                    help="instead: basic calls with SIPp's -lost 10 (10%% packet loss) for this long")
    ap.add_argument("--loss-rate", type=int, default=100)
    args = ap.parse_args()
    if args.loss_minutes:
        return loss_run(args.loss_minutes, args.loss_rate)
    if not shutil.which("sipp"):
        sys.exit("sipp is not installed: apt-get install sip-tester")
    if not shutil.which("kamailio"):
        sys.exit("kamailio is not installed: apt-get install kamailio")
    workdir = tempfile.mkdtemp(prefix="callbackd-bench-")
    try:
        # Memory per idle established call, on a fresh callbackd: hold calls open and
        # compare resident memory before and after.
        callbackd, cport, _ = start_callbackd(workdir)
        time.sleep(1)
        base = rss_kib(callbackd.pid)
        n = args.idle_calls
        hold = subprocess.Popen(["sipp", "-sf", SCENARIO, "-s", "5000", f"127.0.0.1:{cport}", "-i", "127.0.0.1",
                                 "-p", str(free_port()), "-mp", str(free_port()), "-r", "500", "-m", str(n),
                                 "-l", str(n), "-d", "120000", "-nostdin", "-max_socket", "1000"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir)
        time.sleep(n / 500 + 6)
        held = rss_kib(callbackd.pid)
        hold.kill()
        callbackd.kill()
        memory = (f"Memory: {n} idle established calls took a fresh callbackd from {base} KiB to {held} KiB "
                  f"resident: {(held - base) * 1024 / n:.0f} bytes per call (dialog, transactions and the "
                  f"call's bound RTP socket).")

        callbackd, cport, api = start_callbackd(workdir)
        quiet, qport, _ = start_callbackd(workdir, f"sqlite://{workdir}/no-metrics.db",
                                          changes=[("metrics = true", "metrics = false"),
                                                   ("call_records = true", "call_records = false")],
                                          name="no-metrics")
        reference, rport = start_reference()
        kamailio, kport = start_kamailio(workdir)
        answering = (("SIPp UAS (reference)", rport, reference.pid),
                     ("Kamailio, stateless (reference)", kport, kamailio.pid),
                     ("callbackd, metrics and records off", qport, quiet.pid),
                     ("callbackd", cport, callbackd.pid))
        # Prometheus's part: callbackd with metrics is scraped every 5 s throughout.
        scraping = threading.Event()

        def scrape():
            while not scraping.wait(5):
                urllib.request.urlopen(f"{api}/metrics", timeout=5).read()
        threading.Thread(target=scrape, daemon=True).start()
        rows = []
        try:
            for rate in [int(r) for r in args.rates.split(",")]:
                for name, port, pid in answering:
                    before = os.times()
                    r = drive(port, pid, rate, args.seconds, workdir)
                    after = os.times()
                    r["gen_cpu"] = (after.children_user + after.children_system - before.children_user - before.children_system) / args.seconds
                    r["name"] = name
                    r["rss"] = rss_kib(pid) / 1024 if name.startswith("callbackd") else None
                    rows.append(r)
                    time.sleep(2)
        finally:
            scraping.set()
            callbackd.kill()
            quiet.kill()
            reference.kill()
            subprocess.run(["pkill", "-P", str(kamailio.pid)])
            kamailio.kill()
        print("| answering | offered calls/s | SIPp clients | successful | failed | retransmissions | achieved calls/s | INVITE→200 p50 ms | p99 ms | answering CPU (cores) | generator CPU (cores) | callbackd resident MiB after |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in rows:
            rss = f"{r['rss']:.0f}" if r["rss"] else ""
            print(f"| {r['name']} | {r['rate']} | {r['clients']} | {r['ok']} | {r['failed']} | {r['retrans']} | {r['achieved']:.0f} | {r['p50']:.0f} | {r['p99']:.0f} | {r['target_cpu']:.2f} | {r['gen_cpu']:.2f} | {rss} |")
        print()
        for rate in sorted({r["rate"] for r in rows}):
            cost = {r["name"]: r["target_cpu"] / max(r["achieved"], 1) * 1000 for r in rows if r["rate"] == rate}
            on, off = cost["callbackd"], cost["callbackd, metrics and records off"]
            print(f"At {rate} calls/s: callbackd CPU per call {on:.3f} ms with metrics and call records, "
                  f"{off:.3f} ms without ({(on / off - 1) * 100:+.1f} %).")
        print()
        print("SIPp reports response times in whole milliseconds: 0 means under 1 ms.")
        print()
        print(memory)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
