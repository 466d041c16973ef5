//! G.711 (ITU-T G.711): μ-law (PCMU, payload type 0) and A-law (PCMA, payload type 8), 8 kHz,
//! one byte per sample, with 16-bit linear PCM on the other side.

/// Which G.711 law a stream uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Law {
    Mu,
    A,
}

impl Law {
    pub fn encode(self, sample: i16) -> u8 {
        match self {
            Law::Mu => mu_encode(sample),
            Law::A => a_encode(sample),
        }
    }

    pub fn decode(self, byte: u8) -> i16 {
        match self {
            Law::Mu => mu_decode(byte),
            Law::A => a_decode(byte),
        }
    }

    /// Transcodes one law to the other through linear PCM (PCMU ↔ PCMA bridging).
    pub fn transcode(self, byte: u8, to: Law) -> u8 {
        if self == to {
            byte
        } else {
            to.encode(self.decode(byte))
        }
    }
}

const MU_BIAS: i32 = 0x84;
const MU_CLIP: i32 = 32_635;

/// μ-law: sign, 3-bit segment, 4-bit mantissa, all bits inverted.
fn mu_encode(sample: i16) -> u8 {
    let mut value = i32::from(sample);
    let sign = if value < 0 {
        value = -value;
        0x80
    } else {
        0
    };
    value = value.min(MU_CLIP) + MU_BIAS;
    // The segment is the position of the highest bit above bit 7 (value >> 7 is 1 to 255).
    let segment = 31 - ((value >> 7) as u32).leading_zeros() as i32;
    let mantissa = (value >> (segment + 3)) & 0x0f;
    !(sign | (segment << 4) as u8 | mantissa as u8)
}

fn mu_decode(byte: u8) -> i16 {
    let byte = !byte;
    let sign = byte & 0x80;
    let segment = i32::from((byte >> 4) & 0x07);
    let mantissa = i32::from(byte & 0x0f);
    let magnitude = (((mantissa << 3) + MU_BIAS) << segment) - MU_BIAS;
    (if sign != 0 { -magnitude } else { magnitude }) as i16
}

/// A-law: sign, 3-bit segment, 4-bit mantissa, even bits inverted (XOR 0x55).
fn a_encode(sample: i16) -> u8 {
    let mut value = i32::from(sample) >> 3; // 13-bit
    let sign = if value >= 0 {
        0x80
    } else {
        value = -value - 1;
        0x00
    };
    let value = value.min(0x0fff);
    let code = if value < 32 {
        value >> 1
    } else {
        let segment = 31 - (value as u32).leading_zeros() as i32 - 4; // 1..=7
        (segment << 4) | ((value >> segment) & 0x0f)
    };
    (sign | code as u8) ^ 0x55
}

fn a_decode(byte: u8) -> i16 {
    let byte = byte ^ 0x55;
    let sign = byte & 0x80;
    let segment = i32::from((byte >> 4) & 0x07);
    let mantissa = i32::from(byte & 0x0f);
    let magnitude = if segment == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (segment - 1)
    };
    (if sign != 0 { magnitude } else { -magnitude }) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_code_points() {
        // Silence and the extremes, as G.711's tables give them.
        assert_eq!(mu_encode(0), 0xff);
        assert_eq!(mu_decode(0xff), 0);
        assert_eq!(mu_decode(0x7f), 0);
        assert_eq!(mu_decode(0x00), -32_124);
        assert_eq!(mu_decode(0x80), 32_124);
        assert_eq!(a_decode(0xd5), 8);
        assert_eq!(a_decode(0x55), -8);
        assert_eq!(a_decode(0xaa), 32_256);
        assert_eq!(a_decode(0x2a), -32_256);
        assert_eq!(a_encode(0), 0xd5);
    }

    #[test]
    fn every_code_survives_decode_then_encode() {
        for law in [Law::Mu, Law::A] {
            for byte in 0..=255u8 {
                let back = law.encode(law.decode(byte));
                // μ-law has two codes for zero (0xff and 0x7f); both decode to 0.
                assert!(
                    back == byte || (law == Law::Mu && law.decode(back) == law.decode(byte)),
                    "{law:?} {byte:#04x} -> {back:#04x}"
                );
            }
        }
    }

    #[test]
    fn encoding_is_monotonic_and_close() {
        for law in [Law::Mu, Law::A] {
            let mut previous = i16::MIN;
            for sample in (i16::MIN..=i16::MAX).step_by(7) {
                let decoded = law.decode(law.encode(sample));
                assert!(decoded >= previous, "{law:?}: not monotonic at {sample}");
                previous = decoded;
                // Logarithmic companding: the error grows with the level, at most ~1/16 of it.
                let error = (i32::from(decoded) - i32::from(sample)).abs();
                let allowed = (i32::from(sample).abs() / 16).max(16)
                    + 1024 * i32::from(sample.unsigned_abs() > 32_000);
                assert!(error <= allowed, "{law:?}: {sample} came back as {decoded}");
            }
        }
    }

    #[test]
    fn transcoding_keeps_the_signal() {
        for sample in [-20_000i16, -1_000, -10, 0, 10, 1_000, 20_000] {
            let mu = Law::Mu.encode(sample);
            let a = Law::Mu.transcode(mu, Law::A);
            let back = i32::from(Law::A.decode(a));
            assert!(
                (back - i32::from(sample)).abs() <= (i32::from(sample).abs() / 8).max(32),
                "{sample} -> {back}"
            );
            assert_eq!(Law::A.transcode(a, Law::A), a);
        }
    }
}
