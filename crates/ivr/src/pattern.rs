//! Key patterns, in the notation of Asterisk's extension patterns that telecom engineers
//! already read: each element matches one key.
//!
//! | element | matches |
//! | --- | --- |
//! | `0`–`9`, `*`, `#`, `A`–`D` | that key |
//! | `X` | any digit |
//! | `Z` | a digit 1–9 |
//! | `N` | a digit 2–9 |
//! | `[0-5]`, `[147]`, `[0-2*]` | one key of the set (ranges of digits allowed) |
//! | `.` (last only) | one or more keys more |
//!
//! `[0-2]X[0-5]X` is a time as HHMM (the hour checked further by the operation); `XXXX` four
//! digits.

use std::fmt;

/// What is wrong with a pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("the pattern is empty")]
    Empty,
    #[error("`{0}` is not a key or a pattern element (keys, X, Z, N, [..], and . at the end)")]
    Unknown(char),
    #[error("a `[` is not closed")]
    Unclosed,
    #[error("the set `[{0}]` is empty or has a bad range")]
    BadSet(String),
    #[error("`.` may only end a pattern")]
    DotNotLast,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    /// One set of keys per position.
    elements: Vec<Vec<char>>,
    /// Whether `.` ends it: one or more keys more.
    more: bool,
}

const KEYS: &str = "0123456789*#ABCD";

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        let mut elements = Vec::new();
        let mut more = false;
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if more {
                return Err(PatternError::DotNotLast);
            }
            let set: Vec<char> = match c {
                'X' | 'x' => ('0'..='9').collect(),
                'Z' | 'z' => ('1'..='9').collect(),
                'N' | 'n' => ('2'..='9').collect(),
                '.' => {
                    more = true;
                    continue;
                }
                '[' => {
                    let mut inside = String::new();
                    loop {
                        match chars.next() {
                            Some(']') => break,
                            Some(c) => inside.push(c),
                            None => return Err(PatternError::Unclosed),
                        }
                    }
                    set_of(&inside).ok_or(PatternError::BadSet(inside))?
                }
                c if KEYS.contains(c) => vec![c],
                c => return Err(PatternError::Unknown(c)),
            };
            elements.push(set);
        }
        if elements.is_empty() {
            return Err(PatternError::Empty);
        }
        Ok(Pattern {
            text: text.to_owned(),
            elements,
            more,
        })
    }

    pub fn matches(&self, keys: &str) -> bool {
        let keys: Vec<char> = keys.chars().collect();
        let fixed = self.elements.len();
        let length_fits = if self.more {
            keys.len() > fixed
        } else {
            keys.len() == fixed
        };
        length_fits
            && self
                .elements
                .iter()
                .zip(&keys)
                .all(|(set, key)| set.contains(key))
            && keys[fixed..].iter().all(|k| KEYS.contains(*k))
    }
}

/// The keys of `[...]`: single keys and digit ranges like `0-5`.
fn set_of(inside: &str) -> Option<Vec<char>> {
    let chars: Vec<char> = inside.chars().collect();
    let mut set = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if i + 2 < chars.len() && chars[i + 1] == '-' {
            let (from, to) = (chars[i], chars[i + 2]);
            if !from.is_ascii_digit() || !to.is_ascii_digit() || from > to {
                return None;
            }
            set.extend(from..=to);
            i += 3;
        } else if KEYS.contains(chars[i]) {
            set.push(chars[i]);
            i += 1;
        } else {
            return None;
        }
    }
    (!set.is_empty()).then_some(set)
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Pattern {
        Pattern::parse(text).unwrap()
    }

    #[test]
    fn elements_match_their_keys() {
        assert!(p("XXXX").matches("0123"));
        assert!(!p("XXXX").matches("012"));
        assert!(!p("XXXX").matches("01234"));
        assert!(!p("XXXX").matches("01#3"));
        assert!(p("[0-2]X[0-5]X").matches("2359"));
        assert!(!p("[0-2]X[0-5]X").matches("2369"));
        assert!(p("N").matches("2") && !p("N").matches("1"));
        assert!(p("Z").matches("1") && !p("Z").matches("0"));
        assert!(p("[147*]").matches("*"));
        assert!(p("1#").matches("1#"));
    }

    #[test]
    fn a_final_dot_takes_one_or_more_keys() {
        assert!(p("9.").matches("91"));
        assert!(p("9.").matches("9123456"));
        assert!(!p("9.").matches("9"));
        assert!(!p("9.").matches("8123"));
    }

    #[test]
    fn bad_patterns_say_what_is_wrong() {
        assert_eq!(Pattern::parse(""), Err(PatternError::Empty));
        assert_eq!(Pattern::parse("XQ"), Err(PatternError::Unknown('Q')));
        assert_eq!(Pattern::parse("[0-5"), Err(PatternError::Unclosed));
        assert_eq!(
            Pattern::parse("[5-0]"),
            Err(PatternError::BadSet("5-0".into()))
        );
        assert_eq!(Pattern::parse("[]"), Err(PatternError::BadSet("".into())));
        assert_eq!(Pattern::parse("X.X"), Err(PatternError::DotNotLast));
    }
}
