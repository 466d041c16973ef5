//! One RTP session per call leg (RFC 3550), sans-IO: what comes in is checked and sorted
//! (audio, telephone-events, garbage, strangers), what goes out gets our SSRC, sequence numbers
//! and timestamps.
//!
//! Symmetric RTP with strict learning, as Asterisk's `strictrtp`: we send to where the far
//! end's packets really come from (latching), so callers behind NAT hear us, but a source is
//! learned only once it has sent [`PROBATION`] packets in sequence (one SSRC, consecutive
//! sequence numbers), and only a source at the address the SDP named, unless the far end is
//! behind NAT ([`Learn::FromAnywhere`]). Until then nothing it sends is heard. Once learned,
//! packets from anywhere else are dropped and counted, and a new SSRC from the learned source
//! is taken only under the same rule; a re-INVITE naming a new address starts learning again.
//! So packets sprayed at a call's port, before or after its audio starts, are not heard and
//! do not turn our audio towards the sprayer.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_core::RngCore;
use rtp_rs::{RtpPacketBuilder, RtpReader, Seq};

/// A packet worth acting on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received<'a> {
    /// Audio in the negotiated codec.
    Audio {
        timestamp: u32,
        sequence: u16,
        payload: &'a [u8],
    },
    /// A telephone-event (RFC 4733) packet, for [`crate::rfc4733::Receiver`].
    Event {
        ssrc: u32,
        timestamp: u32,
        payload: &'a [u8],
    },
}

/// What went out, what came in, and what was dropped, for the logs and the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets we built to send.
    pub sent: u64,
    pub received: u64,
    /// Not RTP at all, or an RTP version other than 2.
    pub garbage: u64,
    /// From an address other than the one latched.
    pub foreign_source: u64,
    /// From the latched address but another SSRC than the stream's.
    pub foreign_ssrc: u64,
    /// A payload type that was not negotiated.
    pub unexpected_payload_type: u64,
    /// From a source, or with an SSRC, still on probation (not yet [`PROBATION`] in sequence).
    pub probation: u64,
    /// Packets of the learned stream that never came: gaps in its sequence numbers (one that
    /// comes later, out of order, stays counted).
    pub lost: u64,
}

/// Packets in sequence a source (or a new SSRC from it) must send before it is heard.
pub const PROBATION: u16 = 4;

/// Which sources may be learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learn {
    /// Only one at the IP address the SDP named (any port: a NAT may change it).
    FromSdpAddress,
    /// The first source to send [`PROBATION`] packets in sequence: the far end is behind NAT,
    /// and the SDP named an address we can never see packets from.
    FromAnywhere,
}

/// Sources (or SSRCs) on probation at once: a sprayer interleaving its packets with the real
/// far end's does not keep the far end from being learned.
const CANDIDATES: usize = 4;

/// A source (and SSRC) sending in sequence, not yet learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Candidate {
    from: SocketAddr,
    ssrc: u32,
    last: u16,
    count: u16,
}

/// The negotiated payload types of a leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadTypes {
    pub audio: u8,
    pub telephone_event: Option<u8>,
}

#[derive(Debug)]
pub struct Session {
    types: PayloadTypes,
    ssrc: u32,
    sequence: Seq,
    /// The timestamp of the next packet we send.
    timestamp: u32,
    /// Where to send: the learned source, else the address the SDP named.
    remote: Option<SocketAddr>,
    learn: Learn,
    /// The learned source and its SSRC.
    learned: Option<(SocketAddr, u32)>,
    /// The highest sequence number heard from the learned stream.
    highest: u16,
    /// Sources or new SSRCs on probation, the most recently heard last.
    candidates: Vec<Candidate>,
    last_received: Instant,
    /// Whether the next audio packet starts a talk-spurt (marker bit).
    spurt: bool,
    pub counters: Counters,
}

