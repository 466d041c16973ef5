//! The in-band DTMF detector against receiver requirements in the style of ITU-T Q.24 and the
//! Mitel test procedure: every signal is made here in code, passed through G.711 the way it
//! arrives on a call, and fed to the detector 20 ms at a time.
//!
//! `cargo test -p media --test dtmf_q24 -- --nocapture report` prints the detector's measured
//! limits with the same headings as spandsp's `dtmf_rx_tests`.

use media::dtmf::{Detector, DBM0_POWER};
use media::g711::Law;
use rand::{rngs::StdRng, Rng, SeedableRng};

const ROWS: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
const COLUMNS: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
const KEYS: &str = "123A456B789C*0#D";

fn key_tones(key: char) -> (f32, f32) {
    media::dtmf::frequencies(key).expect("a DTMF key")
}

fn amplitude(dbm0: f32) -> f32 {
    (2.0 * DBM0_POWER * 10f32.powf(dbm0 / 10.0)).sqrt()
}

/// Builds a signal piece by piece, at 8 kHz.
#[derive(Default, Clone)]
struct Signal(Vec<f32>);

impl Signal {
    fn tones(mut self, (f1, l1): (f32, f32), (f2, l2): (f32, f32), ms: f32) -> Signal {
        let (a1, a2) = (amplitude(l1), amplitude(l2));
        let n = (ms * 8.0).round() as usize;
        let start = self.0.len();
        self.0.extend((0..n).map(|i| {
            let t = (start + i) as f32 / 8000.0;
            a1 * (2.0 * std::f32::consts::PI * f1 * t).sin()
                + a2 * (2.0 * std::f32::consts::PI * f2 * t).sin()
        }));
        self
    }

    fn key(self, key: char, dbm0: f32, ms: f32) -> Signal {
        let (row, column) = key_tones(key);
        self.tones((row, dbm0), (column, dbm0), ms)
    }

    fn silence(mut self, ms: f32) -> Signal {
        self.0
            .extend(std::iter::repeat(0.0).take((ms * 8.0).round() as usize));
        self
    }

    /// Adds white Gaussian noise of the given power in dBm0.
    fn noise(mut self, dbm0: f32, rng: &mut StdRng) -> Signal {
        let sigma = (DBM0_POWER * 10f32.powf(dbm0 / 10.0)).sqrt();
        for x in &mut self.0 {
            // Box–Muller.
            let (u, v): (f32, f32) = (rng.gen_range(f32::EPSILON..1.0), rng.gen());
            *x += sigma * (-2.0 * u.ln()).sqrt() * (2.0 * std::f32::consts::PI * v).cos();
        }
        self
    }

    /// The samples as they come out of the far end's G.711 encoder and our decoder.
    fn through(&self, law: Law) -> Vec<i16> {
        self.0
            .iter()
            .map(|x| law.decode(law.encode(x.clamp(-32768.0, 32767.0) as i16)))
            .collect()
    }
}

/// The keys the detector hears in `samples`, fed as 20 ms packets.
fn detect(samples: &[i16]) -> String {
    let mut detector = Detector::new();
    let mut keys = String::new();
    for packet in samples.chunks(160) {
        detector.process(packet, |k| keys.push(k));
    }
    keys
}

fn heard(signal: &Signal) -> String {
    detect(&signal.through(Law::Mu))
}

/// One press of each key, 50 ms on and 50 ms off, at the given level per tone.
fn every_key(dbm0: f32) -> Signal {
    KEYS.chars().fold(Signal::default().silence(30.0), |s, k| {
        s.key(k, dbm0, 50.0).silence(50.0)
    })
}

#[test]
fn all_sixteen_keys_through_mu_law_and_a_law() {
    let signal = every_key(-10.0);
    assert_eq!(detect(&signal.through(Law::Mu)), KEYS);
    assert_eq!(detect(&signal.through(Law::A)), KEYS);
}

/// Whether one press of `key` with its tones moved by the given fractions is heard.
fn heard_with_offsets(key: char, row_offset: f32, column_offset: f32) -> bool {
    let (row, column) = key_tones(key);
    let signal = Signal::default().silence(20.0).tones(
        (row * (1.0 + row_offset), -10.0),
        (column * (1.0 + column_offset), -10.0),
        60.0,
    );
    heard(&signal.silence(40.0)) == key.to_string()
}

