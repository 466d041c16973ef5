//! Agents: who takes callbacks, with which skills, reached where, and whether they are free.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::address::SipUri;
use crate::queue::Policy;

/// Where an agent is in their working day.
///
/// ```text
///  logged_out ──> ready ──(dialer)──> reserved ──(agent answers)──> on_call ──> wrap_up ──> ready
///                   ^  └──> not_ready <──(agent does not answer: "missed")──┘
///                   └───────────┘
/// ```
///
/// Operators (and the registrar) move agents between logged out, ready and not ready; only the
/// dialer reserves an agent, puts them on a call and into wrap-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    LoggedOut,
    Ready,
    Reserved,
    OnCall,
    WrapUp,
    NotReady,
}

impl AgentState {
    pub const ALL: [AgentState; 6] = [
        AgentState::LoggedOut,
        AgentState::Ready,
        AgentState::Reserved,
        AgentState::OnCall,
        AgentState::WrapUp,
        AgentState::NotReady,
    ];

    /// The one table of legal agent transitions.
    pub fn can_become(self, to: AgentState) -> bool {
        use AgentState::*;
        matches!(
            (self, to),
            (LoggedOut, Ready | NotReady)
                | (Ready, Reserved | NotReady | LoggedOut)
                | (Reserved, OnCall | Ready | NotReady)
                | (OnCall, WrapUp)
                | (WrapUp, Ready | NotReady | LoggedOut)
                | (NotReady, Ready | NotReady | LoggedOut)
        )
    }

    /// The states an operator may ask for; the others belong to the dialer.
    pub fn chosen_by_operators(self) -> bool {
        matches!(
            self,
            AgentState::LoggedOut | AgentState::Ready | AgentState::NotReady
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::LoggedOut => "logged_out",
            AgentState::Ready => "ready",
            AgentState::Reserved => "reserved",
            AgentState::OnCall => "on_call",
            AgentState::WrapUp => "wrap_up",
            AgentState::NotReady => "not_ready",
        }
    }

    pub fn parse(text: &str) -> Option<AgentState> {
        AgentState::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl fmt::Display for AgentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A skill (department) an agent has, with an optional level (1 to 10; higher is stronger).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Skill {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<u8>,
}

/// Someone who takes callbacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Agent {
    /// Letters, digits, `.`, `_` and `-`; at most 64.
    pub id: String,
    pub name: String,
    pub skills: Vec<Skill>,
    /// The SIP URI the dialer calls: a phone registered with callbackd's registrar
    /// (`sip:1001@callbackd`, reached where it registered) or any URI routed through the
    /// trunk or PBX.
    pub address: String,
    pub state: AgentState,
    /// Why the agent is not ready (`missed`: did not answer a callback offered to them).
    pub reason: Option<String>,
    /// When the agent entered the state.
    pub since: DateTime<Utc>,
    /// The attempt the agent is reserved for or on, while reserved or on a call: only that
    /// attempt's end frees them.
    #[serde(rename = "attempt_id")]
    pub attempt: Option<Uuid>,
    pub version: i64,
}

impl Agent {
    pub fn has_skill(&self, skill: &str) -> bool {
        self.skills.iter().any(|s| s.name == skill)
    }

    /// The agent moved to `to`, or why not.
    pub fn moved(
        &self,
        to: AgentState,
        reason: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<Agent, AgentError> {
        if !self.state.can_become(to) {
            return Err(AgentError::IllegalTransition {
                id: self.id.clone(),
                from: self.state,
                to,
            });
        }
        Ok(Agent {
            state: to,
            reason: if to == AgentState::NotReady {
                reason
            } else {
                None
            },
            since: now,
            attempt: if matches!(to, AgentState::Reserved | AgentState::OnCall) {
                self.attempt
            } else {
                None
            },
            version: self.version + 1,
            ..self.clone()
        })
    }

    /// The ready agent reserved for `attempt`.
    pub fn reserved_for(&self, attempt: Uuid, now: DateTime<Utc>) -> Result<Agent, AgentError> {
        let mut agent = self.moved(AgentState::Reserved, None, now)?;
        agent.attempt = Some(attempt);
        Ok(agent)
    }
}

/// One line of an agent's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentEvent {
    pub at: DateTime<Utc>,
    /// `api`, `registrar`, or the node whose dialer moved the agent.
    pub actor: String,
    /// `None` when the agent was created.
    pub from: Option<AgentState>,
    pub to: AgentState,
    pub reason: Option<String>,
}

/// A new agent, as it arrives through the API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAgent {
    pub id: String,
    pub name: String,
    pub skills: Vec<SkillSpec>,
    pub address: String,
}

/// A skill as written: `"billing"` or `{"name": "billing", "level": 7}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SkillSpec {
    Name(String),
    Leveled(Skill),
}

