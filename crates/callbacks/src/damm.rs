//! The Damm check digit: a single-digit error or an adjacent transposition always changes it.

/// The totally anti-symmetric quasigroup of order 10 that defines the Damm algorithm.
const TABLE: [[u8; 10]; 10] = [
    [0, 3, 1, 7, 5, 9, 8, 6, 4, 2],
    [7, 0, 9, 2, 1, 5, 4, 8, 6, 3],
    [4, 2, 0, 6, 8, 7, 1, 3, 5, 9],
    [1, 7, 5, 0, 9, 8, 3, 4, 2, 6],
    [6, 1, 2, 3, 0, 4, 5, 9, 7, 8],
    [3, 6, 7, 4, 2, 0, 9, 5, 8, 1],
    [5, 8, 6, 9, 7, 2, 0, 1, 3, 4],
    [8, 9, 4, 5, 3, 6, 2, 0, 1, 7],
    [9, 4, 3, 8, 6, 1, 7, 2, 0, 5],
    [2, 5, 8, 1, 4, 3, 6, 7, 9, 0],
];

/// The check digit of a string of ASCII digits (the caller guarantees they are digits).
pub fn check_digit(digits: &[u8]) -> u8 {
    digits
        .iter()
        .fold(0, |interim, d| TABLE[interim as usize][(d - b'0') as usize])
}

/// True when the last digit is the Damm check digit of the ones before it.
pub fn is_valid(digits: &[u8]) -> bool {
    check_digit(digits) == 0
}

/// `payload` random digits followed by their check digit.
pub fn generate(rng: &mut (impl rand_core::RngCore + ?Sized), payload: usize) -> String {
    let mut digits: Vec<u8> = (0..payload)
        .map(|_| b'0' + (rng.next_u32() % 10) as u8)
        .collect();
    digits.push(b'0' + check_digit(&digits));
    String::from_utf8(digits).expect("ASCII digits")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};

    #[test]
    fn known_value() {
        // The worked example of the algorithm: 572 has check digit 4.
        assert_eq!(check_digit(b"572"), 4);
        assert!(is_valid(b"5724"));
        assert!(!is_valid(b"5723"));
    }

    #[test]
    fn catches_every_single_digit_error_and_adjacent_transposition() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..2_000 {
            let code = generate(&mut rng, 8).into_bytes();
            assert!(is_valid(&code));
            for i in 0..code.len() {
                for d in b'0'..=b'9' {
                    if d != code[i] {
                        let mut typo = code.clone();
                        typo[i] = d;
                        assert!(!is_valid(&typo), "{:?}", String::from_utf8(typo));
                    }
                }
                if i + 1 < code.len() && code[i] != code[i + 1] {
                    let mut swapped = code.clone();
                    swapped.swap(i, i + 1);
                    assert!(!is_valid(&swapped));
                }
            }
        }
    }
}
