//! What a customer or operator may change, and the receipt every attempt gets.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, Serializer};

use crate::address::{Address, AddressError, DialingPolicy, Media};
use crate::callback::{Callback, IllegalTransition, RequestedTime, State};
use crate::ids::ReceiptCode;
use crate::queue::Queue;

/// One change to a pending callback, as requested through any channel.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Modification {
    /// A new time: `"asap"` or an RFC 3339 time inside the calling window and booking horizon.
    Reschedule {
        at: RequestedTime,
    },
    /// A new number (voice, sms) or SIP URI (sip).
    ChangeAddress {
        address: String,
    },
    /// Another way of reaching the customer; a new address is needed when the old one does not
    /// fit (a number for voice and sms, a SIP URI for sip).
    ChangeMedia {
        media: Media,
        #[serde(default)]
        address: Option<String>,
    },
    /// Another department: one of the skills the queue offers.
    ChangeSkill {
        skill: String,
    },
    /// Into the non-routing wait queue: kept, never dialed, until resumed.
    Pause {},
    /// Back to the active queue, keeping the original place in line.
    Resume {},
    Cancel {},
}

impl Modification {
    pub fn action(&self) -> &'static str {
        match self {
            Modification::Reschedule { .. } => "reschedule",
            Modification::ChangeAddress { .. } => "change_address",
            Modification::ChangeMedia { .. } => "change_media",
            Modification::ChangeSkill { .. } => "change_skill",
            Modification::Pause {} => "pause",
            Modification::Resume {} => "resume",
            Modification::Cancel {} => "cancel",
        }
    }

    /// The callback as this modification leaves it, or why it cannot be made.
    pub fn apply(
        &self,
        old: &Callback,
        queue: &Queue,
        dialing: &DialingPolicy,
        now: DateTime<Utc>,
    ) -> Result<Callback, Rejection> {
        use State::*;
        let allowed: &[State] = match self {
            Modification::Resume {} => &[Paused],
            Modification::Pause {} => &[Scheduled, Queued, Dialing],
            Modification::Cancel {} => &[Scheduled, Queued, Dialing, Connected, Paused],
            _ => &[Scheduled, Queued, Dialing, Paused],
        };
        if !allowed.contains(&old.state) {
            return Err(Rejection::IllegalInState {
                action: self.action(),
                state: old.state,
            });
        }
        let mut cb = old.clone();
        match self {
            Modification::Reschedule { at } => {
                queue.check_time(*at, cb.time_zone, now)?;
                cb.requested = *at;
                cb.next_attempt_at = at.due(now);
                cb.expires_at = cb.next_attempt_at + queue.expiry;
                let to = due_state(cb.next_attempt_at, now);
                if matches!(cb.state, Scheduled | Queued) && cb.state != to {
                    cb.set_state(to)?;
                }
            }
            Modification::ChangeAddress { address } => {
                cb.address = Address::parse(cb.media, address, dialing)?;
            }
            Modification::ChangeMedia { media, address } => {
                cb.address = match address {
                    Some(text) => Address::parse(*media, text, dialing)?,
                    None if cb.address.fits(*media) => cb.address.clone(),
                    None => return Err(Rejection::Address(wrong_kind(*media))),
                };
                cb.media = *media;
            }
            Modification::ChangeSkill { skill } => {
                if !queue.offers_skill(skill) {
                    return Err(Rejection::UnknownSkill {
                        skill: skill.clone(),
                        offered: queue.skills.clone(),
                    });
                }
                cb.skill = skill.clone();
            }
            Modification::Pause {} => cb.set_state(Paused)?,
            Modification::Resume {} => {
                cb.set_state(due_state(cb.next_attempt_at, now))?;
                // Time spent paused does not count towards expiry.
                cb.expires_at = cb.next_attempt_at.max(now) + queue.expiry;
            }
            Modification::Cancel {} => cb.set_state(Cancelled)?,
        }
        // A number from another country brings that country's time zone, where it has one.
        if cb.address.region() != old.address.region() {
            cb.time_zone = cb.address.time_zone(queue.time_zone);
        }
        cb.version += 1;
        cb.updated_at = now;
        Ok(cb)
    }
}

