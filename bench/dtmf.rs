//! What the in-band DTMF detector costs: the time to run it over a minute of caller speech
//! (the longest prompt, looped) and over a minute of silence, on one core.
//!
//! ```sh
//! cargo bench --bench dtmf
//! ```

use std::time::Instant;

use media::dtmf::Detector;
use media::g711::Law;
use media::prompt::Prompt;

/// Microseconds of detector time per second of audio, fed as 20 ms packets.
fn cost(samples: &[i16]) -> f64 {
    let mut detector = Detector::new();
    let mut keys = 0;
    // Warm up, then measure.
    for packet in samples.chunks(160).take(500) {
        detector.process(packet, |_| keys += 1);
    }
    let started = Instant::now();
    for packet in samples.chunks(160) {
        detector.process(packet, |_| keys += 1);
    }
    let elapsed = started.elapsed();
    assert_eq!(keys, 0, "speech heard as keys");
    elapsed.as_secs_f64() * 1e6 / (samples.len() as f64 / 8000.0)
}

fn main() {
    let wav = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/prompts/main-menu.wav"
    ))
    .expect("prompts/main-menu.wav");
    let speech = Prompt::from_wav("speech", &wav).expect("a prompt");
    let speech: Vec<i16> = speech
        .encoded(Law::Mu)
        .iter()
        .map(|&b| Law::Mu.decode(b))
        .cycle()
        .take(8000 * 60)
        .collect();
    let silence = vec![0i16; 8000 * 60];
    let (speaking, quiet) = (cost(&speech), cost(&silence));
    println!("| audio | detector time per second of audio | share of one core per call |");
    println!("| --- | --- | --- |");
    println!(
        "| speech (prompts/main-menu.wav, looped for 60 s) | {speaking:.1} µs | {:.3} % |",
        speaking / 1e4
    );
    println!("| silence (60 s) | {quiet:.1} µs | {:.4} % |", quiet / 1e4);
}
