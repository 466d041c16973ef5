//! In-band DTMF detection, for far ends that send key presses as tones in the audio rather
//! than as telephone-events.
//!
//! The audio is cut into 10 ms blocks (80 samples at 8 kHz). In each block the eight DTMF
//! frequencies are measured by correlation with a precomputed cosine and sine (the Goertzel
//! idea, with the complex result kept). Over the whole block this picks the strongest row and
//! column tone. Over each half of the block, the chosen two are then fitted together by least
//! squares (so the stronger tone does not leak into the weaker one's measurement), which gives
//! each tone's power in each half and, from the phase it turned between the halves, its actual
//! frequency.
//!
//! A block counts as a key when: the strongest row and column tones are loud enough; the twist
//! (column level minus row level) is within limits; the two tones carry most of the block's
//! power (speech and music spread theirs); both halves of the block hold the tones (so a block
//! the tone only partly covers does not count); and each tone is within 2.6 % of its nominal
//! frequency (keys must be accepted at ±(1.5 % + 2 Hz) and refused beyond ±3.5 %). A key is
//! reported once three blocks in a row agree (a tone of 40 ms always gives three such blocks;
//! one under 25 ms never can), and the key is over after two blocks without it, so a gap of
//! 40 ms separates two presses of the same key. Blocks lost with their packets neither count
//! for nor against a key, so one lost packet inside a tone does not split it.

use std::f32::consts::PI;
use std::sync::LazyLock;

const RATE: f32 = 8000.0;
/// Samples in one block (10 ms).
const BLOCK: usize = 80;
const HALF: usize = BLOCK / 2;
const FREQUENCIES: [f32; 8] = [697.0, 770.0, 852.0, 941.0, 1209.0, 1336.0, 1477.0, 1633.0];
const KEYS: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];

/// The power of a sine at 0 dBm0 in 16-bit linear samples: G.711 peaks at +3.17 dBm0 (μ-law)
/// and +3.14 dBm0 (A-law) with a full scale of about 32,124, so 0 dBm0 is a sine of peak
/// 22,300 and power 22,300² / 2.
pub const DBM0_POWER: f32 = 22_300.0 * 22_300.0 / 2.0;
/// The quietest tone accepted, in dBm0 (keys must be heard down to −25 dBm0 per tone).
const MIN_LEVEL_DBM0: f32 = -32.0;
/// Accepted twist, column level minus row level in dB: reverse twist up to +4 dB and normal
/// twist down to −8 dB must be accepted; a little margin beyond.
const TWIST_DB: (f32, f32) = (-10.0, 6.0);
/// The share of the block's power the two tones must carry. Lower lets music through (0.8
/// heard three keys in the talk-off test's twenty minutes); higher costs tolerance to noise
/// (at 0.85 keys are still heard at 12 dB signal to noise).
const MIN_SHARE: f32 = 0.85;
/// The weaker half of the block must hold at least this share of the stronger half's tone
/// power: a block the tone covers less than three quarters of fails.
const MIN_BALANCE: f32 = 0.25;
/// How far a tone may be from its nominal frequency, as a fraction of it.
const MAX_OFFSET: f32 = 0.026;
/// Blocks in a row that must show the same key before it is reported.
const BLOCKS_TO_DETECT: u32 = 3;
/// Blocks in a row without the key after which it is over.
const BLOCKS_TO_END: u32 = 2;

/// What one block showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Key(char),
    Nothing,
}

/// The row and column frequencies of a key (`0`–`9`, `*`, `#`, `A`–`D`).
pub fn frequencies(key: char) -> Option<(f32, f32)> {
    KEYS.iter().enumerate().find_map(|(row, keys)| {
        let column = keys.iter().position(|&k| k == key.to_ascii_uppercase())?;
        Some((FREQUENCIES[row], FREQUENCIES[4 + column]))
    })
}

/// A key as tones: both at `dbm0` each, starting at phase zero, for ever (take what is
/// needed). `None` for a character that is not a key.
pub fn tone(key: char, dbm0: f32) -> Option<impl Iterator<Item = i16>> {
    let (row, column) = frequencies(key)?;
    let amplitude = (2.0 * DBM0_POWER * 10f32.powf(dbm0 / 10.0)).sqrt();
    Some((0u32..).map(move |n| {
        // The phase, wrapped every second (whole cycles of both tones at 8 kHz).
        let t = (n % 8000) as f32 / RATE;
        let x = amplitude * ((2.0 * PI * row * t).sin() + (2.0 * PI * column * t).sin());
        x.clamp(-32768.0, 32767.0) as i16
    }))
}

