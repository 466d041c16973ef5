//! What a leg plays: a queue of prompts, silences and looped music, cut into 20 ms frames.
//! The pacing (one frame every 20 ms on an absolute clock) belongs to the runtime; this only
//! knows what the next frame holds.

use std::sync::Arc;
use std::time::Duration;

use crate::g711::Law;
use crate::prompt::Prompt;

/// Samples in one 20 ms frame at 8 kHz.
pub const FRAME: usize = 160;

/// One thing to play.
#[derive(Debug, Clone)]
pub enum Item {
    Prompt(Arc<Prompt>),
    Silence(Duration),
    /// Played over and over until stopped (hold music).
    Loop(Arc<Prompt>),
}

impl Item {
    /// The item's length in samples; `None` for a loop.
    fn samples(&self) -> Option<usize> {
        match self {
            Item::Prompt(p) => Some(p.encoded(Law::Mu).len()),
            Item::Silence(d) => Some((d.as_micros() / 125) as usize),
            Item::Loop(_) => None,
        }
    }
}

/// How a play request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Everything was played.
    Finished,
    /// The far end pressed a key and the request allowed barge-in.
    Digit,
    /// The controller stopped it, or replaced it with another request.
    Stopped,
}

/// A play request being played.
#[derive(Debug)]
pub struct Playout {
    id: u64,
    items: Vec<Item>,
    /// The item playing, and how many of its samples are out.
    item: usize,
    offset: usize,
    pub barge_in: bool,
}

impl Playout {
    pub fn new(id: u64, items: Vec<Item>, barge_in: bool) -> Playout {
        Playout {
            id,
            items,
            item: 0,
            offset: 0,
            barge_in,
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Fills `frame` with the next 20 ms (silence past the end); true while anything is left
    /// to play after it.
    pub fn next_frame(&mut self, law: Law, frame: &mut [u8; FRAME]) -> bool {
        let mut filled = 0;
        while filled < FRAME {
            let Some(item) = self.items.get(self.item) else {
                frame[filled..].fill(law.encode(0));
                return false;
            };
            let (source, length): (Option<&[u8]>, Option<usize>) = match item {
                Item::Prompt(p) => (Some(p.encoded(law)), item.samples()),
                Item::Loop(p) => (Some(p.encoded(law)), None),
                Item::Silence(_) => (None, item.samples()),
            };
            let length = length.unwrap_or(usize::MAX);
            let take = (FRAME - filled).min(length - self.offset);
            match source {
                Some(audio) if !audio.is_empty() => {
                    for (i, byte) in frame[filled..filled + take].iter_mut().enumerate() {
                        *byte = audio[(self.offset + i) % audio.len()];
                    }
                }
                _ => frame[filled..filled + take].fill(law.encode(0)),
            }
            filled += take;
            self.offset += take;
            if let Item::Loop(p) = item {
                self.offset %= p.encoded(law).len().max(1);
            } else if self.offset >= length {
                self.item += 1;
                self.offset = 0;
            }
        }
        self.item < self.items.len()
    }

    /// `frames` frames went by unplayed (the process was held up): the position moves on as
    /// if they had been played, so what is heard stays in step with the clock.
    pub fn skip(&mut self, frames: usize) {
        let mut left = frames.saturating_mul(FRAME);
        while let Some(item) = self.items.get(self.item) {
            let length = match item {
                Item::Loop(p) => {
                    let length = p.encoded(Law::Mu).len().max(1);
                    self.offset = (self.offset + left % length) % length;
                    return;
                }
                _ => item.samples().unwrap_or(0),
            };
            if left < length - self.offset {
                self.offset += left;
                return;
            }
            left -= length - self.offset;
            self.item += 1;
            self.offset = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(samples: usize) -> Arc<Prompt> {
        let audio: Vec<i16> = (0..samples).map(|i| (i as i16 % 100 + 1) * 100).collect();
        Arc::new(Prompt::from_samples("p", &audio))
    }

    #[test]
    fn a_sequence_plays_back_to_back_and_ends_in_silence() {
        let (first, second) = (prompt(200), prompt(100));
        let mut playout = Playout::new(
            1,
            vec![
                Item::Prompt(first.clone()),
                Item::Silence(Duration::from_millis(5)),
                Item::Prompt(second.clone()),
            ],
            false,
        );
        let mut out = Vec::new();
        let mut frame = [0; FRAME];
        let mut more = true;
        while more {
            more = playout.next_frame(Law::Mu, &mut frame);
            out.extend_from_slice(&frame);
        }
        let silence = Law::Mu.encode(0);
        let mut expected = first.encoded(Law::Mu).to_vec();
        expected.extend(std::iter::repeat(silence).take(40));
        expected.extend_from_slice(second.encoded(Law::Mu));
        expected.resize(out.len(), silence);
        assert_eq!(out.len(), 3 * FRAME);
        assert_eq!(out, expected);
    }

    #[test]
    fn a_loop_never_ends_and_wraps_seamlessly() {
        let music = prompt(250);
        let mut playout = Playout::new(2, vec![Item::Loop(music.clone())], false);
        let mut frame = [0; FRAME];
        let mut out = Vec::new();
        for _ in 0..10 {
            assert!(playout.next_frame(Law::A, &mut frame));
            out.extend_from_slice(&frame);
        }
        let audio = music.encoded(Law::A);
        assert!(out.iter().enumerate().all(|(i, b)| *b == audio[i % 250]));
    }

    #[test]
    fn skipped_frames_move_the_position_on() {
        let long = prompt(1000);
        let mut playout = Playout::new(3, vec![Item::Prompt(long.clone())], true);
        playout.skip(3);
        let mut frame = [0; FRAME];
        playout.next_frame(Law::Mu, &mut frame);
        assert_eq!(&frame[..], &long.encoded(Law::Mu)[480..640]);
        playout.skip(100);
        assert!(!playout.next_frame(Law::Mu, &mut frame));

        let music = prompt(250);
        let mut looped = Playout::new(4, vec![Item::Loop(music.clone())], false);
        looped.skip(1_000_001);
        looped.next_frame(Law::A, &mut frame);
        let at = (1_000_001 * FRAME) % 250;
        assert_eq!(frame[0], music.encoded(Law::A)[at]);
    }
}
