//! The dialer's decisions, with no I/O: which callbacks may be dialed now, how a SIP answer
//! reads as an attempt's outcome, and where a callback goes after each step of an attempt.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::address::{Address, Media};
use crate::callback::{Callback, State};
use crate::modification::{Channel, Outcome};
use crate::queue::{Policy, Queue};
use crate::service::changes;
use crate::store::Event;

/// How one attempt to reach a customer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// The customer was connected to the agent.
    Connected,
    Busy,
    NoAnswer,
    Rejected,
    /// No answer at all from the trunk or the far end, or a server failure.
    Unreachable,
    /// The customer answered but did not press 1 to be connected.
    NotConfirmed,
    /// The agent did not answer; the customer was never called.
    AgentNoAnswer,
    /// The callback was paused or cancelled while it was being dialed.
    Aborted,
    /// The dialing policy now blocks the callback's address; no call was placed.
    Blocked,
    /// The node dialing it stopped before it could say how the attempt went.
    Unknown,
}

impl AttemptOutcome {
    pub const ALL: [AttemptOutcome; 10] = [
        AttemptOutcome::Connected,
        AttemptOutcome::Busy,
        AttemptOutcome::NoAnswer,
        AttemptOutcome::Rejected,
        AttemptOutcome::Unreachable,
        AttemptOutcome::NotConfirmed,
        AttemptOutcome::AgentNoAnswer,
        AttemptOutcome::Aborted,
        AttemptOutcome::Blocked,
        AttemptOutcome::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Connected => "connected",
            AttemptOutcome::Busy => "busy",
            AttemptOutcome::NoAnswer => "no_answer",
            AttemptOutcome::Rejected => "rejected",
            AttemptOutcome::Unreachable => "unreachable",
            AttemptOutcome::NotConfirmed => "not_confirmed",
            AttemptOutcome::AgentNoAnswer => "agent_no_answer",
            AttemptOutcome::Aborted => "aborted",
            AttemptOutcome::Blocked => "blocked",
            AttemptOutcome::Unknown => "unknown",
        }
    }

    pub fn parse(text: &str) -> Option<AttemptOutcome> {
        AttemptOutcome::ALL.into_iter().find(|o| o.as_str() == text)
    }

    /// The outcome of a customer leg that was not answered: its final SIP status, or `None`
    /// when nothing answered at all; `rang_out` when callbackd gave up after the ring time.
    pub fn of_customer_leg(status: Option<u16>, rang_out: bool) -> AttemptOutcome {
        match status {
            _ if rang_out => AttemptOutcome::NoAnswer,
            Some(486 | 600) => AttemptOutcome::Busy,
            Some(480 | 487) => AttemptOutcome::NoAnswer,
            Some(408) | None => AttemptOutcome::Unreachable,
            Some(s) if s >= 500 && s != 603 => AttemptOutcome::Unreachable,
            Some(_) => AttemptOutcome::Rejected,
        }
    }
}

/// One try at a callback: committed before any INVITE goes out, so it is never placed twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    pub id: Uuid,
    pub callback_id: Uuid,
    /// 1 for the first attempt.
    pub number: u32,
    /// The lease's generation when the attempt was made: the fencing token.
    pub generation: i64,
    /// The node that made it.
    pub node: String,
    pub agent_id: Option<String>,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub outcome: Option<AttemptOutcome>,
    /// The final SIP status of the leg that decided the outcome.
    pub sip_status: Option<u16>,
}

/// Whether the dialer may call a queued callback now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Dial,
    /// Not now: outside the calling window, which opens again then (`None`: closed all week).
    Later(Option<DateTime<Utc>>),
    /// Not by calling: a text message.
    Wait,
    /// Never: the dialing policy blocks its address now, or its queue is gone.
    Block(String),
}