/// A 4×4 matrix, row-major.
type Matrix = [[f32; 4]; 4];

/// What every detector correlates with, computed once: 7 KB that each call would otherwise
/// rebuild (with 640 sines and cosines) when its media starts.
struct Tables {
    /// Per frequency, per sample of a block: cosine and sine.
    basis: [[(f32, f32); BLOCK]; 8],
    /// Per row tone, column tone and half block: the inverse of the Gram matrix of the basis
    /// (row cosine, row sine, column cosine, column sine), which turns the four correlations
    /// into a least-squares fit of both tones at once, so neither leaks into the other.
    fits: [[[Matrix; 2]; 4]; 4],
}

static TABLES: LazyLock<Tables> = LazyLock::new(Tables::new);

impl Tables {
    fn new() -> Tables {
        let mut basis = [[(0.0, 0.0); BLOCK]; 8];
        for (tone, frequency) in basis.iter_mut().zip(FREQUENCIES) {
            for (n, value) in tone.iter_mut().enumerate() {
                let angle = 2.0 * PI * frequency * n as f32 / RATE;
                *value = (angle.cos(), angle.sin());
            }
        }
        let mut fits = [[[[[0.0; 4]; 4]; 2]; 4]; 4];
        for (row, per_row) in fits.iter_mut().enumerate() {
            for (column, per_column) in per_row.iter_mut().enumerate() {
                for (half, fit) in per_column.iter_mut().enumerate() {
                    let functions = |n: usize| {
                        let ((rc, rs), (cc, cs)) = (basis[row][n], basis[4 + column][n]);
                        [rc, rs, cc, cs]
                    };
                    let mut gram = [[0.0; 4]; 4];
                    for n in half * HALF..(half + 1) * HALF {
                        let f = functions(n);
                        for i in 0..4 {
                            for j in 0..4 {
                                gram[i][j] += f[i] * f[j];
                            }
                        }
                    }
                    *fit = invert(gram);
                }
            }
        }
        Tables { basis, fits }
    }
}

#[derive(Debug, Clone)]
pub struct Detector {
    block: [f32; BLOCK],
    filled: usize,
    /// The key the last blocks agreed on, and how many in a row.
    candidate: Option<(char, u32)>,
    /// The key reported and not yet over, and how many blocks in a row have lacked it.
    pressed: Option<(char, u32)>,
}

impl Default for Detector {
    fn default() -> Self {
        Detector::new()
    }
}

impl Detector {
    pub fn new() -> Detector {
        Detector {
            block: [0.0; BLOCK],
            filled: 0,
            candidate: None,
            pressed: None,
        }
    }
    /// Takes the next samples of the stream; `found` hears each key as it is recognised.
    pub fn process(&mut self, samples: &[i16], mut found: impl FnMut(char)) {
        for &sample in samples {
            self.block[self.filled] = f32::from(sample);
            self.filled += 1;
            if self.filled == BLOCK {
                self.filled = 0;
                let block = self.analyse();
                if let Some(key) = self.step(block) {
                    found(key);
                }
            }
        }
    }

    /// Part of the stream was lost (a packet that never came): the block in progress is
    /// dropped, and the loss neither continues nor ends a key.
    pub fn lost(&mut self) {
        self.filled = 0;
    }

    fn step(&mut self, block: Block) -> Option<char> {
        match block {
            Block::Key(key) => {
                let streak = match self.candidate {
                    Some((k, n)) if k == key => n + 1,
                    _ => 1,
                };
                self.candidate = Some((key, streak));
                match self.pressed {
                    Some((k, _)) if k == key => {
                        self.pressed = Some((key, 0));
                        None
                    }
                    _ if streak >= BLOCKS_TO_DETECT => {
                        self.pressed = Some((key, 0));
                        Some(key)
                    }
                    _ => None,
                }
            }
            Block::Nothing => {
                self.candidate = None;
                if let Some((key, missing)) = self.pressed {
                    self.pressed = (missing + 1 < BLOCKS_TO_END).then_some((key, missing + 1));
                }
                None
            }
        }
    }

