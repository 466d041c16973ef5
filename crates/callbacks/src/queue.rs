//! Queue policies: skills, calling windows, booking horizon, retries and expiry.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Days, Duration, NaiveTime, TimeZone, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::address::DialingPolicy;
use crate::callback::RequestedTime;
use crate::duration::serde_duration;
use crate::modification::Rejection;

/// Everything the domain needs to know from the configuration.
#[derive(Debug, Clone)]
pub struct Policy {
    pub queues: BTreeMap<String, Queue>,
    pub dialing: DialingPolicy,
}

/// One queue of callbacks and the rules for calling them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Queue {
    /// The skills (departments) a callback in this queue may require; the first is the default.
    pub skills: Vec<String>,
    /// The customer's time zone when their number does not tell it.
    pub time_zone: Tz,
    /// When customers may be called, in their own time zone.
    pub calling_window: CallingWindow,
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Wait after each failed attempt; the last entry repeats.
    #[serde(
        default = "default_backoff",
        deserialize_with = "serde_duration::deserialize_list"
    )]
    pub retry_backoff: Vec<Duration>,
    /// How far ahead a callback may be booked.
    #[serde(
        default = "default_horizon",
        deserialize_with = "serde_duration::deserialize"
    )]
    pub booking_horizon: Duration,
    /// How long after it falls due an undialed callback expires.
    #[serde(
        default = "default_expiry",
        deserialize_with = "serde_duration::deserialize"
    )]
    pub expiry: Duration,
    /// What an agent is expected to spend on one callback (calling, talking and wrap-up)
    /// before there are calls to measure; see [`crate::wait`].
    #[serde(
        default = "default_handle_time",
        deserialize_with = "serde_duration::deserialize"
    )]
    pub handle_time: Duration,
    /// Call the customer first and the agent once the customer has answered (and pressed 1),
    /// instead of the agent first.
    #[serde(default)]
    pub customer_first: bool,
    /// The number customers see when this queue calls them (the From user), instead of
    /// `sip.caller_id`.
    #[serde(default)]
    pub caller_id: Option<String>,
}

fn default_max_attempts() -> u32 {
    3
}
fn default_backoff() -> Vec<Duration> {
    vec![
        Duration::minutes(5),
        Duration::minutes(15),
        Duration::hours(1),
    ]
}
fn default_horizon() -> Duration {
    Duration::days(14)
}
fn default_expiry() -> Duration {
    Duration::days(2)
}
fn default_handle_time() -> Duration {
    Duration::minutes(5)
}

impl Queue {
    pub fn offers_skill(&self, skill: &str) -> bool {
        self.skills.iter().any(|s| s == skill)
    }

    /// Whether a customer may ask to be called at `at`: not in the past, within the booking
    /// horizon, and inside the calling window in the customer's time zone `tz`.
    pub fn check_time(
        &self,
        at: RequestedTime,
        tz: Tz,
        now: DateTime<Utc>,
    ) -> Result<(), Rejection> {
        let RequestedTime::At(t) = at else {
            return Ok(());
        };
        if t < now {
            return Err(Rejection::InThePast);
        }
        if t > now + self.booking_horizon {
            return Err(Rejection::BeyondHorizon {
                days: self.booking_horizon.num_days(),
            });
        }
        if !self.calling_window.contains(t, tz) {
            return Err(Rejection::OutsideCallingWindow);
        }
        Ok(())
    }

    /// The wait before the next attempt after `attempts` failed ones.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let i = (attempts.max(1) as usize - 1).min(self.retry_backoff.len().saturating_sub(1));
        self.retry_backoff
            .get(i)
            .copied()
            .unwrap_or_else(Duration::zero)
    }
}

/// Opening hours per weekday, as minutes of the day `[start, end)`; a day without hours is
/// closed.
///
/// Written in config as a table whose keys are `all`, `weekdays`, `weekend` or a day (`mon` …
/// `sun`), each `"HH:MM-HH:MM"` (`24:00` ends at midnight) or `"closed"`; a day's own key wins
/// over `weekdays`/`weekend`, which win over `all`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallingWindow {
    days: [Option<(u16, u16)>; 7],
}

impl CallingWindow {
    pub fn always() -> Self {
        Self {
            days: [Some((0, 1440)); 7],
        }
    }

