//! The SIP runtime: UDP and TCP sockets, the RTP port pool, and the loop that pumps the
//! sans-IO user agent (`sip::ua`). It holds no protocol logic of its own.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use rand::{rngs::StdRng, RngCore, SeedableRng};
use sip::sdp::{self, SessionDescription};
use sip::ua::{
    CallEvent, CallHandle, Config as UaConfig, Credentials, Dial, EndReason, Link, Output,
    UserAgent,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::config::{MediaConfig, SipConfig};
use media::rtp::{PayloadTypes, Received, Session};
use store::Store;

type TestCallReply = oneshot::Sender<Result<TestCallOutcome, TestCallError>>;

/// What the socket tasks and the API hand the user agent loop.
enum Inbound {
    /// `socket` is the index of the UDP socket it arrived on (unused for TCP).
    Message {
        source: SocketAddr,
        link: Link,
        bytes: Vec<u8>,
        socket: usize,
    },
    TcpOpened {
        peer: SocketAddr,
        writer: mpsc::Sender<Vec<u8>>,
    },
    TcpClosed {
        peer: SocketAddr,
    },
    /// The far end of a call sent no RTP for `media.rtp_timeout`.
    RtpSilent {
        call: CallHandle,
    },
    /// A DTMF key pressed, as an RFC 4733 telephone-event.
    Digit {
        call: CallHandle,
        digit: char,
    },
    TestCall {
        to: String,
        hold: Duration,
        reply: TestCallReply,
    },
}

/// How a test call went, for operators checking a trunk or a phone.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TestCallOutcome {
    pub answered: bool,
    /// The final SIP status of a call that was not answered (408: nothing answered at all).
    pub status: Option<u16>,
    /// How it ended: `local_hangup`, `remote_hangup`, `failed` or `no_answer`.
    pub ended: &'static str,
}

/// Why a test call could not be placed at all.
#[derive(Debug, thiserror::Error)]
pub enum TestCallError {
    #[error("`{0}` is not a SIP URI")]
    BadUri(String),
    #[error("no sip.outbound_proxy is set and `{0}` names no IP address to send to")]
    NoRoute(String),
    #[error("no free RTP port")]
    NoPort,
    #[error("callbackd is shutting down")]
    Gone,
}

/// The way in for the rest of callbackd: places calls through the user agent loop.
#[derive(Clone)]
pub struct Sip {
    tx: mpsc::Sender<Inbound>,
}

impl Sip {
    /// Places a call to `to`, holds it for `hold` once answered, hangs up, and says how it went.
    pub async fn test_call(
        &self,
        to: String,
        hold: Duration,
    ) -> Result<TestCallOutcome, TestCallError> {
        let (reply, outcome) = oneshot::channel();
        self.tx
            .send(Inbound::TestCall { to, hold, reply })
            .await
            .map_err(|_| TestCallError::Gone)?;
        outcome.await.map_err(|_| TestCallError::Gone)?
    }
}

/// Even RTP ports from the configured range; a port is held by a bound socket for as long as
/// its call lasts.
struct PortPool {
    first: u16,
    last: u16,
    next: u16,
}

impl PortPool {
    fn new(media: &MediaConfig) -> PortPool {
        let first = media.rtp_ports.0 + media.rtp_ports.0 % 2;
        PortPool {
            first,
            last: media.rtp_ports.1,
            next: first,
        }
    }

    /// Binds the next free even port on `ip`.
    fn allocate(&mut self, ip: IpAddr) -> Option<std::net::UdpSocket> {
        let span = (self.last - self.first) / 2 + 1;
        for _ in 0..span {
            let port = self.next;
            // In u32: the range may reach 65535.
            self.next = if u32::from(self.next) + 2 > u32::from(self.last) {
                self.first
            } else {
                self.next + 2
            };
            if let Ok(socket) = std::net::UdpSocket::bind(SocketAddr::new(ip, port)) {
                return Some(socket);
            }
        }
        None
    }
}

struct ActiveCall {
    call_id: String,
    started: Instant,
    hanging_up: bool,
    /// A test call: how long to hold it once answered, and who wants to know how it went.
    test: Option<(Duration, TestCallReply)>,
    /// When an answered test call is hung up.
    hang_up_at: Option<Instant>,
    /// The RTP socket holding the port named in our SDP, until the call is established and its
    /// receiving task takes it.
    rtp: Option<std::net::UdpSocket>,
    /// The negotiated payload types and the far end's RTP address from its SDP.
    media: Option<(PayloadTypes, Option<SocketAddr>)>,
    /// The task receiving the call's RTP, stopped when the call ends.
    rtp_task: Option<tokio::task::AbortHandle>,
}

