//! Connecting two calls: the agent first (keys, whisper), then the customer (greeting, press 1),
//! bridged; each step reported to whoever asked. The dialer's calls and operators' test calls
//! both run here.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sip::ua::{CallHandle, EndReason};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::{Loop, PlaceError};
use crate::routing::Target;
use media::playout::Ended;

/// Play request ids of the prompts a connection plays.
const WHISPER: u64 = 1;
const GREETING: u64 = 2;
const NOT_REACHED: u64 = 3;

/// Which call of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Agent,
    Customer,
}

/// Two calls to connect.
#[derive(Debug, Clone)]
pub struct Connect {
    /// The SIP URI called first.
    pub agent: String,
    /// Where to send the agent's INVITE when not where the URI routes (a phone registered
    /// with another node, at the address it registered from).
    pub agent_at: Option<SocketAddr>,
    /// Keys sent to the agent's call once answered (to reach an extension behind an IVR).
    pub keys: String,
    /// Prompts played to the agent before the customer is called.
    pub whisper: Vec<String>,
    /// The SIP URI called second, once the whisper has played; without one (and without
    /// `held`), the agent's call is held for `hold` and hung up.
    pub customer: Option<Target>,
    /// The caller ID the customer sees (the queue's), instead of `sip.caller_id`.
    pub caller_id: Option<String>,
    /// Instead of calling a customer: the caller holding in a queue (by hold ID) the agent is
    /// connected to once the whisper has played.
    pub held: Option<uuid::Uuid>,
    /// Call the customer first; once they have answered (and pressed 1) they hear hold music
    /// while the agent is called, whispered to and connected. `not_reached` is then what the
    /// customer hears if the agent does not answer.
    pub customer_first: bool,
    /// Prompts played to the customer on answering.
    pub greeting: Vec<String>,
    /// With a time, the customer must press 1 within it after the greeting to be connected.
    pub confirm: Option<Duration>,
    /// Played to the agent when the customer cannot be reached, before hanging up.
    pub not_reached: Vec<String>,
    pub agent_ring: Duration,
    pub customer_ring: Duration,
    /// No INVITE leaves after this instant (the end of the dialer's lease).
    pub deadline: Option<Instant>,
    /// How long the connected calls (or the agent's call alone) are held before callbackd
    /// hangs up; `None` until someone hangs up.
    pub hold: Option<Duration>,
    /// The dial attempt this connection is for (its calls' records name it).
    pub attempt: Option<uuid::Uuid>,
}

/// Why a connection could not start, and which side's call it was.
#[derive(Debug, thiserror::Error)]
#[error("{side:?}: {error}")]
pub struct ConnectError {
    pub side: Side,
    #[source]
    pub error: PlaceError,
}

/// How a connection is going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Answered(Side),
    /// The two calls are bridged.
    Connected,
    /// The customer answered but did not press 1 in time; they are hung up.
    NotConfirmed,
    /// The customer's call would have left after the deadline, so it was not placed.
    TooLate,
    /// A call ended: how (`local_hangup`, `remote_hangup`, `failed`, `no_answer`) and the
    /// final SIP status of one that was not answered.
    Left {
        side: Side,
        how: &'static str,
        status: Option<u16>,
    },
    /// Both calls are over.
    Ended,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Calling the agent, sending keys and whispering.
    Agent,
    /// Calling the customer, greeting them and waiting for their 1.
    Customer,
    Connected,
    /// Over: telling the agent the customer was not reached, or hanging up.
    Ending,
}

pub(super) struct Bridge {
    connect: Connect,
    progress: mpsc::UnboundedSender<Progress>,
    agent: Option<CallHandle>,
    customer: Option<CallHandle>,
    phase: Phase,
    /// When the customer must have pressed 1 by, once the greeting has played.
    confirm_by: Option<Instant>,
}

impl Bridge {
    /// The dial attempt the connection is for, if the dialer made it.
    pub(super) fn attempt(&self) -> Option<uuid::Uuid> {
        self.connect.attempt
    }

    fn report(&self, progress: Progress) {
        let _ = self.progress.send(progress);
    }
}