/// Queued when due, scheduled while its time is still ahead.
pub(crate) fn due_state(due: DateTime<Utc>, now: DateTime<Utc>) -> State {
    if due <= now {
        State::Queued
    } else {
        State::Scheduled
    }
}

pub(crate) fn wrong_kind(media: Media) -> AddressError {
    AddressError::WrongKind {
        media: media.as_str(),
        wanted: if media.uses_phone_number() {
            "a phone number"
        } else {
            "a SIP URI"
        },
    }
}

/// Why a request about a callback was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("no callback has this confirmation ID")]
    NotFound,
    #[error("the caller could not be verified")]
    VerificationFailed,
    #[error("a {state} callback cannot be given a {action}")]
    IllegalInState { action: &'static str, state: State },
    #[error(transparent)]
    IllegalTransition(#[from] IllegalTransition),
    #[error("that time is outside the queue's calling hours in the customer's time zone")]
    OutsideCallingWindow,
    #[error("that time has already passed")]
    InThePast,
    #[error("callbacks can be booked at most {days} days ahead")]
    BeyondHorizon { days: i64 },
    #[error(transparent)]
    Address(#[from] AddressError),
    #[error("the queue has no skill `{skill}`; it offers {}", offered.join(", "))]
    UnknownSkill { skill: String, offered: Vec<String> },
    #[error("there is no queue `{0}`")]
    UnknownQueue(String),
    #[error("{field} {problem}")]
    BadText {
        field: &'static str,
        problem: &'static str,
    },
    #[error("the callback was changed by someone else (version {found}, expected {expected}); look it up again")]
    Conflict { expected: i64, found: i64 },
}

impl Rejection {
    pub fn reason(&self) -> FailureReason {
        match self {
            Rejection::NotFound => FailureReason::NotFound,
            Rejection::VerificationFailed => FailureReason::VerificationFailed,
            Rejection::IllegalInState { .. } | Rejection::IllegalTransition(_) => {
                FailureReason::IllegalInState
            }
            Rejection::OutsideCallingWindow => FailureReason::OutsideCallingWindow,
            Rejection::Address(
                AddressError::RegionNotAllowed(_)
                | AddressError::TypeNotAllowed(_)
                | AddressError::PrefixBlocked(_)
                | AddressError::PrefixNotAllowed
                | AddressError::SipDomainNotAllowed(_),
            ) => FailureReason::BlockedByPolicy,
            Rejection::InThePast
            | Rejection::BeyondHorizon { .. }
            | Rejection::Address(_)
            | Rejection::UnknownSkill { .. }
            | Rejection::UnknownQueue(_)
            | Rejection::BadText { .. } => FailureReason::InvalidInput,
            Rejection::Conflict { .. } => FailureReason::Conflict,
        }
    }
}

/// The failure reasons a receipt can carry, read back to callers and kept in the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    NotFound,
    VerificationFailed,
    IllegalInState,
    OutsideCallingWindow,
    BlockedByPolicy,
    InvalidInput,
    Conflict,
}

impl FailureReason {
    pub const ALL: [FailureReason; 7] = [
        FailureReason::NotFound,
        FailureReason::VerificationFailed,
        FailureReason::IllegalInState,
        FailureReason::OutsideCallingWindow,
        FailureReason::BlockedByPolicy,
        FailureReason::InvalidInput,
        FailureReason::Conflict,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::NotFound => "not_found",
            FailureReason::VerificationFailed => "verification_failed",
            FailureReason::IllegalInState => "illegal_in_state",
            FailureReason::OutsideCallingWindow => "outside_calling_window",
            FailureReason::BlockedByPolicy => "blocked_by_policy",
            FailureReason::InvalidInput => "invalid_input",
            FailureReason::Conflict => "conflict",
        }
    }
}

