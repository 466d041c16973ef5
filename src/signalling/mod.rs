//! The SIP runtime: the loop that pumps the sans-IO user agent (`sip::ua`) and dispatches
//! what comes in. It holds no protocol logic of its own; each concern has a module:
//!
//! - `udp`, `tcp`: the transports, reading messages for the loop and sending its own;
//! - `addresses`: where media binds and what peers are told (NAT, several interfaces);
//! - `calls`: call control, from the user agent's and the media's events;
//! - `dialplan`: driving each call's IVR session;
//! - `routing`: where calls callbackd places go, and placing them;
//! - `connect`, `holding`: bridging an agent and a customer, and callers holding in a queue.
//!
//! The dialer drives it through [`Sip`]; nothing here knows the dialer, which hears of
//! changes through `crate::hints`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use rand::{rngs::StdRng, RngCore, SeedableRng};
use sip::ua::{CallHandle, Config as UaConfig, Link, Output, UserAgent};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::config::{MediaConfig, SipConfig};
use crate::ivr::Operations;
use crate::listeners::{Connections, Throttle};
use crate::media::{Media, MediaEvent};
use crate::routing::Target;
use ivr::dialplan::Dialplan;
use ivr::session::{Session, Value};
use media::prompt::Library;
use store::Store;

mod addresses;
mod calls;
mod connect;
mod dialplan;
mod holding;
mod routing;
mod tcp;
mod udp;

use addresses::{Addresses, PortPool};
use calls::ActiveCall;
use tcp::accept;
use udp::receive_udp;

pub use connect::{Connect, ConnectError, Progress, Side};
pub use holding::HoldSettings;

/// What the socket tasks and the API hand the user agent loop.
enum Inbound {
    /// `socket` is the index of the UDP socket it arrived on (unused for TCP).
    Message {
        source: SocketAddr,
        link: Link,
        bytes: Vec<u8>,
        socket: usize,
        /// When it was read off the socket: the loop's queue delay, for overload control.
        read: Instant,
    },
    TcpOpened {
        peer: SocketAddr,
        writer: mpsc::Sender<Vec<u8>>,
    },
    TcpClosed {
        peer: SocketAddr,
    },
    /// Connect an agent and a customer (or hold a test call).
    Connect {
        connect: Box<Connect>,
        progress: mpsc::UnboundedSender<Progress>,
        reply: oneshot::Sender<Result<u64, ConnectError>>,
    },
    /// Hang up both calls of a connection.
    Abort {
        id: u64,
    },
    /// Where a holding caller stands, to tell them.
    Announce {
        call: CallHandle,
        vars: Vec<(String, Value)>,
        offer: bool,
    },
    /// What the runtime holds now.
    Gauges {
        reply: oneshot::Sender<Gauges>,
    },
    /// A connection's lease was renewed: its calls may be placed until `deadline`.
    Extend {
        id: u64,
        deadline: Instant,
    },
    /// The node is stopping: refuse new calls and keep-alives (see `UserAgent::drain`).
    Drain,
    /// Hang up every call (the drain's time ran out).
    HangUpAll,
    /// A reload (new calls only): the prompts and the dialplan, and the SIP settings to
    /// take from `sip` (see [`Loop::reload`]); the answer names the settings that need a
    /// restart after all.
    Reload {
        voice: Box<Voice>,
        sip: Box<SipConfig>,
        reply: oneshot::Sender<Vec<String>>,
    },
    /// A dialplan operation of a call finished.
    Ran {
        call: CallHandle,
        result: &'static str,
        vars: Vec<(String, Value)>,
    },
    /// Trace what `filter` chooses from now on (an empty one stops), or (`None`) only say
    /// what is traced; the answer is the filter in force and the trace file.
    Trace {
        filter: Option<crate::trace::Filter>,
        reply: oneshot::Sender<Result<(crate::trace::Filter, PathBuf), String>>,
    },
}

