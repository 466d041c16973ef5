//! The media runtime: call legs (`media::leg::Leg`) on a few dedicated pacing threads, each
//! sending every leg's packet on an absolute 20 ms clock.
//!
//! Each thread owns its legs outright (socket and state), so nothing is locked per packet. A
//! leg keeps a phase: one of twenty 1 ms slots in the 20 ms period, the least crowded when it
//! was opened, so the sends spread evenly. The thread sleeps to the next slot's absolute
//! deadline, reads what arrived on that slot's sockets (non-blocking), and sends each leg's
//! packet. Deadlines are absolute, so nothing drifts over a long prompt; a packet more than
//! 8 ms late is not sent at all (the leg skips it, its timestamps moving on with the clock),
//! so after a stall the next packet still comes no sooner than 12 ms after the one before.
//! The threads ask for real-time priority, so other work on the machine does not delay them.
//!
//! Bridged legs live on the same thread, so relayed audio goes from one to the other without a
//! lock; bridging two legs of different threads moves one over first.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use media::leg::{Leg, LegEvent};
use media::playout::Item;
use media::prompt::{Library, Prompt};
use tokio::sync::mpsc::UnboundedSender;
use tracing::{debug, info, warn};

/// Loads every `.wav` of `dir` as a prompt named after its file.
pub fn load_prompts(dir: &Path) -> anyhow::Result<Library> {
    let entries = std::fs::read_dir(dir).with_context(|| {
        format!(
            "reading the prompts in {} (media.prompts; run callbackd from its checkout or set the path)",
            dir.display()
        )
    })?;
    let mut library = Library::default();
    for entry in entries {
        let path = entry?.path();
        let Some(name) = path
            .extension()
            .filter(|e| *e == "wav")
            .and_then(|_| path.file_stem())
            .and_then(|n| n.to_str())
        else {
            continue;
        };
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let prompt = Prompt::from_wav(name, &bytes).with_context(|| path.display().to_string())?;
        library.insert(prompt);
    }
    Ok(library)
}

/// What names a leg: the call it belongs to.
pub trait LegKey: Copy + Eq + std::hash::Hash + std::fmt::Display + Send + 'static {}

impl<T: Copy + Eq + std::hash::Hash + std::fmt::Display + Send + 'static> LegKey for T {}

const PERIOD: Duration = Duration::from_millis(20);
const SLOTS: usize = 20;
/// Datagrams read from one leg's port per turn (a far end sends one per 20 ms).
const MAX_READS: usize = 16;
/// A packet later than this is skipped rather than sent: the next one goes on time, so two
/// packets of a call are at least 12 ms apart (the promise is 10 ms; 2 ms spare for the
/// kernel's own delays after a stall).
const MAX_LATE: Duration = Duration::from_millis(8);

/// How many packets to skip when the one due is `late`: every due time at least
/// [`MAX_LATE`] ago.
fn periods_missed(late: Duration) -> u32 {
    if late < MAX_LATE {
        return 0;
    }
    ((late - MAX_LATE).as_micros() / PERIOD.as_micros()) as u32 + 1
}

/// What the legs report to the call logic.
#[derive(Debug)]
pub enum MediaEvent<K> {
    Leg {
        call: K,
        event: LegEvent,
    },
    /// The far end sent no RTP for the leg's timeout (reported once).
    Silent {
        call: K,
    },
    /// The leg is closed: what it sent, received and dropped.
    Closed {
        call: K,
        counters: media::rtp::Counters,
    },
}

enum Command<K> {
    Open(Box<Stream<K>>),
    Play {
        call: K,
        id: u64,
        items: Vec<Item>,
        barge_in: bool,
    },
    SendKeys(K, String),
    /// A key from the signalling (SIP INFO).
    Key(K, char),
    SetRemote(K, SocketAddr),
    /// Bridges the two legs, both on this thread.
    Bridge(K, K),
    Close(K),
}

/// One leg with its socket, as a pacing thread keeps it.
struct Stream<K> {
    call: K,
    socket: UdpSocket,
    leg: Leg,
    timeout: Duration,
    /// When the next packet is due; always on this leg's phase.
    due: Instant,
    bridged: Option<K>,
    silent_reported: bool,
}

/// The call logic's handle on the pacing threads.
pub struct Media<K> {
    threads: Vec<mpsc::Sender<Command<K>>>,
    /// Which thread each leg is on, and how many legs each thread has.
    placed: HashMap<K, usize>,
    load: Vec<usize>,
}

