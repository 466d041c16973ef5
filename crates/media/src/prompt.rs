//! Prompts: recorded audio, read once from WAV, encoded once for each G.711 law, and shared
//! by every call that plays it.

use std::collections::HashMap;
use std::sync::Arc;

use crate::g711::Law;
use crate::playout::Item;

/// What is wrong with a prompt file.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("not a WAV file callbackd can read: {0}")]
    Wav(#[from] hound::Error),
    #[error(
        "is {0} Hz; prompts must be 8000 Hz (convert with `sox IN -r 8000 -c 1 -b 16 OUT.wav`)"
    )]
    Rate(u32),
    #[error("holds no audio")]
    Empty,
}

/// One prompt, ready to send in either law.
#[derive(Debug)]
pub struct Prompt {
    name: String,
    mu: Vec<u8>,
    a: Vec<u8>,
}

impl Prompt {
    /// Reads a WAV file's bytes. The file must be 8 kHz; more channels are mixed down and
    /// 8-, 24- and 32-bit integer or 32-bit float samples are converted to 16-bit.
    pub fn from_wav(name: &str, bytes: &[u8]) -> Result<Prompt, PromptError> {
        let reader = hound::WavReader::new(bytes)?;
        let spec = reader.spec();
        if spec.sample_rate != 8000 {
            return Err(PromptError::Rate(spec.sample_rate));
        }
        let channels = usize::from(spec.channels.max(1));
        let values: Vec<f32> = match spec.sample_format {
            hound::SampleFormat::Float => reader
                .into_samples::<f32>()
                .map(|s| s.map(|v| v * 32768.0))
                .collect::<Result<_, _>>()?,
            hound::SampleFormat::Int => {
                let scale = 2f32.powi(16 - i32::from(spec.bits_per_sample));
                reader
                    .into_samples::<i32>()
                    .map(|s| s.map(|v| v as f32 * scale))
                    .collect::<Result<_, _>>()?
            }
        };
        let samples: Vec<i16> = values
            .chunks(channels)
            .map(|frame| (frame.iter().sum::<f32>() / frame.len() as f32) as i16)
            .collect();
        if samples.is_empty() {
            return Err(PromptError::Empty);
        }
        Ok(Prompt::from_samples(name, &samples))
    }

    /// A prompt from 8 kHz 16-bit samples.
    pub fn from_samples(name: &str, samples: &[i16]) -> Prompt {
        Prompt {
            name: name.to_owned(),
            mu: samples.iter().map(|&s| Law::Mu.encode(s)).collect(),
            a: samples.iter().map(|&s| Law::A.encode(s)).collect(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The prompt in `law`, one byte a sample.
    pub fn encoded(&self, law: Law) -> &[u8] {
        match law {
            Law::Mu => &self.mu,
            Law::A => &self.a,
        }
    }
}

/// The prompts by name, loaded once and shared.
#[derive(Debug, Default, Clone)]
pub struct Library {
    prompts: HashMap<String, Arc<Prompt>>,
}

/// A prompt asked for by a name the library does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no prompt named `{0}`")]
pub struct UnknownPrompt(pub String);

impl Library {
    pub fn insert(&mut self, prompt: Prompt) {
        self.prompts.insert(prompt.name.clone(), Arc::new(prompt));
    }

    pub fn get(&self, name: &str) -> Result<Arc<Prompt>, UnknownPrompt> {
        self.prompts
            .get(name)
            .cloned()
            .ok_or_else(|| UnknownPrompt(name.to_owned()))
    }

    /// The prompts named, in order, ready to play.
    pub fn sequence<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<Item>, UnknownPrompt> {
        names
            .into_iter()
            .map(|name| self.get(name).map(Item::Prompt))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.prompts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prompts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(spec: hound::WavSpec, samples: &[i32]) -> Vec<u8> {
        let mut bytes = std::io::Cursor::new(Vec::new());
        let mut writer = hound::WavWriter::new(&mut bytes, spec).unwrap();
        for &s in samples {
            writer.write_sample(s).unwrap();
        }
        writer.finalize().unwrap();
        bytes.into_inner()
    }

    fn spec(channels: u16, rate: u32, bits: u16) -> hound::WavSpec {
        hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: bits,
            sample_format: hound::SampleFormat::Int,
        }
    }

    #[test]
    fn an_eight_khz_mono_file_is_encoded_in_both_laws() {
        let prompt = Prompt::from_wav("beep", &wav(spec(1, 8000, 16), &[0, 1000, -1000, 0]))
            .expect("a valid prompt");
        assert_eq!(prompt.encoded(Law::Mu).len(), 4);
        assert_eq!(Law::Mu.decode(prompt.encoded(Law::Mu)[1]), 988);
        assert_eq!(Law::A.decode(prompt.encoded(Law::A)[2]), -1008);
    }

    #[test]
    fn stereo_is_mixed_down_and_eight_bit_scaled_up() {
        let stereo = Prompt::from_wav("s", &wav(spec(2, 8000, 16), &[1000, 3000])).unwrap();
        assert_eq!(stereo.encoded(Law::Mu), &[Law::Mu.encode(2000)]);
        let eight = Prompt::from_wav("e", &wav(spec(1, 8000, 8), &[64])).unwrap();
        assert_eq!(eight.encoded(Law::A), &[Law::A.encode(64 * 256)]);
    }

    #[test]
    fn other_rates_garbage_and_empty_files_are_refused_with_the_reason() {
        let rate = Prompt::from_wav("r", &wav(spec(1, 22050, 16), &[0])).unwrap_err();
        assert!(rate.to_string().contains("22050 Hz"), "{rate}");
        assert!(matches!(
            Prompt::from_wav("g", b"RIFF garbage"),
            Err(PromptError::Wav(_))
        ));
        assert!(matches!(
            Prompt::from_wav("z", &wav(spec(1, 8000, 16), &[])),
            Err(PromptError::Empty)
        ));
    }
}
