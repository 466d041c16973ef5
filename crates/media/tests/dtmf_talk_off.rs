//! Talk-off: speech and music must not be heard as keys. The in-band detector runs over every
//! prompt of `prompts/`, an hour of espeak-ng speech in many voices, pitches and speeds, and
//! twenty minutes of synthetic music, all through μ-law as a call would carry it, and must
//! hear no key at all (the requirement: under one false key per hour).
//!
//! Needs `espeak-ng` and `sox` (Debian packages of the same names); `scripts/test.sh` installs
//! them. `cargo test -p media --test dtmf_talk_off -- --nocapture` prints the report.

use std::path::Path;
use std::process::{Command, Stdio};

use media::dtmf::{Detector, DBM0_POWER};
use media::g711::Law;
use media::prompt::Prompt;
use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};

/// Counts the keys the detector hears in μ-law audio, fed as 20 ms packets.
fn false_keys(mu: &[u8]) -> usize {
    let mut detector = Detector::new();
    let mut keys = 0;
    let mut samples = [0i16; 160];
    for packet in mu.chunks(160) {
        for (s, b) in samples.iter_mut().zip(packet) {
            *s = Law::Mu.decode(*b);
        }
        detector.process(&samples[..packet.len()], |_| keys += 1);
    }
    keys
}

fn minutes(mu: &[u8]) -> f64 {
    mu.len() as f64 / 8000.0 / 60.0
}

fn need(tool: &str) {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "the talk-off test needs `{tool}`: apt-get install espeak-ng sox (scripts/test.sh does)"
    );
}

const WORDS: &str = "the a of and to in is you that it he was for on are as with his they I at \
be this have from or one had by word but not what all were we when your can said there use an each \
which she do how their if will up other about out many then them these so some her would make like \
him into time has look two more write go see number no way could people my than first water been \
call who oil its now find long down day did get come made may part callback agent queue number \
please press pound star hold wait minute hour tomorrow today morning evening confirm cancel change \
department sales support billing account payment order delivery address phone service help thank \
welcome sorry again seven eight nine zero three four five six eleven twelve twenty thirty hundred \
music sing song voice whistle bell ring tone high low loud quiet beep chirp squeak meow hello yes \
okay right left maybe never always sometimes eventually quickly slowly carefully";

const VOICES: [&str; 10] = [
    "en-us",
    "en-gb",
    "en-us+f2",
    "en-us+f4",
    "en-gb+f3",
    "en-us+m3",
    "en-us+m7",
    "en-029",
    "en-gb-scotland",
    "en-gb-x-rp",
];

/// Speech from espeak-ng, resampled by sox to 8 kHz and μ-law encoded.
fn speak(text: &str, voice: &str, pitch: u32, speed: u32) -> Vec<u8> {
    let mut espeak = Command::new("espeak-ng")
        .args([
            "-v",
            voice,
            "-p",
            &pitch.to_string(),
            "-s",
            &speed.to_string(),
        ])
        .args(["--stdout", text])
        .stdout(Stdio::piped())
        .spawn()
        .expect("espeak-ng runs");
    let sox = Command::new("sox")
        .args(["-q", "-t", "wav", "-", "-t", "raw", "-r", "8000"])
        .args(["-e", "signed", "-b", "16", "-c", "1", "-"])
        .stdin(espeak.stdout.take().expect("a pipe"))
        .output()
        .expect("sox runs");
    assert!(espeak.wait().expect("espeak-ng ends").success());
    assert!(
        sox.status.success(),
        "sox: {}",
        String::from_utf8_lossy(&sox.stderr)
    );
    sox.stdout
        .chunks_exact(2)
        .map(|b| Law::Mu.encode(i16::from_le_bytes([b[0], b[1]])))
        .collect()
}