impl<K: LegKey> Media<K> {
    /// Starts `threads` pacing threads; what the legs report goes to `events`.
    pub fn start(
        threads: usize,
        events: UnboundedSender<MediaEvent<K>>,
    ) -> std::io::Result<Media<K>> {
        let epoch = Instant::now();
        let mut senders = Vec::new();
        for index in 0..threads.max(1) {
            let (tx, rx) = mpsc::channel();
            let thread = index.to_string();
            let pacer = Pacer {
                epoch,
                commands: rx,
                events: events.clone(),
                streams: HashMap::new(),
                slots: vec![Vec::new(); SLOTS],
                lateness: metrics::histogram!("callbackd_rtp_pacing_lateness_seconds", "thread" => thread.clone()),
                skips: metrics::counter!("callbackd_rtp_late_skips_total", "thread" => thread),
            };
            std::thread::Builder::new()
                .name(format!("rtp-pacer-{index}"))
                .spawn(move || pacer.run())?;
            senders.push(tx);
        }
        Ok(Media {
            load: vec![0; senders.len()],
            threads: senders,
            placed: HashMap::new(),
        })
    }

    /// Starts sending and receiving for a call: `socket` is its RTP port. A call that will be
    /// bridged to another is opened `near` it (on its thread).
    pub fn open(
        &mut self,
        call: K,
        socket: UdpSocket,
        leg: Leg,
        timeout: Duration,
        near: Option<K>,
    ) -> std::io::Result<()> {
        socket.set_nonblocking(true)?;
        // Whatever reached the port before the call had media is not the far end's audio to
        // hear (packets sprayed at it while it rang): dropped unread.
        // (At most about what a socket's buffer holds, so a sprayer cannot keep us here.)
        let mut discard = [0; 2048];
        for _ in 0..256 {
            if socket.recv_from(&mut discard).is_err() {
                break;
            }
        }
        let least_loaded = (0..self.threads.len())
            .min_by_key(|&t| self.load[t])
            .unwrap_or(0);
        let thread = near
            .and_then(|n| self.placed.get(&n).copied())
            .unwrap_or(least_loaded);
        self.load[thread] += 1;
        self.placed.insert(call, thread);
        let stream = Stream {
            call,
            socket,
            leg,
            timeout,
            due: Instant::now(),
            bridged: None,
            silent_reported: false,
        };
        self.send(call, Command::Open(Box::new(stream)));
        Ok(())
    }

    pub fn play(&self, call: K, id: u64, items: Vec<Item>, barge_in: bool) {
        self.send(
            call,
            Command::Play {
                call,
                id,
                items,
                barge_in,
            },
        );
    }

    pub fn send_keys(&self, call: K, keys: &str) {
        self.send(call, Command::SendKeys(call, keys.to_owned()));
    }

    pub fn key(&self, call: K, key: char) {
        self.send(call, Command::Key(call, key));
    }

    pub fn set_remote(&self, call: K, remote: SocketAddr) {
        self.send(call, Command::SetRemote(call, remote));
    }

    /// How many calls have media now (each holds an RTP port).
    pub fn legs(&self) -> usize {
        self.placed.len()
    }

    /// Relays each leg's audio to the other (transcoding between laws as needed). The two
    /// must be on one thread: open the second `near` the first.
    pub fn bridge(&self, a: K, b: K) {
        match (self.placed.get(&a), self.placed.get(&b)) {
            (Some(ta), Some(tb)) if ta == tb => self.send(a, Command::Bridge(a, b)),
            _ => warn!(%a, %b, "cannot bridge calls not opened near each other"),
        }
    }

    /// Stops the leg and frees its port.
    pub fn close(&mut self, call: K) {
        if let Some(thread) = self.placed.remove(&call) {
            self.load[thread] -= 1;
            let _ = self.threads[thread].send(Command::Close(call));
        }
    }

    fn send(&self, call: K, command: Command<K>) {
        if let Some(&thread) = self.placed.get(&call) {
            let _ = self.threads[thread].send(command);
        }
    }
}