/// What the dialer does with a queued callback at `now`.
pub fn verdict(cb: &Callback, policy: &Policy, now: DateTime<Utc>) -> Verdict {
    let Some(queue) = policy.queues.get(&cb.queue) else {
        return Verdict::Block(format!("the queue `{}` is no longer configured", cb.queue));
    };
    if cb.media == Media::Sms {
        return Verdict::Wait;
    }
    if !queue.calling_window.contains(now, cb.time_zone) {
        return Verdict::Later(queue.calling_window.next_open(now, cb.time_zone));
    }
    match Address::parse(cb.media, cb.address.as_str(), &policy.dialing) {
        Ok(_) => Verdict::Dial,
        Err(e) => Verdict::Block(e.to_string()),
    }
}

/// A queued callback met outside its calling window: it keeps its place in line and falls
/// due again when the window opens (`until`), so the dialer does not look at it till then.
pub fn deferred(
    cb: &Callback,
    until: DateTime<Utc>,
    node: &str,
    now: DateTime<Utc>,
) -> (Callback, Event) {
    let mut new = cb.clone();
    new.next_attempt_at = until;
    step(
        cb,
        new,
        node,
        "deferred",
        serde_json::json!({"reason": "outside_calling_window"}),
        now,
    )
}

fn step(
    old: &Callback,
    mut new: Callback,
    node: &str,
    action: &str,
    extra: serde_json::Value,
    now: DateTime<Utc>,
) -> (Callback, Event) {
    new.version = old.version + 1;
    new.updated_at = now;
    let mut diff = changes(Some(old), &new);
    if let (Some(diff), Some(extra)) = (diff.as_object_mut(), extra.as_object()) {
        diff.extend(extra.clone());
    }
    let event = Event {
        callback_id: Some(old.id),
        confirmation_id: Some(old.confirmation_id.to_string()),
        at: now,
        channel: Channel::Dialer,
        actor: node.to_owned(),
        action: action.to_owned(),
        outcome: Outcome::Success,
        receipt: None,
        from_state: Some(old.state),
        to_state: Some(new.state),
        changes: diff,
    };
    (new, event)
}

/// A queued callback claimed for an attempt: dialing, with one more attempt counted.
pub fn claimed(
    cb: &Callback,
    node: &str,
    agent_id: &str,
    now: DateTime<Utc>,
) -> Option<(Callback, Event)> {
    let mut new = cb.clone();
    new.set_state(State::Dialing).ok()?;
    new.attempts += 1;
    let extra = serde_json::json!({"attempt": new.attempts, "agent": agent_id});
    Some(step(cb, new, node, "dial", extra, now))
}

/// The customer answered (and confirmed): connected to the agent.
pub fn connected(cb: &Callback, node: &str, now: DateTime<Utc>) -> Option<(Callback, Event)> {
    let mut new = cb.clone();
    new.set_state(State::Connected).ok()?;
    Some(step(cb, new, node, "connected", serde_json::json!({}), now))
}

