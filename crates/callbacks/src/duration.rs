//! Durations as people write them in a config file: `500ms`, `90s`, `10m`, `2h`, `14d`.

use chrono::Duration;

/// Parses a whole number followed by one unit: `ms`, `s`, `m`, `h` or `d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit: write for example 30s, 10m, 2h or 14d"))?;
    let (number, unit) = text.split_at(split);
    let n: i64 = number
        .parse()
        .map_err(|_| format!("`{text}` does not start with a whole number"))?;
    let millis = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("`{text}` has unit `{unit}`; use ms, s, m, h or d")),
    };
    n.checked_mul(millis)
        .filter(|ms| *ms <= 100 * 365 * 86_400_000)
        .map(Duration::milliseconds)
        .ok_or_else(|| format!("`{text}` is too long"))
}

/// Serde helpers for fields holding durations written as strings.
pub mod serde_duration {
    use chrono::Duration;
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text).map_err(serde::de::Error::custom)
    }

    pub fn deserialize_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|t| super::parse_duration(t).map_err(serde::de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_duration("90s"), Ok(Duration::seconds(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::minutes(10)));
        assert_eq!(parse_duration("2h"), Ok(Duration::hours(2)));
        assert_eq!(parse_duration("14d"), Ok(Duration::days(14)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::milliseconds(500)));
        assert!(parse_duration("14").unwrap_err().contains("no unit"));
        assert!(parse_duration("5w").unwrap_err().contains("unit `w`"));
        assert!(parse_duration("5us").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("99999999999999999d").is_err());
    }
}