/// A call an operator places to check a trunk, a PBX route or a phone.
#[derive(Debug, Clone)]
pub struct TestCall {
    /// A SIP URI.
    pub to: String,
    /// How long to hold the call once answered.
    pub hold: Duration,
    /// Keys to press once answered, as RFC 4733 telephone-events (to reach an extension
    /// behind an IVR).
    pub keys: String,
    /// The names of prompts played to the answered call before it is connected (the agent's
    /// whisper).
    pub whisper: Vec<String>,
    /// A second call placed once the first is answered (and the whisper played), and bridged
    /// to it: the dialer's way of connecting an agent and a customer.
    pub connect_to: Option<String>,
}

/// How a test call went, for operators checking a trunk or a phone.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TestCallOutcome {
    pub answered: bool,
    /// The final SIP status of a call that was not answered (408: nothing answered at all).
    pub status: Option<u16>,
    /// How it ended: `local_hangup`, `remote_hangup`, `failed`, `no_answer` or
    /// `session_expired`.
    pub ended: &'static str,
    /// How the second call went, when one was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connected: Option<Connected>,
}

/// How the second call of a connecting test call went.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Connected {
    pub answered: bool,
    /// The final SIP status of a second call that was not answered.
    pub status: Option<u16>,
}

/// Why a call could not be placed at all.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error("`{0}` is not a SIP URI")]
    BadUri(String),
    #[error("no trunk carries `{0}`, which names no IP address to send to")]
    NoRoute(String),
    #[error("the trunk `{0}` has no address yet: its host name has not resolved")]
    Unresolved(String),
    #[error("no phone is registered as `{0}`")]
    NotRegistered(String),
    #[error("no free RTP port")]
    NoPort,
    #[error(transparent)]
    UnknownPrompt(#[from] media::prompt::UnknownPrompt),
    #[error("the dialer's lease ran out before the call could be placed")]
    TooLate,
    #[error("callbackd is shutting down")]
    Gone,
}

/// What the SIP runtime holds now: for operators, and to check that everything a call took is
/// given back when it ends.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Gauges {
    /// Calls being set up, in progress or ending.
    pub calls: usize,
    /// Dialogs and INVITE transactions the user agent keeps.
    pub dialogs: usize,
    /// Calls being connected to each other.
    pub bridges: usize,
    /// RTP ports held, by calls waiting to be answered and by calls with media.
    pub rtp_ports: usize,
    /// Server transactions held, and the bytes of the requests behind them (bounded).
    pub transactions: usize,
    pub transaction_bytes: usize,
    /// What the user agent counted, for the metrics.
    #[serde(skip)]
    pub stats: sip::ua::Stats,
}

/// The way in for the rest of callbackd: places calls through the user agent loop.
#[derive(Clone)]
pub struct Sip {
    tx: mpsc::Sender<Inbound>,
    /// `sip.ring_timeout`, for test calls.
    ring_timeout: Duration,
    /// The prompts calls play (as last reloaded).
    prompts: std::sync::Arc<arc_swap::ArcSwap<Library>>,
}

/// The prompts and the dialplan: what callers hear, and what their keys do. Loaded and
/// checked together, at start-up and at each reload: every prompt the dialplan, callers
/// holding in a queue and the dialer play is there, and every entry `sip` names is in the
/// dialplan.
pub struct Voice {
    prompts: Library,
    plan: ivr::dialplan::Dialplan,
}

impl Voice {
    pub fn load(config: &crate::config::Config) -> anyhow::Result<Voice> {
        let (media, ivr, sip) = (&config.media, &config.ivr, &config.sip);
        let prompts = crate::media::load_prompts(&media.prompts)?;
        let dialer = match config.dialer.enabled {
            true => crate::dialer::Dialer::prompts(&config.dialer).to_vec(),
            false => Vec::new(),
        };
        for (who, prompt) in holding::PROMPTS
            .iter()
            .map(|p| ("callers holding in a queue hear", *p))
            .chain(dialer.into_iter().map(|p| ("the dialer plays", p)))
        {
            anyhow::ensure!(
                prompts.get(prompt).is_ok(),
                "{who} the prompt `{prompt}`, which is not in {}",
                media.prompts.display()
            );
        }
        let plan = crate::ivr::load(&ivr.dialplan, &prompts)?;
        for entry in std::iter::once(&sip.default_entry).chain(sip.entries.values()) {
            anyhow::ensure!(
                plan.entries.contains_key(entry),
                "sip names the dialplan entry `{entry}`, which {} does not have",
                ivr.dialplan.display()
            );
        }
        Ok(Voice { prompts, plan })
    }