/// An hour of speech: sentences of random words in random voices, pitches and speeds, made on
/// two threads.
fn an_hour_of_speech() -> Vec<u8> {
    let words: Vec<&str> = WORDS.split_whitespace().collect();
    let mut rng = StdRng::seed_from_u64(4733);
    // About 165 words a minute: 100 pieces of 130 words make a little over an hour.
    let pieces: Vec<(String, &str, u32, u32)> = (0..100)
        .map(|_| {
            let text = (0..130)
                .map(|i| {
                    let word = words.choose(&mut rng).copied().unwrap_or("the");
                    if i % 9 == 8 {
                        format!("{word}.")
                    } else {
                        word.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join(" ");
            let voice = VOICES.choose(&mut rng).copied().unwrap_or("en-us");
            (text, voice, rng.gen_range(10..95), rng.gen_range(130..210))
        })
        .collect();
    let halves: Vec<Vec<u8>> = std::thread::scope(|scope| {
        let workers: Vec<_> = pieces
            .chunks(pieces.len() / 2)
            .map(|share| {
                scope.spawn(move || {
                    share
                        .iter()
                        .flat_map(|(text, voice, pitch, speed)| speak(text, voice, *pitch, *speed))
                        .collect::<Vec<u8>>()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    halves.concat()
}

/// One period of an instrument's wave, from the amplitudes of its harmonics.
fn wavetable(harmonics: &[f32]) -> Vec<f32> {
    let table: Vec<f32> = (0..1024)
        .map(|i| {
            let phase = 2.0 * std::f32::consts::PI * i as f32 / 1024.0;
            harmonics
                .iter()
                .enumerate()
                .map(|(k, a)| a * ((k + 1) as f32 * phase).sin())
                .sum()
        })
        .collect();
    let peak = table.iter().fold(0f32, |m, x| m.max(x.abs()));
    table.into_iter().map(|x| x / peak).collect()
}

/// Music: chords and melodies of harmonic-rich instruments (strings, organ, clarinet, brass,
/// plucked), notes from 110 Hz to about 1.5 kHz, with vibrato and envelopes.
fn synthetic_music(minutes: usize, seed: u64) -> Vec<u8> {
    let instruments = [
        wavetable(&[1.0, 0.5, 0.33, 0.25, 0.2, 0.17, 0.14, 0.12]),
        wavetable(&[1.0, 0.8, 0.6, 0.0, 0.4, 0.0, 0.0, 0.3]),
        wavetable(&[1.0, 0.0, 0.33, 0.0, 0.2, 0.0, 0.14]),
        wavetable(&[0.6, 1.0, 0.8, 0.6, 0.4, 0.3, 0.2]),
        wavetable(&[1.0, 0.6, 0.36, 0.22, 0.13, 0.08]),
    ];
    let mut rng = StdRng::seed_from_u64(seed);
    let total = minutes * 60 * 8000;
    let mut out = Vec::with_capacity(total);
    while out.len() < total {
        let length = rng.gen_range(800..6000);
        let notes: Vec<(usize, f32, f32, f32)> = (0..rng.gen_range(1..=4))
            .map(|_| {
                let midi = rng.gen_range(45..91) as f32;
                let frequency = 440.0 * 2f32.powf((midi - 69.0) / 12.0);
                let level = rng.gen_range(-25.0..-8.0f32);
                let amplitude = (2.0 * DBM0_POWER * 10f32.powf(level / 10.0)).sqrt();
                let phase = rng.gen_range(0.0..1.0);
                (
                    rng.gen_range(0..instruments.len()),
                    frequency,
                    amplitude,
                    phase,
                )
            })
            .collect();
        for n in 0..length {
            let t = n as f32 / 8000.0;
            let envelope = (n as f32 / 160.0).min(1.0) * ((length - n) as f32 / 400.0).min(1.0);
            let vibrato = 1.0 + 0.004 * (2.0 * std::f32::consts::PI * 5.5 * t).sin();
            let x: f32 = notes
                .iter()
                .map(|&(instrument, frequency, amplitude, phase)| {
                    let cycles = phase + frequency * vibrato * t;
                    let index = ((cycles.fract()) * 1024.0) as usize % 1024;
                    amplitude * instruments[instrument][index]
                })
                .sum();
            out.push(Law::Mu.encode((x * envelope).clamp(-32768.0, 32767.0) as i16));
        }
    }
    out
}

#[test]
fn speech_music_and_the_prompts_are_never_heard_as_keys() {
    need("espeak-ng");
    need("sox");

    let prompts_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../prompts");
    let mut prompts = Vec::new();
    for entry in std::fs::read_dir(&prompts_dir).expect("prompts/ is there") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "wav") {
            let bytes = std::fs::read(&path).unwrap();
            let prompt = Prompt::from_wav("talk-off", &bytes).unwrap();
            prompts.extend_from_slice(prompt.encoded(Law::Mu));
        }
    }
    assert!(minutes(&prompts) > 1.0, "the prompts were not found");

    let speech = an_hour_of_speech();
    let music = synthetic_music(20, 1633);
    let mut failures = Vec::new();
    println!("Test: Talk-off");
    for (what, audio) in [
        ("the prompts", &prompts),
        ("espeak-ng speech", &speech),
        ("synthetic music", &music),
    ] {
        let hits = false_keys(audio);
        println!(
            "    {hits} false hits in {:.1} minutes of {what}",
            minutes(audio)
        );
        if hits > 0 {
            failures.push(what);
        }
    }
    assert!(
        minutes(&speech) >= 60.0,
        "only {:.1} minutes of speech",
        minutes(&speech)
    );
    assert!(failures.is_empty(), "keys heard in {failures:?}");
}