/// Whether an attempt succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure(FailureReason),
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure(reason) => reason.as_str(),
        }
    }

    pub fn parse(text: &str) -> Option<Outcome> {
        if text == "success" {
            return Some(Outcome::Success);
        }
        FailureReason::ALL
            .into_iter()
            .find(|r| r.as_str() == text)
            .map(Outcome::Failure)
    }
}

impl Serialize for Outcome {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What a caller hears and an operator can look up after every modification attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Receipt {
    pub code: ReceiptCode,
    pub action: &'static str,
    pub outcome: Outcome,
}

/// Through which door a change came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Ivr,
    Api,
    Chat,
    Dialer,
    /// callbackd itself: a scheduled callback falling due, an expiry.
    System,
    /// An operator at the command line.
    Cli,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Ivr => "ivr",
            Channel::Api => "api",
            Channel::Chat => "chat",
            Channel::Dialer => "dialer",
            Channel::System => "system",
            Channel::Cli => "cli",
        }
    }

    pub fn parse(text: &str) -> Option<Channel> {
        use Channel::*;
        [Ivr, Api, Chat, Dialer, System, Cli]
            .into_iter()
            .find(|c| c.as_str() == text)
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who made a change: the channel and, within it, the caller ID, token name or user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub channel: Channel,
    pub name: String,
}

impl Actor {
    pub fn new(channel: Channel, name: impl Into<String>) -> Self {
        Self {
            channel,
            name: name.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ConfirmationId;
    use crate::Source;
    use chrono::{Duration, TimeZone};
    use rand::{rngs::StdRng, SeedableRng};

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 15, 0, 0).unwrap()
    }

    fn queue() -> Queue {
        serde_json::from_value(serde_json::json!({
            "skills": ["billing", "technical"], "time_zone": "America/New_York",
            "calling_window": {"weekdays": "09:00-17:00"}
        }))
        .unwrap()
    }

    fn dialing() -> DialingPolicy {
        let mut policy = DialingPolicy::home("US").unwrap();
        policy.allowed_regions = vec!["US".parse().unwrap(), "GB".parse().unwrap()];
        policy.sip_domains = vec!["pbx.example.net".into()];
        policy
    }

    fn callback(state: State) -> Callback {
        Callback {
            id: uuid::Uuid::nil(),
            confirmation_id: ConfirmationId::generate(&mut StdRng::seed_from_u64(1)),
            queue: "support".into(),
            skill: "billing".into(),
            media: Media::Voice,
            address: Address::parse(Media::Voice, "+12125550100", &dialing()).unwrap(),
            customer_name: None,
            requested: RequestedTime::Asap,
            time_zone: chrono_tz::America::New_York,
            state,
            priority: 0,
            attempts: 0,
            max_attempts: 3,
            next_attempt_at: now(),
            enqueued_at: now() - Duration::minutes(30),
            expires_at: now() + Duration::days(2),
            source: Source::Api,
            context: serde_json::json!({}),
            version: 4,
            created_at: now(),
            updated_at: now(),
        }
    }

    fn apply(m: Modification, state: State) -> Result<Callback, Rejection> {
        m.apply(&callback(state), &queue(), &dialing(), now())
    }

    #[test]
    fn pause_and_resume_keep_the_place_in_line() {
        let paused = apply(Modification::Pause {}, State::Queued).unwrap();
        assert_eq!(paused.state, State::Paused);
        assert_eq!(paused.version, 5);
        let resumed = Modification::Resume {}
            .apply(&paused, &queue(), &dialing(), now())
            .unwrap();
        assert_eq!(resumed.state, State::Queued);
        assert_eq!(resumed.enqueued_at, callback(State::Queued).enqueued_at);
    }

    #[test]
    fn time_spent_paused_does_not_count_towards_expiry() {
        let mut paused = callback(State::Paused);
        paused.expires_at = now() - Duration::days(1);
        let resumed = Modification::Resume {}
            .apply(&paused, &queue(), &dialing(), now())
            .unwrap();
        assert_eq!(resumed.state, State::Queued);
        assert_eq!(resumed.expires_at, now() + queue().expiry);
    }