    /// Whether `at` falls inside the window in time zone `tz`.
    pub fn contains(&self, at: DateTime<Utc>, tz: Tz) -> bool {
        let local = at.with_timezone(&tz);
        let minute = (local.hour() * 60 + local.minute()) as u16;
        self.days[local.weekday().num_days_from_monday() as usize]
            .is_some_and(|(start, end)| start <= minute && minute < end)
    }

    /// The first moment at or after `after` inside the window in time zone `tz`; `None` for a
    /// window closed all week.
    pub fn next_open(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        if self.contains(after, tz) {
            return Some(after);
        }
        let local = after.with_timezone(&tz).date_naive();
        (0..8).find_map(|d| {
            let date = local.checked_add_days(Days::new(d))?;
            let (start, _) = self.days[date.weekday().num_days_from_monday() as usize]?;
            let time = NaiveTime::from_hms_opt(u32::from(start / 60), u32::from(start % 60), 0)?;
            // An opening inside a daylight-saving gap has no local time: that day is skipped.
            let at = tz
                .from_local_datetime(&date.and_time(time))
                .earliest()?
                .to_utc();
            (at > after).then_some(at)
        })
    }

    fn parse_hours(text: &str) -> Result<Option<(u16, u16)>, String> {
        if text == "closed" {
            return Ok(None);
        }
        let bad = || format!("`{text}` is not opening hours: write \"09:00-17:30\" or \"closed\"");
        let (start, end) = text.split_once('-').ok_or_else(bad)?;
        let minutes = |t: &str| -> Option<u16> {
            let (h, m) = t.trim().split_once(':')?;
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
        };
        let (start, end) = (
            minutes(start).ok_or_else(bad)?,
            minutes(end).ok_or_else(bad)?,
        );
        if start >= end {
            return Err(format!("`{text}` ends before it starts"));
        }
        Ok(Some((start, end)))
    }
}

