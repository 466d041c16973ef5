//! The outbound dialer: when an agent is ready and a callback with one of their skills is due,
//! it claims the callback (a lease in the store, with the attempt committed first), calls the
//! agent, then the customer, and connects them; then it records how the attempt went.
//!
//! It wakes when told (an agent turned ready, a callback was created or changed) and once a
//! second regardless, so nothing is stranded by a missed wake-up. The decisions are the
//! domain's (`callbacks::dialer`); this module only runs them against the store and SIP.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use callbacks::dialer::{self as decide, Verdict};
use callbacks::{Agent, AgentState, Attempt, AttemptOutcome, Callback, Callbacks, StoreError};
use chrono::{DateTime, SubsecRound, Utc};
use futures_util::future::join_all;
use rand::RngCore;
use store::{Choice, ClaimRequest, Claimed, Finish, Hold, Store};
use tokio::sync::broadcast;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::config::{DialerConfig, SipConfig};
use crate::hints::Hints;
use crate::signalling::{Connect, ConnectError, PlaceError, Progress, Side, Sip};

/// How often the dialer looks again without being woken.
const RECHECK: Duration = Duration::from_secs(1);
/// How often a call in progress re-reads its callback, to hang up one paused or cancelled,
/// when no notice of a change came.
const WATCH: Duration = Duration::from_secs(1);
/// No INVITE leaves this close to the end of the lease.
const MARGIN: Duration = Duration::from_secs(2);

/// The dialer, shared by its loop, its calls and whoever wakes it.
pub struct Dialer {
    store: Store,
    /// For the queues and the dialing policy, as reloaded.
    callbacks: Arc<Callbacks<Store>>,
    sip: Sip,
    config: DialerConfig,
    /// Where customers can be called.
    routes: crate::routing::Shared,
    /// `sip.realm`: agents at `sip:USER@<realm>` are phones registered with callbackd.
    realm: String,
    node: String,
    hints: Hints,
    /// Attempts under way on this node.
    attempts: AtomicUsize,
    /// Set when the node drains: nothing more is claimed.
    stopping: std::sync::atomic::AtomicBool,
}

/// The time, to the microsecond both stores keep.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn std_duration(d: chrono::Duration) -> Duration {
    d.to_std().unwrap_or_default()
}

impl Dialer {
    /// The prompts the dialer plays, whose absence stops start-up rather than every call.
    pub fn prompts(config: &DialerConfig) -> [&str; 8] {
        [
            "agents-busy",
            "whisper-caller-holding",
            "whisper-callback-for",
            "whisper-requested",
            "callback-from",
            &config.company_prompt,
            "press-1-to-connect",
            "customer-not-reached",
        ]
    }