impl NewAgent {
    /// The agent, logged out, or what is wrong with the request. Every skill must be one some
    /// queue offers.
    pub fn build(self, policy: &Policy, now: DateTime<Utc>) -> Result<Agent, AgentError> {
        let bad = |field: &'static str, problem: String| AgentError::Invalid { field, problem };
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 64
            && self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !id_ok {
            return Err(bad(
                "id",
                "must be 1 to 64 letters, digits, `.`, `_` or `-`".into(),
            ));
        }
        if self.name.trim().is_empty()
            || self.name.chars().count() > 200
            || self.name.chars().any(char::is_control)
        {
            return Err(bad(
                "name",
                "must be 1 to 200 characters, none of them control characters".into(),
            ));
        }
        let skills: Vec<Skill> = self
            .skills
            .into_iter()
            .map(|s| match s {
                SkillSpec::Name(name) => Skill { name, level: None },
                SkillSpec::Leveled(skill) => skill,
            })
            .collect();
        if skills.is_empty() {
            return Err(bad("skills", "must name at least one skill".into()));
        }
        for skill in &skills {
            if !policy.queues.values().any(|q| q.offers_skill(&skill.name)) {
                let mut offered: Vec<&str> = policy
                    .queues
                    .values()
                    .flat_map(|q| q.skills.iter().map(String::as_str))
                    .collect();
                offered.sort_unstable();
                offered.dedup();
                return Err(bad(
                    "skills",
                    format!(
                        "`{}` is not a skill of any queue; they offer {}",
                        skill.name,
                        offered.join(", ")
                    ),
                ));
            }
            if skill.level.is_some_and(|l| !(1..=10).contains(&l)) {
                return Err(bad(
                    "skills",
                    format!("`{}`: a level is 1 to 10", skill.name),
                ));
            }
        }
        let address = SipUri::parse(&self.address)
            .map_err(|e| bad("address", e.to_string()))?
            .as_str()
            .to_owned();
        Ok(Agent {
            id: self.id,
            name: self.name,
            skills,
            address,
            state: AgentState::LoggedOut,
            reason: None,
            since: now,
            attempt: None,
            version: 1,
        })
    }
}

/// Why an agent request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    #[error("{field} {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
    #[error("agent `{id}` cannot go from {from} to {to}")]
    IllegalTransition {
        id: String,
        from: AgentState,
        to: AgentState,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn policy() -> Policy {
        let queue: crate::Queue = serde_json::from_value(serde_json::json!({
            "skills": ["billing", "technical"], "time_zone": "Europe/London",
            "calling_window": {"all": "00:00-24:00"}
        }))
        .unwrap();
        Policy {
            queues: [("support".to_owned(), queue)].into(),
            dialing: crate::DialingPolicy::home("GB").unwrap(),
        }
    }

    fn new(json: serde_json::Value) -> Result<Agent, AgentError> {
        let now = Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap();
        serde_json::from_value::<NewAgent>(json)
            .unwrap()
            .build(&policy(), now)
    }

    #[test]
    fn an_agent_starts_logged_out_with_its_skills() {
        let a = new(serde_json::json!({"id": "ada", "name": "Ada Lovelace",
            "skills": ["billing", {"name": "technical", "level": 8}],
            "address": "sip:1001@callbackd"}))
        .unwrap();
        assert_eq!(a.state, AgentState::LoggedOut);
        assert!(a.has_skill("technical") && !a.has_skill("sales"));
        assert_eq!(a.skills[1].level, Some(8));
    }

    #[test]
    fn bad_agents_say_what_is_wrong() {
        let base = serde_json::json!({"id": "ada", "name": "Ada", "skills": ["billing"],
            "address": "sip:1001@callbackd"});
        let with = |k: &str, v: serde_json::Value| {
            let mut j = base.clone();
            j[k] = v;
            new(j).unwrap_err().to_string()
        };
        assert!(with("id", "a b".into()).starts_with("id "));
        assert!(with("name", "".into()).starts_with("name "));
        assert!(with("skills", serde_json::json!([])).contains("at least one"));
        assert!(with("skills", serde_json::json!(["sales"])).contains("billing, technical"));
        assert!(with(
            "skills",
            serde_json::json!([{"name": "billing", "level": 11}])
        )
        .contains("1 to 10"));
        assert!(with("address", "tel:+441632960000".into()).starts_with("address "));
    }

    #[test]
    fn only_the_table_moves_agents() {
        use AgentState::*;
        let now = Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap();
        let a = new(
            serde_json::json!({"id": "ada", "name": "Ada", "skills": ["billing"],
            "address": "sip:1001@callbackd"}),
        )
        .unwrap();
        assert!(a.moved(OnCall, None, now).is_err(), "not from logged out");
        let ready = a.moved(Ready, Some("ignored".into()), now).unwrap();
        assert_eq!((ready.reason.as_deref(), ready.version), (None, 2));
        let missed = ready
            .moved(Reserved, None, now)
            .unwrap()
            .moved(NotReady, Some("missed".into()), now)
            .unwrap();
        assert_eq!(missed.reason.as_deref(), Some("missed"));
        let taken = ready.reserved_for(Uuid::from_u128(9), now).unwrap();
        let talking = taken.moved(OnCall, None, now).unwrap();
        assert_eq!(
            talking.attempt,
            Some(Uuid::from_u128(9)),
            "kept while on the call"
        );
        assert_eq!(talking.moved(WrapUp, None, now).unwrap().attempt, None);
        assert_eq!(
            missed.moved(OnCall, None, now).unwrap_err().to_string(),
            "agent `ada` cannot go from not_ready to on_call"
        );
        for s in AgentState::ALL {
            assert_eq!(AgentState::parse(s.as_str()), Some(s));
            assert!(
                !s.can_become(Reserved) || s == Ready,
                "only a ready agent is reserved"
            );
        }
    }
}
