#!/usr/bin/env python3
"""The attacks of issue 17 against a release callbackd at full speed, with legitimate traffic
alongside, and callbackd's memory before, at its peak during and after each, and its CPU:

- flood: 1,000 INVITEs a second from one address while SIPp from another places 50 calls a
  second as a trunk in sip.trusted (the goal: at least 99.5% of those complete, and CPU stays
  bounded), and again with anyone allowed to call and SIPp as one more address at 10 a second;
- register: wrong-password REGISTERs from one socket as fast as it can send;
- options: OPTIONS padded to 60 KB, 500 a second, from 20 addresses (each under its rate);
- chat: one address opening conversations and sending messages as fast as it can;
- guessing: the last four digits of one confirmation ID guessed through the chat from a new
  address each time (behind a trusted proxy, X-Forwarded-For), at the full rate the limits
  allow, for --guess-seconds; the look-ups actually made, and the expected blind successes in
  30 days that follow from the limits, with the arithmetic.

Usage: cargo build --release && python3 bench/attacks.py [--seconds 60] [--guess-seconds 120]
Prints a Markdown table and the guessing figures; bench/README.md keeps the latest.
"""
import argparse, json, os, random, re, shutil, socket, subprocess, sys, tempfile, threading, time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sip_calls import ROOT, config_text, cpu_seconds, free_port, rss_kib  # noqa: E402


def start(workdir, changes=(), name="attacks"):
    """A release callbackd with the default limits (the ones under attack) and the changes made;
    returns it, its SIP port, its API URL and its token."""
    sip = free_port()
    text = config_text(sip, f"sqlite://{workdir}/{name}.db")
    for old, new in changes:
        assert old in text, old
        text = text.replace(old, new)
    path = os.path.join(workdir, f"{name}.toml")
    open(path, "w").write(text)
    log = open(os.path.join(workdir, f"{name}.log"), "w")
    proc = subprocess.Popen([os.path.join(ROOT, "target/release/callbackd"), "serve", "--config", path],
                            stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT,
                            env=dict(os.environ, CALLBACKD_LOG="warn"))
    api = token = None
    for line in proc.stdout:
        if line.startswith("callbackd: API token"):
            token = line.rsplit(": ", 1)[1].strip()
        if line.startswith("callbackd: HTTP API on"):
            api = line.split(" on ", 1)[1].strip()
            break
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    return proc, sip, api, token


def call_api(api, path, body=None, token=None, headers=None):
    h = {"Content-Type": "application/json", **(headers or {})}
    if token:
        h["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(api + path, data=data, headers=h, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


class Watch:
    """Memory before, at its peak while watched, and after; CPU while watched."""

    def __init__(self, pid):
        self.pid, self.before = pid, rss_kib(pid)
        self.peak, self.running = self.before, True
        self.cpu0, self.t0 = cpu_seconds(pid), time.time()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self):
        while self.running:
            self.peak = max(self.peak, rss_kib(self.pid))
            time.sleep(0.2)

    def stop(self, settle=5):
        self.running = False
        self.thread.join()
        self.cpu = (cpu_seconds(self.pid) - self.cpu0) / (time.time() - self.t0)
        time.sleep(settle)
        self.after = rss_kib(self.pid)
        return self


def invite(me, target, i):
    sdp = (f"v=0\r\no=- {i} 1 IN IP4 {me[0]}\r\ns=-\r\nc=IN IP4 {me[0]}\r\nt=0 0\r\n"
           f"m=audio 9 RTP/AVP 0\r\n")
    return (f"INVITE sip:5000@{target[0]}:{target[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {me[0]}:{me[1]};branch=z9hG4bK-f{i};rport\r\n"
            f"From: <sip:flood@{me[0]}>;tag=f{i}\r\nTo: <sip:5000@{target[0]}>\r\n"
            f"Call-ID: flood-{i}@{me[0]}\r\nCSeq: 1 INVITE\r\nContact: <sip:flood@{me[0]}:{me[1]}>\r\n"
            f"Max-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}").encode()


def paced(rate, seconds, send):
    start = time.time()
    for i in range(int(rate * seconds)):
        due = start + i / rate
        wait = due - time.time()
        if wait > 0:
            time.sleep(wait)
        send(i)