impl Session {
    /// A session with random SSRC, first sequence number and timestamp (RFC 3550 5.1), sending
    /// to `remote` (from the SDP) until the far end's packets show where it really is; `learn`
    /// says from where they may (any source when there is no `remote`).
    pub fn new(
        rng: &mut (impl RngCore + ?Sized),
        types: PayloadTypes,
        remote: Option<SocketAddr>,
        learn: Learn,
        now: Instant,
    ) -> Session {
        Session {
            types,
            ssrc: rng.next_u32(),
            sequence: Seq::from(rng.next_u32() as u16),
            timestamp: rng.next_u32(),
            remote,
            learn,
            learned: None,
            highest: 0,
            candidates: Vec::new(),
            last_received: now,
            spurt: true,
            counters: Counters::default(),
        }
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Whether the far end negotiated telephone-events, so keys can go to it that way.
    pub fn takes_telephone_events(&self) -> bool {
        self.types.telephone_event.is_some()
    }

    /// Where our packets go.
    pub fn remote(&self) -> Option<SocketAddr> {
        self.remote
    }

    /// A re-INVITE named a new address: send there, and learn again on what comes.
    pub fn set_remote(&mut self, remote: SocketAddr) {
        self.remote = Some(remote);
        self.learned = None;
        self.candidates.clear();
    }

    /// Counts a packet towards its source's probation; whether the source has now sent
    /// [`PROBATION`] in sequence.
    fn on_probation(&mut self, from: SocketAddr, ssrc: u32, seq: u16) -> bool {
        let known = self
            .candidates
            .iter()
            .position(|c| c.from == from && c.ssrc == ssrc);
        let mut candidate = known
            .map(|i| self.candidates.remove(i))
            .filter(|c| seq == c.last.wrapping_add(1))
            .unwrap_or(Candidate {
                from,
                ssrc,
                last: seq,
                count: 0,
            });
        candidate.last = seq;
        candidate.count += 1;
        if candidate.count >= PROBATION {
            self.candidates.clear();
            return true;
        }
        if self.candidates.len() >= CANDIDATES {
            self.candidates.remove(0);
        }
        self.candidates.push(candidate);
        false
    }

    /// Whether `from` may be learned.
    fn eligible(&self, from: SocketAddr) -> bool {
        match (self.learn, self.remote) {
            (Learn::FromSdpAddress, Some(sdp)) => from.ip() == sdp.ip(),
            _ => true,
        }
    }

    /// Sorts one datagram that arrived on the leg's port.
    pub fn handle_packet<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &'a [u8],
    ) -> Option<Received<'a>> {
        let Ok(packet) = RtpReader::new(bytes) else {
            self.counters.garbage += 1;
            return None;
        };
        let foreign = match self.learned {
            Some((source, _)) => from != source,
            None => !self.eligible(from),
        };
        if foreign {
            self.counters.foreign_source += 1;
            return None;
        }
        let ssrc = packet.ssrc();
        let payload_type = packet.payload_type();
        let is_event = Some(payload_type) == self.types.telephone_event;
        if payload_type != self.types.audio && !is_event {
            self.counters.unexpected_payload_type += 1;
            return None;
        }
        if self.learned != Some((from, ssrc)) {
            if !self.on_probation(from, ssrc, packet.sequence_number().into()) {
                if self.learned.is_some() {
                    self.counters.foreign_ssrc += 1;
                } else {
                    self.counters.probation += 1;
                }
                return None;
            }
            self.learned = Some((from, ssrc));
            self.remote = Some(from);
            self.highest = u16::from(packet.sequence_number()).wrapping_sub(1);
        }
        // Ahead of the highest by up to half the sequence space: what lies between is lost.
        let ahead = u16::from(packet.sequence_number()).wrapping_sub(self.highest);
        if (1..0x8000).contains(&ahead) {
            self.counters.lost += u64::from(ahead - 1);
            self.highest = packet.sequence_number().into();
        }
        self.counters.received += 1;
        self.last_received = now;
        Some(if is_event {
            Received::Event {
                ssrc,
                timestamp: packet.timestamp(),
                payload: packet.payload(),
            }
        } else {
            Received::Audio {
                timestamp: packet.timestamp(),
                sequence: packet.sequence_number().into(),
                payload: packet.payload(),
            }
        })
    }

    /// How long the far end has been silent (no RTP at all).
    pub fn silent_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_received)
    }

    /// Our next audio packet: `payload` holds `samples` samples; the marker bit goes on the
    /// first packet of a talk-spurt.
    pub fn audio_packet(&mut self, payload: &[u8], samples: u32) -> Vec<u8> {
        let marker = std::mem::replace(&mut self.spurt, false);
        let packet = self.packet(self.types.audio, self.timestamp, marker, payload);
        self.timestamp = self.timestamp.wrapping_add(samples);
        packet
    }

    /// Time passes with nothing sent (silence suppressed): timestamps stay continuous, and the
    /// next audio packet starts a new talk-spurt.
    pub fn skip(&mut self, samples: u32) {
        self.timestamp = self.timestamp.wrapping_add(samples);
        self.spurt = true;
    }

    /// The packets that send one key press as a telephone-event (RFC 4733 section 2.5): every
    /// packet carries the press's start as its timestamp, the first has the marker bit, one
    /// update every 20 ms grows the duration, and the end packet goes three times. The caller
    /// sends them 20 ms apart (the three ends back to back). `None` when the far end did not
    /// negotiate telephone-event or `key` is not a DTMF key.
    pub fn event_packets(&mut self, key: char, millis: u32, volume: u8) -> Option<Vec<Vec<u8>>> {
        let payload_type = self.types.telephone_event?;
        let event = crate::rfc4733::event(key)?;
        let start = self.timestamp;
        let total = (millis.max(40) * 8).min(u32::from(u16::MAX));
        let mut packets = Vec::new();
        let mut duration = 160;
        while duration < total {
            let payload = crate::rfc4733::Payload {
                event,
                end: false,
                volume,
                duration: duration as u16,
            };
            let first = packets.is_empty();
            packets.push(self.packet(payload_type, start, first, &payload.to_bytes()));
            duration += 160;
        }
        let end = crate::rfc4733::Payload {
            event,
            end: true,
            volume,
            duration: total as u16,
        };
        for _ in 0..3 {
            let first = packets.is_empty();
            packets.push(self.packet(payload_type, start, first, &end.to_bytes()));
        }
        // Audio after the press goes on from where the press ended.
        self.timestamp = start.wrapping_add(total);
        self.spurt = true;
        Some(packets)
    }

    fn packet(
        &mut self,
        payload_type: u8,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
    ) -> Vec<u8> {
        let packet = RtpPacketBuilder::new()
            .payload_type(payload_type)
            .ssrc(self.ssrc)
            .sequence(self.sequence)
            .timestamp(timestamp)
            .marked(marker)
            .payload(payload)
            .build()
            .unwrap_or_default();
        self.sequence = self.sequence.next();
        self.counters.sent += 1;
        packet
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};

    fn session(now: Instant) -> Session {
        let types = PayloadTypes {
            audio: 0,
            telephone_event: Some(101),
        };
        Session::new(
            &mut StdRng::seed_from_u64(1),
            types,
            Some("127.0.0.1:6000".parse().unwrap()),
            Learn::FromSdpAddress,
            now,
        )
    }

    /// Sends `count` audio packets in sequence from `from` (SSRC `ssrc`, from sequence number
    /// `first`); how many were heard.
    fn stream(
        s: &mut Session,
        now: Instant,
        from: &str,
        ssrc: u32,
        first: u16,
        count: u16,
    ) -> usize {
        let from: SocketAddr = from.parse().unwrap();
        (0..count)
            .filter(|i| {
                s.handle_packet(
                    now,
                    from,
                    &far_packet(ssrc, 0, first.wrapping_add(*i), &[0xff; 160]),
                )
                .is_some()
            })
            .count()
    }

    fn far_packet(ssrc: u32, payload_type: u8, seq: u16, payload: &[u8]) -> Vec<u8> {
        RtpPacketBuilder::new()
            .payload_type(payload_type)
            .ssrc(ssrc)
            .sequence(Seq::from(seq))
            .timestamp(160 * u32::from(seq))
            .payload(payload)
            .build()
            .unwrap()
    }

    #[test]
    fn gaps_in_the_far_ends_sequence_count_as_lost() {
        let now = Instant::now();
        let mut s = session(now);
        let far = "127.0.0.1:7000";
        // Probation, then in sequence across the wrap of the sequence numbers (65530 to 3):
        // nothing lost.
        assert_eq!(
            stream(&mut s, now, far, 9, 65530, 10),
            10 - PROBATION as usize + 1
        );
        assert_eq!(s.counters.lost, 0);
        // 4 never comes; 9 comes late, after 10, and is counted once.
        for seq in [5, 6, 7, 8, 10, 9, 11, 12] {
            stream(&mut s, now, far, 9, seq, 1);
        }
        assert_eq!(s.counters.lost, 2, "4, and 9 which came late");
    }

    #[test]
    fn our_packets_count_as_rfc_3550_asks() {
        let now = Instant::now();
        let mut s = session(now);
        let first = RtpReader::new(&s.audio_packet(&[0xff; 160], 160))
            .map(|r| {
                (
                    r.ssrc(),
                    u16::from(r.sequence_number()),
                    r.timestamp(),
                    r.mark(),
                )
            })
            .unwrap();
        let second = RtpReader::new(&s.audio_packet(&[0xff; 160], 160))
            .map(|r| (u16::from(r.sequence_number()), r.timestamp(), r.mark()))
            .unwrap();
        assert_eq!(first.0, s.ssrc());
        assert!(first.3, "the first packet starts a talk-spurt");
        assert_eq!(
            second,
            (first.1.wrapping_add(1), first.2.wrapping_add(160), false)
        );
        s.skip(800);
        let third = RtpReader::new(&s.audio_packet(&[0xff; 160], 160))
            .map(|r| (r.timestamp(), r.mark()))
            .unwrap();
        assert_eq!(
            third,
            (first.2.wrapping_add(160 + 160 + 800), true),
            "continuous across silence, marked"
        );
        let other = session(now);
        assert_eq!(
            other.ssrc(),
            s.ssrc(),
            "the same seed, the same random start"
        );
    }

    #[test]
    fn a_source_is_heard_once_it_has_sent_four_in_sequence_then_latched() {
        let now = Instant::now();
        let mut s = session(now);
        // The SDP named 127.0.0.1:6000; a NAT made it port 40000.
        assert_eq!(stream(&mut s, now, "127.0.0.1:40000", 99, 1, 10), 7);
        assert_eq!(s.counters.probation, 3);
        assert_eq!(
            s.remote(),
            Some("127.0.0.1:40000".parse().unwrap()),
            "we now send where the caller really is"
        );
        assert_eq!(
            stream(&mut s, now, "127.0.0.1:40002", 99, 11, 10),
            0,
            "another port"
        );
        assert_eq!(s.counters.foreign_source, 10);
        let event = far_packet(99, 101, 11, &[5, 0x0a, 0, 160]);
        assert!(matches!(
            s.handle_packet(now, "127.0.0.1:40000".parse().unwrap(), &event),
            Some(Received::Event { ssrc: 99, .. })
        ));
        // A new SSRC from the learned source is heard under the same rule.
        assert_eq!(stream(&mut s, now, "127.0.0.1:40000", 55, 500, 6), 3);
        assert_eq!(s.counters.foreign_ssrc, 3);
        assert_eq!(
            stream(&mut s, now, "127.0.0.1:40000", 99, 12, 2),
            0,
            "the old SSRC is gone"
        );
        // A re-INVITE moves the far end: learn again.
        s.set_remote("127.0.0.9:7000".parse().unwrap());
        assert_eq!(stream(&mut s, now, "127.0.0.9:7000", 77, 1, 5), 2);
    }

    // Regression: the first packet from any address latched the stream, so packets sprayed at
    // a call's port before the caller's audio took all of our audio (issue 17, finding 11).
    #[test]
    fn packets_sprayed_from_elsewhere_are_never_heard_nor_answered() {
        let now = Instant::now();
        let mut s = session(now);
        assert_eq!(stream(&mut s, now, "127.0.0.2:5000", 1, 1, 200), 0);
        assert_eq!(s.remote(), Some("127.0.0.1:6000".parse().unwrap()));
        assert_eq!(stream(&mut s, now, "127.0.0.1:6000", 2, 1, 5), 2);
        assert_eq!(stream(&mut s, now, "127.0.0.2:5000", 1, 201, 200), 0);
        assert_eq!(s.remote(), Some("127.0.0.1:6000".parse().unwrap()));
    }

    #[test]
    fn behind_nat_the_first_source_in_sequence_is_learned_despite_a_sprayer() {
        let now = Instant::now();
        let types = PayloadTypes {
            audio: 0,
            telephone_event: None,
        };
        let private: SocketAddr = "192.168.1.10:4000".parse().unwrap();
        let mut s = Session::new(
            &mut StdRng::seed_from_u64(1),
            types,
            Some(private),
            Learn::FromAnywhere,
            now,
        );
        // The sprayer's packets come between the caller's, out of sequence.
        let (caller, sprayer): (SocketAddr, SocketAddr) = (
            "203.0.113.5:31000".parse().unwrap(),
            "198.51.100.66:9".parse().unwrap(),
        );
        let mut heard = 0;
        for i in 0..8u16 {
            heard += usize::from(
                s.handle_packet(now, sprayer, &far_packet(7, 0, i * 7, &[0; 160]))
                    .is_some(),
            );
            heard += usize::from(
                s.handle_packet(now, caller, &far_packet(9, 0, 100 + i, &[0xff; 160]))
                    .is_some(),
            );
        }
        assert_eq!((heard, s.remote()), (5, Some(caller)));
    }

    #[test]
    fn garbage_and_strangers_are_counted_and_dropped() {
        let now = Instant::now();
        let mut s = session(now);
        let from: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        for junk in [
            &b""[..],
            b"hello",
            &[0x00; 12],
            &[0x80; 11],
            &[0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ] {
            assert_eq!(s.handle_packet(now, from, junk), None, "{junk:?}");
        }
        assert_eq!(
            s.handle_packet(now, from, &far_packet(1, 96, 1, b"x")),
            None,
            "not negotiated"
        );
        assert_eq!(s.counters.garbage, 5);
        assert_eq!(s.counters.unexpected_payload_type, 1);
        assert_eq!(s.counters.received, 0);
        assert_eq!(
            s.remote(),
            Some("127.0.0.1:6000".parse().unwrap()),
            "garbage is not learned"
        );
    }

    #[test]
    fn a_key_press_goes_out_as_rfc_4733_events_our_own_receiver_reads_once() {
        let now = Instant::now();
        let mut sender = session(now);
        let packets = sender.event_packets('7', 100, 10).unwrap();
        assert_eq!(
            packets.len(),
            4 + 3,
            "updates at 20, 40, 60, 80 ms, then three ends"
        );
        let readers: Vec<_> = packets.iter().map(|p| RtpReader::new(p).unwrap()).collect();
        assert!(readers[0].mark() && readers[1..].iter().all(|r| !r.mark()));
        assert!(readers
            .iter()
            .all(|r| r.timestamp() == readers[0].timestamp() && r.payload_type() == 101));
        let sequences: Vec<u16> = readers.iter().map(|r| r.sequence_number().into()).collect();
        assert!(sequences.windows(2).all(|w| w[1] == w[0].wrapping_add(1)));
        let mut receiver = crate::rfc4733::Receiver::new();
        let digits: String = readers
            .iter()
            .filter_map(|r| {
                receiver
                    .handle_packet(now, r.ssrc(), r.timestamp(), r.payload())
                    .unwrap()
            })
            .collect();
        assert_eq!(digits, "7");
        let next = RtpReader::new(&sender.audio_packet(&[0xff; 160], 160))
            .map(|r| (r.timestamp(), r.mark()))
            .unwrap();
        assert_eq!(
            next,
            (readers[0].timestamp().wrapping_add(800), true),
            "audio resumes after the press"
        );
        assert_eq!(sender.event_packets('x', 100, 10), None);
        let types = PayloadTypes {
            audio: 8,
            telephone_event: None,
        };
        let mut plain = Session::new(
            &mut StdRng::seed_from_u64(2),
            types,
            None,
            Learn::FromSdpAddress,
            now,
        );
        assert_eq!(
            plain.event_packets('1', 100, 10),
            None,
            "the far end did not negotiate events"
        );
    }

    #[test]
    fn silence_is_measured_from_the_last_good_packet() {
        let start = Instant::now();
        let mut s = session(start);
        let from: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        for seq in 1..=4 {
            s.handle_packet(
                start + Duration::from_secs(5),
                from,
                &far_packet(9, 0, seq, &[0xff; 160]),
            );
        }
        s.handle_packet(start + Duration::from_secs(20), from, b"garbage");
        assert_eq!(
            s.silent_for(start + Duration::from_secs(35)),
            Duration::from_secs(30)
        );
    }
}