    fn analyse(&self) -> Block {
        // Too quiet to hold two tones at the lowest level: nothing to measure (silence costs
        // next to nothing).
        let minimum = DBM0_POWER * 10f32.powf(MIN_LEVEL_DBM0 / 10.0);
        let block_power = self.block.iter().map(|x| x * x).sum::<f32>() / BLOCK as f32;
        if block_power < 2.0 * minimum {
            return Block::Nothing;
        }
        // Per frequency and half block: the correlations with the cosine and the sine.
        let mut sums = [[(0.0f32, 0.0f32); 2]; 8];
        for (tone, basis) in TABLES.basis.iter().enumerate() {
            for (half, (re, im)) in sums[tone].iter_mut().enumerate() {
                let range = half * HALF..(half + 1) * HALF;
                for (x, (c, s)) in self.block[range.clone()].iter().zip(&basis[range]) {
                    *re += x * c;
                    *im += x * s;
                }
            }
        }
        // The strongest row and column over the whole block, where tones 73 Hz apart are
        // told apart best.
        let whole = |tone: usize| {
            let [(r1, i1), (r2, i2)] = sums[tone];
            (r1 + r2).powi(2) + (i1 + i2).powi(2)
        };
        let strongest = |range: std::ops::Range<usize>| {
            range
                .max_by(|&a, &b| whole(a).total_cmp(&whole(b)))
                .unwrap_or(0)
        };
        let (row, column) = (strongest(0..4), strongest(4..8));
        // Both tones fitted in each half: amplitude and phase of each.
        let fitted: [[(f32, f32); 2]; 2] = std::array::from_fn(|half| {
            let (rc, rs) = sums[row][half];
            let (cc, cs) = sums[column][half];
            let v = [rc, rs, cc, cs];
            let fit = &TABLES.fits[row][column - 4][half];
            let x: [f32; 4] = std::array::from_fn(|i| (0..4).map(|j| fit[i][j] * v[j]).sum());
            [(x[0], x[1]), (x[2], x[3])]
        });
        // A sine of amplitude A has power A² / 2.
        let half_power = |tone: usize, half: usize| {
            let (a, b) = fitted[half][tone];
            (a * a + b * b) / 2.0
        };
        let power = |tone: usize| (half_power(tone, 0) + half_power(tone, 1)) / 2.0;
        let (row_power, column_power) = (power(0), power(1));
        if row_power < minimum || column_power < minimum {
            return Block::Nothing;
        }
        let twist = 10.0 * (column_power / row_power).log10();
        if twist < TWIST_DB.0 || twist > TWIST_DB.1 {
            return Block::Nothing;
        }
        if row_power + column_power < MIN_SHARE * block_power {
            return Block::Nothing;
        }
        let balanced = |tone: usize| {
            let (a, b) = (half_power(tone, 0), half_power(tone, 1));
            a.min(b) >= MIN_BALANCE * a.max(b)
        };
        if !balanced(0) || !balanced(1) {
            return Block::Nothing;
        }
        // The phase a tone turns between the halves, beyond what its nominal frequency turns,
        // is its offset: Δφ = 2π · Δf · HALF / RATE.
        let on_frequency = |tone: usize, nominal: f32| {
            let ((a1, b1), (a2, b2)) = (fitted[0][tone], fitted[1][tone]);
            let turned = (a1 * b2 - b1 * a2).atan2(a1 * a2 + b1 * b2);
            let offset = turned * RATE / (2.0 * PI * HALF as f32);
            offset.abs() <= MAX_OFFSET * nominal
        };
        if !on_frequency(0, FREQUENCIES[row]) || !on_frequency(1, FREQUENCIES[column]) {
            return Block::Nothing;
        }
        Block::Key(KEYS[row][column - 4])
    }
}

/// Inverts a 4×4 matrix by Gauss–Jordan elimination with partial pivoting. The Gram matrices
/// here are well conditioned (distinct frequencies over 40 samples).
fn invert(mut m: Matrix) -> Matrix {
    let mut inverse: Matrix = std::array::from_fn(|i| std::array::from_fn(|j| f32::from(i == j)));
    for col in 0..4 {
        let pivot = (col..4)
            .max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))
            .unwrap_or(col);
        m.swap(col, pivot);
        inverse.swap(col, pivot);
        let p = m[col][col];
        for j in 0..4 {
            m[col][j] /= p;
            inverse[col][j] /= p;
        }
        for r in (0..4).filter(|&r| r != col) {
            let factor = m[r][col];
            for j in 0..4 {
                m[r][j] -= factor * m[col][j];
                inverse[r][j] -= factor * inverse[col][j];
            }
        }
    }
    inverse
}