/// Adds a leg's RTP totals to the metrics.
fn count_rtp(c: &media::rtp::Counters) {
    use metrics::counter;
    counter!("callbackd_rtp_packets_total", "direction" => "sent").increment(c.sent);
    counter!("callbackd_rtp_packets_total", "direction" => "received").increment(c.received);
    counter!("callbackd_rtp_packets_lost_total").increment(c.lost);
    for (reason, n) in [
        ("garbage", c.garbage),
        ("foreign_source", c.foreign_source),
        ("foreign_ssrc", c.foreign_ssrc),
        ("unexpected_payload_type", c.unexpected_payload_type),
        ("probation", c.probation),
    ] {
        counter!("callbackd_rtp_packets_dropped_total", "reason" => reason).increment(n);
    }
}

/// Asks for real-time scheduling (SCHED_FIFO, priority 10) for the calling thread, so other
/// work on the machine cannot hold a packet up; without the privilege (CAP_SYS_NICE) the thread
/// stays at normal priority, and says so once.
fn realtime_priority() {
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: sched_setscheduler reads `param` and changes only this thread's scheduling.
    let result = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if result != 0 {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            warn!(
                error = %std::io::Error::last_os_error(),
                "RTP pacing threads run at normal priority; give callbackd CAP_SYS_NICE for real-time priority"
            )
        });
    }
}

struct Pacer<K> {
    epoch: Instant,
    commands: mpsc::Receiver<Command<K>>,
    events: UnboundedSender<MediaEvent<K>>,
    streams: HashMap<K, Stream<K>>,
    /// The legs of each 1 ms slot of the period.
    slots: Vec<Vec<K>>,
    /// How late the thread wakes for its slots, and the packets it skips for being late.
    lateness: metrics::Histogram,
    skips: metrics::Counter,
}

impl<K: LegKey> Pacer<K> {
    fn run(mut self) {
        realtime_priority();
        let mut tick: u64 = 0;
        let mut buffer = vec![0u8; 2048];
        loop {
            if self.streams.is_empty() {
                // Nothing to send: wait for work rather than waking every millisecond.
                match self.commands.recv() {
                    Ok(command) => self.command(command),
                    Err(_) => return,
                }
                tick = self.present();
            }
            let deadline = self.epoch + Duration::from_millis(tick);
            let now = Instant::now();
            if deadline > now {
                std::thread::sleep(deadline - now);
            }
            loop {
                match self.commands.try_recv() {
                    Ok(command) => self.command(command),
                    Err(mpsc::TryRecvError::Empty) => break,
                    // Callbackd is going away.
                    Err(mpsc::TryRecvError::Disconnected) => return,
                }
            }
            // Every slot up to the present, so a late wake-up passes none over; after a stall
            // of more than a period, each slot once (the legs skip what they missed).
            let now = Instant::now();
            self.lateness
                .record(now.saturating_duration_since(deadline));
            let present = self.present().max(tick);
            for t in tick.max(present.saturating_sub(SLOTS as u64 - 1))..=present {
                let slot = (t % SLOTS as u64) as usize;
                for index in 0..self.slots[slot].len() {
                    let call = self.slots[slot][index];
                    self.service(call, now, &mut buffer);
                }
            }
            tick = present + 1;
        }
    }

