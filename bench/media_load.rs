//! RTP pacing under load: many concurrent calls, each hearing a continuous prompt from
//! callbackd and sending caller speech to it, with this program as the far end of every call.
//!
//! ```sh
//! cargo bench --bench media_load -- [--calls 500,1000,1500,2000] [--seconds 30]
//!     [--stall-ms 50] [--long-minutes 10]
//! ```
//!
//! For each number of calls: starts a fresh callbackd (release build), places the calls with a
//! minimal SIP client (INVITE with a PCMU offer, ACK), lets them settle, then for `--seconds`
//! records the kernel receive time (SO_TIMESTAMPNS) of every RTP packet callbackd sends, while
//! sending each call 20 ms of caller speech (a prompt, looped) every 20 ms. On loopback the
//! kernel receive time is the departure time give or take a few microseconds, and it does not
//! depend on when this program gets to read the packet. Reported per level:
//!
//! - |inter-departure − 20 ms| over every pair of consecutive packets of a stream: p50, p99,
//!   max; the shortest gap between two packets of one stream; packets lost (sequence gaps);
//! - callbackd's CPU (cores, from /proc) in the window, and per call; resident memory per call
//!   (against the same process before the calls);
//!
//! then, at the first level, the same after callbackd is stopped with SIGSTOP for
//! `--stall-ms` and continued (shortest gap, longest gap), and, with `--long-minutes`, one call
//! held that long: RTP-timestamp drift against the kernel clock, per hour.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use media::g711::Law;
use media::prompt::Prompt;

struct Options {
    calls: Vec<usize>,
    seconds: u64,
    stall_ms: u64,
    long_minutes: u64,
}

fn options() -> Options {
    let mut o = Options {
        calls: vec![500, 1000, 1500, 2000],
        seconds: 30,
        stall_ms: 50,
        long_minutes: 0,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.windows(2) {
        match pair[0].as_str() {
            "--calls" => o.calls = pair[1].split(',').map(|n| n.parse().unwrap()).collect(),
            "--seconds" => o.seconds = pair[1].parse().unwrap(),
            "--stall-ms" => o.stall_ms = pair[1].parse().unwrap(),
            "--long-minutes" => o.long_minutes = pair[1].parse().unwrap(),
            _ => {}
        }
    }
    o
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The system's count of UDP datagrams dropped for a full receive buffer.
fn receive_buffer_drops() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next().unwrap(), udp.next().unwrap());
    let at = names
        .split_whitespace()
        .position(|n| n == "RcvbufErrors")
        .unwrap();
    values.split_whitespace().nth(at).unwrap().parse().unwrap()
}

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh callbackd with room for the load; returns it and its SIP address.
fn start_callbackd(dir: &std::path::Path) -> (Child, SocketAddr) {
    let text = std::fs::read_to_string(root().join("callbackd.toml"))
        .unwrap()
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\"")
        .replace("udp = [\"127.0.0.1:5060\"]", "udp = [\"127.0.0.1:0\"]")
        .replace("tcp = [\"127.0.0.1:5060\"]", "tcp = []")
        .replace("max_calls = 500", "max_calls = 5000")
        .replace("max_calls_per_second = 200", "max_calls_per_second = 5000")
        .replace("rtp_ports = \"20000-29999\"", "rtp_ports = \"20000-39999\"")
        .replace(
            "url = \"sqlite://callbackd.db\"",
            &format!("url = \"sqlite://{}/bench.db\"", dir.display()),
        );
    let config = dir.join("bench.toml");
    std::fs::write(&config, text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_callbackd"))
        .args(["serve", "--config"])
        .arg(&config)
        .current_dir(root())
        .env("CALLBACKD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("callbackd runs");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut sip = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(a) = line.strip_prefix("callbackd: SIP on udp://") {
            sip = a.parse().ok();
        }
        if line.starts_with("callbackd: HTTP API on") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (child, sip.expect("callbackd printed its SIP address"))
}