    /// What was loaded, in a few words.
    pub fn summary(&self) -> String {
        format!(
            "{} prompts; a dialplan of {} entries, {} nodes",
            self.prompts.len(),
            self.plan.entries.len(),
            self.plan.nodes.len()
        )
    }
}

impl Sip {
    /// Places a call to `to`, holds it for `hold` once answered (connected to `connect_to`
    /// when asked), hangs up, and says how it went.
    pub async fn test_call(&self, call: TestCall) -> Result<TestCallOutcome, PlaceError> {
        let connect = Connect {
            agent: call.to,
            agent_at: None,
            held: None,
            customer_first: false,
            keys: call.keys,
            whisper: call.whisper,
            customer: call.connect_to.map(Target::direct),
            caller_id: None,
            greeting: Vec::new(),
            confirm: None,
            not_reached: Vec::new(),
            agent_ring: self.ring_timeout,
            customer_ring: self.ring_timeout,
            deadline: None,
            hold: Some(call.hold),
            attempt: None,
        };
        let asked_to_connect = connect.customer.is_some();
        let (_, mut progress) = self.connect(connect).await.map_err(|e| e.error)?;
        let mut outcome = TestCallOutcome {
            answered: false,
            status: None,
            ended: "failed",
            connected: asked_to_connect.then_some(Connected {
                answered: false,
                status: None,
            }),
        };
        while let Some(step) = progress.recv().await {
            match step {
                Progress::Answered(Side::Agent) => outcome.answered = true,
                Progress::Left {
                    side: Side::Agent,
                    how,
                    status,
                } => (outcome.ended, outcome.status) = (how, status),
                Progress::Answered(Side::Customer) => {
                    outcome.connected = Some(Connected {
                        answered: true,
                        status: None,
                    })
                }
                Progress::Left {
                    side: Side::Customer,
                    status,
                    ..
                } => {
                    if let Some(c) = outcome.connected.as_mut().filter(|c| !c.answered) {
                        c.status = status;
                    }
                }
                Progress::Ended => break,
                Progress::Connected | Progress::NotConfirmed | Progress::TooLate => {}
            }
        }
        Ok(outcome)
    }

    /// Starts connecting two calls; the connection's id (to abort it) and its progress, which
    /// ends with [`Progress::Ended`].
    pub async fn connect(
        &self,
        connect: Connect,
    ) -> Result<(u64, mpsc::UnboundedReceiver<Progress>), ConnectError> {
        let (progress, events) = mpsc::unbounded_channel();
        let (reply, placed) = oneshot::channel();
        let gone = || ConnectError {
            side: Side::Agent,
            error: PlaceError::Gone,
        };
        self.tx
            .send(Inbound::Connect {
                connect: Box::new(connect),
                progress,
                reply,
            })
            .await
            .map_err(|_| gone())?;
        let id = placed.await.map_err(|_| gone())??;
        Ok((id, events))
    }

