//! Places in line and estimated waits.
//!
//! The estimator is the fluid one most ACDs announce: with `N` agents logged in with the
//! skill, of whom `R` are ready, and an average handle time `H` (what an agent spends on one
//! callback: calling, talking, wrap-up), agents free up one every `H / N` on average, so the
//! item at position `p` waits for `p - R` of them: `(p - R) · H / N`, and nothing when
//! `p ≤ R`. It needs only what the store knows, grows with the position, and is zero when an
//! agent is ready.
//!
//! `H` is the mean of the last [`SAMPLES`] connected calls with the skill, where the
//! queue's configured `handle_time` stands in for the calls not yet made: one long call
//! moves the estimate by at most a twentieth of its excess, so announcements do not lurch,
//! and a fresh deployment starts from the configured figure rather than from nothing. Between
//! two announcements the estimate only grows when something caused it: items placed ahead
//! (higher priority), agents logging out, or calls taking longer.

use chrono::Duration;
use serde::Serialize;

use crate::agent::{Agent, AgentState};

/// How many recent calls the average handle time is taken over.
pub const SAMPLES: usize = 20;

/// The average handle time from the most recent calls' handle times (at most [`SAMPLES`]
/// are used), with `prior` standing in for those not yet made.
pub fn average_handle_time(recent: &[Duration], prior: Duration) -> Duration {
    let used = &recent[..recent.len().min(SAMPLES)];
    let measured: Duration = used.iter().copied().sum();
    (measured + prior * (SAMPLES - used.len()) as i32) / SAMPLES as i32
}

/// Where an item stands and how long it should wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Estimate {
    /// 1 for the next item to be served.
    pub position: u64,
    /// `None` when no agent with the skill is logged in: there is no estimate to give.
    #[serde(rename = "estimated_wait_seconds", with = "seconds")]
    pub wait: Option<Duration>,
}

mod seconds {
    use chrono::Duration;
    use serde::Serializer;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.num_seconds()),
            None => s.serialize_none(),
        }
    }
}

/// The estimate for the item with `ahead` items before it, with `ready` agents ready and
/// `busy` agents reserved, on a call or in wrap-up, whose calls take `handle` on average.
pub fn estimate(ahead: u64, ready: u32, busy: u32, handle: Duration) -> Estimate {
    let position = ahead + 1;
    let agents = i64::from(ready) + i64::from(busy);
    let wait = (agents > 0).then(|| {
        let waiting_for = (position as i64 - i64::from(ready)).max(0);
        Duration::milliseconds(handle.num_milliseconds() * waiting_for / agents)
    });
    Estimate { position, wait }
}

/// The agents with `skill` who count for the estimate: ready, and busy (reserved, on a call
/// or in wrap-up); those logged out or not ready do not.
pub fn staffing(agents: &[Agent], skill: &str) -> (u32, u32) {
    let mut counts = (0, 0);
    for agent in agents.iter().filter(|a| a.has_skill(skill)) {
        match agent.state {
            AgentState::Ready => counts.0 += 1,
            AgentState::Reserved | AgentState::OnCall | AgentState::WrapUp => counts.1 += 1,
            AgentState::LoggedOut | AgentState::NotReady => {}
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configured_handle_time_gives_way_to_measured_calls() {
        let prior = Duration::minutes(5);
        assert_eq!(average_handle_time(&[], prior), prior);
        let one_long = average_handle_time(&[Duration::minutes(25)], prior);
        assert_eq!(
            one_long,
            Duration::minutes(6),
            "one call moves it by a twentieth"
        );
        let many = vec![Duration::minutes(2); 40];
        assert_eq!(average_handle_time(&many, prior), Duration::minutes(2));
    }

    #[test]
    fn waits_grow_with_the_position_and_vanish_when_agents_are_ready() {
        let h = Duration::minutes(4);
        assert_eq!(estimate(0, 1, 3, h).wait, Some(Duration::zero()));
        assert_eq!(estimate(0, 0, 4, h).wait, Some(Duration::minutes(1)));
        assert_eq!(
            estimate(7, 0, 4, h),
            Estimate {
                position: 8,
                wait: Some(Duration::minutes(8))
            }
        );
        assert_eq!(estimate(7, 2, 2, h).wait, Some(Duration::minutes(6)));
        assert_eq!(estimate(3, 0, 0, h).wait, None, "nobody to wait for");
        let mut last = Duration::zero();
        for ahead in 0..100 {
            let wait = estimate(ahead, 1, 5, h).wait.unwrap();
            assert!(wait >= last, "never shorter further back");
            last = wait;
        }
    }

    #[test]
    fn shown_in_seconds() {
        let e = estimate(2, 0, 2, Duration::minutes(2));
        assert_eq!(
            serde_json::to_value(e).unwrap(),
            serde_json::json!({"position": 3, "estimated_wait_seconds": 180})
        );
    }
}