/// One call's far end.
struct Leg {
    socket: Arc<UdpSocket>,
    /// Where callbackd's RTP for this call comes from, once answered.
    remote: Option<SocketAddr>,
}

/// Places `count` calls at 250 a second; returns the answered legs.
fn place_calls(sip: SocketAddr, count: usize) -> Vec<Leg> {
    let signalling = UdpSocket::bind("127.0.0.1:0").unwrap();
    signalling
        .set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let local = signalling.local_addr().unwrap();
    let mut legs: Vec<Leg> = Vec::new();
    let mut answered = 0;
    let mut buffer = vec![0u8; 65536];
    let started = Instant::now();
    let handle = |text: &str, legs: &mut Vec<Leg>, answered: &mut usize| {
        if !text.starts_with("SIP/2.0 200") {
            return;
        }
        let header = |name: &str| {
            text.lines()
                .find(|l| {
                    l.to_ascii_lowercase()
                        .starts_with(&name.to_ascii_lowercase())
                })
                .map(|l| l.split_once(':').unwrap().1.trim().to_owned())
        };
        let (Some(call_id), Some(to)) = (header("Call-ID"), header("To")) else {
            return;
        };
        let Some(index) = call_id
            .strip_prefix("bench-")
            .and_then(|r| r.split('@').next())
            .and_then(|n| n.parse::<usize>().ok())
        else {
            return;
        };
        let port: u16 = text
            .lines()
            .find_map(|l| l.strip_prefix("m=audio "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let ack = format!(
            "ACK sip:bench@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-ack-{index}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:load@127.0.0.1>;tag=t{index}\r\nTo: {to}\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
        );
        signalling.send_to(ack.as_bytes(), sip).unwrap();
        let leg = &mut legs[index];
        if leg.remote.is_none() {
            leg.remote = Some(SocketAddr::new(sip.ip(), port));
            *answered += 1;
        }
    };
    for index in 0..count {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let on: libc::c_int = 1;
        let fd = socket.as_raw_fd();
        let set = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                &on as *const _ as *const libc::c_void,
                std::mem::size_of_val(&on) as libc::socklen_t,
            )
        };
        assert_eq!(set, 0, "SO_TIMESTAMPNS");
        let rtp = socket.local_addr().unwrap().port();
        let sdp = format!(
            "v=0\r\no=- {index} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {rtp} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\n"
        );
        let invite = format!(
            "INVITE sip:bench@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-inv-{index};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:load@127.0.0.1>;tag=t{index}\r\nTo: <sip:bench@{sip}>\r\n\
             Call-ID: bench-{index}@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: <sip:load@{local}>\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        );
        legs.push(Leg {
            socket: Arc::new(socket),
            remote: None,
        });
        signalling.send_to(invite.as_bytes(), sip).unwrap();
        // 250 calls a second, reading answers as they come.
        let due = started + Duration::from_millis(4 * index as u64);
        while Instant::now() < due {
            if let Ok((n, _)) = signalling.recv_from(&mut buffer) {
                let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
                handle(&text, &mut legs, &mut answered);
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while answered < count && Instant::now() < deadline {
        if let Ok((n, _)) = signalling.recv_from(&mut buffer) {
            let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
            handle(&text, &mut legs, &mut answered);
        }
    }
    assert_eq!(answered, count, "every call answered");
    // Keep the signalling socket open (callbackd's BYEs have somewhere to go) by leaking it
    // for the life of the benchmark.
    std::mem::forget(signalling);
    legs
}

/// Sends every leg 20 ms of caller speech every 20 ms, the legs spread over the period, until
/// `stop`.
fn caller_audio(legs: Vec<(Arc<UdpSocket>, SocketAddr)>, stop: Arc<AtomicBool>) {
    let speech = std::fs::read(root().join("prompts/main-menu.wav")).unwrap();
    let speech = Prompt::from_wav("speech", &speech).unwrap();
    let audio = speech.encoded(Law::Mu).to_vec();
    std::thread::spawn(move || {
        let start = Instant::now();
        let mut tick: u64 = 0;
        let per_slot = legs.len().div_ceil(20).max(1);
        while !stop.load(Ordering::Relaxed) {
            let deadline = start + Duration::from_millis(tick);
            if let Some(wait) = deadline.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let slot = (tick % 20) as usize;
            let round = tick / 20;
            for (index, (socket, remote)) in
                legs.iter().enumerate().skip(slot * per_slot).take(per_slot)
            {
                let offset = ((round as usize * 160) + index * 997) % (audio.len() - 160);
                let mut packet = vec![0x80, 0x00];
                packet.extend((round as u16).to_be_bytes());
                packet.extend((round as u32 * 160).to_be_bytes());
                packet.extend((index as u32 + 1).to_be_bytes());
                packet.extend_from_slice(&audio[offset..offset + 160]);
                let _ = socket.send_to(&packet, remote);
            }
            tick += 1;
        }
    });
}

/// What one stream received: (kernel receive time in ns, RTP sequence, RTP timestamp).
type Record = Vec<(i64, u16, u32)>;

/// Reads every leg's RTP, with its kernel receive time, on one thread for as long as the level
/// lasts (so no socket ever fills up), keeping what arrives while recording.
struct Listener {
    recording: Arc<AtomicBool>,
    ask: std::sync::mpsc::Sender<()>,
    records: std::sync::mpsc::Receiver<Vec<Record>>,
}

impl Listener {
    fn start(sockets: Vec<Arc<UdpSocket>>, stop: Arc<AtomicBool>) -> Listener {
        let recording = Arc::new(AtomicBool::new(false));
        let (ask, asked) = std::sync::mpsc::channel::<()>();
        let (give, records) = std::sync::mpsc::channel();
        let on = recording.clone();
        std::thread::spawn(move || {
            let epoll = unsafe { libc::epoll_create1(0) };
            for (index, socket) in sockets.iter().enumerate() {
                let mut event = libc::epoll_event {
                    events: libc::EPOLLIN as u32,
                    u64: index as u64,
                };
                unsafe {
                    libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, socket.as_raw_fd(), &mut event)
                };
            }
            let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
            let fresh = || vec![Vec::with_capacity(4096); sockets.len()];
            let mut kept: Vec<Record> = fresh();
            let mut buffer = [0u8; 2048];
            let mut control = [0u8; 128];
            while !stop.load(Ordering::Relaxed) {
                if asked.try_recv().is_ok() {
                    let _ = give.send(std::mem::replace(&mut kept, fresh()));
                }
                let n = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), 256, 10) };
                for event in events.iter().take(n.max(0) as usize) {
                    let index = event.u64 as usize;
                    let fd = sockets[index].as_raw_fd();
                    loop {
                        let mut iov = libc::iovec {
                            iov_base: buffer.as_mut_ptr() as *mut libc::c_void,
                            iov_len: buffer.len(),
                        };
                        let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
                        message.msg_iov = &mut iov;
                        message.msg_iovlen = 1;
                        message.msg_control = control.as_mut_ptr() as *mut libc::c_void;
                        message.msg_controllen = control.len();
                        let got = unsafe { libc::recvmsg(fd, &mut message, libc::MSG_DONTWAIT) };
                        if got < 12 {
                            break;
                        }
                        if !on.load(Ordering::Relaxed) {
                            continue;
                        }
                        let mut when = None;
                        let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&message) };
                        while !cmsg.is_null() {
                            let header = unsafe { &*cmsg };
                            if header.cmsg_level == libc::SOL_SOCKET
                                && header.cmsg_type == libc::SCM_TIMESTAMPNS
                            {
                                let ts: libc::timespec = unsafe {
                                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const _)
                                };
                                when = Some(ts.tv_sec * 1_000_000_000 + ts.tv_nsec);
                            }
                            cmsg = unsafe { libc::CMSG_NXTHDR(&message, cmsg) };
                        }
                        let sequence = u16::from_be_bytes([buffer[2], buffer[3]]);
                        let timestamp =
                            u32::from_be_bytes([buffer[4], buffer[5], buffer[6], buffer[7]]);
                        if let Some(when) = when {
                            kept[index].push((when, sequence, timestamp));
                        }
                    }
                }
            }
            unsafe { libc::close(epoll) };
        });
        Listener {
            recording,
            ask,
            records,
        }
    }

    fn record(&self) {
        self.recording.store(true, Ordering::Relaxed);
    }

    /// Stops recording and hands over what was recorded.
    fn take(&self) -> Vec<Record> {
        self.recording.store(false, Ordering::Relaxed);
        self.ask.send(()).unwrap();
        self.records.recv().unwrap()
    }
}