def flood(workdir, seconds, trunk):
    """1,000 INVITEs/s from 127.0.0.1 while SIPp calls from 127.0.0.2: as a trunk in
    sip.trusted at 50 calls/s, or (`trunk` false, anyone may call) as one more address at 10
    calls/s, within its own per-source limits."""
    rate = 50 if trunk else 10
    changes = [("trusted = []", 'trusted = ["127.0.0.2"]')] if trunk else []
    proc, sip, api, token = start(workdir, changes, name=f"flood-{trunk}")
    target = ("127.0.0.1", sip)
    try:
        time.sleep(1)
        w = Watch(proc.pid)
        flooder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        flooder.bind(("127.0.0.1", 0))
        me = flooder.getsockname()
        t = threading.Thread(target=paced, args=(1000, seconds, lambda i: flooder.sendto(invite(me, target, i), target)))
        t.start()
        calls = rate * seconds
        out = subprocess.run(["sipp", "-sf", os.path.join(ROOT, "tests/sipp/uac_basic.xml"), "-s", "5000",
                              f"127.0.0.1:{sip}", "-i", "127.0.0.2", "-mi", "127.0.0.2", "-p", str(free_port()),
                              "-r", str(rate), "-m", str(calls), "-l", "200", "-nostdin",
                              "-timeout", f"{seconds * 2}s"],
                             capture_output=True, text=True, cwd=workdir).stdout
        t.join()
        # Long enough for the calls' transactions to end (64·T1).
        w.stop(settle=40)
        ok = int(re.search(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", out).group(1))
        banned = open(os.path.join(workdir, f"flood-{trunk}.log")).read().count("SIP source banned")
        who = "a trunk in sip.trusted" if trunk else "another address, anyone may call"
        times = {1: "once", 2: "twice"}.get(banned, f"{banned} times")
        return dict(attack=f"1,000 INVITEs/s from one address for {seconds} s (banned {times})",
                    legit=f"{ok} of {calls} SIPp calls ({rate}/s, {who}) completed: {ok / calls:.1%}", w=w)
    finally:
        proc.kill()


def register(workdir, seconds):
    proc, sip, _, _ = start(workdir, [('# 1001 = "a long phone password"', '1001 = "phone-secret"')], name="register")
    target = ("127.0.0.1", sip)
    try:
        time.sleep(1)
        w = Watch(proc.pid)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.2)
        me = s.getsockname()
        sent = answered = 0
        end = time.time() + seconds
        while time.time() < end:
            msg = (f"REGISTER sip:127.0.0.1:{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {me[0]}:{me[1]};branch=z9hG4bK-r{sent}\r\n"
                   f"From: <sip:1001@127.0.0.1>;tag=r\r\nTo: <sip:1001@127.0.0.1>\r\nCall-ID: r@{me[0]}\r\n"
                   f"CSeq: {sent + 1} REGISTER\r\nContact: <sip:1001@{me[0]}:{me[1]}>\r\nMax-Forwards: 70\r\n"
                   f'Authorization: Digest username="1001", realm="callbackd", nonce="00", uri="sip:127.0.0.1:{sip}", '
                   f'response="{sent:032x}"\r\nContent-Length: 0\r\n\r\n')
            s.sendto(msg.encode(), target)
            sent += 1
        try:
            while True:
                s.recv(65536)
                answered += 1
        except socket.timeout:
            pass
        w.stop()
        # The phone from another address still registers (SIPp's digest).
        out = subprocess.run(["sipp", "-sf", os.path.join(ROOT, "tests/sipp/uac_register.xml"), f"127.0.0.1:{sip}",
                              "-i", "127.0.0.2", "-p", str(free_port()), "-m", "1", "-nostdin", "-timeout", "10s"],
                             capture_output=True, text=True, cwd=workdir).stdout
        ok = int(re.search(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", out).group(1))
        return dict(attack=f"{sent:,} wrong-password REGISTERs from one socket in {seconds} s; {answered} answered",
                    legit=f"the phone from another address registered: {'yes' if ok == 1 else 'NO'}", w=w)
    finally:
        proc.kill()


def options(workdir, seconds):
    proc, sip, _, _ = start(workdir, name="options")
    target = ("127.0.0.1", sip)
    try:
        time.sleep(1)
        w = Watch(proc.pid)
        sockets = []
        for i in range(1, 21):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((f"127.0.1.{i}", 0))
            sockets.append(s)
        pad = "x" * 60000

        def send(i):
            s = sockets[i % len(sockets)]
            me = s.getsockname()
            s.sendto((f"OPTIONS sip:127.0.0.1:{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {me[0]}:{me[1]};branch=z9hG4bK-o{i}\r\n"
                      f"From: <sip:p@{me[0]}>;tag=o\r\nTo: <sip:127.0.0.1>\r\nCall-ID: o{i}\r\nCSeq: 1 OPTIONS\r\n"
                      f"Max-Forwards: 70\r\nX-Padding: {pad}\r\nContent-Length: 0\r\n\r\n").encode(), target)
        paced(500, seconds, send)
        w.stop()
        return dict(attack=f"OPTIONS padded to 60 KB, 500/s from 20 addresses for {seconds} s", legit="-", w=w)
    finally:
        proc.kill()


def chat(workdir, seconds):
    proc, _, api, _ = start(workdir, name="chat")
    try:
        time.sleep(1)
        w = Watch(proc.pid)
        opened = refused = said = slowed = 0
        sessions = []
        end = time.time() + seconds
        while time.time() < end:
            status, body = call_api(api, "/api/v1/chat/sessions", {})
            if status == 201:
                opened += 1
                sessions.append(body["id"])
            else:
                refused += 1
            if sessions:
                status, _ = call_api(api, f"/api/v1/chat/sessions/{random.choice(sessions)}/messages", {"text": "x" * 999})
                said += status == 200
                slowed += status == 429
        w.stop()
        return dict(attack=f"one address: {opened + refused:,} conversations asked for, {opened} opened; "
                           f"{said} messages taken, {slowed:,} refused (429) in {seconds} s",
                    legit="-", w=w)
    finally:
        proc.kill()


def guessing(workdir, seconds):
    """Many sources (X-Forwarded-For through a trusted proxy) guessing one ID's last four."""
    # Each guess its own conversation, forgotten soon, so the 10,000 there may be are enough.
    proc, _, api, token = start(workdir, [("trusted_proxies = []", 'trusted_proxies = ["127.0.0.1"]'),
                                          ("sessions_per_address = 20", "sessions_per_address = 100000"),
                                          ('session_idle = "30m"', 'session_idle = "5s"')],
                                name="guessing")
    try:
        time.sleep(1)
        _, cb = call_api(api, "/api/v1/callbacks", {"queue": "support", "address": "+12125550100"}, token)
        cid = cb["confirmation_id"]
        guesses = 0
        end = time.time() + seconds
        while time.time() < end:
            xff = {"X-Forwarded-For": f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"}
            status, body = call_api(api, "/api/v1/chat/sessions", {}, headers=xff)
            chat_id = body["id"]
            for text in ("please pause my callback", cid, f"{random.choice([n for n in range(10000) if n != 100]):04d}"):
                call_api(api, f"/api/v1/chat/sessions/{chat_id}/messages", {"text": text}, headers=xff)
            guesses += 1
        proc.kill()
        proc.wait()
        made = open(os.path.join(workdir, "guessing.log")).read().count("failed callback look-up")
        return guesses, made
    finally:
        proc.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--guess-seconds", type=int, default=120)
    args = ap.parse_args()
    if not shutil.which("sipp"):
        sys.exit("sipp is not installed: apt-get install sip-tester")
    workdir = tempfile.mkdtemp(prefix="callbackd-attacks-")
    try:
        rows = [flood(workdir, args.seconds, True), flood(workdir, args.seconds, False),
                register(workdir, 5), options(workdir, args.seconds // 6),
                chat(workdir, args.seconds // 6)]
        print("| attack | legitimate traffic | memory before KiB | peak KiB | after KiB | callbackd CPU (cores) |")
        print("| --- | --- | --- | --- | --- | --- |")
        for r in rows:
            w = r["w"]
            print(f"| {r['attack']} | {r['legit']} | {w.before} | {w.peak} | {w.after} | {w.cpu:.2f} |")
        guesses, made = guessing(workdir, args.guess_seconds)
        print()
        print(f"Guessing: {guesses:,} last-four guesses at one ID in {args.guess_seconds} s, each from an address "
              f"of its own; {made} look-ups made, the rest refused by limits.failures_per_id (5 in 30 days).")
        print(f"Expected blind successes per ID in 30 days: at most 5 look-ups x 1/10,000 = {5 / 10000:.0e}.")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
