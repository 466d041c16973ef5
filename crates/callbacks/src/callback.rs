//! The callback and its lifecycle.

use std::fmt;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::address::{Address, Media};
use crate::ids::ConfirmationId;

/// Where a callback is in its life. See DESIGN.md section 5.
///
/// ```text
///  scheduled ──(time comes)──> queued ──(claimed)──> dialing ──> connected ──> completed
///  scheduled, queued, dialing (before answer) ── pause ──> paused ── resume ──> queued
///  any open state ── cancel ──> cancelled
///  dialing ── busy / no answer / failed ──> queued after a backoff, or failed
///  scheduled or queued past its expiry ──> expired
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Scheduled,
    Queued,
    Dialing,
    Connected,
    Completed,
    Paused,
    Cancelled,
    Failed,
    Expired,
}

/// An attempt to move a callback between two states that the lifecycle does not connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a callback cannot go from {from} to {to}")]
pub struct IllegalTransition {
    pub from: State,
    pub to: State,
}

impl State {
    pub const ALL: [State; 9] = [
        State::Scheduled,
        State::Queued,
        State::Dialing,
        State::Connected,
        State::Completed,
        State::Paused,
        State::Cancelled,
        State::Failed,
        State::Expired,
    ];

    /// The one table of legal transitions.
    ///
    /// Beyond the diagram: a reschedule moves between scheduled and queued in both directions
    /// (a later time, or as soon as possible); a resume of a callback booked for a later time
    /// returns it to scheduled, where it becomes queued when its time comes like any other; a
    /// failed attempt whose callback was meanwhile rescheduled to a later time returns to
    /// scheduled.
    pub fn can_become(self, to: State) -> bool {
        use State::*;
        matches!(
            (self, to),
            (Scheduled, Queued | Paused | Cancelled | Expired)
                | (Queued, Scheduled | Dialing | Paused | Cancelled | Expired)
                | (
                    Dialing,
                    Connected | Queued | Scheduled | Failed | Paused | Cancelled
                )
                | (Connected, Completed | Cancelled)
                | (Paused, Queued | Scheduled | Cancelled)
        )
    }

    /// The transition to `to`, or an error naming both states.
    pub fn transition(self, to: State) -> Result<State, IllegalTransition> {
        if self.can_become(to) {
            Ok(to)
        } else {
            Err(IllegalTransition { from: self, to })
        }
    }

    /// Open callbacks still have work ahead; the others are finished for good.
    pub fn is_open(self) -> bool {
        !matches!(
            self,
            State::Completed | State::Cancelled | State::Failed | State::Expired
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Scheduled => "scheduled",
            State::Queued => "queued",
            State::Dialing => "dialing",
            State::Connected => "connected",
            State::Completed => "completed",
            State::Paused => "paused",
            State::Cancelled => "cancelled",
            State::Failed => "failed",
            State::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<State> {
        State::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When the customer wants to be called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestedTime {
    /// As soon as an agent is free.
    Asap,
    At(DateTime<Utc>),
}

impl RequestedTime {
    /// The moment the callback falls due.
    pub fn due(self, now: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            RequestedTime::Asap => now,
            RequestedTime::At(at) => at,
        }
    }

    /// `"asap"` or an RFC 3339 time.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "asap" {
            return Ok(RequestedTime::Asap);
        }
        DateTime::parse_from_rfc3339(text)
            .map(|t| RequestedTime::At(t.to_utc()))
            .map_err(|e| format!("`{text}` is neither \"asap\" nor an RFC 3339 time ({e})"))
    }
}

impl Serialize for RequestedTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            RequestedTime::Asap => s.serialize_str("asap"),
            RequestedTime::At(at) => at.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for RequestedTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        RequestedTime::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// The channel through which a callback was requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Ivr,
    Api,
    Chat,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Ivr => "ivr",
            Source::Api => "api",
            Source::Chat => "chat",
        }
    }

    pub fn parse(text: &str) -> Option<Source> {
        [Source::Ivr, Source::Api, Source::Chat]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// A customer's request to be called back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Callback {
    pub id: Uuid,
    pub confirmation_id: ConfirmationId,
    pub queue: String,
    /// The skill (department) an agent needs to take this callback.
    pub skill: String,
    pub media: Media,
    pub address: Address,
    pub customer_name: Option<String>,
    pub requested: RequestedTime,
    pub time_zone: Tz,
    pub state: State,
    /// Higher goes first.
    pub priority: i32,
    pub attempts: u32,
    pub max_attempts: u32,
    /// When the dialer may next try (the requested time, or later after a failed attempt).
    pub next_attempt_at: DateTime<Utc>,
    /// The place in line: when the customer first entered the queue. Modifications, pauses
    /// and retries keep it.
    pub enqueued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub source: Source,
    /// Free JSON for the agent: a chat transcript, the IVR path.
    pub context: serde_json::Value,
    /// Bumped by every change; a writer that read an older version gets a conflict.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Callback {
    /// Moves to `to` through the lifecycle table.
    pub fn set_state(&mut self, to: State) -> Result<(), IllegalTransition> {
        self.state = self.state.transition(to)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_table() {
        use State::*;
        // Every legal (from, to) pair; everything else must be refused.
        let legal = [
            (Scheduled, Queued),
            (Scheduled, Paused),
            (Scheduled, Cancelled),
            (Scheduled, Expired),
            (Queued, Scheduled),
            (Queued, Dialing),
            (Queued, Paused),
            (Queued, Cancelled),
            (Queued, Expired),
            (Dialing, Connected),
            (Dialing, Queued),
            (Dialing, Scheduled),
            (Dialing, Failed),
            (Dialing, Paused),
            (Dialing, Cancelled),
            (Connected, Completed),
            (Connected, Cancelled),
            (Paused, Queued),
            (Paused, Scheduled),
            (Paused, Cancelled),
        ];
        for from in State::ALL {
            for to in State::ALL {
                let expected = legal.contains(&(from, to));
                assert_eq!(from.can_become(to), expected, "{from} -> {to}");
                let result = from.transition(to);
                if expected {
                    assert_eq!(result, Ok(to));
                } else {
                    assert_eq!(result, Err(IllegalTransition { from, to }));
                }
            }
        }
        for from in State::ALL {
            assert_eq!(
                from.is_open(),
                from.can_become(Cancelled),
                "{from}: open means cancellable"
            );
        }
        assert_eq!(
            IllegalTransition {
                from: Paused,
                to: Dialing
            }
            .to_string(),
            "a callback cannot go from paused to dialing"
        );
    }

    #[test]
    fn names_round_trip() {
        for s in State::ALL {
            assert_eq!(State::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }

    #[test]
    fn requested_time_text() {
        assert_eq!(RequestedTime::parse("asap"), Ok(RequestedTime::Asap));
        let at = RequestedTime::parse("2026-11-23T15:00:00-05:00").unwrap();
        assert_eq!(serde_json::to_value(at).unwrap(), "2026-11-23T20:00:00Z");
        assert!(RequestedTime::parse("tomorrow")
            .unwrap_err()
            .contains("neither"));
    }
}