    #[test]
    fn a_number_from_another_country_brings_its_time_zone() {
        let uk = apply(
            Modification::ChangeAddress {
                address: "+44 20 7946 0958".into(),
            },
            State::Queued,
        )
        .unwrap();
        assert_eq!(uk.time_zone, chrono_tz::Europe::London);
        let back = Modification::ChangeAddress {
            address: "+1 646 555 0199".into(),
        }
        .apply(&uk, &queue(), &dialing(), now())
        .unwrap();
        assert_eq!(
            back.time_zone,
            chrono_tz::America::New_York,
            "the US has many zones: the queue's"
        );
        let same_country = apply(
            Modification::ChangeAddress {
                address: "+1 646 555 0199".into(),
            },
            State::Queued,
        )
        .unwrap();
        assert_eq!(
            same_country.time_zone,
            callback(State::Queued).time_zone,
            "kept"
        );
    }

    #[test]
    fn resume_of_a_later_booking_waits_for_its_time() {
        let mut paused = callback(State::Paused);
        paused.next_attempt_at = now() + Duration::hours(1);
        let resumed = Modification::Resume {}
            .apply(&paused, &queue(), &dialing(), now())
            .unwrap();
        assert_eq!(resumed.state, State::Scheduled);
    }

    #[test]
    fn illegal_in_state_names_the_state() {
        let err = apply(Modification::Resume {}, State::Queued).unwrap_err();
        assert_eq!(
            err,
            Rejection::IllegalInState {
                action: "resume",
                state: State::Queued
            }
        );
        assert_eq!(err.reason(), FailureReason::IllegalInState);
        assert_eq!(
            err.to_string(),
            "a queued callback cannot be given a resume"
        );
        assert_eq!(
            apply(Modification::Cancel {}, State::Connected)
                .unwrap()
                .state,
            State::Cancelled
        );
        assert!(apply(Modification::Pause {}, State::Connected).is_err());
        for state in [State::Cancelled, State::Completed, State::Expired] {
            assert!(apply(Modification::Cancel {}, state).is_err(), "{state}");
            assert!(apply(
                Modification::ChangeSkill {
                    skill: "technical".into()
                },
                state
            )
            .is_err());
        }
        assert!(apply(Modification::Pause {}, State::Paused).is_err());
    }

    #[test]
    fn reschedule_checks_window_horizon_and_past() {
        let ny = chrono_tz::America::New_York;
        // Tuesday 10:00 in New York: inside the window.
        let ok = ny
            .with_ymd_and_hms(2026, 11, 24, 10, 0, 0)
            .unwrap()
            .to_utc();
        let later = apply(
            Modification::Reschedule {
                at: RequestedTime::At(ok),
            },
            State::Queued,
        )
        .unwrap();
        assert_eq!((later.state, later.next_attempt_at), (State::Scheduled, ok));
        assert_eq!(later.expires_at, ok + queue().expiry);
        assert_eq!(
            later.enqueued_at,
            callback(State::Queued).enqueued_at,
            "keeps its place"
        );
        let night = ny
            .with_ymd_and_hms(2026, 11, 24, 22, 0, 0)
            .unwrap()
            .to_utc();
        assert_eq!(
            apply(
                Modification::Reschedule {
                    at: RequestedTime::At(night)
                },
                State::Queued
            ),
            Err(Rejection::OutsideCallingWindow)
        );
        assert_eq!(
            apply(
                Modification::Reschedule {
                    at: RequestedTime::At(now() - Duration::hours(1))
                },
                State::Queued
            ),
            Err(Rejection::InThePast)
        );
        let far = ny.with_ymd_and_hms(2027, 1, 5, 10, 0, 0).unwrap().to_utc();
        assert_eq!(
            apply(
                Modification::Reschedule {
                    at: RequestedTime::At(far)
                },
                State::Queued
            ),
            Err(Rejection::BeyondHorizon { days: 14 })
        );
        let asap = Modification::Reschedule {
            at: RequestedTime::Asap,
        };
        let mut scheduled = callback(State::Scheduled);
        scheduled.next_attempt_at = ok;
        let now_due = asap.apply(&scheduled, &queue(), &dialing(), now()).unwrap();
        assert_eq!(
            (now_due.state, now_due.next_attempt_at),
            (State::Queued, now())
        );
        let paused = apply(asap, State::Paused).unwrap();
        assert_eq!(
            paused.state,
            State::Paused,
            "a paused callback stays paused"
        );
    }

