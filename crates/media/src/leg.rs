//! One call leg's media, sans-IO: its RTP session, the keys it hears (telephone-events, SIP
//! INFO handed in by the signalling, in-band tones), what it plays, the keys it sends, and the
//! audio it relays when bridged to another leg.
//!
//! The runtime calls [`Leg::tick`] every 20 ms on an absolute clock and sends what it gives;
//! packets that arrive go to [`Leg::handle_packet`]; what happened comes out of
//! [`Leg::poll_event`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::dtmf::{self, Detector};
use crate::g711::Law;
use crate::playout::{Ended, Item, Playout, FRAME};
use crate::rfc4733;
use crate::rtp::{Received, Session};

/// How a key reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// RFC 4733 telephone-event.
    TelephoneEvent,
    /// SIP INFO (`application/dtmf-relay` or `application/dtmf`).
    Info,
    /// A tone in the audio.
    InBand,
}

impl KeySource {
    pub const ALL: [KeySource; 3] = [
        KeySource::TelephoneEvent,
        KeySource::Info,
        KeySource::InBand,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KeySource::TelephoneEvent => "rfc4733",
            KeySource::Info => "info",
            KeySource::InBand => "inband",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegEvent {
    Key {
        key: char,
        source: KeySource,
    },
    PlayoutEnded {
        id: u64,
        how: Ended,
    },
    /// Every key given to [`Leg::send_keys`] has gone out.
    KeysSent,
}

/// Relayed audio is kept to at most this many samples (60 ms): past it, the oldest is dropped
/// down to [`RELAY_KEEP`], so a far end sending faster than we play cannot grow the delay.
const RELAY_MAX: usize = 480;
const RELAY_KEEP: usize = 320;
/// Frames (20 ms each) of audio between two keys we send.
const KEY_GAP_FRAMES: u32 = 4;
/// How long each key we send lasts.
const KEY_MILLIS: u32 = 100;
/// The level of each tone of a key sent in-band.
const KEY_TONE_DBM0: f32 = -7.0;
/// An audio timestamp this far behind the expected one starts the stream over (a new source
/// after a re-INVITE, a PBX re-bridging) rather than counting as late: one second.
const RESYNC: i32 = -8000;

#[derive(Debug)]
pub struct Leg {
    session: Session,
    law: Law,
    events: rfc4733::Receiver,
    /// In-band detection, until out-of-band keys show the far end sends those.
    tones: Option<Detector>,
    /// The timestamp the next audio packet should carry, to see lost packets.
    expected: Option<u32>,
    playout: Option<Playout>,
    /// Keys still to send, the packets of the one being sent, and frames of gap left.
    keys: VecDeque<char>,
    key_packets: VecDeque<Vec<u8>>,
    gap: u32,
    /// Keys as tones, encoded, for a far end that takes no telephone-events.
    key_audio: VecDeque<u8>,
    /// Audio from the bridged leg, when bridged.
    relay: Option<VecDeque<i16>>,
    out: VecDeque<LegEvent>,
}

impl Leg {
    pub fn new(session: Session, law: Law) -> Leg {
        Leg {
            session,
            law,
            events: rfc4733::Receiver::new(),
            tones: Some(Detector::new()),
            expected: None,
            playout: None,
            keys: VecDeque::new(),
            key_packets: VecDeque::new(),
            gap: 0,
            key_audio: VecDeque::new(),
            relay: None,
            out: VecDeque::new(),
        }
    }

    pub fn law(&self) -> Law {
        self.law
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// A re-INVITE moved the far end: its stream starts over.
    pub fn set_remote(&mut self, remote: SocketAddr) {
        self.session.set_remote(remote);
        self.expected = None;
    }

    pub fn silent_for(&self, now: Instant) -> Duration {
        self.session.silent_for(now)
    }

    /// One datagram from the leg's port. Returns the audio payload for the bridged leg, if
    /// the packet carried audio in order.
    pub fn handle_packet<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &'a [u8],
    ) -> Option<&'a [u8]> {
        match self.session.handle_packet(now, from, bytes)? {
            Received::Event {
                ssrc,
                timestamp,
                payload,
            } => {
                if let Ok(Some(key)) = self.events.handle_packet(now, ssrc, timestamp, payload) {
                    self.key(key, KeySource::TelephoneEvent);
                }
                // Telephone-events seen: the far end's keys come that way, not as tones.
                self.tones = None;
                None
            }
            Received::Audio {
                timestamp, payload, ..
            } => {
                let ahead = self
                    .expected
                    .map_or(0, |e| timestamp.wrapping_sub(e) as i32);
                if (RESYNC..0).contains(&ahead) {
                    // Late or repeated: its time has passed.
                    return None;
                }
                self.expected = Some(timestamp.wrapping_add(payload.len() as u32));
                if let Some(detector) = &mut self.tones {
                    if ahead != 0 {
                        detector.lost();
                    }
                    let mut found = Vec::new();
                    let mut samples = [0i16; FRAME];
                    for chunk in payload.chunks(FRAME) {
                        for (s, b) in samples.iter_mut().zip(chunk) {
                            *s = self.law.decode(*b);
                        }
                        detector.process(&samples[..chunk.len()], |k| found.push(k));
                    }
                    for key in found {
                        self.key(key, KeySource::InBand);
                    }
                }
                Some(payload)
            }
        }
    }

    /// A key the signalling received (SIP INFO).
    pub fn signalled_key(&mut self, key: char) {
        self.tones = None;
        self.key(key, KeySource::Info);
    }

    fn key(&mut self, key: char, source: KeySource) {
        self.out.push_back(LegEvent::Key { key, source });
        if self.playout.as_ref().is_some_and(|p| p.barge_in) {
            self.end_playout(Ended::Digit);
        }
    }

    /// Plays `items`, replacing whatever was playing; `barge_in` lets a key stop it.
    pub fn play(&mut self, id: u64, items: Vec<Item>, barge_in: bool) {
        self.end_playout(Ended::Stopped);
        self.playout = Some(Playout::new(id, items, barge_in));
    }

    pub fn stop(&mut self) {
        self.end_playout(Ended::Stopped);
    }

    fn end_playout(&mut self, how: Ended) {
        if let Some(p) = self.playout.take() {
            self.out
                .push_back(LegEvent::PlayoutEnded { id: p.id(), how });
        }
    }

    /// Sends `keys` one after another, as telephone-events when the far end negotiated them,
    /// else as tones in the audio; characters that are not keys are skipped. Reports
    /// [`LegEvent::KeysSent`] when the last has gone.
    pub fn send_keys(&mut self, keys: &str) {
        let keys = keys.chars().filter(|&k| rfc4733::event(k).is_some());
        if self.session.takes_telephone_events() {
            self.keys.extend(keys);
        } else {
            let (law, silence) = (self.law, self.law.encode(0));
            for key in keys {
                let tone = dtmf::tone(key, KEY_TONE_DBM0).into_iter().flatten();
                let samples = (KEY_MILLIS * 8) as usize;
                self.key_audio
                    .extend(tone.take(samples).map(|s| law.encode(s)));
                let gap = (KEY_GAP_FRAMES as usize) * FRAME;
                self.key_audio.extend(std::iter::repeat(silence).take(gap));
            }
        }
        if self.keys.is_empty() && self.key_packets.is_empty() && self.key_audio.is_empty() {
            self.out.push_back(LegEvent::KeysSent);
        }
    }

    /// Starts or stops relaying the bridged leg's audio (what [`Leg::relay`] is given).
    pub fn set_bridged(&mut self, bridged: bool) {
        self.relay = bridged.then(VecDeque::new);
    }

    /// Audio from the bridged leg, in its law; transcoded to ours as it is played.
    pub fn relay(&mut self, law: Law, payload: &[u8]) {
        if let Some(relay) = &mut self.relay {
            relay.extend(payload.iter().map(|&b| law.decode(b)));
            if relay.len() > RELAY_MAX {
                relay.drain(..relay.len() - RELAY_KEEP);
            }
        }
    }

    /// The packets for this 20 ms: keys being sent first (as telephone-events or tones), then
    /// what is playing, then relayed audio, else silence, so the far end always hears a steady
    /// stream.
    pub fn tick(&mut self, send: &mut impl FnMut(&[u8])) {
        if self.key_packets.is_empty() && self.gap == 0 {
            if let Some(key) = self.keys.pop_front() {
                let packets = self.session.event_packets(key, KEY_MILLIS, 10);
                self.key_packets.extend(packets.unwrap_or_default());
                self.gap = KEY_GAP_FRAMES;
            }
        }
        if !self.key_packets.is_empty() {
            // One packet a tick; the three end packets go back to back.
            let count = match self.key_packets.len() {
                n @ 0..=3 => n,
                _ => 1,
            };
            for packet in self.key_packets.drain(..count) {
                send(&packet);
            }
            if self.key_packets.is_empty() && self.keys.is_empty() {
                self.out.push_back(LegEvent::KeysSent);
            }
            return;
        }
        self.gap = self.gap.saturating_sub(1);
        let mut frame = [0u8; FRAME];
        if !self.key_audio.is_empty() {
            let silence = self.law.encode(0);
            for byte in &mut frame {
                *byte = self.key_audio.pop_front().unwrap_or(silence);
            }
            if self.key_audio.is_empty() {
                self.out.push_back(LegEvent::KeysSent);
            }
        } else if let Some(playout) = &mut self.playout {
            if !playout.next_frame(self.law, &mut frame) {
                self.end_playout(Ended::Finished);
            }
        } else if let Some(relay) = self.relay.as_mut().filter(|r| r.len() >= FRAME) {
            for (byte, sample) in frame.iter_mut().zip(relay.drain(..FRAME)) {
                *byte = self.law.encode(sample);
            }
        } else {
            frame.fill(self.law.encode(0));
        }
        send(&self.session.audio_packet(&frame, FRAME as u32));
    }

    /// `frames` ticks went by unsent (the process was held up): what is playing and the RTP
    /// timestamps move on with the clock, and the next packet starts a new talk-spurt.
    pub fn skip(&mut self, frames: u32) {
        if let Some(playout) = &mut self.playout {
            playout.skip(frames as usize);
        }
        if let Some(relay) = &mut self.relay {
            relay.clear();
        }
        self.session.skip(frames.wrapping_mul(FRAME as u32));
    }

    pub fn poll_event(&mut self) -> Option<LegEvent> {
        self.out.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rand::{rngs::StdRng, SeedableRng};
    use rtp_rs::{RtpPacketBuilder, RtpReader};

    use super::*;
    use crate::prompt::Prompt;
    use crate::rtp::PayloadTypes;

    const FAR: &str = "127.0.0.1:40000";

    fn leg(audio: u8, seed: u64) -> Leg {
        let types = PayloadTypes {
            audio,
            telephone_event: Some(101),
        };
        let law = if audio == 8 { Law::A } else { Law::Mu };
        let session = Session::new(
            &mut StdRng::seed_from_u64(seed),
            types,
            Some(FAR.parse().unwrap()),
            crate::rtp::Learn::FromSdpAddress,
            Instant::now(),
        );
        let mut leg = Leg::new(session, law);
        // The far end's first packets of silence, so its source is learned; their timestamps
        // are far from any a test sends, so the stream starts over at the test's first.
        let silence = [law.encode(0); FRAME];
        for i in 0..crate::rtp::PROBATION {
            let packet = far_packet(
                audio,
                60_000 + i,
                2_000_000_000 + u32::from(i) * 160,
                &silence,
            );
            leg.handle_packet(Instant::now(), FAR.parse().unwrap(), &packet);
        }
        while leg.poll_event().is_some() {}
        leg
    }

    fn ticks(leg: &mut Leg, n: usize) -> Vec<Vec<u8>> {
        let mut sent = Vec::new();
        for _ in 0..n {
            leg.tick(&mut |p: &[u8]| sent.push(p.to_vec()));
        }
        sent
    }

    fn events(leg: &mut Leg) -> Vec<LegEvent> {
        std::iter::from_fn(|| leg.poll_event()).collect()
    }

    /// A packet from the far end.
    fn far_packet(payload_type: u8, sequence: u16, timestamp: u32, payload: &[u8]) -> Vec<u8> {
        RtpPacketBuilder::new()
            .payload_type(payload_type)
            .ssrc(0xfeed)
            .sequence(sequence.into())
            .timestamp(timestamp)
            .payload(payload)
            .build()
            .unwrap()
    }

    fn prompt(samples: usize) -> Arc<Prompt> {
        let audio: Vec<i16> = (0..samples).map(|i| ((i * 37) % 2000) as i16).collect();
        Arc::new(Prompt::from_samples("p", &audio))
    }

    #[test]
    fn a_prompt_goes_out_in_order_with_continuous_timestamps_then_silence() {
        let mut leg = leg(0, 1);
        let p = prompt(400);
        leg.play(7, vec![Item::Prompt(p.clone())], false);
        let sent = ticks(&mut leg, 5);
        let readers: Vec<RtpReader> = sent.iter().map(|b| RtpReader::new(b).unwrap()).collect();
        let mut audio: Vec<u8> = readers.iter().flat_map(|r| r.payload().to_vec()).collect();
        audio.truncate(400);
        assert_eq!(audio, p.encoded(Law::Mu));
        assert!(readers[0].mark() && !readers[1].mark());
        for pair in readers.windows(2) {
            assert_eq!(pair[1].timestamp().wrapping_sub(pair[0].timestamp()), 160);
            assert_eq!(pair[1].sequence_number(), pair[0].sequence_number().next());
        }
        assert_eq!(
            events(&mut leg),
            [LegEvent::PlayoutEnded {
                id: 7,
                how: Ended::Finished
            }]
        );
        assert!(readers[4].payload().iter().all(|&b| b == Law::Mu.encode(0)));
    }

    #[test]
    fn a_key_stops_a_prompt_that_allows_barge_in_and_only_that() {
        let now = Instant::now();
        let far = FAR.parse().unwrap();
        let press = |leg: &mut Leg, timestamp: u32, key: char| {
            let payload = rfc4733::Payload {
                event: rfc4733::event(key).unwrap(),
                end: false,
                volume: 10,
                duration: 160,
            };
            leg.handle_packet(
                now,
                far,
                &far_packet(101, 1, timestamp, &payload.to_bytes()),
            );
        };
        let mut patient = leg(0, 2);
        patient.play(1, vec![Item::Prompt(prompt(8000))], false);
        press(&mut patient, 1000, '5');
        assert_eq!(
            events(&mut patient),
            [LegEvent::Key {
                key: '5',
                source: KeySource::TelephoneEvent
            }]
        );
        let mut hasty = leg(0, 3);
        hasty.play(2, vec![Item::Prompt(prompt(8000))], true);
        press(&mut hasty, 1000, '#');
        assert_eq!(
            events(&mut hasty),
            [
                LegEvent::Key {
                    key: '#',
                    source: KeySource::TelephoneEvent
                },
                LegEvent::PlayoutEnded {
                    id: 2,
                    how: Ended::Digit
                }
            ]
        );
    }

    /// 20 ms packets of key `7` as tones (−10 dBm0 each) for `ms`.
    fn tone_packets(law: Law, first_timestamp: u32, ms: usize) -> Vec<Vec<u8>> {
        let samples: Vec<u8> = dtmf::tone('7', -10.0)
            .unwrap()
            .take(ms * 8)
            .map(|s| law.encode(s))
            .collect();
        samples
            .chunks(FRAME)
            .enumerate()
            .map(|(i, chunk)| {
                let ts = first_timestamp + (i * FRAME) as u32;
                far_packet(8, i as u16, ts, chunk)
            })
            .collect()
    }

    #[test]
    fn in_band_tones_are_keys_until_telephone_events_show_up() {
        let (now, far) = (Instant::now(), FAR.parse().unwrap());
        let mut leg = leg(8, 4);
        for packet in tone_packets(Law::A, 0, 100) {
            leg.handle_packet(now, far, &packet);
        }
        assert_eq!(
            events(&mut leg),
            [LegEvent::Key {
                key: '7',
                source: KeySource::InBand
            }]
        );
        let end = rfc4733::Payload {
            event: 1,
            end: true,
            volume: 10,
            duration: 800,
        };
        leg.handle_packet(now, far, &far_packet(101, 5, 800, &end.to_bytes()));
        for packet in tone_packets(Law::A, 2000, 100) {
            leg.handle_packet(now, far, &packet);
        }
        assert_eq!(
            events(&mut leg),
            [LegEvent::Key {
                key: '1',
                source: KeySource::TelephoneEvent
            }],
            "once telephone-events came, tones are no longer keys"
        );
    }

    #[test]
    fn an_info_key_is_a_key_and_turns_tone_detection_off() {
        let (now, far) = (Instant::now(), FAR.parse().unwrap());
        let mut leg = leg(8, 5);
        leg.signalled_key('9');
        for packet in tone_packets(Law::A, 0, 100) {
            leg.handle_packet(now, far, &packet);
        }
        assert_eq!(
            events(&mut leg),
            [LegEvent::Key {
                key: '9',
                source: KeySource::Info
            }]
        );
    }

    #[test]
    fn bridged_audio_is_transcoded_and_goes_out_under_the_other_legs_own_numbering() {
        let (now, far) = (Instant::now(), FAR.parse().unwrap());
        let (mut customer, mut agent) = (leg(0, 6), leg(8, 7));
        agent.set_bridged(true);
        let before = ticks(&mut agent, 1);
        let spoken: Vec<u8> = (0..FRAME)
            .map(|i| Law::Mu.encode((i * 100) as i16))
            .collect();
        let packet = far_packet(0, 9, 5000, &spoken);
        let relayed = customer
            .handle_packet(now, far, &packet)
            .map(<[u8]>::to_vec);
        agent.relay(customer.law(), &relayed.expect("audio to relay"));
        let after = ticks(&mut agent, 1);
        let (first, second) = (
            RtpReader::new(&before[0]).unwrap(),
            RtpReader::new(&after[0]).unwrap(),
        );
        assert_eq!(second.ssrc(), first.ssrc());
        assert_eq!(second.ssrc(), agent.session().ssrc());
        assert_eq!(second.payload_type(), 8);
        assert_eq!(second.timestamp().wrapping_sub(first.timestamp()), 160);
        assert_eq!(second.sequence_number(), first.sequence_number().next());
        let expected: Vec<u8> = spoken
            .iter()
            .map(|&b| Law::Mu.transcode(b, Law::A))
            .collect();
        assert_eq!(second.payload(), expected);
    }

    #[test]
    fn keys_sent_as_telephone_events_read_back_as_the_same_keys() {
        let mut sender = leg(0, 8);
        sender.send_keys("12#");
        let sent = ticks(&mut sender, 40);
        assert_eq!(events(&mut sender), [LegEvent::KeysSent]);
        let mut receiver = rfc4733::Receiver::new();
        let now = Instant::now();
        let keys: String = sent
            .iter()
            .map(|b| RtpReader::new(b).unwrap())
            .filter(|r| r.payload_type() == 101)
            .filter_map(|r| {
                receiver
                    .handle_packet(now, r.ssrc(), r.timestamp(), r.payload())
                    .unwrap()
            })
            .collect();
        assert_eq!(keys, "12#");
    }

    #[test]
    fn keys_go_as_tones_to_a_far_end_without_telephone_events_and_read_back() {
        let mut sender = Leg::new(
            Session::new(
                &mut StdRng::seed_from_u64(9),
                PayloadTypes {
                    audio: 8,
                    telephone_event: None,
                },
                None,
                crate::rtp::Learn::FromSdpAddress,
                Instant::now(),
            ),
            Law::A,
        );
        sender.send_keys("9*0");
        let sent = ticks(&mut sender, 40);
        assert_eq!(events(&mut sender), [LegEvent::KeysSent]);
        let mut receiver = leg(8, 11);
        let (now, far) = (Instant::now(), FAR.parse().unwrap());
        for packet in &sent {
            assert_eq!(RtpReader::new(packet).unwrap().payload_type(), 8);
            receiver.handle_packet(now, far, packet);
        }
        let keys: String = events(&mut receiver)
            .into_iter()
            .filter_map(|e| match e {
                LegEvent::Key {
                    key,
                    source: KeySource::InBand,
                } => Some(key),
                _ => None,
            })
            .collect();
        assert_eq!(keys, "9*0");
    }

    #[test]
    fn nothing_to_send_is_sent_at_once() {
        let mut sender = leg(0, 12);
        sender.send_keys("xyz");
        assert_eq!(events(&mut sender), [LegEvent::KeysSent]);
    }

    #[test]
    fn a_far_end_whose_timestamps_jump_back_is_heard_again_at_once() {
        let (now, far) = (Instant::now(), FAR.parse().unwrap());
        let mut leg = leg(8, 13);
        leg.set_bridged(true);
        let audio = [Law::A.encode(1000); FRAME];
        assert!(leg
            .handle_packet(now, far, &far_packet(8, 1, 900_000, &audio))
            .is_some());
        // A repeated packet is late and dropped...
        assert!(leg
            .handle_packet(now, far, &far_packet(8, 1, 900_000, &audio))
            .is_none());
        // ...but a timestamp far behind is a stream starting over (a PBX re-bridging).
        assert!(leg
            .handle_packet(now, far, &far_packet(8, 2, 1_000, &audio))
            .is_some());
        assert!(leg
            .handle_packet(now, far, &far_packet(8, 3, 1_160, &audio))
            .is_some());
    }

    #[test]
    fn skipped_ticks_keep_timestamps_on_the_clock_and_mark_a_new_talk_spurt() {
        let mut leg = leg(0, 10);
        let before = ticks(&mut leg, 1);
        leg.skip(3);
        let after = ticks(&mut leg, 1);
        let (a, b) = (
            RtpReader::new(&before[0]).unwrap(),
            RtpReader::new(&after[0]).unwrap(),
        );
        assert_eq!(b.timestamp().wrapping_sub(a.timestamp()), 4 * 160);
        assert_eq!(b.sequence_number(), a.sequence_number().next());
        assert!(b.mark());
    }
}