/// Where a callback goes once an attempt has ended with `outcome`.
///
/// A connected call completes it. An attempt on which the agent never answered does not
/// count against the customer: the callback is back in line at once, in its old place. Any
/// other failure is retried after the queue's backoff (or at the customer's new time if they
/// rescheduled meanwhile), up to the queue's maximum, then the callback fails (at once when its
/// queue is no longer configured); a callback paused or cancelled meanwhile stays as it is.
pub fn finished(
    cb: &Callback,
    queue: Option<&Queue>,
    outcome: AttemptOutcome,
    sip_status: Option<u16>,
    node: &str,
    now: DateTime<Utc>,
) -> (Callback, Event) {
    let mut new = cb.clone();
    match (cb.state, outcome) {
        (State::Connected, _) => new.state = State::Completed,
        (State::Dialing, AttemptOutcome::Blocked) => new.state = State::Failed,
        (State::Dialing, AttemptOutcome::AgentNoAnswer) => {
            new.attempts = new.attempts.saturating_sub(1);
            new.state = if cb.next_attempt_at > now {
                State::Scheduled
            } else {
                State::Queued
            };
        }
        (State::Dialing, _) if cb.attempts >= cb.max_attempts || queue.is_none() => {
            new.state = State::Failed
        }
        (State::Dialing, _) => {
            new.state = if cb.next_attempt_at > now {
                State::Scheduled
            } else {
                State::Queued
            };
            let backoff = queue.map_or_else(Duration::zero, |q| q.backoff(cb.attempts));
            new.next_attempt_at = cb.next_attempt_at.max(now + backoff);
        }
        // Paused or cancelled while dialing: the customer's choice stands.
        _ => {}
    }
    let extra = serde_json::json!({
        "attempt": cb.attempts.max(1),
        "outcome": outcome.as_str(),
        "sip_status": sip_status,
    });
    step(cb, new, node, "attempt", extra, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ConfirmationId;
    use crate::{CallingWindow, DialingPolicy, RequestedTime, Source};
    use chrono::{Duration, TimeZone};
    use rand::SeedableRng;
    use std::collections::BTreeMap;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 15, 0, 0).unwrap()
    }

    fn queue(window: CallingWindow) -> Queue {
        let mut q: Queue = serde_json::from_value(serde_json::json!({
            "skills": ["billing"], "time_zone": "America/New_York",
            "calling_window": {"all": "00:00-24:00"}, "retry_backoff": ["5m", "15m"],
        }))
        .unwrap();
        q.calling_window = window;
        q
    }

    fn policy(window: CallingWindow) -> Policy {
        Policy {
            queues: BTreeMap::from([("support".to_owned(), queue(window))]),
            dialing: DialingPolicy::home("US").unwrap(),
        }
    }

    fn callback(state: State, attempts: u32) -> Callback {
        let dialing = DialingPolicy::home("US").unwrap();
        Callback {
            id: Uuid::from_u128(7),
            confirmation_id: ConfirmationId::generate(&mut rand::rngs::StdRng::seed_from_u64(1)),
            queue: "support".into(),
            skill: "billing".into(),
            media: Media::Voice,
            address: Address::parse(Media::Voice, "+12125550100", &dialing).unwrap(),
            customer_name: None,
            requested: RequestedTime::Asap,
            time_zone: chrono_tz::America::New_York,
            state,
            priority: 0,
            attempts,
            max_attempts: 3,
            next_attempt_at: now() - Duration::minutes(10),
            enqueued_at: now() - Duration::hours(1),
            expires_at: now() + Duration::days(2),
            source: Source::Api,
            context: serde_json::json!({}),
            version: 4,
            created_at: now() - Duration::hours(1),
            updated_at: now() - Duration::hours(1),
        }
    }

    #[test]
    fn sip_answers_read_as_outcomes() {
        use AttemptOutcome::*;
        let of = AttemptOutcome::of_customer_leg;
        assert_eq!(of(Some(486), false), Busy);
        assert_eq!(of(Some(600), false), Busy);
        assert_eq!(of(Some(480), false), NoAnswer);
        assert_eq!(
            of(Some(487), true),
            NoAnswer,
            "we cancelled after the ring time"
        );
        assert_eq!(of(Some(603), false), Rejected);
        assert_eq!(of(Some(404), false), Rejected);
        assert_eq!(of(Some(503), false), Unreachable);
        assert_eq!(of(None, false), Unreachable);
        for o in AttemptOutcome::ALL {
            assert_eq!(AttemptOutcome::parse(o.as_str()), Some(o));
        }
    }

    #[test]
    fn only_callable_callbacks_are_dialed() {
        let cb = callback(State::Queued, 0);
        assert_eq!(
            verdict(&cb, &policy(CallingWindow::always()), now()),
            Verdict::Dial
        );
        // 10:00 in New York; a window of 11:00 to 17:00 is not open yet.
        let window: CallingWindow =
            serde_json::from_value(serde_json::json!({"all": "11:00-17:00"})).unwrap();
        let eleven = Utc.with_ymd_and_hms(2026, 11, 23, 16, 0, 0).unwrap();
        assert_eq!(
            verdict(&cb, &policy(window.clone()), now()),
            Verdict::Later(Some(eleven))
        );
        // The window is the customer's hours, not the queue's: 15:00 in London is open.
        let mut london = cb.clone();
        london.time_zone = chrono_tz::Europe::London;
        assert_eq!(verdict(&london, &policy(window), now()), Verdict::Dial);
        let (later, event) = deferred(&cb, eleven, "n", now());
        assert_eq!(
            (later.next_attempt_at, later.enqueued_at, later.state),
            (eleven, cb.enqueued_at, State::Queued)
        );
        assert_eq!(event.action, "deferred");
        let mut blocked = policy(CallingWindow::always());
        blocked.dialing.blocked_prefixes = vec!["+1212".into()];
        assert!(matches!(verdict(&cb, &blocked, now()), Verdict::Block(_)));
        let mut text = cb.clone();
        text.media = Media::Sms;
        assert_eq!(
            verdict(&text, &policy(CallingWindow::always()), now()),
            Verdict::Wait
        );
    }

    #[test]
    fn an_attempt_counts_and_keeps_the_place_in_line() {
        let q = queue(CallingWindow::always());
        let cb = callback(State::Queued, 0);
        let (dialing, event) = claimed(&cb, "node-a", "ada", now()).unwrap();
        assert_eq!(
            (dialing.state, dialing.attempts, dialing.version),
            (State::Dialing, 1, 5)
        );
        assert_eq!(event.changes["agent"], "ada");
        assert!(claimed(&callback(State::Paused, 0), "node-a", "ada", now()).is_none());

        let (busy, event) = finished(
            &dialing,
            Some(&q),
            AttemptOutcome::Busy,
            Some(486),
            "n",
            now(),
        );
        assert_eq!(busy.state, State::Queued);
        assert_eq!(busy.next_attempt_at, now() + Duration::minutes(5));
        assert_eq!(busy.enqueued_at, cb.enqueued_at);
        assert_eq!(
            (
                event.changes["outcome"].as_str(),
                event.changes["sip_status"].as_u64()
            ),
            (Some("busy"), Some(486))
        );

        let (missed, _) = finished(
            &dialing,
            Some(&q),
            AttemptOutcome::AgentNoAnswer,
            None,
            "n",
            now(),
        );
        assert_eq!((missed.state, missed.attempts), (State::Queued, 0));
        assert_eq!(
            missed.next_attempt_at, cb.next_attempt_at,
            "back in line at once"
        );

        let last = callback(State::Dialing, 3);
        let (failed, _) = finished(&last, Some(&q), AttemptOutcome::NoAnswer, None, "n", now());
        assert_eq!(failed.state, State::Failed);
    }

    #[test]
    fn changes_made_while_dialing_apply_to_the_next_attempt() {
        let q = queue(CallingWindow::always());
        let mut later = callback(State::Dialing, 1);
        later.next_attempt_at = now() + Duration::days(1);
        let (after, _) = finished(
            &later,
            Some(&q),
            AttemptOutcome::NoAnswer,
            Some(487),
            "n",
            now(),
        );
        assert_eq!(
            (after.state, after.next_attempt_at),
            (State::Scheduled, later.next_attempt_at)
        );
        let paused = callback(State::Paused, 1);
        let (after, event) = finished(&paused, Some(&q), AttemptOutcome::Aborted, None, "n", now());
        assert_eq!(after.state, State::Paused);
        assert_eq!(event.changes["outcome"], "aborted");
        let talking = callback(State::Connected, 1);
        let (done, _) = finished(
            &talking,
            Some(&q),
            AttemptOutcome::Connected,
            None,
            "n",
            now(),
        );
        assert_eq!(done.state, State::Completed);
    }
}