#[test]
fn tones_off_frequency_by_one_and_a_half_percent_plus_two_hertz_are_accepted() {
    for key in KEYS.chars() {
        let (row, column) = key_tones(key);
        let tolerance = |f: f32| 0.015 + 2.0 / f;
        for (rs, cs) in [(1.0, 1.0), (1.0, -1.0), (-1.0, 1.0), (-1.0, -1.0)] {
            assert!(
                heard_with_offsets(key, rs * tolerance(row), cs * tolerance(column)),
                "{key} with its row tone off by {rs}× and column tone off by {cs}× the tolerance"
            );
        }
    }
}

#[test]
fn tones_off_frequency_by_more_than_three_and_a_half_percent_are_refused() {
    for key in KEYS.chars() {
        for offset in [0.035, -0.035, 0.05, -0.05, 0.1, -0.1] {
            assert!(
                !heard_with_offsets(key, offset, 0.0),
                "{key} heard with its row tone off by {offset}"
            );
            assert!(
                !heard_with_offsets(key, 0.0, offset),
                "{key} heard with its column tone off by {offset}"
            );
        }
    }
}

#[test]
fn twist_of_plus_four_and_minus_eight_db_is_accepted() {
    for key in KEYS.chars() {
        let (row, column) = key_tones(key);
        for (row_level, column_level) in [(-10.0, -6.0), (-6.0, -14.0), (-20.0, -16.0)] {
            let signal = Signal::default()
                .silence(20.0)
                .tones((row, row_level), (column, column_level), 50.0)
                .silence(40.0);
            assert_eq!(
                heard(&signal),
                key.to_string(),
                "{key} at row {row_level} dBm0, column {column_level} dBm0"
            );
        }
    }
}

#[test]
fn levels_from_zero_to_minus_twenty_five_dbm0_are_accepted() {
    for level in (0..=25).map(|l| -(l as f32)) {
        assert_eq!(heard(&every_key(level)), KEYS, "at {level} dBm0 per tone");
    }
}

#[test]
fn forty_ms_tones_with_forty_ms_gaps_are_all_heard_wherever_the_blocks_fall() {
    let keys = "1234567890*#ABCD8888";
    for lead in (0..80).step_by(7) {
        let signal = keys
            .chars()
            .fold(Signal::default().silence(lead as f32 / 8.0), |s, k| {
                s.key(k, -15.0, 40.0).silence(40.0)
            });
        assert_eq!(
            heard(&signal),
            keys,
            "with the signal starting {lead} samples in"
        );
    }
}

#[test]
fn bursts_under_twenty_three_ms_are_refused_wherever_the_blocks_fall() {
    for ms in [10.0, 15.0, 20.0, 23.0] {
        for lead in 0..80 {
            let signal = Signal::default()
                .silence(lead as f32 / 8.0)
                .key('5', -10.0, ms)
                .silence(60.0);
            assert_eq!(heard(&signal), "", "a {ms} ms burst {lead} samples in");
        }
    }
}

#[test]
fn keys_in_white_noise_at_fifteen_db_signal_to_noise_are_heard() {
    let mut rng = StdRng::seed_from_u64(15);
    for level in [-5.0, -15.0, -25.0] {
        // The noise is 15 dB under the power of the two tones together (each at `level`).
        let noise = level + 3.01 - 15.0;
        let presses: String = (0..200)
            .map(|_| KEYS.as_bytes()[rng.gen_range(0..16)] as char)
            .collect();
        let signal = presses
            .chars()
            .fold(Signal::default().silence(40.0), |s, k| {
                s.key(k, level, 50.0).silence(50.0)
            })
            .noise(noise, &mut rng);
        assert_eq!(heard(&signal), presses, "tones at {level} dBm0 each");
    }
}

#[test]
fn one_lost_packet_inside_a_tone_neither_splits_nor_loses_the_key() {
    let mut rng = StdRng::seed_from_u64(20);
    for key in KEYS.chars() {
        let samples = Signal::default()
            .silence(20.0)
            .key(key, -12.0, 100.0)
            .silence(60.0)
            .through(Law::A);
        let packets: Vec<&[i16]> = samples.chunks(160).collect();
        // The tone covers packets 1 to 5 (20–120 ms); lose one of 2, 3 or 4.
        let lost = rng.gen_range(2..=4);
        let mut detector = Detector::new();
        let mut keys = String::new();
        for (i, packet) in packets.iter().enumerate() {
            if i == lost {
                detector.lost();
            } else {
                detector.process(packet, |k| keys.push(k));
            }
        }
        assert_eq!(keys, key.to_string(), "packet {lost} of {key} lost");
    }
}