    pub fn new(
        callbacks: Arc<Callbacks<Store>>,
        sip: Sip,
        config: DialerConfig,
        sip_config: &SipConfig,
        routes: crate::routing::Shared,
        hints: Hints,
    ) -> Arc<Dialer> {
        Arc::new(Dialer {
            node: config.node_name(),
            store: callbacks.store.clone(),
            callbacks,
            sip,
            config,
            routes,
            realm: sip_config.realm.clone(),
            hints,
            attempts: AtomicUsize::new(0),
            stopping: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// This node's name, and how many attempts it has under way.
    pub fn gauges(&self) -> (&str, usize) {
        (&self.node, self.attempts.load(Ordering::Relaxed))
    }

    /// Runs until the node drains: every second the whole round, and on each hint only the
    /// agents, since a change here or on another node (a hundred a second, under load) can
    /// only make work for them.
    pub async fn run(self: Arc<Self>) {
        info!(node = %self.node, "dialer running");
        let mut tick = tokio::time::interval(RECHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let whole_round = tokio::select! {
                _ = tick.tick() => true,
                _ = self.hints.woken() => false,
            };
            if self.stopping.load(Ordering::Relaxed) {
                info!(node = %self.node, "dialer stopped: nothing more is claimed on this node");
                return;
            }
            let looked = if whole_round {
                self.round().await
            } else {
                self.offers().await
            };
            if let Err(e) = looked {
                warn!(error = %e, "dialer round failed; trying again");
            }
        }
    }

    /// The node drains: claims nothing more; the attempts under way go on (see
    /// [`Dialer::gauges`]).
    pub fn stop_claiming(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.hints.wake();
    }

    fn lease_end(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + self.config.lease
    }

    /// One look at all the work: leases other nodes left behind, callers holding on a node
    /// that stopped, agents left reserved or busy by one, then [`Dialer::offers`].
    async fn round(self: &Arc<Self>) -> Result<(), StoreError> {
        let now = now();
        for (cb, attempt, generation) in self
            .store
            .take_over_expired(&self.node, now, self.lease_end(now))
            .await?
        {
            let node = attempt.as_ref().map_or("-", |a| a.node.as_str());
            warn!(callback = %cb.confirmation_id, node, "a lease ran out unrenewed; the attempt's outcome is unknown");
            metrics::counter!("callbackd_dialer_lease_takeovers_total").increment(1);
            self.settle(
                cb.id,
                attempt.as_ref(),
                generation,
                AttemptOutcome::Unknown,
                None,
            )
            .await;
            if let Some(attempt) = &attempt {
                if let Some(agent) = &attempt.agent_id {
                    self.release_agent(agent, attempt.id, false, None).await;
                }
            }
        }
        // Callers holding on a node that stopped are gone with it.
        self.store.purge_holds(now).await?;
        // An attempt's end frees its agent within moments; a minute later, one still held
        // was left behind by a node that stopped in between.
        for agent in self
            .store
            .stranded_agents(now - chrono::Duration::minutes(1))
            .await?
        {
            warn!(agent = %agent.id, state = %agent.state, "the agent's attempt is over; freeing them");
            let to = match agent.state {
                AgentState::OnCall => AgentState::WrapUp,
                _ => AgentState::Ready,
            };
            self.move_agent(&agent, to, None).await;
        }
        self.offers().await
    }

    /// Agents done with wrap-up are ready again, and every ready agent is offered a callback
    /// or a holding caller if one waits.
    async fn offers(self: &Arc<Self>) -> Result<(), StoreError> {
        let now = now();
        let mut agents = self.store.agents().await?;
        // All at once, and offered work in this same look.
        let rested = join_all(
            agents
                .iter()
                .filter(|a| a.state == AgentState::WrapUp && now - a.since >= self.config.wrap_up)
                .map(|a| self.move_agent(a, AgentState::Ready, None)),
        )
        .await;
        agents.retain(|a| a.state == AgentState::Ready);
        agents.extend(rested.into_iter().flatten());
        // The agent who has waited longest goes first.
        agents.sort_by_key(|a| a.since);
        // Skills nothing waits for, in this look: an agent with no other skill finds nothing
        // either, so is not asked for (with hundreds of ready agents and work coming one by
        // one, that is hundreds of empty claims saved for each).
        let mut idle_skills: Vec<BTreeSet<String>> = Vec::new();
        for agent in agents {
            let covered =
                |idle: &BTreeSet<String>| agent.skills.iter().all(|s| idle.contains(&s.name));
            if idle_skills.iter().any(covered) {
                continue;
            }
            let skills = agent.skills.iter().map(|s| s.name.clone()).collect();
            if !self.offer(agent).await? {
                idle_skills.push(skills);
            }
        }
        Ok(())
    }

    /// Claims the next callback `agent` can take, if any, and starts the calls; `false` when
    /// nothing waits for the agent's skills.
    async fn offer(self: &Arc<Self>, agent: Agent) -> Result<bool, StoreError> {
        let now = now();
        let mut id = [0; 16];
        rand::thread_rng().fill_bytes(&mut id);
        let attempt_id = uuid::Builder::from_random_bytes(id).into_uuid();
        let Ok(reserved) = agent.reserved_for(attempt_id, now) else {
            return Ok(true);
        };
        let request = ClaimRequest {
            attempt_id,
            agent: &agent,
            reserved: &reserved,
            node: &self.node,
            now,
            until: self.lease_end(now),
        };
        // The lease runs from before the claim: however long the store takes to answer, the
        // node's own deadline is never later than the lease's end.
        let asked = Instant::now();
        let claimed = self
            .store
            .claim(&request, |cb| {
                // Nothing can reach it as configured: it keeps its place and its attempts,
                // marked in the API and on the board, and the next in line is taken.
                if self.routes.load().unroutable(cb).is_some() {
                    return Choice::Pass;
                }
                match decide::verdict(cb, &self.callbacks.policy(), now) {
                    Verdict::Wait | Verdict::Later(None) => Choice::Pass,
                    Verdict::Later(Some(opens)) => {
                        let (later, event) = decide::deferred(cb, opens, &self.node, now);
                        Choice::Defer(later, event)
                    }
                    Verdict::Dial | Verdict::Block(_) => {
                        match decide::claimed(cb, &self.node, &agent.id, now) {
                            Some((cb, event)) => Choice::Take(cb, event),
                            None => Choice::Pass,
                        }
                    }
                }
            })
            .await;
        let claimed = match claimed {
            // Moved meanwhile (by an operator, or another node's claim): not this one's turn.
            Err(StoreError::Conflict { .. }) => return Ok(true),
            other => other?,
        };
        let dialer = self.clone();
        match claimed {
            Some(Claimed::Callback(cb, attempt)) => {
                info!(callback = %cb.confirmation_id, agent = %agent.id, attempt = attempt.number, "callback claimed");
                dialer.attempts.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    dialer.clone().attempt(reserved, *cb, attempt, asked).await;
                    dialer.attempts.fetch_sub(1, Ordering::Relaxed);
                });
            }
            Some(Claimed::Hold(hold)) => {
                info!(hold = %hold.id, agent = %agent.id, "holding caller claimed");
                let mut reserved = reserved;
                reserved.attempt = Some(hold.id);
                dialer.attempts.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    dialer.clone().connect_holding(reserved, hold).await;
                    dialer.attempts.fetch_sub(1, Ordering::Relaxed);
                });
            }
            None => {
                debug!(agent = %agent.id, "nothing waiting for the agent's skills");
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The last moment a call may be placed under a lease asked for at `asked`.
    fn deadline(&self, asked: Instant) -> Instant {
        asked + std_duration(self.config.lease).saturating_sub(MARGIN)
    }

    /// Where the agent is called: a phone registered (with any node) as `sip:USER@<realm>`
    /// at the address it registered from, kept in the store; any other URI as it is.
    async fn agent_target(&self, agent: &Agent) -> Result<(String, Option<SocketAddr>), String> {
        let Ok(uri) = callbacks::SipUri::parse(&agent.address) else {
            return Ok((agent.address.clone(), None));
        };
        if !uri.host().eq_ignore_ascii_case(&self.realm) {
            return Ok((agent.address.clone(), None));
        }
        let bindings = self
            .store
            .bindings(now())
            .await
            .map_err(|e| e.to_string())?;
        bindings
            .into_iter()
            .filter(|b| b.user == uri.user())
            .max_by_key(|b| b.expires_at)
            .map(|b| {
                // Over UDP any node can reach the phone; over TCP only the node holding its
                // connection, which the phone registered through.
                let at = (b.transport == "udp")
                    .then(|| b.source.parse().ok())
                    .flatten();
                (b.contact, at)
            })
            .ok_or_else(|| format!("no phone is registered as `{}`", uri.user()))
    }

    /// What the agent hears before the customer is called: the department (when there is a
    /// prompt `skill-NAME`) and when the callback was requested.
    fn whisper(&self, cb: &Callback, known: &dyn Fn(&str) -> bool) -> Vec<String> {
        let mut words = vec!["whisper-callback-for".to_owned()];
        let skill = format!("skill-{}", cb.skill);
        if known(&skill) {
            words.push(skill);
        }
        words.push("whisper-requested".into());
        let zone = self
            .callbacks
            .policy()
            .queues
            .get(&cb.queue)
            .map(|q| q.time_zone)
            .unwrap_or(cb.time_zone);
        words.extend(
            media::say::date_time(&cb.created_at.with_timezone(&zone))
                .into_iter()
                .map(str::to_owned),
        );
        words
    }

    /// One attempt, from the claim to the record of how it went. The lease was asked for at
    /// `asked`.
    async fn attempt(
        self: Arc<Self>,
        agent: Agent,
        cb: Callback,
        attempt: Attempt,
        asked: Instant,
    ) {
        let started = Instant::now();
        let mut deadline = self.deadline(asked);
        // Without a call placed, the attempt ends here and the agent is free at once.
        let end_early = |outcome: AttemptOutcome, agent_reason: Option<&'static str>| {
            let dialer = self.clone();
            let (agent_id, attempt) = (agent.id.clone(), attempt.clone());
            async move {
                dialer
                    .settle(
                        attempt.callback_id,
                        Some(&attempt),
                        attempt.generation,
                        outcome,
                        None,
                    )
                    .await;
                dialer
                    .release_agent(&agent_id, attempt.id, false, agent_reason)
                    .await;
                dialer.hints.wake();
            }
        };
        let customer = match decide::verdict(&cb, &self.callbacks.policy(), now()) {
            Verdict::Block(reason) => {
                warn!(callback = %cb.confirmation_id, reason, "the dialing policy blocks this callback now; not calling");
                return end_early(AttemptOutcome::Blocked, None).await;
            }
            _ => self.routes.load().target(&cb.address, Some(&cb.queue)),
        };
        let customer = match customer {
            Ok(uri) => uri,
            Err(reason) => {
                warn!(callback = %cb.confirmation_id, reason, "no route to the customer");
                return end_early(AttemptOutcome::Unreachable, None).await;
            }
        };
        let (agent_uri, agent_at) = match self.agent_target(&agent).await {
            Ok(target) => target,
            Err(e) => {
                warn!(agent = %agent.id, error = %e, "cannot call the agent");
                return end_early(AttemptOutcome::AgentNoAnswer, Some("unreachable")).await;
            }
        };
        let known = |name: &str| self.sip.has_prompt(name);
        let policy = self.callbacks.policy();
        let queue = policy.queues.get(&cb.queue);
        let customer_first = queue.is_some_and(|q| q.customer_first);
        let confirm = std_duration(self.config.confirm_timeout);
        let connect = Connect {
            agent: agent_uri,
            agent_at,
            keys: String::new(),
            whisper: if self.config.whisper {
                self.whisper(&cb, &known)
            } else {
                Vec::new()
            },
            customer: Some(customer),
            caller_id: queue.and_then(|q| q.caller_id.clone()),
            held: None,
            customer_first,
            greeting: match (self.config.greeting, confirm.is_zero()) {
                (false, _) => Vec::new(),
                (true, true) => vec!["callback-from".into(), self.config.company_prompt.clone()],
                (true, false) => vec![
                    "callback-from".into(),
                    self.config.company_prompt.clone(),
                    "press-1-to-connect".into(),
                ],
            },
            confirm: (self.config.greeting && !confirm.is_zero()).then_some(confirm),
            // Who is told the other is not there: the agent (agent first) or the customer.
            not_reached: vec![if customer_first {
                "agents-busy".into()
            } else {
                "customer-not-reached".into()
            }],
            agent_ring: std_duration(self.config.agent_ring_timeout),
            customer_ring: std_duration(self.config.customer_ring_timeout),
            deadline: Some(deadline),
            hold: None,
            attempt: Some(attempt.id),
        };
        let (id, mut progress) = match self.sip.connect(connect).await {
            Ok(placed) => placed,
            Err(ConnectError { side, error }) => {
                warn!(callback = %cb.confirmation_id, agent = %agent.id, ?side, %error, "cannot place the call");
                // Whose fault it was decides who pays: an agent who cannot be called is set
                // not ready; a customer who cannot be called uses up an attempt.
                let (outcome, reason) = match (side, error) {
                    (_, PlaceError::TooLate) => (AttemptOutcome::Unknown, None),
                    (Side::Customer, _) => (AttemptOutcome::Unreachable, None),
                    (Side::Agent, _) => (AttemptOutcome::AgentNoAnswer, Some("unreachable")),
                };
                return end_early(outcome, reason).await;
            }
        };
        let mut seen = Seen {
            customer_first,
            ..Seen::default()
        };
        let mut renew = tokio::time::interval(std_duration(self.config.lease) / 3);
        renew.tick().await;
        let mut watch = tokio::time::interval(WATCH);
        let mut notices = self.hints.subscribe();
        loop {
            tokio::select! {
                step = progress.recv() => match step {
                    None | Some(Progress::Ended) => break,
                    Some(step) => {
                        seen.note(step);
                        match step {
                            Progress::Answered(Side::Agent) => {
                                self.agent_on_call(&agent.id, attempt.id).await;
                            }
                            Progress::Connected if !seen.lost => self.connected(&attempt).await,
                            _ => {}
                        }
                    }
                },
                _ = renew.tick(), if !seen.lost => {
                    let (now, asked) = (now(), Instant::now());
                    match self.store.renew(cb.id, attempt.generation, self.lease_end(now)).await {
                        Ok(true) => {
                            deadline = self.deadline(asked);
                            self.sip.extend(id, deadline).await;
                        }
                        Ok(false) if seen.connected => {
                            // The customer is talking to the agent: the call goes on, and the
                            // node that took over records it as completed.
                            warn!(callback = %cb.confirmation_id, "another node took the callback over; leaving the connected call be");
                            seen.lost = true;
                        }
                        Ok(false) => {
                            warn!(callback = %cb.confirmation_id, "another node took the callback over; hanging up");
                            seen.lost = true;
                            self.sip.abort(id).await;
                        }
                        Err(e) => warn!(error = %e, "cannot renew the lease; trying again"),
                    }
                }
                notice = notices.recv(), if !seen.connected && !seen.aborted => {
                    // A change to this callback (or notices missed): look at it now.
                    let ours = match notice {
                        Ok(changed) => changed == cb.id,
                        Err(broadcast::error::RecvError::Lagged(_)) => true,
                        Err(broadcast::error::RecvError::Closed) => false,
                    };
                    if ours {
                        watch.reset_immediately();
                    }
                }
                _ = watch.tick(), if !seen.connected && !seen.aborted => {
                    if let Ok(Some(now)) = self.store.callback(cb.id).await {
                        if !matches!(now.state, callbacks::State::Dialing) {
                            info!(callback = %cb.confirmation_id, state = %now.state, "the callback changed while being dialed; hanging up");
                            seen.aborted = true;
                            self.sip.abort(id).await;
                        }
                    }
                }
            }
        }
        let (outcome, status) = seen.outcome();
        info!(callback = %cb.confirmation_id, outcome = outcome.as_str(), ?status, seconds = started.elapsed().as_secs(), "attempt over");
        if !seen.lost {
            self.settle(cb.id, Some(&attempt), attempt.generation, outcome, status)
                .await;
        }
        // An agent who let the call ring out is not offered the next one at once.
        let missed = seen.agent_called && !seen.agent_answered && !seen.aborted && !seen.lost;
        self.release_agent(
            &agent.id,
            attempt.id,
            seen.agent_answered,
            missed.then_some("missed"),
        )
        .await;
        self.hints.wake();
    }

    /// Connects `agent` to a caller holding on this node: the agent is called, hears who is
    /// waiting, and is bridged to the caller. An agent who does not answer goes to not ready
    /// (`missed`) and the caller back to their place in line.
    async fn connect_holding(self: Arc<Self>, agent: Agent, hold: Hold) {
        let (agent_uri, agent_at) = match self.agent_target(&agent).await {
            Ok(target) => target,
            Err(e) => {
                warn!(agent = %agent.id, error = %e, "cannot call the agent");
                self.release_holding(&agent, &hold, false, Some("unreachable"))
                    .await;
                return;
            }
        };
        let mut whisper = Vec::new();
        if self.config.whisper {
            whisper.push("whisper-caller-holding".to_owned());
            let skill = format!("skill-{}", hold.skill);
            if self.sip.has_prompt(&skill) {
                whisper.push(skill);
            }
        }
        let connect = Connect {
            agent: agent_uri,
            agent_at,
            keys: String::new(),
            whisper,
            customer: None,
            caller_id: None,
            held: Some(hold.id),
            customer_first: false,
            greeting: Vec::new(),
            confirm: None,
            not_reached: Vec::new(),
            agent_ring: std_duration(self.config.agent_ring_timeout),
            customer_ring: std_duration(self.config.customer_ring_timeout),
            deadline: None,
            hold: None,
            attempt: None,
        };
        let mut progress = match self.sip.connect(connect).await {
            Ok((_, progress)) => progress,
            Err(e) => {
                warn!(agent = %agent.id, error = %e, "cannot call the agent");
                self.release_holding(&agent, &hold, false, Some("unreachable"))
                    .await;
                return;
            }
        };
        let mut seen = Seen::default();
        while let Some(step) = progress.recv().await {
            if step == Progress::Ended {
                break;
            }
            seen.note(step);
            if step == Progress::Answered(Side::Agent) {
                self.agent_on_call(&agent.id, hold.id).await;
            }
        }
        info!(hold = %hold.id, agent = %agent.id, connected = seen.connected, "holding caller's connection over");
        let missed = (seen.agent_called && !seen.agent_answered).then_some("missed");
        self.release_holding(&agent, &hold, seen.agent_answered, missed)
            .await;
    }

    /// After a holding caller's connection: the agent is freed (see [`Dialer::release_agent`]);
    /// a caller the agent never reached goes back to their place in line (a caller whose call
    /// ended has no hold left to go back to).
    async fn release_holding(
        &self,
        agent: &Agent,
        hold: &Hold,
        answered: bool,
        reason: Option<&str>,
    ) {
        if !answered {
            if let Err(e) = self.store.release_hold(hold.id).await {
                warn!(hold = %hold.id, error = %e, "cannot put the caller back in line");
            }
        }
        self.release_agent(&agent.id, hold.id, answered, reason)
            .await;
        self.hints.wake();
    }

    /// The customer is connected to the agent.
    async fn connected(&self, attempt: &Attempt) {
        for _ in 0..5 {
            let Ok(Some(cb)) = self.store.callback(attempt.callback_id).await else {
                return;
            };
            let Some((new, event)) = decide::connected(&cb, &self.node, now()) else {
                return;
            };
            match self
                .store
                .step_attempt(attempt.generation, &new, &event, None)
                .await
            {
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => warn!(error = %e, "cannot record the connection"),
                Ok(()) => {}
            }
            return;
        }
    }

    /// Records how an attempt (its row, when it left one) went and where its callback goes
    /// next, retrying when someone changed the callback meanwhile. A callback whose queue is
    /// no longer configured cannot be retried: it fails.
    async fn settle(
        &self,
        callback: Uuid,
        attempt: Option<&Attempt>,
        generation: i64,
        outcome: AttemptOutcome,
        status: Option<u16>,
    ) {
        for _ in 0..5 {
            let cb = match self.store.callback(callback).await {
                Ok(Some(cb)) => cb,
                Ok(None) => return,
                Err(e) => {
                    warn!(error = %e, "cannot read the callback to record its attempt");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let policy = self.callbacks.policy();
            let queue = policy.queues.get(&cb.queue);
            if queue.is_none() {
                warn!(queue = %cb.queue, callback = %cb.confirmation_id, "the callback's queue is no longer configured; it cannot be retried");
            }
            let now = now();
            let (new, event) = decide::finished(&cb, queue, outcome, status, &self.node, now);
            let finish = Finish {
                attempt: attempt.map(|a| a.id),
                outcome,
                sip_status: status,
                at: now,
            };
            match self
                .store
                .step_attempt(generation, &new, &event, Some(&finish))
                .await
            {
                Ok(()) => {
                    metrics::counter!("callbackd_dialer_attempts_total", "outcome" => outcome.as_str())
                        .increment(1);
                    return;
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::LeaseLost(_)) => {
                    warn!(callback = %cb.confirmation_id, "another node holds the callback now; its outcome is theirs to record");
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "cannot record the attempt; trying again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// The agent answered the call of `attempt`.
    async fn agent_on_call(&self, id: &str, attempt: Uuid) {
        if let Ok(Some(agent)) = self.store.agent(id).await {
            if agent.attempt == Some(attempt) && agent.state == AgentState::Reserved {
                self.move_agent(&agent, AgentState::OnCall, None).await;
            }
        }
    }

    /// After `attempt`: an agent who talked goes to wrap-up; one who never answered goes to
    /// not ready (`missed`, or `reason`), except when no call reached them (ready again). An
    /// agent reserved meanwhile for another attempt is left alone. A failure to write is
    /// tried again; an agent still held after that is freed by any node a minute later.
    async fn release_agent(&self, id: &str, attempt: Uuid, answered: bool, reason: Option<&str>) {
        for _ in 0..3 {
            let agent = match self.store.agent(id).await {
                Ok(Some(agent)) if agent.attempt == Some(attempt) => agent,
                Ok(_) => return,
                Err(e) => {
                    warn!(agent = id, error = %e, "cannot read the agent to free them; trying again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let (to, why) = match agent.state {
                AgentState::OnCall => (AgentState::WrapUp, None),
                AgentState::Reserved if answered => (AgentState::WrapUp, None),
                AgentState::Reserved => (
                    reason.map_or(AgentState::Ready, |_| AgentState::NotReady),
                    reason.map(str::to_owned),
                ),
                _ => return,
            };
            if self.move_agent(&agent, to, why).await.is_some() {
                return;
            }
        }
    }

    /// Moves an agent from the version read; the agent as moved, if it moved.
    async fn move_agent(
        &self,
        agent: &Agent,
        to: AgentState,
        reason: Option<String>,
    ) -> Option<Agent> {
        match agent.moved(to, reason, now()) {
            Ok(new) => match self.store.move_agent(agent, &new, &self.node).await {
                Ok(()) => Some(new),
                Err(e) => {
                    debug!(agent = %agent.id, error = %e, "agent not moved");
                    None
                }
            },
            Err(e) => {
                debug!(error = %e, "agent not moved");
                None
            }
        }
    }
}

/// What a connection's progress said, read as an attempt's outcome at the end.
#[derive(Debug, Default)]
struct Seen {
    /// The customer was called first (the queue's `customer_first`).
    customer_first: bool,
    /// The agent's phone was called at all.
    agent_called: bool,
    agent_answered: bool,
    customer_answered: bool,
    customer_called: bool,
    connected: bool,
    not_confirmed: bool,
    too_late: bool,
    /// The agent hung up before the customer's call ended.
    agent_left_first: bool,
    customer_left: Option<(&'static str, Option<u16>)>,
    agent_status: Option<u16>,
    /// The callback was paused or cancelled meanwhile.
    aborted: bool,
    /// Another node holds the callback now.
    lost: bool,
}

impl Seen {
    fn note(&mut self, step: Progress) {
        match step {
            Progress::Answered(Side::Agent) => {
                self.agent_called = true;
                self.agent_answered = true;
            }
            Progress::Answered(Side::Customer) => self.customer_answered = true,
            Progress::Connected => self.connected = true,
            Progress::NotConfirmed => self.not_confirmed = true,
            Progress::TooLate => self.too_late = true,
            Progress::Left {
                side: Side::Agent,
                status,
                ..
            } => {
                self.agent_called = true;
                self.agent_status = status;
                self.agent_left_first = self.customer_left.is_none();
            }
            Progress::Left {
                side: Side::Customer,
                how,
                status,
            } => {
                self.customer_called = true;
                self.customer_left = Some((how, status));
            }
            Progress::Ended => {}
        }
    }

    fn outcome(&self) -> (AttemptOutcome, Option<u16>) {
        let customer_status = self.customer_left.and_then(|(_, s)| s);
        if self.aborted {
            (AttemptOutcome::Aborted, None)
        } else if self.connected {
            (AttemptOutcome::Connected, None)
        } else if self.customer_first {
            if self.too_late || self.lost {
                (AttemptOutcome::Unknown, None)
            } else if !self.customer_answered {
                let (how, status) = self.customer_left.unwrap_or(("failed", None));
                (
                    AttemptOutcome::of_customer_leg(status, how == "no_answer"),
                    customer_status,
                )
            } else if !self.agent_called {
                (AttemptOutcome::NotConfirmed, None)
            } else {
                // The customer waited for an agent who did not come: not their attempt.
                (AttemptOutcome::AgentNoAnswer, self.agent_status)
            }
        } else if !self.agent_answered {
            (AttemptOutcome::AgentNoAnswer, self.agent_status)
        } else if self.too_late || self.lost {
            (AttemptOutcome::Unknown, None)
        } else if self.not_confirmed || self.customer_answered {
            (AttemptOutcome::NotConfirmed, None)
        } else if self.agent_left_first || !self.customer_called {
            // The agent hung up before the customer answered: not the customer's attempt.
            (AttemptOutcome::AgentNoAnswer, None)
        } else {
            let (how, status) = self.customer_left.unwrap_or(("failed", None));
            (
                AttemptOutcome::of_customer_leg(status, how == "no_answer"),
                customer_status,
            )
        }
    }
}

/// Agents' phones registering and unregistering log them in and out.
pub async fn follow_registrations(
    dialer: Arc<Dialer>,
    mut registrations: tokio::sync::mpsc::UnboundedReceiver<(String, bool)>,
) {
    while let Some((user, registered)) = registrations.recv().await {
        if !dialer.config.login_on_register {
            continue;
        }
        let address = format!("sip:{user}@{}", dialer.realm);
        let Ok(agents) = dialer.store.agents().await else {
            continue;
        };
        for agent in agents
            .iter()
            .filter(|a| a.address.eq_ignore_ascii_case(&address))
        {
            let to = match (registered, agent.state) {
                (true, AgentState::LoggedOut) => AgentState::Ready,
                (false, AgentState::Ready | AgentState::NotReady | AgentState::WrapUp) => {
                    AgentState::LoggedOut
                }
                _ => continue,
            };
            info!(agent = %agent.id, state = %to, "the agent's phone {}", if registered { "registered" } else { "unregistered" });
            if let Ok(new) = agent.moved(to, None, now()) {
                if let Err(e) = dialer.store.move_agent(agent, &new, "registrar").await {
                    warn!(agent = %agent.id, error = %e, "cannot log the agent in or out");
                }
            }
        }
        dialer.hints.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(steps: &[Progress]) -> (AttemptOutcome, Option<u16>) {
        let mut seen = Seen::default();
        for step in steps {
            seen.note(*step);
        }
        seen.outcome()
    }

    #[test]
    fn progress_reads_as_the_attempts_outcome() {
        use Progress::*;
        let left = |side, how, status| Left { side, how, status };
        assert_eq!(
            outcome(&[left(Side::Agent, "no_answer", None), Ended]),
            (AttemptOutcome::AgentNoAnswer, None)
        );
        let agent_up = [Answered(Side::Agent)];
        let busy = [
            &agent_up[..],
            &[
                left(Side::Customer, "failed", Some(486)),
                left(Side::Agent, "local_hangup", None),
            ],
        ]
        .concat();
        assert_eq!(outcome(&busy), (AttemptOutcome::Busy, Some(486)));
        let rang_out = [
            &agent_up[..],
            &[
                left(Side::Customer, "no_answer", None),
                left(Side::Agent, "local_hangup", None),
            ],
        ]
        .concat();
        assert_eq!(outcome(&rang_out).0, AttemptOutcome::NoAnswer);
        let silent = [
            &agent_up[..],
            &[
                Answered(Side::Customer),
                NotConfirmed,
                left(Side::Customer, "local_hangup", None),
            ],
        ]
        .concat();
        assert_eq!(outcome(&silent).0, AttemptOutcome::NotConfirmed);
        let talked = [
            &agent_up[..],
            &[
                Answered(Side::Customer),
                Connected,
                left(Side::Customer, "remote_hangup", None),
            ],
        ]
        .concat();
        assert_eq!(outcome(&talked).0, AttemptOutcome::Connected);
        let agent_quit = [
            &agent_up[..],
            &[
                left(Side::Agent, "remote_hangup", None),
                left(Side::Customer, "local_hangup", None),
            ],
        ]
        .concat();
        assert_eq!(
            outcome(&agent_quit).0,
            AttemptOutcome::AgentNoAnswer,
            "not the customer's attempt"
        );

        // Customer first: the customer's own answer decides, unless the agent failed them.
        let first = |steps: &[Progress]| {
            let mut seen = Seen {
                customer_first: true,
                ..Seen::default()
            };
            for step in steps {
                seen.note(*step);
            }
            seen.outcome().0
        };
        assert_eq!(
            first(&[left(Side::Customer, "failed", Some(486)), Ended]),
            AttemptOutcome::Busy
        );
        assert_eq!(
            first(&[
                Answered(Side::Customer),
                NotConfirmed,
                left(Side::Customer, "local_hangup", None)
            ]),
            AttemptOutcome::NotConfirmed
        );
        assert_eq!(
            first(&[
                Answered(Side::Customer),
                left(Side::Agent, "no_answer", None),
                left(Side::Customer, "local_hangup", None)
            ]),
            AttemptOutcome::AgentNoAnswer,
            "the customer waited for an agent who did not come"
        );
    }
}
