//! DTMF as RTP telephone-events (RFC 4733): the payload, and a receiver that turns a stream of
//! event packets into key presses, exactly once each.
//!
//! Each press is one event: every packet of it carries the same RTP timestamp (the event's
//! start), its duration grows in updates, and it ends with three identical end packets. The
//! receiver reports a digit the first time it sees an event (so a lost start packet loses
//! nothing), ignores every later packet of it (updates, the repeated ends, late reordered
//! ones), closes an event whose end packets were all lost a bounded time after its last
//! packet, and treats the segments of a press longer than the 16-bit duration allows (about
//! 8 s) as one press.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// An event with no packet for this long is over, even without its end packets
/// (Asterisk uses the same 375 ms).
pub const END_TIMEOUT: Duration = Duration::from_millis(375);

/// How many recent events are remembered to recognise late, reordered packets of them.
const REMEMBERED: usize = 32;
/// How long an event is remembered after its last packet, as long as an event with lost ends
/// stays open: a packet later than that is not a late packet of it but a new press that
/// happens to carry the same timestamp (a test tool replaying one capture for every press of
/// a key does that).
const REMEMBER_FOR: Duration = END_TIMEOUT;

/// What is wrong with a telephone-event payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rfc4733Error {
    #[error("telephone-event payload of {0} bytes; it takes 4")]
    Length(usize),
    #[error("event {0} is not a DTMF key")]
    NotDtmf(u8),
}

/// One telephone-event payload (RFC 4733 section 2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payload {
    pub event: u8,
    pub end: bool,
    /// Power level in -dBm0 (0 to 63).
    pub volume: u8,
    /// In timestamp units (samples at 8 kHz).
    pub duration: u16,
}

impl Payload {
    pub fn parse(bytes: &[u8]) -> Result<Payload, Rfc4733Error> {
        // Several events may be stacked (RFC 4733 section 2.5.1.5); the first is the one that
        // counts for a receiver of DTMF.
        let [event, flags, high, low, ..] = *bytes else {
            return Err(Rfc4733Error::Length(bytes.len()));
        };
        Ok(Payload {
            event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3f,
            duration: u16::from_be_bytes([high, low]),
        })
    }

    pub fn to_bytes(self) -> [u8; 4] {
        let [high, low] = self.duration.to_be_bytes();
        [
            self.event,
            (u8::from(self.end) << 7) | (self.volume & 0x3f),
            high,
            low,
        ]
    }
}

/// The key of a DTMF event code (0-9, *, #, A-D), or `None` for other events.
pub fn key(event: u8) -> Option<char> {
    b"0123456789*#ABCD"
        .get(usize::from(event))
        .map(|b| char::from(*b))
}