    /// What the runtime holds now.
    pub async fn gauges(&self) -> Result<Gauges, PlaceError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Inbound::Gauges { reply })
            .await
            .map_err(|_| PlaceError::Gone)?;
        answer.await.map_err(|_| PlaceError::Gone)
    }

    /// Hangs up both calls of a connection.
    pub async fn abort(&self, id: u64) {
        let _ = self.tx.send(Inbound::Abort { id }).await;
    }

    /// Moves a connection's deadline (its lease was renewed).
    pub async fn extend(&self, id: u64, deadline: Instant) {
        let _ = self.tx.send(Inbound::Extend { id, deadline }).await;
    }

    /// The node is stopping: new calls and OPTIONS get 503 from now on; calls in progress go
    /// on.
    pub async fn drain(&self) {
        let _ = self.tx.send(Inbound::Drain).await;
    }

    /// Hangs up every call (BYE, or CANCEL for one still ringing).
    pub async fn hang_up_all(&self) {
        let _ = self.tx.send(Inbound::HangUpAll).await;
    }

    /// Sets the SIP trace (see [`Inbound::Trace`]).
    pub async fn trace(
        &self,
        filter: Option<crate::trace::Filter>,
    ) -> Result<(crate::trace::Filter, PathBuf), String> {
        let (reply, answer) = oneshot::channel();
        let gone = || "callbackd is shutting down".to_owned();
        self.tx
            .send(Inbound::Trace { filter, reply })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Whether there is a prompt of this name.
    pub fn has_prompt(&self, name: &str) -> bool {
        self.prompts.load().get(name).is_ok()
    }

    /// Puts reloaded prompts, dialplan and SIP settings in place for new calls; calls in
    /// progress keep what they started with. The settings that need a restart after all.
    pub async fn reload(&self, voice: Voice, sip: SipConfig) -> Result<Vec<String>, String> {
        self.prompts
            .store(std::sync::Arc::new(voice.prompts.clone()));
        let (reply, answer) = oneshot::channel();
        let gone = || "callbackd is shutting down".to_owned();
        self.tx
            .send(Inbound::Reload {
                voice: Box::new(voice),
                sip: Box::new(sip),
                reply,
            })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())
    }
}

/// The addresses SIP ended up on (ports chosen by the system when the config says 0).
pub struct Bound {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    /// Phones registering (`true`) and unregistering, by user.
    pub registrations: mpsc::UnboundedReceiver<(String, bool)>,
    pub sip: Sip,
}

/// Binds the SIP sockets and starts the user agent; runs until the process ends.
pub async fn start(
    config: &crate::config::Config,
    tcp_connections: usize,
    routes: crate::routing::Shared,
    operations: std::sync::Arc<Operations>,
    hints: crate::hints::Hints,
    records: crate::records::Recorder,
) -> anyhow::Result<Bound> {
    let (sip, media, ivr) = (config.sip.clone(), config.media.clone(), &config.ivr);
    let hold_settings = HoldSettings {
        node: config.dialer.node_name(),
        every: config.dialer.hold_announcement.to_std().unwrap_or_default(),
        hints,
    };
    let trace = crate::trace::Trace::new(
        config.log.sip_trace.clone(),
        config.log.sip_trace_max_mb * 1024 * 1024,
    );
    let store = operations.callbacks.store.clone();
    let (tx, rx) = mpsc::channel::<Inbound>(4096);
    let Voice { prompts, plan } = Voice::load(config)?;
    let library = prompts.clone();
    info!(prompts = prompts.len(), dialplan = %ivr.dialplan.display(), nodes = plan.nodes.len(), "prompts and dialplan loaded");
    let (media_tx, media_rx) = mpsc::unbounded_channel();
    let runtime =
        Media::start(media.pacing_threads, media_tx).context("starting the RTP pacing threads")?;
    let mut udp = Vec::new();
    for address in &sip.udp {
        let socket = UdpSocket::bind(address)
            .await
            .with_context(|| format!("binding SIP over UDP to {address}"))?;
        udp.push(std::sync::Arc::new(socket));
    }
    let mut tcp_bound = Vec::new();
    for address in &sip.tcp {
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("binding SIP over TCP to {address}"))?;
        tcp_bound.push(listener.local_addr()?);
        let connections = Connections::new(
            tcp_connections,
            sip.per_source.tcp_connections,
            sip.trusted.clone(),
        );
        tokio::spawn(accept(listener, tx.clone(), connections));
    }
    let udp_bound: Vec<SocketAddr> = udp
        .iter()
        .map(|s| s.local_addr())
        .collect::<Result<_, _>>()?;
    for (index, socket) in udp.iter().enumerate() {
        tokio::spawn(receive_udp(socket.clone(), index, tx.clone()));
    }
    let addresses = Addresses::new(&sip, &media, &udp_bound, &tcp_bound)?;
    let config = UaConfig {
        timers: sip.timers(),
        advertised: addresses.advertise.clone(),
        product: format!("callbackd/{}", env!("CARGO_PKG_VERSION")),
        max_calls: sip.max_calls,
        max_calls_per_second: sip.max_calls_per_second,
        trusted: sip.trusted.clone(),
        per_source: sip.per_source.admission(),
        registrations: routes.load().registrations(),
        registrar: (!sip.phones.is_empty()).then(|| {
            let mut secret = vec![0; 32];
            StdRng::from_entropy().fill_bytes(&mut secret);
            sip::registrar::Settings {
                realm: sip.realm.clone(),
                users: sip
                    .phones
                    .iter()
                    .map(|(u, p)| (u.clone(), p.expose().to_owned()))
                    .collect(),
                secret,
                min_expires: 60,
                max_expires: 3600,
            }
        }),
    };
    let mut ua = UserAgent::new(config, Box::new(StdRng::from_entropy()));
    if !sip.phones.is_empty() {
        restore_bindings(&mut ua, &store).await?;
    }
    let udp = udp
        .into_iter()
        .map(|s| (s.local_addr().is_ok_and(|a| a.is_ipv4()), s))
        .collect();
    let ring_timeout = sip.ring_timeout.to_std().unwrap_or(Duration::from_secs(30));
    let (registrations, registrations_rx) = mpsc::unbounded_channel();
    let state = Loop {
        ua,
        bridges: HashMap::new(),
        next_bridge: 1,
        holding: HashMap::new(),
        hold_settings,
        holds_renewed: Instant::now(),
        udp,
        tcp: HashMap::new(),
        ports: PortPool::new(&media),
        addresses,
        routes,
        qualify_due: HashMap::new(),
        unanswered: Default::default(),
        calls: HashMap::new(),
        sip,
        rng: StdRng::from_entropy(),
        ringing: Vec::new(),
        store,
        media_config: media,
        media: runtime,
        prompts,
        plan: std::sync::Arc::new(plan),
        operations,
        tx: tx.clone(),
        udp_peers: HashMap::new(),
        registrations,
        full_log: Throttle::new(Duration::from_secs(10)),
        queue: QueueDelay {
            since: Instant::now(),
            shortest: Duration::MAX,
            overloaded: false,
        },
        overload_log: Throttle::new(Duration::from_secs(10)),
        trace,
        tcp_bound: tcp_bound.clone(),
        records,
        closing: HashMap::new(),
    };
    tokio::spawn(run(state, rx, media_rx));
    Ok(Bound {
        udp: udp_bound,
        tcp: tcp_bound,
        sip: Sip {
            tx,
            ring_timeout,
            prompts: std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(library)),
        },
        registrations: registrations_rx,
    })
}