/// How a call ended, as test calls and the dialer read it.
fn how(reason: EndReason) -> (&'static str, Option<u16>) {
    match reason {
        EndReason::Failed(code) => ("failed", Some(code)),
        EndReason::LocalHangup
        | EndReason::RemoteHangup
        | EndReason::NoAnswer
        | EndReason::SessionExpired => (reason.as_str(), None),
        _ => ("failed", None),
    }
}

impl Loop {
    /// Places the agent's call of a new connection; the rest follows as it answers.
    pub(super) fn connect(
        &mut self,
        now: Instant,
        connect: Connect,
        progress: mpsc::UnboundedSender<Progress>,
    ) -> Result<u64, ConnectError> {
        let agent_side = |error| ConnectError {
            side: Side::Agent,
            error,
        };
        for prompts in [&connect.whisper, &connect.greeting, &connect.not_reached] {
            self.prompts
                .sequence(prompts.iter().map(String::as_str))
                .map_err(|e| agent_side(e.into()))?;
        }
        // The customer's address is checked before the agent is called.
        if let Some(customer) = &connect.customer {
            self.route(customer).map_err(|error| ConnectError {
                side: Side::Customer,
                error,
            })?;
        }
        let first = match (&connect.customer, connect.customer_first) {
            (Some(customer), true) => self
                .place(
                    now,
                    customer,
                    None,
                    connect.caller_id.as_deref(),
                    connect.customer_ring,
                    connect.deadline,
                )
                .map(|call| (call, Side::Customer))
                .map_err(|error| ConnectError {
                    side: Side::Customer,
                    error,
                })?,
            _ => self
                .place(
                    now,
                    &Target::direct(connect.agent.clone()),
                    connect.agent_at,
                    None,
                    connect.agent_ring,
                    connect.deadline,
                )
                .map(|call| (call, Side::Agent))
                .map_err(agent_side)?,
        };
        let id = self.next_bridge;
        self.next_bridge += 1;
        let (call, side) = first;
        if let Some(active) = self.calls.get_mut(&call) {
            active.bridge = Some((id, side));
        }
        self.bridges.insert(
            id,
            Bridge {
                connect,
                progress,
                agent: (side == Side::Agent).then_some(call),
                customer: (side == Side::Customer).then_some(call),
                phase: match side {
                    Side::Agent => Phase::Agent,
                    Side::Customer => Phase::Customer,
                },
                confirm_by: None,
            },
        );
        Ok(id)
    }

    /// The call a connection's `side` must have its media beside (one pacing thread relays
    /// a bridge): the other side's, when it came first (a holding caller's for the agent
    /// called for them).
    pub(super) fn near(&self, id: u64, side: Side) -> Option<CallHandle> {
        let bridge = self.bridges.get(&id)?;
        match (side, bridge.connect.held) {
            (Side::Customer, _) => bridge.agent,
            (Side::Agent, Some(held)) => self.holding.get(&held).copied(),
            (Side::Agent, None) => bridge.customer,
        }
    }

    /// A call of a connection was answered and its media started.
    pub(super) fn bridge_answered(&mut self, now: Instant, id: u64, side: Side) {
        let Some(bridge) = self.bridges.get_mut(&id) else {
            return;
        };
        bridge.report(Progress::Answered(side));
        match side {
            Side::Agent => {
                let Some(agent) = bridge.agent else {
                    return;
                };
                if !bridge.connect.keys.is_empty() {
                    self.media.send_keys(agent, &bridge.connect.keys);
                }
                let whisper = self
                    .prompts
                    .sequence(bridge.connect.whisper.iter().map(String::as_str))
                    .unwrap_or_default();
                if whisper.is_empty() {
                    self.agent_ready(now, id);
                } else {
                    self.media.play(agent, WHISPER, whisper, false);
                }
            }
            Side::Customer => {
                let Some(customer) = bridge.customer else {
                    return;
                };
                let greeting = self
                    .prompts
                    .sequence(bridge.connect.greeting.iter().map(String::as_str))
                    .unwrap_or_default();
                if greeting.is_empty() {
                    self.greeted(now, id);
                } else {
                    let barge_in = bridge.connect.confirm.is_some();
                    self.media.play(customer, GREETING, greeting, barge_in);
                }
            }
        }
    }