/// Shown as it is written: a day to `"HH:MM-HH:MM"` or `"closed"`.
impl Serialize for CallingWindow {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
        let mut map = s.serialize_map(Some(7))?;
        for (day, hours) in days.iter().zip(&self.days) {
            let text = match hours {
                Some((start, end)) => format!(
                    "{:02}:{:02}-{:02}:{:02}",
                    start / 60,
                    start % 60,
                    end / 60,
                    end % 60
                ),
                None => "closed".to_owned(),
            };
            map.serialize_entry(day, &text)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for CallingWindow {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let table = BTreeMap::<String, String>::deserialize(d)?;
        let days = [
            Weekday::Mon,
            Weekday::Tue,
            Weekday::Wed,
            Weekday::Thu,
            Weekday::Fri,
            Weekday::Sat,
            Weekday::Sun,
        ];
        let key_of = |w: Weekday| w.to_string().to_lowercase();
        for key in table.keys() {
            let known = ["all", "weekdays", "weekend"].contains(&key.as_str())
                || days.iter().any(|w| key_of(*w) == *key);
            if !known {
                return Err(D::Error::custom(format!(
                    "unknown day `{key}`: use all, weekdays, weekend, mon, tue, wed, thu, fri, sat or sun"
                )));
            }
        }
        let mut window = CallingWindow { days: [None; 7] };
        for (i, day) in days.into_iter().enumerate() {
            let group = if i < 5 { "weekdays" } else { "weekend" };
            if let Some(text) = [key_of(day).as_str(), group, "all"]
                .iter()
                .find_map(|k| table.get(*k))
            {
                window.days[i] = Self::parse_hours(text).map_err(D::Error::custom)?;
            }
        }
        Ok(window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn window(toml_like: &[(&str, &str)]) -> Result<CallingWindow, String> {
        let map: BTreeMap<String, String> = toml_like
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        serde_json::from_value(serde_json::to_value(map).unwrap()).map_err(|e| e.to_string())
    }

    #[test]
    fn windows_are_in_the_customers_time_zone() {
        let w = window(&[("weekdays", "09:00-17:00"), ("sat", "10:00-12:00")]).unwrap();
        let ny = chrono_tz::America::New_York;
        // Monday 2026-11-23 14:30 UTC is 09:30 in New York.
        let monday = Utc.with_ymd_and_hms(2026, 11, 23, 14, 30, 0).unwrap();
        assert!(w.contains(monday, ny));
        assert!(
            !w.contains(monday, chrono_tz::America::Los_Angeles),
            "06:30 in LA"
        );
        let saturday_11 = ny
            .with_ymd_and_hms(2026, 11, 28, 11, 0, 0)
            .unwrap()
            .to_utc();
        assert!(w.contains(saturday_11, ny));
        let sunday = ny
            .with_ymd_and_hms(2026, 11, 29, 11, 0, 0)
            .unwrap()
            .to_utc();
        assert!(!w.contains(sunday, ny));
        let five_pm = ny
            .with_ymd_and_hms(2026, 11, 23, 17, 0, 0)
            .unwrap()
            .to_utc();
        assert!(!w.contains(five_pm, ny), "the end is exclusive");
    }

    #[test]
    fn shown_as_written() {
        let w = window(&[
            ("weekdays", "09:00-17:30"),
            ("sun", "closed"),
            ("sat", "00:00-24:00"),
        ])
        .unwrap();
        assert_eq!(
            serde_json::to_value(&w).unwrap(),
            serde_json::json!({"mon": "09:00-17:30", "tue": "09:00-17:30", "wed": "09:00-17:30",
                "thu": "09:00-17:30", "fri": "09:00-17:30", "sat": "00:00-24:00", "sun": "closed"})
        );
    }

    #[test]
    fn precedence_and_midnight() {
        let w = window(&[("all", "00:00-24:00"), ("sun", "closed")]).unwrap();
        let ny = chrono_tz::America::New_York;
        let late = ny
            .with_ymd_and_hms(2026, 11, 23, 23, 59, 0)
            .unwrap()
            .to_utc();
        assert!(w.contains(late, ny));
        let sunday = ny
            .with_ymd_and_hms(2026, 11, 29, 11, 0, 0)
            .unwrap()
            .to_utc();
        assert!(!w.contains(sunday, ny));
    }

    #[test]
    fn bad_windows_say_what_is_wrong() {
        assert!(window(&[("monday", "09:00-17:00")])
            .unwrap_err()
            .contains("unknown day `monday`"));
        assert!(window(&[("mon", "9-5")])
            .unwrap_err()
            .contains("not opening hours"));
        assert!(window(&[("mon", "17:00-09:00")])
            .unwrap_err()
            .contains("ends before it starts"));
        assert!(window(&[("mon", "09:00-24:30")]).is_err());
    }

    #[test]
    fn the_next_opening_is_found_in_the_customers_zone() {
        let w = window(&[("weekdays", "09:00-17:00"), ("sat", "10:00-12:00")]).unwrap();
        let ny = chrono_tz::America::New_York;
        let friday_6pm = ny
            .with_ymd_and_hms(2026, 11, 27, 18, 0, 0)
            .unwrap()
            .to_utc();
        let saturday_10am = ny
            .with_ymd_and_hms(2026, 11, 28, 10, 0, 0)
            .unwrap()
            .to_utc();
        assert_eq!(w.next_open(friday_6pm, ny), Some(saturday_10am));
        let saturday_noon = ny
            .with_ymd_and_hms(2026, 11, 28, 12, 0, 0)
            .unwrap()
            .to_utc();
        let monday_9am = ny.with_ymd_and_hms(2026, 11, 30, 9, 0, 0).unwrap().to_utc();
        assert_eq!(w.next_open(saturday_noon, ny), Some(monday_9am));
        let inside = ny
            .with_ymd_and_hms(2026, 11, 30, 9, 30, 0)
            .unwrap()
            .to_utc();
        assert_eq!(w.next_open(inside, ny), Some(inside));
        let closed = window(&[("all", "closed")]).unwrap();
        assert_eq!(closed.next_open(inside, ny), None);
    }

    #[test]
    fn backoff_repeats_its_last_step() {
        let q: Queue = serde_json::from_value(serde_json::json!({
            "skills": ["billing"], "time_zone": "Europe/London",
            "calling_window": {"all": "00:00-24:00"}, "retry_backoff": ["1m", "10m"]
        }))
        .unwrap();
        assert_eq!(q.backoff(1), Duration::minutes(1));
        assert_eq!(q.backoff(2), Duration::minutes(10));
        assert_eq!(q.backoff(9), Duration::minutes(10));
        assert_eq!(q.max_attempts, 3);
    }
}