impl Drop for ActiveCall {
    fn drop(&mut self) {
        if let Some(task) = &self.rtp_task {
            task.abort();
        }
    }
}

/// The addresses SIP ended up on (ports chosen by the system when the config says 0).
pub struct Bound {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub sip: Sip,
}

/// Binds the SIP sockets and starts the user agent; runs until the process ends.
pub async fn start(sip: SipConfig, media: MediaConfig, store: Store) -> anyhow::Result<Bound> {
    let (tx, rx) = mpsc::channel::<Inbound>(4096);
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
        tokio::spawn(accept(listener, tx.clone()));
    }
    let udp_bound: Vec<SocketAddr> = udp
        .iter()
        .map(|s| s.local_addr())
        .collect::<Result<_, _>>()?;
    for (index, socket) in udp.iter().enumerate() {
        tokio::spawn(receive_udp(socket.clone(), index, tx.clone()));
    }
    let first = udp_bound
        .first()
        .or(tcp_bound.first())
        .copied()
        .context("SIP needs at least one address")?;
    let advertised = sip.advertised.clone().unwrap_or_else(|| first.to_string());
    let media_ip = media_ip(&advertised, first)?;
    let config = UaConfig {
        timers: sip.timers(),
        advertised,
        product: format!("callbackd/{}", env!("CARGO_PKG_VERSION")),
        max_calls: sip.max_calls,
        max_calls_per_second: sip.max_calls_per_second,
        trusted: sip.trusted.clone(),
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
    let state = Loop {
        ua,
        udp,
        tcp: HashMap::new(),
        ports: PortPool::new(&media),
        media_ip,
        calls: HashMap::new(),
        sip,
        rng: StdRng::from_entropy(),
        ringing: Vec::new(),
        store,
        media_config: media,
        tx: tx.clone(),
        udp_peers: HashMap::new(),
    };
    tokio::spawn(run(state, rx));
    Ok(Bound {
        udp: udp_bound,
        tcp: tcp_bound,
        sip: Sip { tx },
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

/// The address put in SDP: the advertised host when it is an address, else the listen address.
fn media_ip(advertised: &str, listen: SocketAddr) -> anyhow::Result<IpAddr> {
    let host = sip::uri::split_hostport(advertised)
        .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']').to_owned())
        .unwrap_or_default();
    let ip = host.parse().unwrap_or(listen.ip());
    anyhow::ensure!(
        !ip.is_unspecified(),
        "SIP listens on {listen}: set sip.advertised to the address callers reach, for SDP"
    );
    Ok(ip)
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

/// The most SIP connections over TCP at once; more are closed at once.
const MAX_TCP_CONNECTIONS: usize = 1024;
/// A connection that sends nothing for this long is closed (PBXs send keep-alives).
const TCP_IDLE: Duration = Duration::from_secs(300);

async fn accept(listener: TcpListener, tx: mpsc::Sender<Inbound>) {
    let open = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                use std::sync::atomic::Ordering;
                if open.fetch_add(1, Ordering::Relaxed) >= MAX_TCP_CONNECTIONS {
                    open.fetch_sub(1, Ordering::Relaxed);
                    warn!(%peer, "too many SIP connections over TCP; closing the new one");
                    continue;
                }
                let (open, tx) = (open.clone(), tx.clone());
                tokio::spawn(async move {
                    connection(stream, peer, tx).await;
                    open.fetch_sub(1, Ordering::Relaxed);
                });
            }
            Err(e) => warn!(error = %e, "TCP accept failed"),
        }
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
    'read: loop {
        match tokio::time::timeout(TCP_IDLE, reader.read(&mut chunk)).await {
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
                            })
                            .await;
                        break 'read;
                    }
                }
            }
            match length {
                Some(total) if buffer.len() >= total => {
                    let bytes: Vec<u8> = buffer.drain(..total).collect();
                    (length, searched) = (None, 0);
                    if tx
                        .send(Inbound::Message {
                            source: peer,
                            link: Link::Tcp,
                            bytes,
                            socket: 0,
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
    }
    let _ = tx.send(Inbound::TcpClosed { peer }).await;
    // Let queued answers go out before the connection closes.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    write.abort();
}

struct Loop {
    ua: UserAgent,
    /// The UDP sockets, with whether each is IPv4 (sends go out of one of the same family).
    udp: Vec<(bool, std::sync::Arc<UdpSocket>)>,
    tcp: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    ports: PortPool,
    media_ip: IpAddr,
    calls: HashMap<CallHandle, ActiveCall>,
    sip: SipConfig,
    rng: StdRng,
    /// Calls waiting for their ring time to pass before they are answered.
    ringing: Vec<(Instant, CallHandle, Bytes)>,
    store: Store,
    media_config: MediaConfig,
    /// For the RTP tasks to report back.
    tx: mpsc::Sender<Inbound>,
    /// Which UDP socket each peer last sent to.
    udp_peers: HashMap<SocketAddr, usize>,
}

async fn run(mut state: Loop, mut rx: mpsc::Receiver<Inbound>) {
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
                Some(Inbound::Message { source, link, bytes, socket }) => {
                    if link == Link::Udp {
                        state.remember_socket(source, socket);
                    }
                    state.ua.handle_message(Instant::now(), source, link, &bytes)
                }
                Some(Inbound::TcpOpened { peer, writer }) => { state.tcp.insert(peer, writer); }
                Some(Inbound::TcpClosed { peer }) => { state.tcp.remove(&peer); }
                Some(Inbound::RtpSilent { call }) => state.rtp_silent(Instant::now(), call),
                Some(Inbound::Digit { call, digit }) => info!(%call, %digit, "DTMF (RFC 4733)"),
                Some(Inbound::TestCall { to, hold, reply }) => state.test_call(Instant::now(), to, hold, reply),
                None => return,
            },
            _ = tokio::time::sleep_until(deadline) => state.ua.handle_timeout(Instant::now()),
            _ = tick.tick() => state.housekeeping(Instant::now()),
        }
        state.drain().await;
    }
}

