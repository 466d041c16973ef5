//! Keypad-friendly identifiers: confirmation IDs and receipt codes.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::damm;

/// How a callback is found again: 8 random digits and a Damm check digit, so a mistyped ID is
/// refused before any lookup.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ConfirmationId(String);

/// Why a string is not a confirmation ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfirmationIdError {
    #[error("a confirmation ID has {expected} digits, this one has {found}")]
    WrongLength { expected: usize, found: usize },
    #[error("a confirmation ID has only the digits 0-9")]
    NotDigits,
    #[error("the check digit does not match: the confirmation ID was mistyped")]
    BadCheckDigit,
}

impl ConfirmationId {
    /// Digits in a confirmation ID, check digit included.
    pub const LEN: usize = 9;

    pub fn parse(text: &str) -> Result<Self, ConfirmationIdError> {
        let bytes = text.as_bytes();
        if !bytes.iter().all(u8::is_ascii_digit) {
            return Err(ConfirmationIdError::NotDigits);
        }
        if bytes.len() != Self::LEN {
            return Err(ConfirmationIdError::WrongLength {
                expected: Self::LEN,
                found: bytes.len(),
            });
        }
        if !damm::is_valid(bytes) {
            return Err(ConfirmationIdError::BadCheckDigit);
        }
        Ok(Self(text.to_owned()))
    }

    pub fn generate(rng: &mut (impl rand_core::RngCore + ?Sized)) -> Self {
        Self(damm::generate(rng, Self::LEN - 1))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ConfirmationId {
    type Error = ConfirmationIdError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text)
    }
}

impl From<ConfirmationId> for String {
    fn from(id: ConfirmationId) -> String {
        id.0
    }
}

impl fmt::Display for ConfirmationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ConfirmationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConfirmationId({})", self.0)
    }
}

/// The code read back after a modification attempt, success or failure: 5 random digits and
/// a Damm check digit. It is a reference for the caller and the operator, not a key.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReceiptCode(String);

impl ReceiptCode {
    pub const LEN: usize = 6;

    pub fn generate(rng: &mut (impl rand_core::RngCore + ?Sized)) -> Self {
        Self(damm::generate(rng, Self::LEN - 1))
    }

    /// Accepts a stored code; the check digit is verified like a confirmation ID's.
    pub fn parse(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        (bytes.len() == Self::LEN && bytes.iter().all(u8::is_ascii_digit) && damm::is_valid(bytes))
            .then(|| Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ReceiptCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ReceiptCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReceiptCode({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};

    #[test]
    fn generated_ids_parse_back() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..1000 {
            let id = ConfirmationId::generate(&mut rng);
            assert_eq!(ConfirmationId::parse(id.as_str()), Ok(id.clone()));
            let receipt = ReceiptCode::generate(&mut rng);
            assert_eq!(ReceiptCode::parse(receipt.as_str()), Some(receipt));
        }
    }

    #[test]
    fn same_seed_same_ids() {
        let a = ConfirmationId::generate(&mut StdRng::seed_from_u64(9));
        let b = ConfirmationId::generate(&mut StdRng::seed_from_u64(9));
        assert_eq!(a, b);
    }

    #[test]
    fn parse_rejects_bad_input_before_any_lookup() {
        assert_eq!(
            ConfirmationId::parse("12345"),
            Err(ConfirmationIdError::WrongLength {
                expected: 9,
                found: 5
            })
        );
        assert_eq!(
            ConfirmationId::parse("1234a6789"),
            Err(ConfirmationIdError::NotDigits)
        );
        assert_eq!(
            ConfirmationId::parse("１２３４５６７８９"),
            Err(ConfirmationIdError::NotDigits)
        );
        assert_eq!(
            ConfirmationId::parse(""),
            Err(ConfirmationIdError::WrongLength {
                expected: 9,
                found: 0
            })
        );
        let good = ConfirmationId::generate(&mut StdRng::seed_from_u64(3)).to_string();
        let mut typo = good.clone().into_bytes();
        typo[4] = if typo[4] == b'9' { b'0' } else { typo[4] + 1 };
        assert_eq!(
            ConfirmationId::parse(std::str::from_utf8(&typo).unwrap()),
            Err(ConfirmationIdError::BadCheckDigit)
        );
    }

    #[test]
    fn serde_validates() {
        let good = ConfirmationId::generate(&mut StdRng::seed_from_u64(5));
        let json = serde_json::to_string(&good).unwrap();
        assert_eq!(serde_json::from_str::<ConfirmationId>(&json).unwrap(), good);
        let mut typo = good.to_string().into_bytes();
        typo[0] = if typo[0] == b'9' { b'0' } else { typo[0] + 1 };
        let typo = format!("\"{}\"", String::from_utf8(typo).unwrap());
        let err = serde_json::from_str::<ConfirmationId>(&typo).unwrap_err();
        assert!(err.to_string().contains("check digit"), "{err}");
    }
}