#[test]
fn dial_tone_alone_is_no_key() {
    // North American dial tone: 350 + 440 Hz, −13 dBm0 each; also louder, and European 425 Hz.
    let signal = Signal::default()
        .tones((350.0, -13.0), (440.0, -13.0), 10_000.0)
        .tones((350.0, 0.0), (440.0, 0.0), 2_000.0)
        .tones((425.0, -10.0), (425.0, -10.0), 5_000.0);
    assert_eq!(heard(&signal), "");
}

/// Prints the measured limits, as spandsp's `dtmf_rx_tests` does, and checks each against the
/// requirement it stands for.
#[test]
fn report() {
    println!("Test: Decode acceptance bandwidth");
    for (i, f) in ROWS.iter().chain(&COLUMNS).enumerate() {
        let key = if i < 4 {
            KEYS.as_bytes()[i * 4] as char
        } else {
            KEYS.as_bytes()[i - 4] as char
        };
        let accepted = |offset: f32| {
            if i < 4 {
                heard_with_offsets(key, offset, 0.0)
            } else {
                heard_with_offsets(key, 0.0, offset)
            }
        };
        let edge = |sign: f32| {
            (0..=60)
                .map(|step| sign * step as f32 * 0.001)
                .take_while(|&o| accepted(o))
                .last()
                .unwrap_or(0.0)
        };
        let (low, high) = (edge(-1.0), edge(1.0));
        println!(
            "    {f:6.1} Hz accepted from {:+.1}% to {:+.1}%",
            low * 100.0,
            high * 100.0
        );
        let must = 0.015 + 2.0 / f;
        assert!(low <= -must + 0.001 && high >= must - 0.001, "{f} Hz");
        assert!(low > -0.035 && high < 0.035, "{f} Hz");
    }

    println!("Test: Acceptable amplitude ratio (twist)");
    let twist_ok = |twist: f32| {
        KEYS.chars().all(|key| {
            let (row, column) = key_tones(key);
            let (row_level, column_level) = if twist > 0.0 {
                (-10.0 - twist, -10.0)
            } else {
                (-10.0, -10.0 + twist)
            };
            let signal = Signal::default()
                .silence(20.0)
                .tones((row, row_level), (column, column_level), 50.0)
                .silence(40.0);
            heard(&signal) == key.to_string()
        })
    };
    let reverse = (0..=20)
        .take_while(|&t| twist_ok(t as f32))
        .last()
        .unwrap_or(0);
    let normal = (0..=20)
        .take_while(|&t| twist_ok(-(t as f32)))
        .last()
        .unwrap_or(0);
    println!("    Acceptable signal twist: normal {normal} dB, reverse {reverse} dB");
    assert!(normal >= 8 && reverse >= 4);

    println!("Test: Dynamic range");
    let quietest = (0..=50)
        .take_while(|&l| heard(&every_key(-(l as f32))) == KEYS)
        .last()
        .unwrap_or(0);
    println!("    Dynamic range is from 0 to -{quietest} dBm0 per tone");
    assert!(quietest >= 25);

    println!("Test: Guard time");
    let shortest = (10..=60)
        .find(|&ms| {
            (0..80).step_by(5).all(|lead| {
                let signal = Signal::default()
                    .silence(lead as f32 / 8.0)
                    .key('0', -10.0, ms as f32)
                    .silence(60.0);
                heard(&signal) == "0"
            })
        })
        .unwrap_or(0);
    println!("    Guard time is {shortest} ms (every alignment)");
    assert!((24..=40).contains(&shortest));

    println!("Test: Acceptable signal to noise ratio");
    let mut rng = StdRng::seed_from_u64(7);
    let lowest = (0..=30)
        .rev()
        .take_while(|&snr| {
            let signal = every_key(-15.0).noise(-15.0 + 3.01 - snr as f32, &mut rng);
            heard(&signal) == KEYS
        })
        .last()
        .unwrap_or(30);
    println!("    Acceptable S/N ratio is {lowest} dB");
    assert!(lowest <= 15);

    println!("Test: Dial tone tolerance");
    let loudest = (0..=30)
        .map(|l| -(l as f32))
        .rev()
        .take_while(|&dial| {
            let mut signal = every_key(-15.0);
            let tone =
                Signal::default().tones((350.0, dial), (440.0, dial), signal.0.len() as f32 / 8.0);
            for (x, d) in signal.0.iter_mut().zip(tone.0) {
                *x += d;
            }
            heard(&signal) == KEYS
        })
        .last();
    match loudest {
        Some(level) => {
            println!("    Acceptable dial tone level is {level} dBm0 (keys at -15 dBm0)")
        }
        None => println!("    Keys at -15 dBm0 are not heard under dial tone at -30 dBm0"),
    }
}