/// Puts back the registrar bindings kept in the store, so phones stay registered across a
/// restart.
async fn restore_bindings(ua: &mut UserAgent, store: &Store) -> anyhow::Result<()> {
    let (now, wall) = (Instant::now(), chrono::Utc::now());
    let kept = store
        .bindings(wall)
        .await
        .context("loading registrar bindings")?;
    let count = kept.len();
    for b in kept {
        let (Ok(source), Some(link)) = (b.source.parse(), link_named(&b.transport)) else {
            warn!(
                user = b.user,
                "skipping a stored binding that does not read back"
            );
            continue;
        };
        let left = (b.expires_at - wall).to_std().unwrap_or_default();
        let binding = sip::registrar::Binding {
            contact: b.contact,
            source,
            link,
            expires_at: now + left,
        };
        ua.restore_binding(b.user, binding);
    }
    info!(count, "registrar bindings restored");
    Ok(())
}

fn link_named(name: &str) -> Option<Link> {
    match name {
        "udp" => Some(Link::Udp),
        "tcp" => Some(Link::Tcp),
        _ => None,
    }
}

struct Loop {
    ua: UserAgent,
    /// Calls being connected, by connection id.
    bridges: HashMap<u64, connect::Bridge>,
    next_bridge: u64,
    /// Calls holding in a queue, by hold ID.
    holding: HashMap<uuid::Uuid, CallHandle>,
    hold_settings: HoldSettings,
    /// When this node's holds were last kept alive in the store.
    holds_renewed: Instant,
    /// The UDP sockets, with whether each is IPv4 (sends go out of one of the same family).
    udp: Vec<(bool, std::sync::Arc<UdpSocket>)>,
    tcp: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    ports: PortPool,
    addresses: Addresses,
    /// Trunks and the rules choosing them, for the calls callbackd places.
    routes: crate::routing::Shared,
    /// Keep-alives: when each trunk's next are due, and the targets whose last is unanswered.
    qualify_due: HashMap<String, Instant>,
    unanswered: std::collections::HashSet<SocketAddr>,
    calls: HashMap<CallHandle, ActiveCall>,
    sip: SipConfig,
    rng: StdRng,
    /// Calls waiting for their ring time to pass before they are answered.
    ringing: Vec<(Instant, CallHandle, Bytes)>,
    store: Store,
    media_config: MediaConfig,
    media: Media<CallHandle>,
    prompts: Library,
    plan: std::sync::Arc<Dialplan>,
    operations: std::sync::Arc<Operations>,
    /// For operations running on their own to report back.
    tx: mpsc::Sender<Inbound>,
    /// Which UDP socket each peer last sent to.
    udp_peers: HashMap<SocketAddr, usize>,
    /// Phones registering (`true`) and unregistering, by user, for the dialer.
    registrations: mpsc::UnboundedSender<(String, bool)>,
    /// A full transaction table is logged now and then, not per request.
    full_log: Throttle,
    /// How long messages wait to be handled (overload control), and how often overload is
    /// logged.
    queue: QueueDelay,
    overload_log: Throttle,
    /// The SIP trace, and the TCP listening addresses it names as ours.
    trace: crate::trace::Trace,
    tcp_bound: Vec<SocketAddr>,
    /// Where ended calls' records go, and those waiting for their leg's RTP totals.
    records: crate::records::Recorder,
    closing: HashMap<CallHandle, store::CallRecord>,
}

