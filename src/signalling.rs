//! The SIP runtime: UDP and TCP sockets, the RTP port pool, and the loop that pumps the
//! sans-IO user agent (`sip::ua`). It holds no protocol logic of its own.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use rand::{rngs::StdRng, RngCore, SeedableRng};
use sip::advertise::{Advertise, Told};
use sip::sdp::{self, SessionDescription};
use sip::ua::{
    CallEvent, CallHandle, Config as UaConfig, Credentials, Dial, Link, Output, UserAgent,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::config::{IvrConfig, MediaConfig, SipConfig};
use crate::ivr::{Caller, Operations};
use crate::listeners::{next_connection, Connections, Throttle};
use crate::media::{Media, MediaEvent};
use ivr::dialplan::Dialplan;
use ivr::session::{Action, Clip, Session, Value};
use media::g711::Law;
use media::leg::{Leg, LegEvent};
use media::playout::Item;
use media::prompt::Library;
use media::rtp::{self, PayloadTypes};
use store::Store;

mod connect;
mod holding;

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
    /// Load the dialplan again (new calls only); the answer is its summary or what is wrong.
    Reload {
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// A dialplan operation of a call finished.
    Ran {
        call: CallHandle,
        result: &'static str,
        vars: Vec<(String, Value)>,
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
    #[error("no sip.outbound_proxy is set and `{0}` names no IP address to send to")]
    NoRoute(String),
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
#[derive(Debug, Clone, Copy, serde::Serialize)]
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
}

/// The way in for the rest of callbackd: places calls through the user agent loop.
#[derive(Clone)]
pub struct Sip {
    tx: mpsc::Sender<Inbound>,
    /// `sip.ring_timeout`, for test calls.
    ring_timeout: Duration,
    /// The prompts calls play.
    prompts: Library,
    /// `sip.realm`: URIs at it name phones registered here.
    realm: String,
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
            customer: call.connect_to,
            caller_id: None,
            greeting: Vec::new(),
            confirm: None,
            not_reached: Vec::new(),
            agent_ring: self.ring_timeout,
            customer_ring: self.ring_timeout,
            deadline: None,
            hold: Some(call.hold),
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

    /// Whether `uri` names a phone registered with callbackd (its host is `sip.realm`).
    pub fn is_registered_phone(&self, uri: &str) -> bool {
        sip::uri::Uri::parse(uri).is_ok_and(|u| u.host.eq_ignore_ascii_case(&self.realm))
    }

    /// Whether there is a prompt of this name.
    pub fn has_prompt(&self, name: &str) -> bool {
        self.prompts.get(name).is_ok()
    }

    /// Hangs up both calls of a connection.
    pub async fn abort(&self, id: u64) {
        let _ = self.tx.send(Inbound::Abort { id }).await;
    }

    /// Moves a connection's deadline (its lease was renewed).
    pub async fn extend(&self, id: u64, deadline: Instant) {
        let _ = self.tx.send(Inbound::Extend { id, deadline }).await;
    }

    /// Loads the dialplan file again for new calls; calls in progress keep the one they
    /// started with, and a dialplan with problems is refused (the old one stays).
    pub async fn reload(&self) -> Result<String, String> {
        let (reply, answer) = oneshot::channel();
        let gone = || "callbackd is shutting down".to_owned();
        self.tx
            .send(Inbound::Reload { reply })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// Even RTP ports from the configured range; a port is held by a bound socket for as long as
/// its call lasts. Ports are taken at random, so the next call's port cannot be guessed from
/// this one's (packets sprayed at it would only meet strict learning, but need not find it).
struct PortPool {
    first: u16,
    last: u16,
}

impl PortPool {
    fn new(media: &MediaConfig) -> PortPool {
        PortPool {
            first: media.rtp_ports.0 + media.rtp_ports.0 % 2,
            last: media.rtp_ports.1,
        }
    }

    /// Binds a free even port on `ip`: a few at random, then every one in turn from a random
    /// start, so a nearly full range still finds its last free port.
    fn allocate(&mut self, rng: &mut impl RngCore, ip: IpAddr) -> Option<std::net::UdpSocket> {
        // In u32: the range may reach 65535.
        let span = (u32::from(self.last) - u32::from(self.first)) / 2 + 1;
        let port = |i: u32| (u32::from(self.first) + 2 * (i % span)) as u16;
        let start = rng.next_u32();
        (0..8)
            .map(|_| port(rng.next_u32()))
            .chain((0..span).map(|i| port(start.wrapping_add(i))))
            .find_map(|p| std::net::UdpSocket::bind(SocketAddr::new(ip, p)).ok())
    }
}

struct ActiveCall {
    call_id: String,
    started: Instant,
    hanging_up: bool,
    /// Our SDP offer (a call we placed, or an INVITE that came without one), to settle the
    /// media with the answer.
    offer: Option<SessionDescription>,
    /// The connection this call is part of, and which side it is.
    bridge: Option<(u64, Side)>,
    /// For a call holding in a queue: its place and what it hears.
    holding: Option<holding::Holding>,
    /// When callbackd hangs the call up (a test call's hold).
    hang_up_at: Option<Instant>,
    /// The RTP socket holding the port named in our SDP, until the call is answered and the
    /// media runtime takes it.
    rtp: Option<std::net::UdpSocket>,
    /// What offer and answer settled.
    media: Option<CallMedia>,
    /// Whether the media runtime has the call.
    in_media: bool,
    /// For an inbound call: the dialplan entry it starts at and who is calling; then the
    /// dialplan session once the call is answered.
    ivr: Option<(String, String)>,
    session: Option<Session>,
    /// Failed look-ups so far in this call.
    failures: u32,
    /// Where the call's INVITE came from (placed calls: where it went).
    source: SocketAddr,
    /// Who the limiter counts for the call's look-ups and bookings (see `limits::client_of`).
    client: String,
    /// When the call began (its INVITE came or went).
    arrived: chrono::DateTime<chrono::Utc>,
}

/// A call's media as offer and answer settled it.
#[derive(Debug, Clone, Copy)]
struct CallMedia {
    types: PayloadTypes,
    law: Law,
    /// The far end's RTP address from its SDP (latching may move it).
    remote: SocketAddr,
}

impl CallMedia {
    fn from(m: &sdp::NegotiatedMedia) -> CallMedia {
        CallMedia {
            types: PayloadTypes {
                audio: m.payload_type,
                telephone_event: m.telephone_event,
            },
            law: match m.codec {
                sdp::Codec::Pcmu => Law::Mu,
                sdp::Codec::Pcma => Law::A,
            },
            remote: m.remote_rtp,
        }
    }
}

/// Whether the far end is behind NAT: its SDP names a private address while its signalling
/// comes from a public one, so its RTP will come from an address the SDP does not name.
fn behind_nat(sdp: IpAddr, signalling: IpAddr) -> bool {
    fn private(ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => {
                let [a, b, ..] = v4.octets();
                v4.is_private()
                    || v4.is_link_local()
                    || v4.is_unspecified()
                    || (a == 100 && (64..128).contains(&b))
            }
            IpAddr::V6(v6) => {
                let first = v6.segments()[0];
                (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80 || v6.is_unspecified()
            }
        }
    }
    private(sdp) && !private(signalling)
}

/// An SDP body, parsed.
fn parse_sdp(body: &[u8]) -> Result<SessionDescription, sdp::SdpError> {
    let text = std::str::from_utf8(body).map_err(|_| sdp::SdpError::Empty)?;
    SessionDescription::parse(text)
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
    tcp_connections: usize,
    sip: SipConfig,
    media: MediaConfig,
    ivr: &IvrConfig,
    operations: std::sync::Arc<Operations>,
    hold_settings: HoldSettings,
) -> anyhow::Result<Bound> {
    let store = operations.callbacks.store.clone();
    let (tx, rx) = mpsc::channel::<Inbound>(4096);
    let prompts = crate::media::load_prompts(&media.prompts)?;
    info!(count = prompts.len(), dir = %media.prompts.display(), "prompts loaded");
    if let Some(missing) = holding::PROMPTS.iter().find(|p| prompts.get(p).is_err()) {
        anyhow::bail!(
            "callers holding in a queue hear the prompt `{missing}`, which is not in {}",
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
    info!(dialplan = %ivr.dialplan.display(), nodes = plan.nodes.len(), "dialplan loaded");
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
        trunk: match (&sip.trunk_domain, sip.outbound_proxy, &sip.trunk_username) {
            (Some(domain), Some(registrar), Some(user)) => Some(sip::ua::TrunkRegistration {
                registrar,
                link: Link::Udp,
                domain: domain.clone(),
                user: user.clone(),
                credentials: Some(Credentials {
                    username: user.clone(),
                    password: sip
                        .trunk_password
                        .as_ref()
                        .map(|p| p.expose().to_owned())
                        .unwrap_or_default(),
                }),
                expires: 3600,
            }),
            _ => None,
        },
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
    let library = prompts.clone();
    let realm = sip.realm.clone();
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
        calls: HashMap::new(),
        sip,
        rng: StdRng::from_entropy(),
        ringing: Vec::new(),
        store,
        media_config: media,
        media: runtime,
        prompts,
        plan: std::sync::Arc::new(plan),
        ivr_config: ivr.clone(),
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
    };
    tokio::spawn(run(state, rx, media_rx));
    Ok(Bound {
        udp: udp_bound,
        tcp: tcp_bound,
        sip: Sip {
            tx,
            ring_timeout,
            prompts: library,
            realm,
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

/// Where callbackd binds its media and what it tells peers, which behind NAT or on a host with
/// several interfaces are not the same (see docs/networks.md).
struct Addresses {
    /// Via, Contact and the SDP's address, by where the peer is.
    advertise: Advertise,
    /// The address RTP sockets bind.
    media_bind: IpAddr,
}

impl Addresses {
    fn new(
        sip: &SipConfig,
        media: &MediaConfig,
        udp: &[SocketAddr],
        tcp: &[SocketAddr],
    ) -> anyhow::Result<Addresses> {
        let first = *udp
            .first()
            .or(tcp.first())
            .context("SIP needs at least one address")?;
        let port = |bound: &[SocketAddr]| bound.first().map_or(first.port(), SocketAddr::port);
        let told = match &sip.advertised {
            Some(told) => told.clone(),
            None => {
                anyhow::ensure!(
                    !first.ip().is_unspecified(),
                    "SIP listens on {first}: set sip.advertised to the address peers reach"
                );
                let host = match first.ip() {
                    IpAddr::V4(ip) => ip.to_string(),
                    IpAddr::V6(ip) => format!("[{ip}]"),
                };
                Told { host, port: None }
            }
        };
        let mut advertise = Advertise::new(told, port(udp), port(tcp));
        for (network, told) in &sip.advertised_to {
            advertise = advertise.with_network(*network, told.clone());
        }
        let media_bind = media.address.unwrap_or(first.ip());
        if media_bind.is_unspecified() {
            if let Some(name) = advertise.hosts().find(|h| {
                h.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .is_err()
            }) {
                anyhow::bail!(
                    "sip.advertised names `{name}`, not an address, and RTP binds {media_bind}: \
                     set media.address, or advertise an address, for the SDP"
                );
            }
        }
        Ok(Addresses {
            advertise,
            media_bind,
        })
    }

    /// The address in the SDP of a call with `peer`.
    fn sdp(&self, peer: IpAddr) -> IpAddr {
        self.advertise.media(peer).unwrap_or(self.media_bind)
    }
}

async fn receive_udp(socket: std::sync::Arc<UdpSocket>, index: usize, tx: mpsc::Sender<Inbound>) {
    let mut buffer = vec![0; 65_535];
    loop {
        match socket.recv_from(&mut buffer).await {
            Ok((n, source)) => {
                let message = Inbound::Message {
                    source,
                    link: Link::Udp,
                    bytes: buffer[..n].to_vec(),
                    socket: index,
                    read: Instant::now(),
                };
                if tx.send(message).await.is_err() {
                    return;
                }
            }
            // ICMP port unreachable from an earlier send surfaces here on some systems.
            Err(e) => debug!(error = %e, "UDP receive error"),
        }
    }
}

/// A connection that sends nothing for this long is closed (PBXs send keep-alives).
const TCP_IDLE: Duration = Duration::from_secs(300);
/// Once a message has begun, the rest of it must come within this (a slow sender holds
/// nothing for long).
const TCP_MESSAGE_TIME: Duration = Duration::from_secs(10);

async fn accept(
    listener: TcpListener,
    tx: mpsc::Sender<Inbound>,
    connections: std::sync::Arc<Connections>,
) {
    let (mut refused_log, mut error_log) = (
        Throttle::new(Duration::from_secs(10)),
        Throttle::new(Duration::from_secs(10)),
    );
    loop {
        let (stream, peer) = next_connection(&listener, "SIP over TCP", &mut error_log).await;
        let counted = match connections.admit(peer.ip()) {
            Ok(counted) => counted,
            Err(full) => {
                if refused_log.ready(Instant::now()) {
                    warn!(%peer, total = full.all, from_source = full.from_source, "too many SIP connections over TCP; closing new ones (logged every 10 s)");
                }
                continue;
            }
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            connection(stream, peer, tx).await;
            drop(counted);
        });
    }
}

/// One TCP connection: frames messages by Content-Length; a framing error gets the message
/// handed over whole (so a request still gets its 400) and closes the connection.
async fn connection(stream: TcpStream, peer: SocketAddr, tx: mpsc::Sender<Inbound>) {
    let (mut reader, mut writer) = stream.into_split();
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(256);
    if tx
        .send(Inbound::TcpOpened {
            peer,
            writer: out_tx,
        })
        .await
        .is_err()
    {
        return;
    }
    let write = tokio::spawn(async move {
        while let Some(bytes) = out_rx.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    let mut buffer = Vec::with_capacity(8192);
    let mut chunk = vec![0; 16_384];
    // The next message's length once its head is in, and how far the search for the end of
    // the head has looked: each byte is looked at about once however slowly the bytes come.
    let mut length: Option<usize> = None;
    let mut searched: usize = 0;
    // When the message now arriving began: it must be whole within TCP_MESSAGE_TIME.
    let mut begun: Option<Instant> = None;
    'read: loop {
        let wait = begun.map_or(TCP_IDLE, |at| TCP_MESSAGE_TIME.saturating_sub(at.elapsed()));
        match tokio::time::timeout(wait, reader.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => buffer.extend_from_slice(&chunk[..n]),
        }
        loop {
            if length.is_none() {
                let from = searched.saturating_sub(3);
                let head_done = buffer[from..].windows(2).any(|w| w == b"\n\n")
                    || buffer[from..].windows(4).any(|w| w == b"\r\n\r\n");
                if !head_done && buffer.len() <= sip::parse::MAX_HEAD {
                    searched = buffer.len();
                    break;
                }
                match sip::parse::frame(&buffer) {
                    Ok(Some(total)) => length = Some(total),
                    Ok(None) => {
                        searched = buffer.len();
                        break;
                    }
                    Err(_) => {
                        // A framing error: hand it over whole (a request still gets its 400),
                        // then close, since the stream can no longer be followed.
                        let bytes = std::mem::take(&mut buffer);
                        let _ = tx
                            .send(Inbound::Message {
                                source: peer,
                                link: Link::Tcp,
                                bytes,
                                socket: 0,
                                read: Instant::now(),
                            })
                            .await;
                        break 'read;
                    }
                }
            }
            match length {
                Some(total) if buffer.len() >= total => {
                    let bytes: Vec<u8> = buffer.drain(..total).collect();
                    (length, searched, begun) = (None, 0, None);
                    if tx
                        .send(Inbound::Message {
                            source: peer,
                            link: Link::Tcp,
                            bytes,
                            socket: 0,
                            read: Instant::now(),
                        })
                        .await
                        .is_err()
                    {
                        break 'read;
                    }
                }
                _ => break,
            }
        }
        if !buffer.is_empty() && begun.is_none() {
            begun = Some(Instant::now());
        }
    }
    let _ = tx.send(Inbound::TcpClosed { peer }).await;
    // Let queued answers go out before the connection closes.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    write.abort();
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
    ivr_config: IvrConfig,
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
                Some(Inbound::Reload { reply }) => { let _ = reply.send(state.reload()); }
                None => return,
            },
            Some(event) = media_rx.recv() => state.on_media(Instant::now(), event),
            _ = tokio::time::sleep_until(deadline) => state.ua.handle_timeout(Instant::now()),
            _ = tick.tick() => state.housekeeping(Instant::now()),
        }
        state.drain().await;
    }
}

/// Peers remembered for the choice of reply socket; past this many the memory starts over.
const MAX_UDP_PEERS: usize = 65_536;

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

    fn on_media(&mut self, now: Instant, event: MediaEvent<CallHandle>) {
        match event {
            MediaEvent::Silent { call } => {
                if let Some(active) = self.calls.get_mut(&call).filter(|a| !a.hanging_up) {
                    warn!(%call, call_id = %active.call_id, "no RTP from the far end for media.rtp_timeout; hanging up");
                    active.hanging_up = true;
                    self.ua.hang_up(now, call);
                }
            }
            MediaEvent::Leg {
                call,
                event: LegEvent::Key { key, source },
            } => {
                // Keys are confirmation IDs and verification digits: not for the info log.
                debug!(%call, %key, ?source, "key pressed");
                if self.holding_key(now, call, key) {
                    return;
                }
                let Some(active) = self.calls.get_mut(&call) else {
                    return;
                };
                if let Some(session) = active.session.as_mut() {
                    session.handle_key(now, key);
                    self.drive(now, call);
                } else if let Some((id, side)) = active.bridge {
                    self.bridge_key(now, id, side, key);
                }
            }
            MediaEvent::Leg {
                call,
                event: LegEvent::PlayoutEnded { id, how },
            } if self.calls.get(&call).is_some_and(|a| a.session.is_some()) => {
                // `how=Digit`: the caller's key stopped it (barge-in).
                debug!(%call, id, ?how, "prompt ended");
                if let Some(session) = self.calls.get_mut(&call).and_then(|a| a.session.as_mut()) {
                    session.handle_played(now, id);
                }
                self.drive(now, call);
            }
            MediaEvent::Leg {
                call,
                event: LegEvent::PlayoutEnded { id, how },
            } if self.calls.get(&call).is_some_and(|a| a.bridge.is_some()) => {
                if let Some((bridge, _)) = self.calls.get(&call).and_then(|a| a.bridge) {
                    self.bridge_played(now, bridge, id, how);
                }
            }
            MediaEvent::Leg { call, event } => debug!(%call, ?event, "media"),
        }
    }

    fn remember_socket(&mut self, peer: SocketAddr, socket: usize) {
        if self.udp.len() > 1 {
            if self.udp_peers.len() >= MAX_UDP_PEERS {
                self.udp_peers.clear();
            }
            self.udp_peers.insert(peer, socket);
        }
    }

    async fn drain(&mut self) {
        while let Some(output) = self.ua.poll_output() {
            match output {
                Output::Send {
                    to,
                    link: Link::Udp,
                    bytes,
                } => {
                    // Back out of the socket the peer last reached us on (NATs and strict
                    // peers want answers from where they sent), else one of its family.
                    let socket = self
                        .udp_peers
                        .get(&to)
                        .and_then(|i| self.udp.get(*i))
                        .or_else(|| self.udp.iter().find(|(v4, _)| *v4 == to.is_ipv4()));
                    if let Some((_, socket)) = socket {
                        if let Err(e) = socket.send_to(&bytes, to).await {
                            debug!(%to, error = %e, "UDP send failed");
                        }
                    }
                }
                Output::Send {
                    to,
                    link: Link::Tcp,
                    bytes,
                } => {
                    if let Some(writer) = self.tcp.get(&to) {
                        let _ = writer.try_send(bytes);
                    }
                }
                Output::Event(event) => self.on_event(event),
            }
        }
    }

    fn on_event(&mut self, event: CallEvent) {
        let now = Instant::now();
        match event {
            CallEvent::Incoming {
                call,
                dialled,
                caller,
                asserted,
                source,
                call_id,
                offer,
            } => {
                let entry = self.sip.entry(&dialled);
                // Behind a trusted trunk, each identity it asserts is a source of its own;
                // anyone else is their address, whatever their From says.
                let client = match &asserted {
                    Some(identity) => format!("{}/{identity}", source.ip()),
                    None => crate::limits::client_of(source.ip()),
                };
                let caller = asserted.or(caller);
                let masked = callbacks::mask(caller.as_deref().unwrap_or("-"));
                info!(%call, %call_id, dialled, entry, caller = masked, %source, "incoming call");
                let media_ip = self.addresses.sdp(source.ip());
                let Some(rtp) = self
                    .ports
                    .allocate(&mut self.rng, self.addresses.media_bind)
                else {
                    warn!(%call_id, "no free RTP port; refusing the call");
                    self.ua.reject(now, call, 503, "Service Unavailable");
                    return;
                };
                let port = rtp.local_addr().map(|a| a.port()).unwrap_or_default();
                let session = self.rng.next_u64() >> 1;
                let (mut media, mut our_offer) = (None, None);
                let body = match offer {
                    Some(offer) => {
                        let answered = parse_sdp(&offer).and_then(|offer| {
                            sdp::answer(
                                &offer,
                                media_ip,
                                port,
                                session,
                                &sdp::Preferences::default(),
                            )
                        });
                        match answered {
                            Ok(answer) => {
                                media = Some(CallMedia::from(&answer.media));
                                answer.sdp.to_string()
                            }
                            Err(e) => {
                                info!(%call_id, error = %e, "offer not acceptable");
                                self.ua.reject(now, call, 488, "Not Acceptable Here");
                                return;
                            }
                        }
                    }
                    // No offer: ours goes in the 200, and the answer comes in the ACK.
                    None => {
                        let offer = sdp::offer(media_ip, port, session, 1);
                        let body = offer.to_string();
                        our_offer = Some(offer);
                        body
                    }
                };
                self.calls.insert(
                    call,
                    ActiveCall {
                        call_id,
                        started: now,
                        hanging_up: false,
                        offer: our_offer,
                        bridge: None,
                        holding: None,
                        hang_up_at: None,
                        rtp: Some(rtp),
                        media,
                        in_media: false,
                        ivr: Some((entry.to_owned(), caller.clone().unwrap_or_default())),
                        session: None,
                        failures: 0,
                        source,
                        client,
                        arrived: chrono::Utc::now(),
                    },
                );
                let ring_time = self.sip.ring_time.to_std().unwrap_or_default();
                if ring_time.is_zero() {
                    self.ua.answer(now, call, Bytes::from(body));
                } else {
                    let early = self.sip.early_media.then(|| Bytes::from(body.clone()));
                    self.ua.ring(now, call, early);
                    self.ringing
                        .push((now + ring_time, call, Bytes::from(body)));
                }
            }
            CallEvent::Progress { call, code, .. } => debug!(%call, code, "call progressing"),
            CallEvent::Answered { call, answer } => {
                if let Some(active) = self.calls.get_mut(&call) {
                    info!(%call, call_id = %active.call_id, "placed call answered");
                    self.settle(now, call, answer.as_deref());
                }
            }
            CallEvent::Established { call, answer } => {
                if let Some(active) = self.calls.get(&call) {
                    info!(%call, call_id = %active.call_id, "call established");
                    if active.media.is_none() {
                        // An INVITE without an offer: the ACK brought the answer.
                        self.settle(now, call, answer.as_deref());
                    } else {
                        self.start_media(now, call);
                    }
                }
            }
            CallEvent::Reoffer { call, offer } => {
                // A re-INVITE that moves the far end's media: send there, and latch again.
                let moved = parse_sdp(&offer)
                    .ok()
                    .and_then(|sdp| {
                        let audio = sdp.media.iter().find(|m| m.is_audio())?;
                        let ip = sdp.media_connection(audio)?;
                        Some(SocketAddr::new(ip, audio.port))
                    })
                    .filter(|a| !a.ip().is_unspecified() && a.port() != 0);
                debug!(%call, ?moved, "re-offer received");
                if let Some(remote) = moved {
                    self.media.set_remote(call, remote);
                }
            }
            CallEvent::PhoneRegistered {
                user,
                contact,
                source,
            } => {
                info!(user, contact, %source, "phone registered");
                let _ = self.registrations.send((user, true));
            }
            CallEvent::PhoneUnregistered { user } => {
                info!(user, "phone unregistered");
                let _ = self.registrations.send((user, false));
            }
            CallEvent::BindingsChanged { user, bindings } => {
                let wall = chrono::Utc::now();
                let kept: Vec<store::Binding> = bindings
                    .into_iter()
                    .map(|b| store::Binding {
                        user: user.clone(),
                        contact: b.contact,
                        source: b.source.to_string(),
                        transport: match b.link {
                            Link::Udp => "udp".into(),
                            Link::Tcp => "tcp".into(),
                        },
                        expires_at: wall
                            + chrono::Duration::from_std(
                                b.expires_at.saturating_duration_since(now),
                            )
                            .unwrap_or_default(),
                    })
                    .collect();
                let store = self.store.clone();
                tokio::spawn(async move {
                    if let Err(e) = store.replace_bindings(&user, &kept).await {
                        warn!(user, error = %e, "could not keep the registrar bindings");
                    }
                });
            }
            CallEvent::TrunkRegistered { expires } => info!(expires, "registered with the trunk"),
            CallEvent::TrunkRegistrationFailed { status } => {
                warn!(
                    status,
                    "the trunk refused the registration; retrying in 30 s"
                )
            }
            // One line each, with the address, for fail2ban (docs/security.md).
            CallEvent::SourceBanned { source, reason } => warn!(
                %source,
                ?reason,
                seconds = self.sip.per_source.ban.num_seconds(),
                "SIP source banned"
            ),
            CallEvent::AuthFailed { user, source } => {
                warn!(user, %source, "REGISTER authentication failed")
            }
            CallEvent::TransactionsFull => {
                if self.full_log.ready(now) {
                    warn!("SIP transaction table full; new requests get 503 (logged every 10 s)");
                }
            }
            CallEvent::InfoDigit { call, digit } => {
                if self.calls.get(&call).is_some_and(|a| a.in_media) {
                    self.media.key(call, digit);
                } else {
                    debug!(%call, key = %digit, source = "Info", "key pressed");
                }
            }
            CallEvent::Ended { call, reason } => {
                self.ringing.retain(|(_, c, _)| *c != call);
                if let Some(mut active) = self.calls.remove(&call) {
                    if active.in_media {
                        self.media.close(call);
                    }
                    if let Some(holding) = active.holding.take() {
                        self.holding_over(holding);
                    }
                    info!(%call, call_id = %active.call_id, ?reason, seconds = active.started.elapsed().as_secs(), "call ended");
                    if let Some((id, side)) = active.bridge {
                        self.bridge_left(now, id, side, reason);
                    }
                }
            }
        }
    }

    /// Hands an answered call's RTP port to the media runtime and starts what it plays or
    /// sends.
    fn start_media(&mut self, now: Instant, call: CallHandle) {
        // A customer's call runs on the agent's pacing thread, which relays the bridge.
        let near = self
            .calls
            .get(&call)
            .and_then(|a| a.bridge)
            .and_then(|(id, side)| self.near(id, side));
        let Some(active) = self.calls.get_mut(&call) else {
            return;
        };
        let (Some(socket), Some(media)) = (active.rtp.take(), active.media) else {
            return;
        };
        let timeout = self
            .media_config
            .rtp_timeout
            .to_std()
            .unwrap_or(Duration::from_secs(30));
        let learn = if behind_nat(media.remote.ip(), active.source.ip()) {
            rtp::Learn::FromAnywhere
        } else {
            rtp::Learn::FromSdpAddress
        };
        let session = rtp::Session::new(&mut self.rng, media.types, Some(media.remote), learn, now);
        let leg = Leg::new(session, media.law);
        if let Err(e) = self.media.open(call, socket, leg, timeout, near) {
            warn!(%call, error = %e, "cannot start the call's RTP; hanging up");
            active.hanging_up = true;
            self.ua.hang_up(now, call);
            return;
        }
        active.in_media = true;
        if let Some((id, side)) = active.bridge {
            self.bridge_answered(now, id, side);
        } else if let Some((entry, caller_id)) = active.ivr.clone() {
            let vars = BTreeMap::from([("caller_id".to_owned(), Value::Text(caller_id))]);
            active.session = Session::start(self.plan.clone(), &entry, vars, now);
            self.drive(now, call);
        }
    }

    /// Carries out what a call's dialplan session asks for.
    fn drive(&mut self, now: Instant, call: CallHandle) {
        let Some(active) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(session) = active.session.as_mut() else {
            return;
        };
        let mut transfer = None;
        while let Some(action) = session.poll_action() {
            match action {
                Action::Play {
                    id,
                    clips,
                    barge_in,
                } => {
                    let items = clips
                        .into_iter()
                        .filter_map(|clip| match clip {
                            Clip::Prompt(name) => self.prompts.get(&name).ok().map(Item::Prompt),
                            Clip::Silence(d) => Some(Item::Silence(d)),
                        })
                        .collect();
                    self.media.play(call, id, items, barge_in);
                }
                Action::Run { operation, args } => {
                    debug!(%call, operation, "dialplan operation");
                    let (operations, tx) = (self.operations.clone(), self.tx.clone());
                    let caller = Caller {
                        channel: callbacks::Channel::Ivr,
                        caller_id: active
                            .ivr
                            .as_ref()
                            .map(|(_, c)| c.clone())
                            .unwrap_or_default(),
                        client: active.client.clone(),
                        source: active.source.to_string(),
                        call_id: active.call_id.clone(),
                        failures: active.failures,
                        arrived: active.arrived,
                    };
                    tokio::spawn(async move {
                        let mut rng = StdRng::from_entropy();
                        let run = operations.run(
                            &mut rng,
                            chrono::Utc::now(),
                            &caller,
                            &operation,
                            &args,
                        );
                        // A store that hangs must not leave the caller in silence.
                        let (result, vars) =
                            match tokio::time::timeout(crate::ivr::OPERATION_TIMEOUT, run).await {
                                Ok(done) => done,
                                Err(_) => {
                                    warn!(%call, operation, "operation timed out");
                                    crate::ivr::unavailable(&operation)
                                }
                            };
                        let _ = tx.send(Inbound::Ran { call, result, vars }).await;
                    });
                }
                Action::Transfer { queue, offer } => transfer = Some((queue, offer)),
                Action::HangUp => {
                    if !active.hanging_up {
                        active.hanging_up = true;
                        self.ua.hang_up(now, call);
                    }
                }
            }
        }
        if let Some((queue, offer)) = transfer {
            self.hold(now, call, &queue, offer);
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
        }
    }

    fn reload(&mut self) -> Result<String, String> {
        let path = &self.ivr_config.dialplan;
        match crate::ivr::load(path, &self.prompts) {
            Ok(plan) => {
                if let Some(entry) = std::iter::once(&self.sip.default_entry)
                    .chain(self.sip.entries.values())
                    .find(|e| !plan.entries.contains_key(*e))
                {
                    let problem = format!(
                        "sip names the dialplan entry `{entry}`, which {} does not have",
                        path.display()
                    );
                    warn!(problem, "dialplan not reloaded; the old one stays");
                    return Err(problem);
                }
                let summary = format!(
                    "{}: {} entries, {} nodes",
                    path.display(),
                    plan.entries.len(),
                    plan.nodes.len()
                );
                info!(summary, "dialplan reloaded; new calls use it");
                self.plan = std::sync::Arc::new(plan);
                Ok(summary)
            }
            Err(e) => {
                let problem = format!("{e:#}");
                warn!(problem, "dialplan not reloaded; the old one stays");
                Err(problem)
            }
        }
    }

    /// A call's dialplan operation finished.
    fn ran(&mut self, now: Instant, call: CallHandle, result: &str, vars: Vec<(String, Value)>) {
        let Some(active) = self.calls.get_mut(&call) else {
            return;
        };
        if crate::ivr::failed(result) {
            active.failures += 1;
        }
        if let Some(session) = active.session.as_mut() {
            session.handle_result(now, result, vars);
            self.drive(now, call);
        }
    }

    /// Settles a call's media from the SDP answer to our offer, then starts it; a call whose
    /// answer does not fit is hung up, since it could carry no audio.
    fn settle(&mut self, now: Instant, call: CallHandle, answer: Option<&[u8]>) {
        let Some(active) = self.calls.get_mut(&call) else {
            return;
        };
        let settled =
            parse_sdp(answer.unwrap_or_default()).and_then(|answer| match &active.offer {
                Some(offer) => sdp::accept_answer(offer, &answer),
                None => Err(sdp::SdpError::Empty),
            });
        match settled {
            Ok(m) => {
                active.media = Some(CallMedia::from(&m));
                self.start_media(now, call);
            }
            Err(e) => {
                warn!(%call, error = %e, "the SDP answer does not fit our offer; hanging up");
                active.hanging_up = true;
                self.ua.hang_up(now, call);
            }
        }
    }

    /// Where a call to `to` goes, as the Request-URI, the address and the transport: a phone
    /// registered with callbackd (a URI whose host is `sip.realm`) where it registered from;
    /// anything else to `sip.outbound_proxy` when set, else to the IP address the URI names.
    fn route(&self, to: &str) -> Result<(String, SocketAddr, Link), PlaceError> {
        let uri = match sip::uri::Uri::parse(to) {
            Ok(uri) if uri.is_sip() => uri,
            _ => return Err(PlaceError::BadUri(to.to_owned())),
        };
        if uri.host.eq_ignore_ascii_case(&self.sip.realm) {
            let user = uri.user.clone().unwrap_or_default();
            return self
                .ua
                .binding(&user, Instant::now())
                .map(|b| (b.contact.clone(), b.source, b.link))
                .ok_or(PlaceError::NotRegistered(user));
        }
        let direct = uri
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, uri.port.unwrap_or(5060)));
        self.sip
            .outbound_proxy
            .or(direct)
            .map(|destination| (to.to_owned(), destination, Link::Udp))
            .ok_or_else(|| PlaceError::NoRoute(to.to_owned()))
    }

    /// Places a call to `to` (see [`Loop::route`], unless `at` says where to send it) from
    /// `caller_id` (else `sip.caller_id`, else `callbackd`) that rings for at most `ring`, unless the dialer's `deadline` has passed: that is checked
    /// last, on the clock read afresh (not `now`), just before the INVITE goes, so a node
    /// stopped meanwhile (SIGSTOP, a stall) does not dial late once it runs again.
    fn place(
        &mut self,
        now: Instant,
        to: &str,
        at: Option<SocketAddr>,
        caller_id: Option<&str>,
        ring: Duration,
        deadline: Option<Instant>,
    ) -> Result<CallHandle, PlaceError> {
        let (uri, destination, link) = match at {
            Some(at) => (to.to_owned(), at, Link::Udp),
            None => self.route(to)?,
        };
        let rtp = self
            .ports
            .allocate(&mut self.rng, self.addresses.media_bind)
            .ok_or(PlaceError::NoPort)?;
        let port = rtp.local_addr().map(|a| a.port()).unwrap_or_default();
        let media_ip = self.addresses.sdp(destination.ip());
        let offer = sdp::offer(media_ip, port, self.rng.next_u64() >> 1, 1);
        let credentials = self.sip.trunk_username.clone().map(|username| Credentials {
            username,
            password: self
                .sip
                .trunk_password
                .as_ref()
                .map(|p| p.expose().to_owned())
                .unwrap_or_default(),
        });
        let dial = Dial {
            uri,
            from_user: caller_id
                .or(self.sip.caller_id.as_deref())
                .unwrap_or("callbackd")
                .to_owned(),
            destination,
            link,
            offer: Bytes::from(offer.to_string()),
            credentials,
            ring_timeout: ring,
        };
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(PlaceError::TooLate);
        }
        let call = self.ua.dial(now, dial);
        info!(%call, %destination, "call placed");
        self.calls.insert(
            call,
            ActiveCall {
                call_id: String::new(),
                started: now,
                hanging_up: false,
                offer: Some(offer),
                bridge: None,
                holding: None,
                hang_up_at: None,
                rtp: Some(rtp),
                media: None,
                in_media: false,
                ivr: None,
                session: None,
                failures: 0,
                source: destination,
                client: String::new(),
                arrived: chrono::Utc::now(),
            },
        );
        Ok(call)
    }

    /// Answers calls whose ring time is over and hangs up calls past the longest duration.
    fn housekeeping(&mut self, now: Instant) {
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
                info!(%call, call_id = %active.call_id, "call reached sip.max_call_duration; hanging up");
                active.hanging_up = true;
                self.ua.hang_up(now, *call);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtp_ports_are_taken_at_random_and_the_last_free_one_is_found() {
        let mut rng = StdRng::seed_from_u64(11);
        let mut pool = PortPool {
            first: 41_000,
            last: 41_998,
        };
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let held: Vec<std::net::UdpSocket> = (0..20)
            .map(|_| pool.allocate(&mut rng, ip).unwrap())
            .collect();
        let ports: Vec<u16> = held
            .iter()
            .map(|s| s.local_addr().unwrap().port())
            .collect();
        assert!(ports
            .iter()
            .all(|p| p % 2 == 0 && (41_000..=41_998).contains(p)));
        let steps_of_two = ports.windows(2).filter(|w| w[1] == w[0] + 2).count();
        assert!(
            steps_of_two < 3,
            "the next port is not the last plus two: {ports:?}"
        );
        // A range of two ports with one taken: the other is found.
        let mut small = PortPool {
            first: ports[0],
            last: ports[0] + 2,
        };
        let other = small.allocate(&mut rng, ip);
        assert!(other.is_some_and(|s| s.local_addr().unwrap().port() != ports[0]));
    }

    #[test]
    fn a_private_sdp_address_behind_a_public_source_is_nat() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(behind_nat(ip("192.168.1.10"), ip("203.0.113.5")));
        assert!(
            behind_nat(ip("100.64.0.9"), ip("203.0.113.5")),
            "carrier-grade NAT"
        );
        assert!(behind_nat(ip("fd00::1"), ip("2001:db8::1")));
        assert!(
            !behind_nat(ip("192.168.1.10"), ip("192.168.1.1")),
            "the same private network"
        );
        assert!(!behind_nat(ip("203.0.113.5"), ip("198.51.100.1")));
        assert!(!behind_nat(ip("127.0.0.1"), ip("127.0.0.1")));
    }
}