/// Peers remembered for the choice of reply socket; past this many the memory starts over.
const MAX_UDP_PEERS: usize = 65_536;

/// Receives a call's RTP: latches to the far end, turns telephone-events into digits, and
/// reports a far end silent for `timeout`.
fn receive_rtp(
    socket: std::net::UdpSocket,
    call: CallHandle,
    mut session: Session,
    timeout: Duration,
    tx: mpsc::Sender<Inbound>,
) -> std::io::Result<tokio::task::AbortHandle> {
    socket.set_nonblocking(true)?;
    let socket = UdpSocket::from_std(socket)?;
    let task = tokio::spawn(async move {
        let mut dtmf = media::rfc4733::Receiver::new();
        let mut buffer = [0u8; 2048];
        loop {
            let wait = timeout.saturating_sub(session.silent_for(Instant::now()));
            match tokio::time::timeout(wait, socket.recv_from(&mut buffer)).await {
                Err(_) => {
                    let _ = tx.send(Inbound::RtpSilent { call }).await;
                    return;
                }
                // ICMP errors from earlier sends surface here; nothing to do.
                Ok(Err(_)) => {}
                Ok(Ok((n, from))) => {
                    let now = Instant::now();
                    if let Some(Received::Event {
                        ssrc,
                        timestamp,
                        payload,
                    }) = session.handle_packet(now, from, &buffer[..n])
                    {
                        if let Ok(Some(digit)) = dtmf.handle_packet(now, ssrc, timestamp, payload) {
                            let _ = tx.send(Inbound::Digit { call, digit }).await;
                        }
                    }
                }
            }
        }
    });
    Ok(task.abort_handle())
}