    /// A prompt of a connection finished or was cut short.
    pub(super) fn bridge_played(&mut self, now: Instant, id: u64, play: u64, how: Ended) {
        match (play, how) {
            (WHISPER, Ended::Finished) => self.agent_ready(now, id),
            (GREETING, _) => self.greeted(now, id),
            // Whoever was told the other is not there is hung up.
            (NOT_REACHED, _) => {
                debug!(
                    bridge = id,
                    ?how,
                    "told the other side was not reached; hanging up"
                );
                let told = self.bridges.get(&id).map(|b| [b.agent, b.customer]);
                for call in told.into_iter().flatten().flatten() {
                    self.end_call(now, call);
                }
            }
            _ => {}
        }
    }

    /// A key from a call of a connection: the customer's 1 connects them.
    pub(super) fn bridge_key(&mut self, now: Instant, id: u64, side: Side, key: char) {
        let waiting = self.bridges.get(&id).is_some_and(|b| {
            b.phase == Phase::Customer && b.connect.confirm.is_some() && side == Side::Customer
        });
        if waiting && key == '1' {
            self.confirmed(now, id);
        }
    }

    /// The agent has heard the whisper: call the customer, or hold the agent's call alone.
    fn agent_ready(&mut self, now: Instant, id: u64) {
        let Some(bridge) = self.bridges.get_mut(&id) else {
            return;
        };
        let Some(agent) = bridge.agent else {
            return;
        };
        if let Some(held) = bridge.connect.held {
            self.join_held(now, id, held);
            return;
        }
        // Customer first: they are waiting, listening to hold music.
        if bridge.customer.is_some() {
            self.join(now, id);
            return;
        }
        let Some(customer) = bridge.connect.customer.clone() else {
            let hold = bridge.connect.hold;
            if let Some(active) = self.calls.get_mut(&agent) {
                active.hang_up_at = hold.map(|h| now + h);
            }
            return;
        };
        bridge.phase = Phase::Customer;
        let (ring, deadline) = (bridge.connect.customer_ring, bridge.connect.deadline);
        let caller_id = bridge.connect.caller_id.clone();
        match self.place(now, &customer, None, caller_id.as_deref(), ring, deadline) {
            Err(PlaceError::TooLate) => {
                warn!(
                    bridge = id,
                    "the dialer's lease ran out before the customer was called; not calling"
                );
                self.too_late(now, id, agent);
            }
            Ok(call) => {
                if let Some(active) = self.calls.get_mut(&call) {
                    active.bridge = Some((id, Side::Customer));
                }
                if let Some(bridge) = self.bridges.get_mut(&id) {
                    bridge.customer = Some(call);
                }
            }
            Err(e) => {
                warn!(bridge = id, error = %e, "cannot call the customer");
                if let Some(bridge) = self.bridges.get(&id) {
                    bridge.report(Progress::Left {
                        side: Side::Customer,
                        how: "failed",
                        status: None,
                    });
                }
                self.gone(now, id, Side::Customer);
            }
        }
    }

    /// The agent has heard the whisper: the caller holding for them stops hearing music and
    /// is bridged, or, gone meanwhile, the agent is hung up.
    fn join_held(&mut self, now: Instant, id: u64, held: uuid::Uuid) {
        let call = self.holding.remove(&held);
        let Some(call) = call.filter(|c| self.calls.get(c).is_some_and(|a| a.in_media)) else {
            if let Some(bridge) = self.bridges.get(&id) {
                bridge.report(Progress::Left {
                    side: Side::Customer,
                    how: "remote_hangup",
                    status: None,
                });
            }
            self.gone(now, id, Side::Customer);
            return;
        };
        if let Some(active) = self.calls.get_mut(&call) {
            active.bridge = Some((id, Side::Customer));
            if let Some(holding) = active.holding.as_mut() {
                holding.waiting = false;
            }
        }
        // An empty play stops the music.
        self.media.play(call, 0, Vec::new(), false);
        if let Some(bridge) = self.bridges.get_mut(&id) {
            bridge.customer = Some(call);
            bridge.phase = Phase::Customer;
            bridge.report(Progress::Answered(Side::Customer));
        }
        self.join(now, id);
    }

