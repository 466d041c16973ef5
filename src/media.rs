//! The media runtime: call legs (`media::leg::Leg`) on a few dedicated pacing threads, each
//! sending every leg's packet on an absolute 20 ms clock.
//!
//! Each thread owns its legs outright (socket and state), so nothing is locked per packet. A
//! leg keeps a phase: one of twenty 1 ms slots in the 20 ms period, the least crowded when it
//! was opened, so the sends spread evenly. The thread sleeps to the next slot's absolute
//! deadline, reads what arrived on that slot's sockets (non-blocking), and sends each leg's
//! packet. Deadlines are absolute, so nothing drifts over a long prompt; a packet more than
//! 10 ms late is not sent at all (the leg skips it, its timestamps moving on with the clock),
//! so after a stall the next packet still comes no sooner than 10 ms after the one before.
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
use tracing::{debug, warn};

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
const SLOT: Duration = Duration::from_millis(1);
const SLOTS: usize = 20;
/// A packet later than this is skipped rather than sent.
const MAX_LATE: Duration = Duration::from_millis(10);

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
    /// Hands the leg to another thread, then passes `then` on to it.
    Move {
        call: K,
        to: mpsc::Sender<Command<K>>,
        then: Box<Command<K>>,
    },
    Close(K),
}

/// One leg with its socket, as a pacing thread keeps it.
pub struct Stream<K> {
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
            let pacer = Pacer {
                epoch,
                commands: rx,
                events: events.clone(),
                streams: HashMap::new(),
                slots: vec![Vec::new(); SLOTS],
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

    /// Starts sending and receiving for a call: `socket` is its RTP port.
    pub fn open(&mut self, call: K, socket: UdpSocket, leg: Leg, timeout: Duration) {
        if let Err(e) = socket.set_nonblocking(true) {
            warn!(%call, error = %e, "cannot make the RTP socket non-blocking; no media");
            return;
        }
        let thread = (0..self.threads.len())
            .min_by_key(|&t| self.load[t])
            .unwrap_or(0);
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

    /// Relays each leg's audio to the other (transcoding between laws as needed).
    pub fn bridge(&mut self, a: K, b: K) {
        let (Some(&ta), Some(&tb)) = (self.placed.get(&a), self.placed.get(&b)) else {
            return;
        };
        if ta == tb {
            self.send(a, Command::Bridge(a, b));
            return;
        }
        // b moves to a's thread, and the bridge is made there once it has arrived.
        self.load[tb] -= 1;
        self.load[ta] += 1;
        self.placed.insert(b, ta);
        let _ = self.threads[tb].send(Command::Move {
            call: b,
            to: self.threads[ta].clone(),
            then: Box::new(Command::Bridge(a, b)),
        });
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

struct Pacer<K> {
    epoch: Instant,
    commands: mpsc::Receiver<Command<K>>,
    events: UnboundedSender<MediaEvent<K>>,
    streams: HashMap<K, Stream<K>>,
    /// The legs of each 1 ms slot of the period.
    slots: Vec<Vec<K>>,
}

impl<K: LegKey> Pacer<K> {
    fn run(mut self) {
        let mut tick: u64 = 0;
        let mut buffer = vec![0u8; 2048];
        loop {
            let deadline = self.epoch + SLOT * tick as u32;
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
            let slot = (tick % SLOTS as u64) as usize;
            let now = Instant::now();
            for index in 0..self.slots[slot].len() {
                let call = self.slots[slot][index];
                self.service(call, now, &mut buffer);
            }
            // After a stall, go on from the present slot; legs of the slots passed over skip
            // the packets they missed when their slot next comes.
            let present = (now.duration_since(self.epoch).as_micros() / 1000) as u64;
            tick = (tick + 1).max(present);
        }
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
            Command::SendKeys(call, keys) => self.with(call, |s| {
                if !s.leg.send_keys(&keys) {
                    warn!(%call, "the far end takes no telephone-events; keys not sent");
                }
            }),
            Command::Key(call, key) => self.with(call, |s| s.leg.signalled_key(key)),
            Command::SetRemote(call, remote) => self.with(call, |s| s.leg.set_remote(remote)),
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
            Command::Move { call, to, then } => {
                if let Some(stream) = self.remove(call) {
                    let _ = to.send(Command::Open(Box::new(stream)));
                    let _ = to.send(*then);
                }
            }
            Command::Close(call) => {
                if let Some(peer) = self.remove(call).and_then(|s| s.bridged) {
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
        loop {
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
            if late >= MAX_LATE {
                let missed = ((late + MAX_LATE).as_micros() / PERIOD.as_micros()) as u32;
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

    fn handle(n: u64) -> u64 {
        n
    }

    #[tokio::test]
    async fn a_prompt_arrives_whole_in_order_then_its_end_is_reported() {
        let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        let mut media = Media::start(1, tx).unwrap();
        let (socket, leg, far) = leg_and_far_end(0, 1);
        let audio: Vec<i16> = (0..4000).map(|i| ((i * 53) % 3000) as i16 - 1500).collect();
        let prompt = Arc::new(Prompt::from_samples("test", &audio));
        let call = handle(1);
        media.open(call, socket, leg, Duration::from_secs(30));
        media.play(call, 9, vec![Item::Prompt(prompt.clone())], false);
        // Silence may come first, before the play command lands; then the prompt, whole.
        let mut heard = Vec::new();
        let mut last: Option<(u16, u32)> = None;
        while heard.len() < 4000 {
            let packet = receive(&far);
            let rtp = RtpReader::new(&packet).unwrap();
            if let Some((sequence, timestamp)) = last {
                assert_eq!(u16::from(rtp.sequence_number()), sequence.wrapping_add(1));
                assert_eq!(rtp.timestamp(), timestamp.wrapping_add(160));
            }
            last = Some((rtp.sequence_number().into(), rtp.timestamp()));
            let payload = rtp.payload();
            if heard.is_empty() {
                if let Some(start) = payload.iter().position(|&b| b != Law::Mu.encode(0)) {
                    heard.extend_from_slice(&payload[start..]);
                }
            } else {
                heard.extend_from_slice(payload);
            }
        }
        let sent = prompt.encoded(Law::Mu);
        let start = sent.iter().position(|&b| b != Law::Mu.encode(0)).unwrap();
        assert_eq!(&heard[..4000 - start], &sent[start..]);
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

    #[tokio::test]
    async fn legs_on_two_threads_bridge_and_relay_each_other_transcoded() {
        let (tx, _events) = tokio::sync::mpsc::unbounded_channel();
        let mut media = Media::start(2, tx).unwrap();
        let (customer_socket, customer_leg, customer_phone) = leg_and_far_end(0, 2);
        let (agent_socket, agent_leg, agent_phone) = leg_and_far_end(8, 3);
        let customer_port = customer_socket.local_addr().unwrap();
        let (customer, agent) = (handle(2), handle(3));
        media.open(
            customer,
            customer_socket,
            customer_leg,
            Duration::from_secs(30),
        );
        media.open(agent, agent_socket, agent_leg, Duration::from_secs(30));
        assert_ne!(media.placed[&customer], media.placed[&agent]);
        media.bridge(agent, customer);
        // The customer speaks PCMU: a ramp, 20 ms a packet.
        let spoken: Vec<u8> = (0..160).map(|i| Law::Mu.encode(i * 150 - 12_000)).collect();
        let expected: Vec<u8> = spoken
            .iter()
            .map(|&b| Law::Mu.transcode(b, Law::A))
            .collect();
        let agent_ssrc = RtpReader::new(&receive(&agent_phone)).unwrap().ssrc();
        for n in 0..25u16 {
            let packet = RtpPacketBuilder::new()
                .payload_type(0)
                .ssrc(0xc0ffee)
                .sequence(n.into())
                .timestamp(u32::from(n) * 160)
                .payload(&spoken)
                .build()
                .unwrap();
            customer_phone.send_to(&packet, customer_port).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        // The agent hears it in PCMA, from the agent leg's own SSRC.
        let mut heard = Vec::new();
        for _ in 0..40 {
            let packet = receive(&agent_phone);
            let rtp = RtpReader::new(&packet).unwrap();
            assert_eq!((rtp.ssrc(), rtp.payload_type()), (agent_ssrc, 8));
            heard.extend_from_slice(rtp.payload());
        }
        assert!(
            heard.windows(expected.len()).any(|w| w == expected),
            "the customer's audio never reached the agent"
        );
        drop(customer_phone);
        media.close(customer);
        media.close(agent);
    }

    #[tokio::test]
    async fn keys_go_out_as_telephone_events_and_a_silent_far_end_is_reported() {
        let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        let mut media = Media::start(1, tx).unwrap();
        let (socket, leg, far) = leg_and_far_end(0, 4);
        let call = handle(4);
        media.open(call, socket, leg, Duration::from_millis(300));
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