impl Loop {
    fn rtp_silent(&mut self, now: Instant, call: CallHandle) {
        if let Some(active) = self.calls.get_mut(&call).filter(|a| !a.hanging_up) {
            warn!(%call, call_id = %active.call_id, "no RTP from the far end for media.rtp_timeout; hanging up");
            active.hanging_up = true;
            self.ua.hang_up(now, call);
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
                source,
                call_id,
                offer,
            } => {
                let entry = self.sip.entry(&dialled);
                info!(%call, %call_id, dialled, entry, caller = caller.as_deref().unwrap_or("-"), %source, "incoming call");
                let Some(rtp) = self.ports.allocate(self.media_ip) else {
                    warn!(%call_id, "no free RTP port; refusing the call");
                    self.ua.reject(now, call, 503, "Service Unavailable");
                    return;
                };
                let port = rtp.local_addr().map(|a| a.port()).unwrap_or_default();
                let session = self.rng.next_u64() >> 1;
                let mut media = None;
                let body = match offer {
                    Some(offer) => {
                        let answered = std::str::from_utf8(&offer)
                            .ok()
                            .map(SessionDescription::parse)
                            .ok_or(sdp::SdpError::Empty)
                            .and_then(|parsed| parsed)
                            .and_then(|offer| {
                                sdp::answer(
                                    &offer,
                                    self.media_ip,
                                    port,
                                    session,
                                    &sdp::Preferences::default(),
                                )
                            });
                        match answered {
                            Ok(answer) => {
                                let types = PayloadTypes {
                                    audio: answer.media.payload_type,
                                    telephone_event: answer.media.telephone_event,
                                };
                                media = Some((types, Some(answer.media.remote_rtp)));
                                answer.sdp.to_string()
                            }
                            Err(e) => {
                                info!(%call_id, error = %e, "offer not acceptable");
                                self.ua.reject(now, call, 488, "Not Acceptable Here");
                                return;
                            }
                        }
                    }
                    None => sdp::offer(self.media_ip, port, session, 1).to_string(),
                };
                self.calls.insert(
                    call,
                    ActiveCall {
                        call_id,
                        started: now,
                        hanging_up: false,
                        test: None,
                        hang_up_at: None,
                        rtp: Some(rtp),
                        media,
                        rtp_task: None,
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
            CallEvent::Answered { call, .. } => {
                if let Some(active) = self.calls.get_mut(&call) {
                    info!(%call, call_id = %active.call_id, "placed call answered");
                    if let Some((hold, _)) = &active.test {
                        active.hang_up_at = Some(now + *hold);
                    }
                }
            }
            CallEvent::Established { call, .. } => {
                if let Some(active) = self.calls.get_mut(&call) {
                    info!(%call, call_id = %active.call_id, "call established");
                    let timeout = self
                        .media_config
                        .rtp_timeout
                        .to_std()
                        .unwrap_or(Duration::from_secs(30));
                    if let (Some(socket), Some((types, remote))) = (active.rtp.take(), active.media)
                    {
                        let session = Session::new(&mut StdRng::from_entropy(), types, remote, now);
                        match receive_rtp(socket, call, session, timeout, self.tx.clone()) {
                            Ok(task) => active.rtp_task = Some(task),
                            Err(e) => warn!(%call, error = %e, "cannot receive RTP"),
                        }
                    }
                }
            }
            CallEvent::Reoffer { call, .. } => debug!(%call, "re-offer received"),
            CallEvent::PhoneRegistered {
                user,
                contact,
                source,
            } => {
                info!(user, contact, %source, "phone registered")
            }
            CallEvent::PhoneUnregistered { user } => info!(user, "phone unregistered"),
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
            CallEvent::InfoDigit { call, digit } => info!(%call, %digit, "DTMF by SIP INFO"),
            CallEvent::Ended { call, reason } => {
                self.ringing.retain(|(_, c, _)| *c != call);
                if let Some(mut active) = self.calls.remove(&call) {
                    info!(%call, call_id = %active.call_id, ?reason, seconds = active.started.elapsed().as_secs(), "call ended");
                    if let Some((_, reply)) = active.test.take() {
                        let (answered, status, ended) = match reason {
                            EndReason::LocalHangup => (true, None, "local_hangup"),
                            EndReason::RemoteHangup => (true, None, "remote_hangup"),
                            EndReason::Failed(code) => (false, Some(code), "failed"),
                            EndReason::NoAnswer => (false, None, "no_answer"),
                            _ => (false, None, "failed"),
                        };
                        let _ = reply.send(Ok(TestCallOutcome {
                            answered,
                            status,
                            ended,
                        }));
                    }
                }
            }
        }
    }

    /// Places a test call: through sip.outbound_proxy when set, else to the URI's own address.
    fn test_call(&mut self, now: Instant, to: String, hold: Duration, reply: TestCallReply) {
        let uri = match sip::uri::Uri::parse(&to) {
            Ok(uri) if uri.is_sip() => uri,
            _ => {
                let _ = reply.send(Err(TestCallError::BadUri(to)));
                return;
            }
        };
        let direct = uri
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, uri.port.unwrap_or(5060)));
        let Some(destination) = self.sip.outbound_proxy.or(direct) else {
            let _ = reply.send(Err(TestCallError::NoRoute(to)));
            return;
        };
        let Some(rtp) = self.ports.allocate(self.media_ip) else {
            let _ = reply.send(Err(TestCallError::NoPort));
            return;
        };
        let port = rtp.local_addr().map(|a| a.port()).unwrap_or_default();
        let offer = sdp::offer(self.media_ip, port, self.rng.next_u64() >> 1, 1).to_string();
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
            uri: to,
            from_user: self.sip.caller_id.clone(),
            destination,
            link: Link::Udp,
            offer: Bytes::from(offer),
            credentials,
            ring_timeout: self
                .sip
                .ring_timeout
                .to_std()
                .unwrap_or(Duration::from_secs(30)),
        };
        let call = self.ua.dial(now, dial);
        info!(%call, %destination, "test call placed");
        self.calls.insert(
            call,
            ActiveCall {
                call_id: String::new(),
                started: now,
                hanging_up: false,
                test: Some((hold, reply)),
                hang_up_at: None,
                rtp: Some(rtp),
                media: None,
                rtp_task: None,
            },
        );
    }

    /// Answers calls whose ring time is over and hangs up calls past the longest duration.
    fn housekeeping(&mut self, now: Instant) {
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