async fn run(
    mut state: Loop,
    mut rx: mpsc::Receiver<Inbound>,
    mut media_rx: mpsc::UnboundedReceiver<MediaEvent<CallHandle>>,
) {
    // Start what runs on its own (registering with the trunk).
    state.ua.handle_timeout(Instant::now());
    state.drain().await;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let deadline = state
            .ua
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + std::time::Duration::from_secs(3600));
        tokio::select! {
            inbound = rx.recv() => match inbound {
                Some(Inbound::Message { source, link, bytes, socket, read }) => {
                    if link == Link::Udp {
                        state.remember_socket(source, socket);
                    }
                    let now = Instant::now();
                    state.queue_delay(now, now.saturating_duration_since(read));
                    if state.trace.is_on() {
                        let local = state.local_address(source, link, Some(socket));
                        state.trace.record(source, local, source, &bytes);
                    }
                    state.ua.handle_received(now, read, source, link, &bytes)
                }
                Some(Inbound::TcpOpened { peer, writer }) => { state.tcp.insert(peer, writer); }
                Some(Inbound::TcpClosed { peer }) => { state.tcp.remove(&peer); }
                Some(Inbound::Connect { connect, progress, reply }) => {
                    let _ = reply.send(state.connect(Instant::now(), *connect, progress));
                }
                Some(Inbound::Abort { id }) => state.abort(Instant::now(), id),
                Some(Inbound::Extend { id, deadline }) => state.extend(id, deadline),
                Some(Inbound::Gauges { reply }) => { let _ = reply.send(state.gauges()); }
                Some(Inbound::Announce { call, vars, offer }) => state.announce(call, vars, offer),
                Some(Inbound::Ran { call, result, vars }) => state.ran(Instant::now(), call, result, vars),
                Some(Inbound::Reload { voice, sip, reply }) => { let _ = reply.send(state.reload(*voice, *sip)); }
                Some(Inbound::Trace { filter, reply }) => { let _ = reply.send(state.set_trace(filter)); }
                Some(Inbound::Drain) => state.ua.drain(),
                Some(Inbound::HangUpAll) => {
                    let now = Instant::now();
                    for call in state.calls.keys().copied().collect::<Vec<_>>() {
                        state.end_call(now, call);
                    }
                }
                None => return,
            },
            Some(event) = media_rx.recv() => state.on_media(Instant::now(), event),
            _ = tokio::time::sleep_until(deadline) => state.ua.handle_timeout(Instant::now()),
            _ = tick.tick() => state.housekeeping(Instant::now()),
        }
        state.drain().await;
    }
}