    /// The slot the clock is in, counted from the epoch.
    fn present(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn command(&mut self, command: Command<K>) {
        match command {
            Command::Open(mut stream) => {
                let slot = (0..SLOTS).min_by_key(|&s| self.slots[s].len()).unwrap_or(0);
                // The first due time on this slot from now on.
                let now = Instant::now();
                let since = now.duration_since(self.epoch).as_micros() as u64;
                let period = PERIOD.as_micros() as u64;
                let phase = slot as u64 * 1000;
                let mut due = since / period * period + phase;
                if due < since {
                    due += period;
                }
                stream.due = self.epoch + Duration::from_micros(due);
                self.slots[slot].push(stream.call);
                self.streams.insert(stream.call, *stream);
            }
            Command::Play {
                call,
                id,
                items,
                barge_in,
            } => self.with(call, |s| s.leg.play(id, items, barge_in)),
            Command::SendKeys(call, keys) => self.with(call, |s| s.leg.send_keys(&keys)),
            Command::Key(call, key) => self.with(call, |s| s.leg.signalled_key(key)),
            Command::SetRemote(call, remote) => self.with(call, |s| s.leg.set_remote(remote)),
            // Both legs were opened on this thread (`near`).
            Command::Bridge(a, b) => {
                if self.streams.contains_key(&a) && self.streams.contains_key(&b) {
                    self.with(a, |s| {
                        s.bridged = Some(b);
                        s.leg.set_bridged(true);
                    });
                    self.with(b, |s| {
                        s.bridged = Some(a);
                        s.leg.set_bridged(true);
                    });
                }
            }
            Command::Close(call) => {
                let Some(stream) = self.remove(call) else {
                    let counters = Default::default();
                    let _ = self.events.send(MediaEvent::Closed { call, counters });
                    return;
                };
                let c = stream.leg.session().counters;
                count_rtp(&c);
                let _ = self.events.send(MediaEvent::Closed { call, counters: c });
                info!(
                    %call,
                    sent = c.sent,
                    received = c.received,
                    lost = c.lost,
                    garbage = c.garbage,
                    foreign_source = c.foreign_source,
                    foreign_ssrc = c.foreign_ssrc,
                    unexpected_payload_type = c.unexpected_payload_type,
                    "RTP totals"
                );
                if let Some(peer) = stream.bridged {
                    self.with(peer, |s| {
                        s.bridged = None;
                        s.leg.set_bridged(false);
                    });
                }
            }
        }
    }

    fn with(&mut self, call: K, f: impl FnOnce(&mut Stream<K>)) {
        if let Some(stream) = self.streams.get_mut(&call) {
            f(stream);
        }
    }

    fn remove(&mut self, call: K) -> Option<Stream<K>> {
        for slot in &mut self.slots {
            slot.retain(|c| *c != call);
        }
        self.streams.remove(&call)
    }

    /// Reads what arrived for one leg, reports what happened, and sends its packet if due.
    fn service(&mut self, call: K, now: Instant, buffer: &mut [u8]) {
        let Some(stream) = self.streams.get_mut(&call) else {
            return;
        };
        let (law, bridged) = (stream.leg.law(), stream.bridged);
        let mut relayed: Vec<u8> = Vec::new();
        // At most a few packets a turn: a flood on one port must not hold up the others.
        for _ in 0..MAX_READS {
            match stream.socket.recv_from(buffer) {
                Ok((n, from)) => {
                    if let Some(audio) = stream.leg.handle_packet(now, from, &buffer[..n]) {
                        if bridged.is_some() {
                            relayed.extend_from_slice(audio);
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // ICMP errors from earlier sends surface here; nothing to do.
                Err(e) => {
                    debug!(%call, error = %e, "RTP receive error");
                    break;
                }
            }
        }
        if now >= stream.due {
            let late = now - stream.due;
            let missed = periods_missed(late);
            if missed > 0 {
                self.skips.increment(u64::from(missed));
                stream.leg.skip(missed);
                stream.due += PERIOD * missed;
            }
            if now >= stream.due {
                if let Some(remote) = stream.leg.session().remote() {
                    let socket = &stream.socket;
                    stream.leg.tick(&mut |packet: &[u8]| {
                        let _ = socket.send_to(packet, remote);
                    });
                } else {
                    stream.leg.skip(1);
                }
                stream.due += PERIOD;
            }
        }
        while let Some(event) = stream.leg.poll_event() {
            let _ = self.events.send(MediaEvent::Leg { call, event });
        }
        if !stream.silent_reported && stream.leg.silent_for(now) >= stream.timeout {
            stream.silent_reported = true;
            let _ = self.events.send(MediaEvent::Silent { call });
        }
        if let Some(peer) = bridged.filter(|_| !relayed.is_empty()) {
            if let Some(other) = self.streams.get_mut(&peer) {
                other.leg.relay(law, &relayed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use media::g711::Law;
    use media::playout::Ended;
    use media::prompt::Prompt;
    use media::rtp::{PayloadTypes, Session};
    use rand::{rngs::StdRng, SeedableRng};
    use rtp_rs::{RtpPacketBuilder, RtpReader};

    use super::*;

    /// A leg on a loopback port sending to a far end's socket, which the test holds.
    fn leg_and_far_end(audio: u8, seed: u64) -> (UdpSocket, Leg, UdpSocket) {
        let ours = UdpSocket::bind("127.0.0.1:0").unwrap();
        let far = UdpSocket::bind("127.0.0.1:0").unwrap();
        far.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let types = PayloadTypes {
            audio,
            telephone_event: Some(101),
        };
        let session = Session::new(
            &mut StdRng::seed_from_u64(seed),
            types,
            Some(far.local_addr().unwrap()),
            media::rtp::Learn::FromSdpAddress,
            Instant::now(),
        );
        let law = if audio == 8 { Law::A } else { Law::Mu };
        (ours, Leg::new(session, law), far)
    }

    fn receive(far: &UdpSocket) -> Vec<u8> {
        let mut buffer = [0u8; 2048];
        let (n, _) = far.recv_from(&mut buffer).expect("a packet within 5 s");
        buffer[..n].to_vec()
    }

    /// Waits for the first leg event that `wanted` picks.
    async fn event<T>(
        events: &mut tokio::sync::mpsc::UnboundedReceiver<MediaEvent<u64>>,
        mut wanted: impl FnMut(MediaEvent<u64>) -> Option<T>,
    ) -> T {
        loop {
            let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
                .await
                .expect("an event within 5 s")
                .expect("the runtime is up");
            if let Some(t) = wanted(event) {
                return t;
            }
        }
    }

    #[test]
    fn after_a_stall_only_packets_no_more_than_8_ms_late_are_sent() {
        let ms = Duration::from_millis;
        assert_eq!(periods_missed(ms(0)), 0);
        assert_eq!(periods_missed(ms(7)), 0);
        // 8 ms late: skipped; the next is due in 12 ms.
        assert_eq!(periods_missed(ms(8)), 1);
        // 27 ms late: one skipped, the next is 7 ms late and goes.
        assert_eq!(periods_missed(ms(27)), 1);
        assert_eq!(periods_missed(ms(28)), 2);
        // Stopped for 50 ms: the packets due 50, 30 and 10 ms ago are skipped; the next goes
        // in 10 ms.
        assert_eq!(periods_missed(ms(50)), 3);
        assert_eq!(periods_missed(ms(1000)), 50);
    }

    #[tokio::test]
    async fn a_prompt_arrives_in_order_on_continuous_timestamps_then_its_end_is_reported() {
        let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        let mut media = Media::start(1, tx).unwrap();
        let (socket, leg, far) = leg_and_far_end(0, 1);
        let audio: Vec<i16> = (0..4000).map(|i| ((i * 53) % 3000) as i16 - 1500).collect();
        let prompt = Arc::new(Prompt::from_samples("test", &audio));
        let call = 1;
        media
            .open(call, socket, leg, Duration::from_secs(30), None)
            .unwrap();
        media.play(call, 9, vec![Item::Prompt(prompt.clone())], false);
        // Silence may come first, before the play command lands; then the prompt. Each packet
        // carries the part of the prompt its timestamp says (a packet skipped on a busy
        // machine moves the timestamp on by 160 and the sequence number by none).
        let sent = prompt.encoded(Law::Mu);
        let mut start: Option<u32> = None;
        let mut last: Option<(u16, u32)> = None;
        let mut checked = 0;
        loop {
            let packet = receive(&far);
            let rtp = RtpReader::new(&packet).unwrap();
            let (sequence, timestamp) = (u16::from(rtp.sequence_number()), rtp.timestamp());
            if let Some((s, t)) = last {
                assert_eq!(sequence, s.wrapping_add(1));
                let step = timestamp.wrapping_sub(t);
                assert!(step >= 160 && step % 160 == 0, "timestamp step {step}");
            }
            last = Some((sequence, timestamp));
            if start.is_none() && rtp.payload()[0] != Law::Mu.encode(0) {
                start = Some(timestamp);
            }
            let Some(start) = start else { continue };
            let offset = timestamp.wrapping_sub(start) as usize;
            if offset >= sent.len() {
                break;
            }
            let end = (offset + 160).min(sent.len());
            assert_eq!(&rtp.payload()[..end - offset], &sent[offset..end]);
            checked += 1;
        }
        assert!(
            checked >= 20,
            "only {checked} packets of the prompt were checked"
        );
        let ended = event(&mut events, |e| match e {
            MediaEvent::Leg {
                event: LegEvent::PlayoutEnded { id, how },
                ..
            } => Some((id, how)),
            _ => None,
        })
        .await;
        assert_eq!(ended, (9, Ended::Finished));
        media.close(call);
    }

    /// Sends `payload` from `phone` to `port` as 25 packets 20 ms apart.
    fn speak(phone: &UdpSocket, port: SocketAddr, payload_type: u8, payload: &[u8]) {
        for n in 0..25u16 {
            let packet = RtpPacketBuilder::new()
                .payload_type(payload_type)
                .ssrc(0xc0ffee)
                .sequence(n.into())
                .timestamp(u32::from(n) * 160)
                .payload(payload)
                .build()
                .unwrap();
            phone.send_to(&packet, port).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether `phone` hears `expected` within 120 packets (what queued up while the other
    /// side spoke included), all from `ssrc` with `payload_type`.
    fn hears(phone: &UdpSocket, ssrc: u32, payload_type: u8, expected: &[u8]) -> bool {
        let mut heard = Vec::new();
        for _ in 0..120 {
            let packet = receive(phone);
            let rtp = RtpReader::new(&packet).unwrap();
            assert_eq!((rtp.ssrc(), rtp.payload_type()), (ssrc, payload_type));
            heard.extend_from_slice(rtp.payload());
            if heard.windows(expected.len()).any(|w| w == expected) {
                return true;
            }
        }
        false
    }

    #[tokio::test]
    async fn bridged_legs_relay_each_other_transcoded_under_their_own_ssrc() {
        let (tx, _events) = tokio::sync::mpsc::unbounded_channel();
        let mut media = Media::start(2, tx).unwrap();
        let (customer_socket, customer_leg, customer_phone) = leg_and_far_end(0, 2);
        let (agent_socket, agent_leg, agent_phone) = leg_and_far_end(8, 3);
        let customer_port = customer_socket.local_addr().unwrap();
        let agent_port = agent_socket.local_addr().unwrap();
        let (customer, agent) = (2, 3);
        let timeout = Duration::from_secs(30);
        media
            .open(agent, agent_socket, agent_leg, timeout, None)
            .unwrap();
        media
            .open(
                customer,
                customer_socket,
                customer_leg,
                timeout,
                Some(agent),
            )
            .unwrap();
        media.bridge(agent, customer);
        let agent_ssrc = RtpReader::new(&receive(&agent_phone)).unwrap().ssrc();
        let customer_ssrc = RtpReader::new(&receive(&customer_phone)).unwrap().ssrc();
        // The customer speaks PCMU; the agent hears PCMA.
        let spoken: Vec<u8> = (0..160).map(|i| Law::Mu.encode(i * 150 - 12_000)).collect();
        speak(&customer_phone, customer_port, 0, &spoken);
        let expected: Vec<u8> = spoken
            .iter()
            .map(|&b| Law::Mu.transcode(b, Law::A))
            .collect();
        assert!(
            hears(&agent_phone, agent_ssrc, 8, &expected),
            "the customer's audio never reached the agent"
        );
        // The agent speaks PCMA; the customer hears PCMU.
        let spoken: Vec<u8> = (0..160).map(|i| Law::A.encode(9_000 - i * 110)).collect();
        speak(&agent_phone, agent_port, 8, &spoken);
        let expected: Vec<u8> = spoken
            .iter()
            .map(|&b| Law::A.transcode(b, Law::Mu))
            .collect();
        assert!(
            hears(&customer_phone, customer_ssrc, 0, &expected),
            "the agent's audio never reached the customer"
        );
        media.close(customer);
        media.close(agent);
    }

    #[tokio::test]
    async fn keys_go_out_as_telephone_events_and_a_silent_far_end_is_reported() {
        let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        let mut media = Media::start(1, tx).unwrap();
        let (socket, leg, far) = leg_and_far_end(0, 4);
        let call = 4;
        media
            .open(call, socket, leg, Duration::from_millis(300), None)
            .unwrap();
        media.send_keys(call, "4#");
        let mut receiver = media::rfc4733::Receiver::new();
        let mut keys = String::new();
        while keys.len() < 2 {
            let packet = receive(&far);
            let rtp = RtpReader::new(&packet).unwrap();
            if rtp.payload_type() == 101 {
                let now = Instant::now();
                if let Ok(Some(k)) =
                    receiver.handle_packet(now, rtp.ssrc(), rtp.timestamp(), rtp.payload())
                {
                    keys.push(k);
                }
            }
        }
        assert_eq!(keys, "4#");
        event(&mut events, |e| {
            matches!(e, MediaEvent::Silent { .. }).then_some(())
        })
        .await;
        media.close(call);
    }
}