    /// The greeting has played: connect now, or wait for the customer's 1.
    fn greeted(&mut self, now: Instant, id: u64) {
        let Some(bridge) = self.bridges.get_mut(&id) else {
            return;
        };
        if bridge.phase != Phase::Customer {
            return;
        }
        match bridge.connect.confirm {
            Some(wait) => bridge.confirm_by = Some(now + wait),
            None => self.confirmed(now, id),
        }
    }

    /// The customer is ready to talk: connect them, or (customer first) call the agent while
    /// they hear hold music.
    fn confirmed(&mut self, now: Instant, id: u64) {
        let Some(bridge) = self.bridges.get_mut(&id) else {
            return;
        };
        if bridge.agent.is_some() {
            self.join(now, id);
            return;
        }
        let Some(customer) = bridge.customer else {
            return;
        };
        bridge.confirm_by = None;
        bridge.phase = Phase::Agent;
        let (to, at, ring, deadline) = (
            bridge.connect.agent.clone(),
            bridge.connect.agent_at,
            bridge.connect.agent_ring,
            bridge.connect.deadline,
        );
        match self.place(now, &Target::direct(to), at, None, ring, deadline) {
            Err(PlaceError::TooLate) => {
                warn!(
                    bridge = id,
                    "the dialer's lease ran out before the agent was called; not calling"
                );
                self.too_late(now, id, customer);
            }
            Ok(call) => {
                self.play_music(customer, &["please-hold"]);
                if let Some(active) = self.calls.get_mut(&call) {
                    active.bridge = Some((id, Side::Agent));
                }
                if let Some(bridge) = self.bridges.get_mut(&id) {
                    bridge.agent = Some(call);
                }
            }
            Err(e) => {
                warn!(bridge = id, error = %e, "cannot call the agent");
                if let Some(bridge) = self.bridges.get(&id) {
                    bridge.report(Progress::Left {
                        side: Side::Agent,
                        how: "failed",
                        status: None,
                    });
                }
                self.gone(now, id, Side::Agent);
            }
        }
    }

    /// The dialer's lease ran out before a connection's second call could go: it is not
    /// placed, and the first (`call`) is hung up.
    fn too_late(&mut self, now: Instant, id: u64, call: CallHandle) {
        if let Some(bridge) = self.bridges.get_mut(&id) {
            bridge.report(Progress::TooLate);
            bridge.phase = Phase::Ending;
        }
        self.end_call(now, call);
    }

    /// Bridges the agent's and the customer's calls.
    fn join(&mut self, now: Instant, id: u64) {
        let Some(bridge) = self.bridges.get_mut(&id) else {
            return;
        };
        let (Some(agent), Some(customer)) = (bridge.agent, bridge.customer) else {
            return;
        };
        info!(bridge = id, %agent, %customer, "connected; bridging");
        bridge.phase = Phase::Connected;
        bridge.confirm_by = None;
        bridge.report(Progress::Connected);
        let hold = bridge.connect.hold;
        // Hold music (customer first) would drown what is relayed.
        self.media.play(customer, 0, Vec::new(), false);
        self.media.bridge(agent, customer);
        if let Some(active) = self.calls.get_mut(&agent) {
            active.hang_up_at = hold.map(|h| now + h);
        }
    }

    /// `side` is not there (never answered, did not press 1, could not be called, or left
    /// before being connected): the other side hears `not_reached`, then is hung up.
    fn gone(&mut self, now: Instant, id: u64, side: Side) {
        let Some(bridge) = self.bridges.get_mut(&id) else {
            return;
        };
        bridge.phase = Phase::Ending;
        let other = match side {
            Side::Agent => bridge.customer,
            Side::Customer => bridge.agent,
        };
        let Some(other) = other else {
            return;
        };
        let told = self
            .prompts
            .sequence(bridge.connect.not_reached.iter().map(String::as_str))
            .unwrap_or_default();
        if told.is_empty() || !self.calls.get(&other).is_some_and(|a| a.in_media) {
            self.end_call(now, other);
        } else {
            self.media.play(other, NOT_REACHED, told, false);
        }
    }

