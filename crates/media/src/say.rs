//! Saying digits, numbers, times and dates from recorded words: each function gives the names
//! of the prompts to play, in order (the names of `prompts/prompts.txt`).

use chrono::{DateTime, Datelike, TimeZone, Timelike};

/// Each key by name: "0" to "9", "star", "pound".
pub fn digits(keys: &str) -> Vec<&'static str> {
    keys.chars()
        .filter_map(|c| match c {
            '0'..='9' => Some(UNITS[c as usize - '0' as usize]),
            '*' => Some("star"),
            '#' => Some("pound"),
            _ => None,
        })
        .collect()
}

const UNITS: [&str; 20] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    "17", "18", "19",
];
const TENS: [&str; 10] = ["", "", "20", "30", "40", "50", "60", "70", "80", "90"];

/// A number in words, as in "two thousand three hundred forty five"; up to 999,999.
pub fn number(n: u32) -> Vec<&'static str> {
    let mut words = Vec::new();
    let n = n.min(999_999);
    if n >= 1000 {
        words.extend(below_thousand(n / 1000));
        words.push("thousand");
    }
    if n % 1000 != 0 || n == 0 {
        words.extend(below_thousand(n % 1000));
    }
    words
}

fn below_thousand(n: u32) -> Vec<&'static str> {
    let mut words = Vec::new();
    if n >= 100 {
        words.push(UNITS[(n / 100) as usize]);
        words.push("hundred");
    }
    let rest = (n % 100) as usize;
    if rest >= 20 {
        words.push(TENS[rest / 10]);
        if rest % 10 != 0 {
            words.push(UNITS[rest % 10]);
        }
    } else if rest != 0 || n == 0 {
        words.push(UNITS[rest]);
    }
    words
}

/// A time of day in 12-hour words: "nine oh five A M", "three o'clock P M", "noon".
pub fn time(hour: u32, minute: u32) -> Vec<&'static str> {
    match (hour % 24, minute % 60) {
        (0, 0) => return vec!["midnight"],
        (12, 0) => return vec!["noon"],
        _ => {}
    }
    let (hour, minute) = (hour % 24, minute % 60);
    let twelve = match hour % 12 {
        0 => 12,
        h => h,
    };
    let mut words = number(twelve);
    match minute {
        0 => words.push("oclock"),
        1..=9 => {
            words.push("oh");
            words.push(UNITS[minute as usize]);
        }
        _ => words.extend(number(minute)),
    }
    words.push(if hour < 12 { "am" } else { "pm" });
    words
}

const WEEKDAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];
const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];
const ORDINALS: [&str; 20] = [
    "first",
    "second",
    "third",
    "fourth",
    "fifth",
    "sixth",
    "seventh",
    "eighth",
    "ninth",
    "tenth",
    "eleventh",
    "twelfth",
    "thirteenth",
    "fourteenth",
    "fifteenth",
    "sixteenth",
    "seventeenth",
    "eighteenth",
    "nineteenth",
    "twentieth",
];

/// A date: "Tuesday, March twenty first". `weekday` counts from Monday = 0, `month` from
/// January = 1, `day` from 1.
pub fn date(weekday: u32, month: u32, day: u32) -> Vec<&'static str> {
    let mut words = vec![
        WEEKDAYS[(weekday % 7) as usize],
        MONTHS[((month.clamp(1, 12)) - 1) as usize],
    ];
    match day.clamp(1, 31) {
        d @ 1..=20 => words.push(ORDINALS[d as usize - 1]),
        30 => words.push("thirtieth"),
        d => {
            words.push(TENS[(d / 10) as usize]);
            words.push(ORDINALS[(d % 10) as usize - 1]);
        }
    }
    words
}

/// Every prompt name these functions may give, so a dialplan that says things can be checked
/// against the prompts there are.
pub fn words() -> impl Iterator<Item = &'static str> {
    UNITS
        .iter()
        .chain(TENS.iter().filter(|t| !t.is_empty()))
        .chain(&WEEKDAYS)
        .chain(&MONTHS)
        .chain(&ORDINALS)
        .chain(&[
            "hundred",
            "thousand",
            "oh",
            "star",
            "pound",
            "oclock",
            "am",
            "pm",
            "noon",
            "midnight",
            "at",
            "thirtieth",
        ])
        .copied()
}

/// A moment as the customer says it, in the zone `at` carries (convert first, e.g.
/// `utc.with_timezone(&tz)`): "Saturday, March twenty first at ten oh five A.M.".
pub fn date_time<Tz: TimeZone>(at: &DateTime<Tz>) -> Vec<&'static str> {
    let mut words = date(at.weekday().num_days_from_monday(), at.month(), at.day());
    words.push("at");
    words.extend(time(at.hour(), at.minute()));
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_said_is_a_word_listed() {
        let listed: Vec<&str> = words().collect();
        let said = (0..=99_999)
            .step_by(7)
            .flat_map(number)
            .chain(digits("0123456789*#"))
            .chain((0..24).flat_map(|h| (0..60).flat_map(move |m| time(h, m))))
            .chain((1..=12).flat_map(|m| (1..=31).flat_map(move |d| date(m % 7, m, d))));
        for word in said {
            assert!(listed.contains(&word), "{word}");
        }
    }

    #[test]
    fn numbers() {
        assert_eq!(number(0), ["0"]);
        assert_eq!(number(7), ["7"]);
        assert_eq!(number(13), ["13"]);
        assert_eq!(number(40), ["40"]);
        assert_eq!(number(45), ["40", "5"]);
        assert_eq!(number(100), ["1", "hundred"]);
        assert_eq!(number(305), ["3", "hundred", "5"]);
        assert_eq!(number(2000), ["2", "thousand"]);
        assert_eq!(
            number(12_345),
            ["12", "thousand", "3", "hundred", "40", "5"]
        );
    }

    #[test]
    fn digits_and_keys() {
        assert_eq!(digits("40*#"), ["4", "0", "star", "pound"]);
    }

    #[test]
    fn times() {
        assert_eq!(time(0, 0), ["midnight"]);
        assert_eq!(time(12, 0), ["noon"]);
        assert_eq!(time(9, 5), ["9", "oh", "5", "am"]);
        assert_eq!(time(15, 0), ["3", "oclock", "pm"]);
        assert_eq!(time(0, 30), ["12", "30", "am"]);
        assert_eq!(time(23, 59), ["11", "50", "9", "pm"]);
    }

    #[test]
    fn a_moment_is_said_in_the_customers_zone() {
        let utc = chrono::Utc.with_ymd_and_hms(2026, 3, 22, 2, 5, 0).unwrap();
        let new_york = utc.with_timezone(&chrono_tz::America::New_York);
        assert_eq!(
            date_time(&new_york),
            ["saturday", "march", "20", "first", "at", "10", "oh", "5", "pm"]
        );
        let tokyo = utc.with_timezone(&chrono_tz::Asia::Tokyo);
        assert_eq!(
            date_time(&tokyo),
            ["sunday", "march", "20", "second", "at", "11", "oh", "5", "am"]
        );
    }

    #[test]
    fn dates() {
        assert_eq!(date(1, 3, 21), ["tuesday", "march", "20", "first"]);
        assert_eq!(date(6, 12, 30), ["sunday", "december", "thirtieth"]);
        assert_eq!(date(0, 1, 1), ["monday", "january", "first"]);
        assert_eq!(date(4, 8, 31), ["friday", "august", "30", "first"]);
    }
}