/// Overload is a standing queue, as CoDel sees it: when every message handled over an interval
/// has waited longer than the target, the loop is not keeping up, and new calls are refused (a
/// stateless 503) until an interval goes by in which some message waited less. A burst that
/// the loop clears within the interval is not overload. Both are well under T1, so the calls
/// taken get their 100 Trying before their callers retransmit.
const OVERLOAD_TARGET: Duration = Duration::from_millis(20);
const OVERLOAD_INTERVAL: Duration = Duration::from_millis(100);

/// The shortest wait of the messages handled in the current interval.
struct QueueDelay {
    since: Instant,
    shortest: Duration,
    overloaded: bool,
}

impl Loop {
    /// Follows how long messages wait before the loop handles them, and tells the user agent
    /// when the node is overloaded (and when it no longer is).
    fn queue_delay(&mut self, now: Instant, waited: Duration) {
        let q = &mut self.queue;
        q.shortest = q.shortest.min(waited);
        if now.duration_since(q.since) < OVERLOAD_INTERVAL {
            return;
        }
        let overloaded = q.shortest > OVERLOAD_TARGET;
        let shortest = q.shortest;
        (q.since, q.shortest) = (now, Duration::MAX);
        if overloaded != q.overloaded {
            q.overloaded = overloaded;
            self.ua.set_overloaded(overloaded);
            if self.overload_log.ready(now) {
                if overloaded {
                    warn!(waited_ms = shortest.as_millis() as u64, "overloaded: new calls get 503 until SIP messages are handled promptly again (logged every 10 s)");
                } else {
                    info!("no longer overloaded: new calls are taken again");
                }
            }
        }
    }

    /// Carries out what the user agent asks: messages out over their transport, events to
    /// call control.
    /// A new call's record, filled in as the call goes.
    fn new_record(
        &mut self,
        call_id: String,
        direction: &str,
        from: Option<String>,
        to: String,
    ) -> store::CallRecord {
        let now = chrono::Utc::now();
        // Time first (a UUIDv7), so records go into the store's index in order, at its end,
        // where random IDs landed on a random page each.
        let random: [u8; 10] = rand::Rng::gen(&mut self.rng);
        let millis = u64::try_from(now.timestamp_millis()).unwrap_or_default();
        store::CallRecord {
            id: uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid(),
            call_id,
            node: self.hold_settings.node.clone(),
            direction: direction.to_owned(),
            from: from.unwrap_or_default(),
            to,
            started_at: now,
            ended_at: now,
            ..Default::default()
        }
    }

    /// Where a message to or from `peer` leaves or reaches us (for the trace): the UDP
    /// socket it came in on, the one it goes out of, or a TCP listening address.
    fn local_address(&self, peer: SocketAddr, link: Link, socket: Option<usize>) -> SocketAddr {
        let unknown = SocketAddr::new(peer.ip(), 0);
        match link {
            Link::Udp => socket
                .and_then(|i| self.udp.get(i).map(|(_, s)| s.clone()))
                .or_else(|| self.udp_socket(peer))
                .and_then(|s| s.local_addr().ok())
                .unwrap_or(unknown),
            Link::Tcp => self
                .tcp_bound
                .iter()
                .find(|a| a.is_ipv4() == peer.is_ipv4())
                .copied()
                .unwrap_or(unknown),
        }
    }

    fn set_trace(
        &mut self,
        filter: Option<crate::trace::Filter>,
    ) -> Result<(crate::trace::Filter, PathBuf), String> {
        if let Some(filter) = filter {
            self.trace.set(filter).map_err(|e| {
                format!(
                    "cannot open the trace file {}: {e}",
                    self.trace.path().display()
                )
            })?;
            info!(filter = ?self.trace.filter(), path = %self.trace.path().display(), "SIP trace set");
        }
        Ok((self.trace.filter().clone(), self.trace.path().to_owned()))
    }