    /// A call of a connection ended; the connection ends with its other call.
    /// A side's call refused by its trunk was placed again, through the route's next trunk:
    /// `call` now stands for that side.
    pub(super) fn bridge_leg_placed(&mut self, id: u64, side: Side, call: CallHandle) {
        if let Some(active) = self.calls.get_mut(&call) {
            active.bridge = Some((id, side));
        }
        if let Some(bridge) = self.bridges.get_mut(&id) {
            match side {
                Side::Agent => bridge.agent = Some(call),
                Side::Customer => bridge.customer = Some(call),
            }
        }
    }

    pub(super) fn bridge_left(&mut self, now: Instant, id: u64, side: Side, reason: EndReason) {
        let Some(bridge) = self.bridges.get_mut(&id) else {
            return;
        };
        let (how, status) = how(reason);
        bridge.report(Progress::Left { side, how, status });
        let phase = bridge.phase;
        match side {
            Side::Agent => bridge.agent = None,
            Side::Customer => bridge.customer = None,
        }
        let other = match side {
            Side::Agent => bridge.customer,
            Side::Customer => bridge.agent,
        };
        let customer_first = bridge.connect.customer_first;
        match (side, phase) {
            (Side::Customer, Phase::Customer) => self.gone(now, id, Side::Customer),
            (Side::Agent, Phase::Agent) if customer_first => self.gone(now, id, Side::Agent),
            // The customer is being told the agent was not there.
            (Side::Agent, Phase::Ending) if customer_first => {}
            // The agent is being told the customer was not reached (or was hung up already).
            (Side::Customer, Phase::Ending) => {}
            _ => {
                bridge.phase = Phase::Ending;
                if let Some(other) = other {
                    self.end_call(now, other);
                }
            }
        }
        self.forget_if_over(id);
    }

    /// Ends a connection at once: both calls are hung up.
    pub(super) fn abort(&mut self, now: Instant, id: u64) {
        let Some(bridge) = self.bridges.get_mut(&id) else {
            return;
        };
        bridge.phase = Phase::Ending;
        for call in [bridge.agent, bridge.customer].into_iter().flatten() {
            self.end_call(now, call);
        }
    }

    /// A connection may place its calls until `deadline` now.
    pub(super) fn extend(&mut self, id: u64, deadline: Instant) {
        if let Some(bridge) = self.bridges.get_mut(&id) {
            bridge.connect.deadline = Some(deadline);
        }
    }

    /// Customers who did not press 1 in time.
    pub(super) fn bridge_timers(&mut self, now: Instant) {
        let late: Vec<u64> = self
            .bridges
            .iter()
            .filter(|(_, b)| b.confirm_by.is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            let Some(bridge) = self.bridges.get_mut(&id) else {
                continue;
            };
            info!(bridge = id, "the customer did not press 1; hanging up");
            bridge.confirm_by = None;
            bridge.report(Progress::NotConfirmed);
            if let Some(customer) = bridge.customer {
                self.end_call(now, customer);
            }
            self.gone(now, id, Side::Customer);
        }
    }

    fn forget_if_over(&mut self, id: u64) {
        if let Some(bridge) = self.bridges.get(&id) {
            if bridge.agent.is_none() && bridge.customer.is_none() {
                bridge.report(Progress::Ended);
                self.bridges.remove(&id);
            }
        }
    }

    /// Hangs a call up unless it is already going.
    pub(super) fn end_call(&mut self, now: Instant, call: CallHandle) {
        if let Some(active) = self.calls.get_mut(&call).filter(|a| !a.hanging_up) {
            active.hanging_up = true;
            self.ua.hang_up(now, call);
        }
    }
}