    #[test]
    fn change_address_goes_through_the_dialing_policy() {
        let changed = apply(
            Modification::ChangeAddress {
                address: "(646) 555-0199".into(),
            },
            State::Queued,
        )
        .unwrap();
        assert_eq!(changed.address.as_str(), "+16465550199");
        let blocked = apply(
            Modification::ChangeAddress {
                address: "+19005550100".into(),
            },
            State::Queued,
        )
        .unwrap_err();
        assert_eq!(blocked.reason(), FailureReason::BlockedByPolicy);
        let garbage = apply(
            Modification::ChangeAddress {
                address: "123;drop".into(),
            },
            State::Queued,
        )
        .unwrap_err();
        assert_eq!(garbage.reason(), FailureReason::InvalidInput);
    }

    #[test]
    fn change_media_keeps_address_consistent() {
        let sms = apply(
            Modification::ChangeMedia {
                media: Media::Sms,
                address: None,
            },
            State::Queued,
        )
        .unwrap();
        assert_eq!(
            (sms.media, sms.address.as_str()),
            (Media::Sms, "+12125550100")
        );
        let err = apply(
            Modification::ChangeMedia {
                media: Media::Sip,
                address: None,
            },
            State::Queued,
        )
        .unwrap_err();
        assert_eq!(err.reason(), FailureReason::InvalidInput);
        assert_eq!(err.to_string(), "a sip callback needs a SIP URI");
        let sip = apply(
            Modification::ChangeMedia {
                media: Media::Sip,
                address: Some("sip:ada@pbx.example.net".into()),
            },
            State::Queued,
        )
        .unwrap();
        assert_eq!(sip.address.as_str(), "sip:ada@pbx.example.net");
    }

    #[test]
    fn change_skill_only_to_skills_the_queue_offers() {
        assert_eq!(
            apply(
                Modification::ChangeSkill {
                    skill: "technical".into()
                },
                State::Queued
            )
            .unwrap()
            .skill,
            "technical"
        );
        let err = apply(
            Modification::ChangeSkill {
                skill: "sales".into(),
            },
            State::Queued,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the queue has no skill `sales`; it offers billing, technical"
        );
    }

    #[test]
    fn cancel_and_pause_while_dialing() {
        assert_eq!(
            apply(Modification::Cancel {}, State::Dialing)
                .unwrap()
                .state,
            State::Cancelled
        );
        assert_eq!(
            apply(Modification::Pause {}, State::Dialing).unwrap().state,
            State::Paused
        );
    }

    #[test]
    fn json_form() {
        let m: Modification =
            serde_json::from_str(r#"{"action":"reschedule","at":"asap"}"#).unwrap();
        assert_eq!(
            m,
            Modification::Reschedule {
                at: RequestedTime::Asap
            }
        );
        let m: Modification = serde_json::from_str(r#"{"action":"pause"}"#).unwrap();
        assert_eq!(m, Modification::Pause {});
        for bad in [
            r#"{"action":"explode"}"#,
            r#"{"action":"change_skill"}"#,
            r#"{"action":"change_skill","skill":7}"#,
            r#"{"action":"change_skill","skill":"x","extra":1}"#,
            r#"{"action":"pause","extra":1}"#,
        ] {
            assert!(serde_json::from_str::<Modification>(bad).is_err(), "{bad}");
        }
    }
}