    async fn drain(&mut self) {
        while let Some(output) = self.ua.poll_output() {
            if let Output::Send { to, link, bytes } = &output {
                if self.trace.is_on() {
                    let local = self.local_address(*to, *link, None);
                    self.trace.record(local, *to, *to, bytes);
                }
            }
            match output {
                Output::Send {
                    to,
                    link: Link::Udp,
                    bytes,
                } => {
                    if let Some(socket) = self.udp_socket(to) {
                        udp::send_udp(&socket, to, &bytes).await;
                    }
                }
                Output::Send {
                    to,
                    link: Link::Tcp,
                    bytes,
                } => self.send_tcp(to, bytes),
                Output::Event(event) => self.on_event(event),
            }
        }
    }

    fn gauges(&self) -> Gauges {
        Gauges {
            calls: self.calls.len(),
            dialogs: self.ua.calls(),
            bridges: self.bridges.len(),
            rtp_ports: self.calls.values().filter(|a| a.rtp.is_some()).count() + self.media.legs(),
            transactions: self.ua.transactions().0,
            transaction_bytes: self.ua.transactions().1,
            stats: self.ua.stats().clone(),
        }
    }

    /// Takes the reloaded prompts and dialplan, and of `sip` what new calls use: the entries,
    /// the caller ID, ringing, early media, the longest call, and the phones. What needs a
    /// restart after all: phones on a node that started with none (it has no registrar).
    fn reload(&mut self, voice: Voice, sip: SipConfig) -> Vec<String> {
        self.prompts = voice.prompts;
        self.plan = std::sync::Arc::new(voice.plan);
        let mut restart = Vec::new();
        let phones = sip
            .phones
            .iter()
            .map(|(user, password)| (user.clone(), password.expose().to_owned()))
            .collect();
        if self.ua.set_phones(phones) {
            self.sip.phones = sip.phones;
        } else {
            restart.push("sip.phones (this node started with none)".to_owned());
        }
        self.sip.entries = sip.entries;
        self.sip.default_entry = sip.default_entry;
        self.sip.caller_id = sip.caller_id;
        self.sip.ring_time = sip.ring_time;
        self.sip.early_media = sip.early_media;
        self.sip.max_call_duration = sip.max_call_duration;
        restart
    }

    /// Answers calls whose ring time is over and hangs up calls past the longest duration.
    fn housekeeping(&mut self, now: Instant) {
        self.qualify_trunks(now);
        // A registering trunk given by name registers where the name resolves now.
        for registration in self.routes.load().registrations() {
            if let Some(registrar) = registration.registrar {
                self.ua.set_registrar(now, &registration.trunk, registrar);
            }
        }
        self.bridge_timers(now);
        self.holding_housekeeping(now);
        let due: Vec<(CallHandle, Bytes)> = self
            .ringing
            .iter()
            .filter(|(at, _, _)| *at <= now)
            .map(|(_, call, body)| (*call, body.clone()))
            .collect();
        self.ringing.retain(|(at, _, _)| *at > now);
        for (call, body) in due {
            self.ua.answer(now, call, body);
        }
        // Dialplan timeouts (a caller who stopped typing).
        let due: Vec<CallHandle> = self
            .calls
            .iter()
            .filter(|(_, a)| {
                a.session
                    .as_ref()
                    .and_then(Session::poll_timeout)
                    .is_some_and(|t| t <= now)
            })
            .map(|(c, _)| *c)
            .collect();
        for call in due {
            if let Some(session) = self.calls.get_mut(&call).and_then(|a| a.session.as_mut()) {
                session.handle_timeout(now);
            }
            self.drive(now, call);
        }
        let longest = self.sip.max_call_duration.to_std().unwrap_or_default();
        for (call, active) in &mut self.calls {
            if !active.hanging_up && active.hang_up_at.is_some_and(|at| at <= now) {
                active.hanging_up = true;
                self.ua.hang_up(now, *call);
            }
            if !active.hanging_up && now.duration_since(active.started) >= longest {
                info!(%call, call_id = %active.record.call_id, "call reached sip.max_call_duration; hanging up");
                active.hanging_up = true;
                self.ua.hang_up(now, *call);
            }
        }
    }
}