struct Gaps {
    deviations_us: Vec<u64>,
    shortest_us: u64,
    longest_us: u64,
    /// Packets that never arrived (sequence numbers missing).
    lost: u64,
    /// Packets callbackd skipped as too late (RTP timestamps stepping more than 20 ms).
    skipped: u64,
    packets: u64,
}

fn gaps(records: &[Record]) -> Gaps {
    let mut g = Gaps {
        deviations_us: Vec::new(),
        shortest_us: u64::MAX,
        longest_us: 0,
        lost: 0,
        skipped: 0,
        packets: 0,
    };
    for record in records {
        g.packets += record.len() as u64;
        for pair in record.windows(2) {
            let ((t0, s0, r0), (t1, s1, r1)) = (pair[0], pair[1]);
            let gap = ((t1 - t0) / 1000).max(0) as u64;
            let step = s1.wrapping_sub(s0);
            if step > 1 && step < 1000 {
                g.lost += u64::from(step - 1);
            }
            let samples = r1.wrapping_sub(r0) / u32::from(step.max(1));
            if samples > 160 && samples < 160 * 1000 {
                g.skipped += u64::from(samples / 160 - 1);
            }
            g.shortest_us = g.shortest_us.min(gap);
            g.longest_us = g.longest_us.max(gap);
            g.deviations_us.push(gap.abs_diff(20_000));
        }
    }
    g.deviations_us.sort_unstable();
    g
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// Holds `calls` calls, measures for `seconds` (and the stall when asked), and prints a row.
fn level(calls: usize, seconds: u64, stall_ms: Option<u64>) -> Option<String> {
    let dir = std::env::temp_dir().join(format!("callbackd-media-bench-{calls}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (mut child, sip) = start_callbackd(&dir);
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(500));
    let idle_rss = rss_kib(pid);
    let legs = place_calls(sip, calls);
    let sockets: Vec<Arc<UdpSocket>> = legs.iter().map(|l| l.socket.clone()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    caller_audio(
        legs.iter()
            .map(|l| (l.socket.clone(), l.remote.unwrap()))
            .collect(),
        stop.clone(),
    );
    let listener = Listener::start(sockets, stop.clone());
    // Settle: every call past its first packets.
    std::thread::sleep(Duration::from_secs(3));
    let cpu_before = cpu_seconds(pid);
    let drops_before = receive_buffer_drops();
    let wall = Instant::now();
    listener.record();
    std::thread::sleep(Duration::from_secs(seconds));
    let cores = (cpu_seconds(pid) - cpu_before) / wall.elapsed().as_secs_f64();
    let rss = rss_kib(pid);
    let drops = receive_buffer_drops() - drops_before;
    let records = listener.take();
    let g = gaps(&records);
    let expected = (calls as u64) * seconds * 50;
    println!(
        "| {calls} | {} | {:.3} | {:.3} | {:.3} | {:.1} | {} | {} | {:.2} | {:.2} | {:.1} |",
        g.packets,
        percentile(&g.deviations_us, 0.5),
        percentile(&g.deviations_us, 0.99),
        percentile(&g.deviations_us, 1.0),
        g.shortest_us as f64 / 1000.0,
        g.lost,
        g.skipped,
        cores,
        cores / calls as f64 * 1000.0,
        (rss.saturating_sub(idle_rss)) as f64 * 1.024 / calls as f64,
    );
    eprintln!(
        "  ({calls} calls: {} of about {expected} packets seen in the window; {} skipped by \
         callbackd as late; {drops} datagrams dropped by full receive buffers, system-wide)",
        g.packets, g.skipped
    );
    let mut stalled = None;
    if let Some(ms) = stall_ms {
        listener.record();
        std::thread::sleep(Duration::from_secs(2));
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
        std::thread::sleep(Duration::from_millis(ms));
        unsafe { libc::kill(pid as i32, libc::SIGCONT) };
        std::thread::sleep(Duration::from_secs(2));
        let g = gaps(&listener.take());
        stalled = Some(format!(
            "Stopped for {ms} ms (SIGSTOP, SIGCONT) with {calls} calls: shortest gap {:.1} ms, \
             longest {:.1} ms, p99 |gap − 20 ms| {:.3} ms, lost {}, skipped as late {}",
            g.shortest_us as f64 / 1000.0,
            g.longest_us as f64 / 1000.0,
            percentile(&g.deviations_us, 0.99),
            g.lost,
            g.skipped
        ));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    stalled
}

/// One call held for `minutes`: how far its RTP timestamps drift from the kernel clock.
fn drift(minutes: u64) {
    let dir = std::env::temp_dir().join("callbackd-media-bench-drift");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (mut child, sip) = start_callbackd(&dir);
    let legs = place_calls(sip, 1);
    let stop = Arc::new(AtomicBool::new(false));
    caller_audio(
        vec![(legs[0].socket.clone(), legs[0].remote.unwrap())],
        stop.clone(),
    );
    let listener = Listener::start(vec![legs[0].socket.clone()], stop.clone());
    std::thread::sleep(Duration::from_secs(1));
    listener.record();
    std::thread::sleep(Duration::from_secs(minutes * 60));
    let record = listener.take().remove(0);
    // Unwrapped RTP time against kernel time; the least offset over the first and the last
    // 100 packets, so one late packet does not count as drift.
    let mut unwrapped = Vec::with_capacity(record.len());
    let (mut base, mut previous) = (0i64, record[0].2);
    for &(when, _, timestamp) in &record {
        if timestamp < previous && previous - timestamp > u32::MAX / 2 {
            base += 1 << 32;
        }
        previous = timestamp;
        let rtp_ns = (base + i64::from(timestamp)) * 125_000;
        unwrapped.push(when - rtp_ns);
    }
    let first = unwrapped.iter().take(100).min().unwrap();
    let last = unwrapped.iter().rev().take(100).min().unwrap();
    let span_s = (record.last().unwrap().0 - record[0].0) as f64 / 1e9;
    let drift_ms = (last - first) as f64 / 1e6;
    println!(
        "One call held {:.1} minutes: RTP timestamps drifted {:.3} ms from the kernel clock, \
         {:.3} ms per hour",
        span_s / 60.0,
        drift_ms,
        drift_ms * 3600.0 / span_s
    );
    stop.store(true, Ordering::Relaxed);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    let o = options();
    println!(
        "| calls | packets in {} s | p50 \\|gap − 20 ms\\| ms | p99 ms | max ms | shortest gap ms | lost | skipped as late | callbackd CPU (cores) | per 1,000 calls | memory per call KB |",
        o.seconds
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut stalled = None;
    for (i, &calls) in o.calls.iter().enumerate() {
        stalled = stalled.or(level(calls, o.seconds, (i == 0).then_some(o.stall_ms)));
    }
    if let Some(line) = stalled {
        println!("\n{line}");
    }
    if o.long_minutes > 0 {
        drift(o.long_minutes);
    }
}