/// The event code of a DTMF key.
pub fn event(key: char) -> Option<u8> {
    b"0123456789*#ABCD"
        .iter()
        .position(|b| char::from(*b) == key.to_ascii_uppercase())
        .map(|i| i as u8)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Open {
    ssrc: u32,
    timestamp: u32,
    event: u8,
    /// Where this press's current segment ends, in timestamp units.
    reaches: u32,
    last_packet: Instant,
    ended: bool,
}

/// Turns telephone-event packets into key presses.
#[derive(Debug, Default)]
pub struct Receiver {
    open: Option<Open>,
    /// (SSRC, timestamp, last packet) of recent events, to ignore their late packets.
    seen: VecDeque<(u32, u32, Instant)>,
}

impl Receiver {
    pub fn new() -> Receiver {
        Receiver::default()
    }

    /// One telephone-event packet; the key when it starts a new press.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        ssrc: u32,
        timestamp: u32,
        payload: &[u8],
    ) -> Result<Option<char>, Rfc4733Error> {
        let p = Payload::parse(payload)?;
        let digit = key(p.event).ok_or(Rfc4733Error::NotDtmf(p.event))?;
        self.handle_timeout(now);
        if let Some(open) = self
            .open
            .as_mut()
            .filter(|o| o.ssrc == ssrc && o.timestamp == timestamp)
        {
            // Another packet of the press we know: an update, a repeated end, a late one.
            open.last_packet = now;
            if let Some(seen) = self
                .seen
                .iter_mut()
                .find(|(s, t, _)| (*s, *t) == (ssrc, timestamp))
            {
                seen.2 = now;
            }
            open.ended |= p.end;
            open.reaches = open
                .reaches
                .max(timestamp.wrapping_add(u32::from(p.duration)));
            return Ok(None);
        }
        if self.seen.iter().any(|&(s, t, last)| {
            (s, t) == (ssrc, timestamp) && now.saturating_duration_since(last) < REMEMBER_FOR
        }) {
            return Ok(None);
        }
        // A long press goes on in a new segment once its duration ran out of 16 bits; any
        // other new timestamp is a new press, even of the same key.
        let continues = self.open.is_some_and(|o| {
            o.ssrc == ssrc
                && o.event == p.event
                && !o.ended
                && o.reaches.wrapping_sub(o.timestamp) >= u32::from(u16::MAX) - 1600
        });
        self.remember(ssrc, timestamp, now);
        self.open = Some(Open {
            ssrc,
            timestamp,
            event: p.event,
            reaches: timestamp.wrapping_add(u32::from(p.duration)),
            last_packet: now,
            ended: p.end,
        });
        Ok((!continues).then_some(digit))
    }

    fn remember(&mut self, ssrc: u32, timestamp: u32, now: Instant) {
        if self.seen.len() == REMEMBERED {
            self.seen.pop_front();
        }
        self.seen.push_back((ssrc, timestamp, now));
    }

    /// Closes a press whose end packets never came.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self
            .open
            .is_some_and(|o| now.duration_since(o.last_packet) >= END_TIMEOUT)
        {
            self.open = None;
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.open.map(|o| o.last_packet + END_TIMEOUT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capture_replayed_for_a_second_press_counts_again() {
        // SIPp replays one capture for every press of a key: same SSRC, same timestamp.
        let mut receiver = Receiver::new();
        let start = Instant::now();
        let mut keys = String::new();
        for (count, at) in [0u64, 600, 1200].into_iter().enumerate() {
            for (i, (timestamp, payload)) in press('7', 5000, 100).into_iter().enumerate() {
                let now = start + Duration::from_millis(at + 20 * i as u64);
                if let Ok(Some(k)) = receiver.handle_packet(now, 42, timestamp, &payload) {
                    keys.push(k);
                }
            }
            assert_eq!(keys.len(), count + 1);
        }
        assert_eq!(keys, "777");
    }

    /// The packets a sender makes for one press: start (marker), updates every 20 ms, three
    /// end packets. Each is (timestamp, payload).
    fn press(key_char: char, timestamp: u32, millis: u32) -> Vec<(u32, [u8; 4])> {
        let event = event(key_char).unwrap();
        let mut packets = Vec::new();
        let mut duration = 160u32;
        while duration < millis * 8 {
            packets.push((
                timestamp,
                Payload {
                    event,
                    end: false,
                    volume: 10,
                    duration: duration as u16,
                }
                .to_bytes(),
            ));
            duration += 160;
        }
        let end = Payload {
            event,
            end: true,
            volume: 10,
            duration: (millis * 8) as u16,
        }
        .to_bytes();
        packets.extend([(timestamp, end); 3]);
        packets
    }

    fn feed(receiver: &mut Receiver, start: Instant, packets: &[(u32, [u8; 4])]) -> String {
        let mut digits = String::new();
        for (i, (ts, payload)) in packets.iter().enumerate() {
            let now = start + Duration::from_millis(20 * i as u64);
            if let Some(d) = receiver.handle_packet(now, 7, *ts, payload).unwrap() {
                digits.push(d);
            }
        }
        digits
    }

    #[test]
    fn payload_round_trip() {
        let p = Payload {
            event: 11,
            end: true,
            volume: 10,
            duration: 1600,
        };
        assert_eq!(p.to_bytes(), [11, 0x8a, 0x06, 0x40]);
        assert_eq!(Payload::parse(&p.to_bytes()), Ok(p));
        assert_eq!(Payload::parse(&[1, 2, 3]), Err(Rfc4733Error::Length(3)));
        assert_eq!(key(10), Some('*'));
        assert_eq!(key(16), None, "flash is not a key");
        assert_eq!(event('#'), Some(11));
    }

    #[test]
    fn one_digit_per_press_whatever_repeats() {
        let mut r = Receiver::new();
        let mut packets = press('5', 1000, 100);
        packets.extend(press('5', 3000, 100));
        packets.extend(press('#', 5000, 60));
        assert_eq!(feed(&mut r, Instant::now(), &packets), "55#");
    }

    #[test]
    fn a_lost_start_or_lost_ends_lose_nothing() {
        let mut r = Receiver::new();
        let mut first = press('1', 1000, 100);
        first.remove(0); // the start packet
        let mut second = press('2', 3000, 100);
        second.truncate(second.len() - 3); // all three end packets
        let start = Instant::now();
        let mut digits = feed(&mut r, start, &first);
        digits += &feed(&mut r, start + Duration::from_secs(1), &second);
        assert_eq!(digits, "12");
        assert!(
            r.poll_timeout().is_some(),
            "the endless press is still open"
        );
        r.handle_timeout(start + Duration::from_secs(3));
        assert_eq!(
            r.poll_timeout(),
            None,
            "closed after its last packet plus 375 ms"
        );
    }

    #[test]
    fn a_long_press_in_segments_is_one_digit() {
        // Past 65535 samples (8.19 s) the sender starts a new segment with a new timestamp.
        let mut r = Receiver::new();
        let now = Instant::now();
        let first = Payload {
            event: 0,
            end: false,
            volume: 10,
            duration: 65_535,
        }
        .to_bytes();
        let second = Payload {
            event: 0,
            end: false,
            volume: 10,
            duration: 800,
        }
        .to_bytes();
        assert_eq!(r.handle_packet(now, 7, 10_000, &first), Ok(Some('0')));
        assert_eq!(r.handle_packet(now, 7, 10_000 + 65_535, &second), Ok(None));
    }

    #[test]
    fn the_same_key_twice_with_lost_ends_is_two_presses() {
        let mut r = Receiver::new();
        let mut first = press('1', 1000, 100);
        first.truncate(first.len() - 3);
        let mut packets = first;
        packets.extend(press('1', 1000 + 800 + 320, 100)); // 40 ms later
        assert_eq!(feed(&mut r, Instant::now(), &packets), "11");
    }

    #[test]
    fn exact_strings_under_loss_and_reordering() {
        // A deterministic generator: 10% loss, and neighbours swapped 10% of the time.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut rand = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % 100
        };
        let keys = "0123456789*#ABCD1397";
        for round in 0..50 {
            let mut packets = Vec::new();
            for (i, k) in keys.chars().enumerate() {
                packets.extend(press(k, 1000 + 4000 * i as u32, 100 + (round % 5) * 40));
            }
            let mut kept: Vec<_> = packets.into_iter().filter(|_| rand() >= 10).collect();
            for i in 1..kept.len() {
                if rand() < 10 {
                    kept.swap(i - 1, i);
                }
            }
            let mut r = Receiver::new();
            let got = feed(&mut r, Instant::now(), &kept);
            // A press loses a digit only if every one of its packets was lost: with at least
            // 8 packets each at 10% loss, that does not happen in these rounds.
            assert_eq!(got, keys, "round {round}");
        }
    }

    #[test]
    fn garbage_is_refused() {
        let mut r = Receiver::new();
        let now = Instant::now();
        assert_eq!(
            r.handle_packet(now, 1, 1, &[]),
            Err(Rfc4733Error::Length(0))
        );
        assert_eq!(
            r.handle_packet(now, 1, 1, &[16, 0, 0, 160]),
            Err(Rfc4733Error::NotDtmf(16))
        );
        assert_eq!(
            r.handle_packet(now, 1, 1, &[200, 0xff, 0xff, 0xff]),
            Err(Rfc4733Error::NotDtmf(200))
        );
    }
}
