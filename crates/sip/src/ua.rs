//! The user agent core: answers calls and requests arriving over SIP, keeps their dialogs,
//! and hangs up (RFC 3261 sections 8, 12, 13, 14 and 15).
//!
//! Sans-IO like everything here: feed it datagrams or framed stream messages with
//! [`UserAgent::handle_message`] and expiries with [`UserAgent::handle_timeout`], drain
//! [`UserAgent::poll_output`] for what to send and what happened, and wake it again at
//! [`UserAgent::poll_timeout`]. The runtime decides about media and answers with
//! [`UserAgent::answer`], [`UserAgent::reject`] or [`UserAgent::hang_up`].
//!
//! Requests within a dialog are sent to the address the dialog's INVITE came from (the way a
//! session border controller treats callers behind NAT), so callbackd never sends to an
//! address it only read in a Contact header.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand_core::RngCore;

use crate::header::Via;
use crate::message::{Message, Method, Name};
use crate::parse::{parse_datagram, Invalid};
use crate::transaction::client_invite::ClientInvite;
use crate::transaction::client_non_invite::ClientNonInvite;
use crate::transaction::server_invite::{self, ServerInvite};
use crate::transaction::server_non_invite::ServerNonInvite;
use crate::transaction::{earliest, Backoff, Drain, Event, Key, Timers, Transport};
mod extensions;
mod outbound;
mod stats;
mod trunk;

use extensions::{MIN_SE, SUPPORTED};
pub use outbound::{Credentials, Dial};
pub use stats::{Messages, Refusal, Stats};
pub use trunk::TrunkRegistration;

use crate::validate::{answer_invalid, check_request, response_to, Capabilities, RequestHeaders};

/// Settings of the user agent.
#[derive(Debug, Clone)]
pub struct Config {
    pub timers: Timers,
    /// Our address as peers should reach it, for Via and Contact, by where they are.
    pub advertised: crate::advertise::Advertise,
    /// `Server` and `User-Agent` header value.
    pub product: String,
    /// Calls at once before new INVITEs get 503.
    pub max_calls: usize,
    /// New calls per second before new INVITEs get 503.
    pub max_calls_per_second: u32,
    /// Networks (address, prefix length) new calls may come from; empty: anywhere. Phones
    /// registered with the registrar may call from where they registered.
    pub trusted: Vec<(std::net::IpAddr, u8)>,
    /// Limits on each source that is not in `trusted` (see [`crate::admission`]).
    pub per_source: crate::admission::Settings,
    /// The registrar for agents' phones, if any (REGISTER gets 405 without one).
    pub registrar: Option<crate::registrar::Settings>,
    /// The trunks callbackd registers with.
    pub registrations: Vec<TrunkRegistration>,
}

/// Server transactions held at once, at most; past it new requests are refused statelessly.
/// Each call leaves one behind for 32 s, its BYE's (Timer J), so this carries 6,250 calls a
/// second sustained; bench/README.md has the memory it takes.
pub const MAX_TRANSACTIONS: usize = 200_000;
/// The requests behind the server transactions held, in bytes, at most: what a transaction
/// keeps (its answers, which echo the request's Via, From, To, Call-ID and CSeq) is no larger.
pub const MAX_TRANSACTION_BYTES: usize = 128 * 1024 * 1024;

/// A call known to the user agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallHandle(u64);

impl fmt::Display for CallHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "call-{}", self.0)
    }
}

/// How the message travelled, and so how answers travel back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Link {
    Udp,
    Tcp,
}

impl Link {
    fn transport(self) -> Transport {
        match self {
            Link::Udp => Transport::Unreliable,
            Link::Tcp => Transport::Reliable,
        }
    }

    fn via_name(self) -> &'static str {
        match self {
            Link::Udp => "UDP",
            Link::Tcp => "TCP",
        }
    }
}

/// Why a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The caller sent BYE.
    RemoteHangup,
    /// We hung up (and the BYE was answered, or went unanswered).
    LocalHangup,
    /// The caller cancelled before we answered.
    Cancelled,
    /// We refused the call with this status.
    Rejected(u16),
    /// Our 2xx was never acknowledged (64·T1); we sent BYE.
    NoAck,
    /// A call we placed was refused with this status (408 when nothing answered at all).
    Failed(u16),
    /// A call we placed rang past its ring timeout and was cancelled.
    NoAnswer,
    /// The session timer ran out (RFC 4028): the refreshes stopped, or ours went unanswered.
    SessionExpired,
}

impl EndReason {
    /// Every reason's name, as [`EndReason::as_str`] gives it.
    pub const NAMES: [&'static str; 8] = [
        "remote_hangup",
        "local_hangup",
        "cancelled",
        "rejected",
        "no_ack",
        "failed",
        "no_answer",
        "session_expired",
    ];

    /// The reason's name, without its status.
    pub fn as_str(&self) -> &'static str {
        Self::NAMES[match self {
            EndReason::RemoteHangup => 0,
            EndReason::LocalHangup => 1,
            EndReason::Cancelled => 2,
            EndReason::Rejected(_) => 3,
            EndReason::NoAck => 4,
            EndReason::Failed(_) => 5,
            EndReason::NoAnswer => 6,
            EndReason::SessionExpired => 7,
        }]
    }
}

/// The numbers an INVITE names as dialled. Carriers differ: most put it in the
/// Request-URI, one delivering to a registered contact in To, others in P-Called-Party-ID
/// (RFC 3455) or, for a forwarded call, in Diversion (RFC 5806).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dialled {
    /// The Request-URI's user part (empty without one).
    pub request_uri: String,
    pub to: Option<String>,
    pub p_called_party_id: Option<String>,
    /// The first Diversion header's: the number it was last diverted from (RFC 5806 lists the
    /// most recent diversion first), the DID that reached callbackd on a forwarded call.
    pub diversion: Option<String>,
}

impl Dialled {
    fn of(request: &RequestHeaders, headers: &crate::message::Headers) -> Dialled {
        Dialled {
            request_uri: request.uri.user.clone().unwrap_or_default(),
            to: request.to.uri.user.clone(),
            p_called_party_id: header_user(headers, "P-Called-Party-ID"),
            diversion: header_user(headers, "Diversion"),
        }
    }
}

/// Something the runtime must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEvent {
    /// A new call: answer, reject or let it ring.
    Incoming {
        call: CallHandle,
        /// The number dialled, as each header that may carry it names it.
        dialled: Dialled,
        /// The caller's user part (caller ID), if any.
        caller: Option<String>,
        /// Who the caller is as a trusted peer (`Config::trusted`) asserts it (RFC 3325): the
        /// user of its P-Asserted-Identity, else of its From; `None` from anyone else, whose
        /// From is only what the caller chose to write.
        asserted: Option<String>,
        source: SocketAddr,
        call_id: String,
        /// The SDP offer, if the INVITE carried one.
        offer: Option<Bytes>,
    },
    /// The ACK for our 2xx came; with the SDP answer when our 2xx carried the offer.
    Established {
        call: CallHandle,
        answer: Option<Bytes>,
    },
    /// A re-INVITE or UPDATE brought a new offer (hold, a new address).
    Reoffer {
        call: CallHandle,
        offer: Bytes,
    },
    /// A trunk's target answered our OPTIONS keep-alive with `status`, or (`None`) did not
    /// answer at all: it is up or down.
    Qualified {
        to: SocketAddr,
        status: Option<u16>,
    },
    /// A call we placed was sent on to its next target: the last answered 503 or nothing.
    FailedOver {
        call: CallHandle,
        to: SocketAddr,
    },
    /// A call we placed is ringing (180) or has early media (183, with its SDP).
    Progress {
        call: CallHandle,
        code: u16,
        early_media: Option<Bytes>,
    },
    /// A call we placed was answered; the 2xx carried the SDP answer.
    Answered {
        call: CallHandle,
        answer: Option<Bytes>,
    },
    /// An agent's phone registered (it had no binding before).
    PhoneRegistered {
        user: String,
        contact: String,
        source: SocketAddr,
    },
    /// An agent's phone unregistered, or its registration expired.
    PhoneUnregistered {
        user: String,
    },
    /// A user's registrar bindings now (after a REGISTER or an expiry), to keep in the store.
    BindingsChanged {
        user: String,
        bindings: Vec<crate::registrar::Binding>,
    },
    /// A trunk accepted callbackd's registration for this many seconds.
    TrunkRegistered {
        trunk: String,
        expires: u32,
    },
    /// A trunk refused or ignored the registration (408); it is retried in 30 s.
    TrunkRegistrationFailed {
        trunk: String,
        status: u16,
    },
    /// A source was banned for [`crate::admission::Settings::ban`]: everything it sends is
    /// dropped until then.
    SourceBanned {
        source: SocketAddr,
        reason: crate::admission::BanReason,
    },
    /// A REGISTER failed digest authentication (a wrong password, an unknown user, a replayed
    /// or foreign nonce).
    AuthFailed {
        user: String,
        source: SocketAddr,
    },
    /// A new request was refused because the user agent holds as many server transactions
    /// (or bytes of them) as it may.
    TransactionsFull,
    /// A DTMF digit sent as SIP INFO.
    InfoDigit {
        call: CallHandle,
        digit: char,
    },
    Ended {
        call: CallHandle,
        reason: EndReason,
    },
}

/// What the runtime does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Send {
        to: SocketAddr,
        link: Link,
        bytes: Vec<u8>,
    },
    Event(CallEvent),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// INVITE received, no final response yet.
    Ringing,
    /// Our INVITE is out, no final response yet.
    Dialing,
    /// 2xx sent, retransmitted until the ACK.
    Answered,
    Confirmed,
    /// Our BYE is out.
    Ending,
}

struct Call {
    handle: CallHandle,
    phase: Phase,
    invite_key: Key,
    invite: Message,
    source: SocketAddr,
    link: Link,
    call_id: String,
    local_tag: String,
    /// The caller's From, which is the To of our requests.
    remote: String,
    /// Our To as the caller wrote it plus our tag: the From of our requests.
    local: String,
    local_cseq: u32,
    remote_cseq: u32,
    remote_target: String,
    route_set: Vec<String>,
    /// The 2xx and its retransmission schedule (Timer G-like, then the 64·T1 give-up).
    ok: Option<Message>,
    retransmit: Option<(Instant, Backoff)>,
    give_up: Option<Instant>,
    local_sdp: Option<Bytes>,
    offer_in_ok: bool,
    /// Why the call ends once our BYE is answered.
    ending: Option<EndReason>,
    /// What a call we placed needs beyond a dialog.
    outbound: Option<outbound::Outbound>,
    /// The session timer, when the call has one (RFC 4028).
    session: Option<extensions::SessionTimer>,
    /// Our reliable provisional response awaiting its PRACK, and the last `RSeq` we used
    /// (RFC 3262).
    reliable: Option<extensions::Reliable>,
    rseq: u32,
}

/// What one of our requests outside INVITE transactions is for, and so what its answer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// Ends the call once answered (or given up on).
    Bye,
    /// The INVITE's 487 ends the call, not this.
    Cancel,
    /// A session refresh (UPDATE): a 408 or 481, or no answer, ends the call with BYE.
    Refresh,
    /// A PRACK for a reliable provisional response.
    Prack,
    /// An OPTIONS keep-alive to a trunk's target, outside any call: its answer (any at all)
    /// says the target is up.
    Qualify,
}

/// Something with timers: a transaction or a call.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Slot {
    Invite(Key),
    Other(Key),
    Request(Key),
    OutInvite(Key),
    Call(CallHandle),
    Registrar,
    /// A trunk registration, by its place in [`Config::registrations`].
    Trunk(usize),
}

/// The user agent core.
pub struct UserAgent {
    config: Config,
    capabilities: Capabilities,
    rng: Box<dyn RngCore + Send>,
    next_handle: u64,
    calls: HashMap<CallHandle, Call>,
    /// (Call-ID, our tag) → call.
    dialogs: HashMap<(String, String), CallHandle>,
    /// The INVITE transaction of a call that came in → the call (CANCEL finds it here).
    by_invite: HashMap<Key, CallHandle>,
    /// Server transactions, with where their requests came from and how big each was.
    invites: HashMap<Key, (ServerInvite, SocketAddr, Link, usize)>,
    others: HashMap<Key, (ServerNonInvite, SocketAddr, Link, usize)>,
    /// The sizes of all server transactions' requests: the table is bounded by
    /// [`MAX_TRANSACTIONS`] and [`MAX_TRANSACTION_BYTES`].
    charged: usize,
    admission: crate::admission::Admission,
    /// When the admission table is next tidied (once a second, as messages come).
    next_tidy: Option<Instant>,
    /// See [`UserAgent::set_overloaded`].
    overloaded: bool,
    /// See [`UserAgent::drain`].
    draining: bool,
    /// Our requests outside INVITE transactions (BYE, CANCEL, UPDATE, PRACK), by branch, with
    /// what each is for and where it goes, which outlives the call (an ACK for a repeated 487).
    requests: HashMap<
        Key,
        (
            ClientNonInvite,
            Option<CallHandle>,
            Purpose,
            SocketAddr,
            Link,
        ),
    >,
    /// Our INVITEs, by branch.
    out_invites: HashMap<Key, (ClientInvite, CallHandle, SocketAddr, Link)>,
    /// Admission: the start of the current one-second window and calls admitted in it.
    window: Option<(Instant, u32)>,
    /// Deadlines of transactions and calls, earliest first; entries whose slot was
    /// rescheduled or forgotten since (no longer in `timer_slots`) are skipped when they come
    /// up.
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    timer_slots: HashMap<u64, Slot>,
    /// Each slot's deadline and the ID of its entry in `timers`.
    scheduled: HashMap<Slot, (Instant, u64)>,
    next_timer: u64,
    /// Transactions and calls changed since the last flush.
    touched: Vec<Slot>,
    registrar: Option<crate::registrar::Registrar>,
    /// The trunk registrations, in the order of [`Config::registrations`] (made at the first
    /// timeout).
    trunks: Vec<trunk::TrunkState>,
    outputs: VecDeque<Output>,
    stats: Stats,
}

impl fmt::Debug for UserAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserAgent")
            .field("calls", &self.calls.len())
            .field("invites", &self.invites.len())
            .field("others", &self.others.len())
            .finish()
    }
}

fn hex(rng: &mut dyn RngCore, bytes: usize) -> String {
    let mut buf = vec![0; bytes];
    rng.fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Responses that make a dialog carry the request's Record-Route, in order (RFC 3261 12.1.1).
fn copy_record_route(request: &Message, response: &mut Message) {
    for value in request.headers.all(&Name::RecordRoute) {
        response.headers.push(Name::RecordRoute, value);
    }
}

/// The top Via of a request we send, with `sent_by` from [`Advertise::sent_by`].
///
/// [`Advertise::sent_by`]: crate::advertise::Advertise::sent_by
fn our_via(link: Link, sent_by: &str, branch: &str) -> String {
    format!(
        "SIP/2.0/{} {sent_by};branch={branch};rport",
        link.via_name()
    )
}

/// Our Contact for a peer at `to` over `link`, with `user` if given; over TCP it says so,
/// so the peer's requests in the dialog come back over TCP.
fn our_contact(
    advertised: &crate::advertise::Advertise,
    user: Option<&str>,
    to: SocketAddr,
    link: Link,
) -> String {
    let user = user.map(|u| format!("{u}@")).unwrap_or_default();
    let transport = match link {
        Link::Udp => "",
        Link::Tcp => ";transport=tcp",
    };
    format!(
        "<sip:{user}{}{transport}>",
        advertised.sent_by(to.ip(), link)
    )
}

/// The key responses to a request we sent will match (see [`Key::of_response`]).
fn client_key(sent_by: &str, branch: String, method: Method) -> Key {
    let (host, port) = crate::uri::split_hostport(sent_by).unwrap_or(("", None));
    Key::Branch {
        branch,
        sent_by: format!("{}:{}", host.to_ascii_lowercase(), port.unwrap_or(5060)),
        method,
    }
}

/// Where a response goes (RFC 3261 section 18.2.2, RFC 3581): back to the source address, to
/// the port in the top Via's `rport` or its port; straight back to the source when the Via
/// cannot be read (a 400 for a broken Via still reaches its sender).
fn response_destination(response: &Message, source: SocketAddr, link: Link) -> SocketAddr {
    let top_via = response
        .headers
        .get(&Name::Via)
        .and_then(|v| Via::parse(crate::message::split_list(v).next()?).ok());
    let Some(top_via) = top_via.filter(|_| link == Link::Udp) else {
        return source;
    };
    let port = match top_via.param("rport") {
        Some(Some(p)) => p.parse().unwrap_or(source.port()),
        Some(None) => source.port(),
        None => top_via.port.unwrap_or(5060),
    };
    SocketAddr::new(source.ip(), port)
}

/// Marks the top Via with where the request really came from (RFC 3261 18.2.1, RFC 3581).
fn stamp_via(request: &mut Message, source: SocketAddr) {
    let Some(top) = request.headers.first_mut(&Name::Via) else {
        return;
    };
    // Only the first value of a comma-separated line is ours to change.
    let (first, rest) = match crate::message::split_list(top).next() {
        Some(first) if first.len() < top.len() => (first.to_owned(), top[first.len()..].to_owned()),
        _ => (top.clone(), String::new()),
    };
    let Ok(mut via) = Via::parse(&first) else {
        return;
    };
    let ip = source.ip().to_string();
    let bracketed = if source.is_ipv6() {
        format!("[{ip}]")
    } else {
        ip.clone()
    };
    if via.host != ip && via.host != bracketed {
        via.params
            .retain(|(n, _)| !n.eq_ignore_ascii_case("received"));
        via.params.push(("received".into(), Some(ip)));
    }
    if let Some(rport) = via
        .params
        .iter_mut()
        .find(|(n, _)| n.eq_ignore_ascii_case("rport"))
    {
        rport.1 = Some(source.port().to_string());
    }
    *top = via.to_header_value() + &rest;
}

/// The number of a message's CSeq (0 when it cannot be read, which no request we keep has).
fn cseq_number(headers: &crate::message::Headers) -> u32 {
    headers
        .get(&Name::CSeq)
        .and_then(|c| crate::header::CSeq::parse(c).ok())
        .map_or(0, |c| c.number)
}

/// The user part of the first value of the header `name` (a SIP URI's user, or a `tel:`
/// URI's number): P-Asserted-Identity (RFC 3325), P-Called-Party-ID, Diversion.
fn header_user(headers: &crate::message::Headers, name: &str) -> Option<String> {
    let first = crate::message::split_list(headers.get(&Name::Other(name.into()))?).next()?;
    let uri = crate::header::NameAddr::parse(first).ok()?.uri;
    match uri.scheme {
        crate::uri::Scheme::Sip | crate::uri::Scheme::Sips => uri.user,
        crate::uri::Scheme::Other(_) => {
            let text = uri.to_string();
            let number = text.strip_prefix("tel:")?.split(';').next()?;
            (!number.is_empty()).then(|| number.to_owned())
        }
    }
}

/// The digit of a SIP INFO body (`application/dtmf-relay`: `Signal=5`; `application/dtmf`: `5`).
fn info_digit(content_type: &str, body: &[u8]) -> Option<char> {
    let text = std::str::from_utf8(body).ok()?;
    let value = match content_type {
        "application/dtmf-relay" => text
            .lines()
            .find_map(|l| {
                l.split_once('=')
                    .filter(|(k, _)| k.trim().eq_ignore_ascii_case("signal"))
            })
            .map(|(_, v)| v.trim())?,
        "application/dtmf" => text.trim(),
        _ => return None,
    };
    let mut chars = value.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c.is_ascii_digit() || "*#ABCDabcd".contains(c) => {
            Some(c.to_ascii_uppercase())
        }
        _ => match value {
            "10" => Some('*'),
            "11" => Some('#'),
            _ => None,
        },
    }
}

impl UserAgent {
    pub fn new(config: Config, rng: Box<dyn RngCore + Send>) -> UserAgent {
        use Method::*;
        let mut methods = vec![Invite, Ack, Bye, Cancel, Options, Info, Update, Prack];
        let registrar = config
            .registrar
            .clone()
            .map(crate::registrar::Registrar::new);
        if registrar.is_some() {
            methods.push(Register);
        }
        UserAgent {
            admission: crate::admission::Admission::new(config.per_source),
            config,
            capabilities: Capabilities {
                methods,
                extensions: vec!["100rel", "timer"],
            },
            registrar,
            trunks: Vec::new(),
            rng,
            next_handle: 1,
            calls: HashMap::new(),
            dialogs: HashMap::new(),
            by_invite: HashMap::new(),
            invites: HashMap::new(),
            others: HashMap::new(),
            charged: 0,
            next_tidy: None,
            overloaded: false,
            draining: false,
            requests: HashMap::new(),
            out_invites: HashMap::new(),
            window: None,
            timers: BinaryHeap::new(),
            timer_slots: HashMap::new(),
            scheduled: HashMap::new(),
            next_timer: 0,
            touched: Vec::new(),
            outputs: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// Calls in progress (ringing, answered or ending).
    pub fn calls(&self) -> usize {
        self.calls.len()
    }

    /// A call's Call-ID.
    pub fn call_id(&self, handle: CallHandle) -> Option<&str> {
        self.calls.get(&handle).map(|c| c.call_id.as_str())
    }

    /// Server transactions held, and the bytes of their requests.
    pub fn transactions(&self) -> (usize, usize) {
        (self.invites.len() + self.others.len(), self.charged)
    }

    /// What has been counted since the start.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    fn send(&mut self, to: SocketAddr, link: Link, message: &Message) {
        self.stats.sent.count(message);
        self.outputs.push_back(Output::Send {
            to,
            link,
            bytes: message.to_bytes(),
        });
    }

    fn event(&mut self, event: CallEvent) {
        self.outputs.push_back(Output::Event(event));
    }

    fn with_server(&self, mut response: Message) -> Message {
        response
            .headers
            .push(Name::Server, self.config.product.clone());
        response
    }

    /// One message from the network: a UDP datagram, or a message framed off a TCP stream.
    pub fn handle_message(&mut self, now: Instant, source: SocketAddr, link: Link, bytes: &[u8]) {
        self.handle_received(now, now, source, link, bytes);
    }

    /// The same, for a message read off its socket at `read` and handled only now: a source's
    /// bucket counts its requests when they came, so a backlog handled at once after a stall
    /// of ours is not taken for a flood of theirs.
    ///
    /// A source outside the trusted networks is dropped unread while it is banned, and each
    /// message it sends (request, response or garbage) takes a token from its bucket first
    /// (see [`crate::admission`]).
    pub fn handle_received(
        &mut self,
        now: Instant,
        read: Instant,
        source: SocketAddr,
        link: Link,
        bytes: &[u8],
    ) {
        if !self.trusted_network(source) {
            if self.admission.banned(source.ip(), now) {
                self.stats.refuse(Refusal::Banned);
                return;
            }
            if let Err(reason) = self.admission.request(source.ip(), read) {
                self.stats.refuse(Refusal::Flood);
                self.event(CallEvent::SourceBanned { source, reason });
                return;
            }
        }
        match parse_datagram(bytes) {
            Err(invalid) => {
                self.stats.invalid += 1;
                self.answer_invalid(&invalid, source, link)
            }
            Ok(message) => {
                self.stats.received.count(&message);
                if message.is_request() {
                    self.handle_request(now, source, link, message, bytes.len())
                } else {
                    self.handle_response(now, source, message)
                }
            }
        }
        self.handle_timeout(now);
    }

    /// 503 with Retry-After, statelessly: the caller tries again later or elsewhere.
    fn refuse_busy(
        &mut self,
        headers: &crate::message::Headers,
        tag: &str,
        source: SocketAddr,
        link: Link,
    ) {
        let mut busy =
            self.with_server(response_to(headers, 503, "Service Unavailable", Some(tag)));
        busy.headers.push(Name::RetryAfter, "5");
        self.respond_stateless(busy, source, link);
    }

    /// Whether `source` is in one of the configured trusted networks (a trunk, a PBX).
    fn trusted_network(&self, source: SocketAddr) -> bool {
        self.config
            .trusted
            .iter()
            .any(|n| crate::admission::in_network(source.ip(), *n))
    }

    /// Answers a request once, keeping no transaction: refusals and answers that change
    /// nothing, so a flood of them costs one packet each and no memory.
    fn respond_stateless(&mut self, response: Message, source: SocketAddr, link: Link) {
        self.send(
            response_destination(&response, source, link),
            link,
            &response,
        );
    }

    fn answer_invalid(&mut self, invalid: &Invalid, source: SocketAddr, link: Link) {
        let tag = hex(self.rng.as_mut(), 8);
        let Some(mut response) = answer_invalid(invalid, &tag) else {
            return;
        };
        response = self.with_server(response);
        self.send(
            response_destination(&response, source, link),
            link,
            &response,
        );
    }

    fn handle_request(
        &mut self,
        now: Instant,
        source: SocketAddr,
        link: Link,
        mut request: Message,
        size: usize,
    ) {
        stamp_via(&mut request, source);
        let Some(key) = Key::of_request(&request) else {
            // No transaction can be matched without a usable Via: refuse statelessly.
            if request.method() != Some(&Method::Ack) {
                let tag = hex(self.rng.as_mut(), 8);
                if let Err(refusal) = check_request(&request, &self.capabilities) {
                    let response = self.with_server(refusal.response(&request.headers, &tag));
                    self.respond_stateless(response, source, link);
                }
            }
            return;
        };
        let is_ack = request.method() == Some(&Method::Ack);
        // Retransmissions and ACKs for a non-2xx go to their server transaction.
        if let Some((transaction, ..)) = self.invites.get_mut(&key) {
            if !is_ack || transaction.state() == server_invite::State::Completed {
                transaction.handle_request(&request, now);
                self.touched.push(Slot::Invite(key));
                self.stats.repeats += u64::from(!is_ack);
                return;
            }
        } else if let Some((transaction, ..)) = self.others.get_mut(&key) {
            transaction.handle_request(&request, now);
            self.touched.push(Slot::Other(key));
            self.stats.repeats += 1;
            return;
        } else if self.by_invite.contains_key(&key) && !is_ack {
            // A late retransmission of the INVITE of a call already confirmed, whose
            // transaction has ended: absorbed, as the transaction would have.
            self.stats.repeats += 1;
            return;
        }
        let tag = hex(self.rng.as_mut(), 8);
        let parsed = match check_request(&request, &self.capabilities) {
            Ok(parsed) => parsed,
            Err(refusal) => {
                if !is_ack {
                    let response = self.with_server(refusal.response(&request.headers, &tag));
                    self.respond_stateless(response, source, link);
                }
                return;
            }
        };
        if !is_ack
            && (self.invites.len() + self.others.len() >= MAX_TRANSACTIONS
                || self.charged + size > MAX_TRANSACTION_BYTES)
        {
            self.refuse_busy(&request.headers, &tag, source, link);
            self.stats.refuse(Refusal::TransactionsFull);
            self.event(CallEvent::TransactionsFull);
            return;
        }
        let in_dialog = parsed.to.tag().and_then(|t| {
            self.dialogs
                .get(&(parsed.call_id.clone(), t.to_owned()))
                .copied()
        });
        match (&parsed.method, in_dialog) {
            (Method::Ack, Some(call)) => self.handle_ack(now, call, &request),
            (Method::Ack, None) => {}
            (Method::Invite, None) if parsed.to.tag().is_none() => {
                self.handle_invite(now, key, request, parsed, source, link, size)
            }
            (Method::Cancel, _) => self.handle_cancel(now, key, request, source, link, size),
            (_, Some(call)) => {
                self.handle_in_dialog(now, key, request, parsed, call, source, link, size)
            }
            (Method::Register, _) => {
                self.handle_register(now, key, request, parsed, source, link, size)
            }
            // Keep-alives from proxies and load balancers: answered with nothing kept.
            (Method::Options, None) if parsed.to.tag().is_none() => {
                if self.draining {
                    self.stats.refuse(Refusal::Draining);
                    self.refuse_busy(&request.headers, &tag, source, link);
                } else {
                    let response = self.options_response(&request.headers, &tag);
                    self.respond_stateless(response, source, link);
                }
            }
            (_, None) => {
                let response = self.with_server(response_to(
                    &request.headers,
                    481,
                    "Call/Transaction Does Not Exist",
                    Some(&tag),
                ));
                self.respond_stateless(response, source, link);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn handle_register(
        &mut self,
        now: Instant,
        key: Key,
        request: Message,
        parsed: RequestHeaders,
        source: SocketAddr,
        link: Link,
        size: usize,
    ) {
        let tag = hex(self.rng.as_mut(), 8);
        let mut random = [0; 8];
        self.rng.fill_bytes(&mut random);
        let Some(registrar) = self.registrar.as_mut() else {
            return;
        };
        let answer = registrar.handle(now, &request, &parsed, source, link, random, &tag);
        let response = self.with_server(answer.response);
        self.respond_new(now, key, request, source, link, response, size);
        self.touched.push(Slot::Registrar);
        self.registration_events(answer.changes);
        if let Some(user) = answer.failed {
            self.event(CallEvent::AuthFailed { user, source });
            if !self.trusted_network(source) {
                if let Err(reason) = self.admission.strike(source.ip(), now) {
                    self.event(CallEvent::SourceBanned { source, reason });
                }
            }
        }
    }

    fn registration_events(&mut self, changes: Vec<crate::registrar::Registration>) {
        use crate::registrar::Registration;
        for change in changes {
            self.event(match change {
                Registration::Registered {
                    user,
                    contact,
                    source,
                } => CallEvent::PhoneRegistered {
                    user,
                    contact,
                    source,
                },
                Registration::Unregistered { user } => CallEvent::PhoneUnregistered { user },
                Registration::Bindings { user, bindings } => {
                    CallEvent::BindingsChanged { user, bindings }
                }
            });
        }
    }

    /// Where a phone registered as `user` is reached now, if it is registered.
    pub fn binding(&self, user: &str, now: Instant) -> Option<&crate::registrar::Binding> {
        self.registrar.as_ref()?.binding(user, now)
    }

    /// Replaces the phones that may register (user name → password), as a reload does:
    /// phones no longer configured lose their bindings. `false` when this user agent has no
    /// registrar (it started with no phones), which only a restart gives it.
    pub fn set_phones(&mut self, users: std::collections::HashMap<String, String>) -> bool {
        let Some(registrar) = self.registrar.as_mut() else {
            return users.is_empty();
        };
        let changes = registrar.set_users(users);
        self.touched.push(Slot::Registrar);
        self.registration_events(changes);
        true
    }

    /// Puts back a registrar binding kept from before a restart.
    pub fn restore_binding(&mut self, user: String, binding: crate::registrar::Binding) {
        if let Some(registrar) = self.registrar.as_mut() {
            registrar.restore(user, binding);
            self.touched.push(Slot::Registrar);
        }
    }

    /// Whether a new call from `source` is let in: from a trusted network, or from where a
    /// registered phone registered.
    fn trusted(&self, source: SocketAddr, now: Instant) -> bool {
        self.config.trusted.is_empty()
            || self.trusted_network(source)
            || self
                .registrar
                .as_ref()
                .is_some_and(|r| r.knows_source(source, now))
    }

    fn options_response(&self, headers: &crate::message::Headers, tag: &str) -> Message {
        let mut response = self.with_server(response_to(headers, 200, "OK", Some(tag)));
        response
            .headers
            .push(Name::Allow, self.capabilities.allow());
        response.headers.push(Name::Accept, "application/sdp");
        response.headers.push(Name::Supported, SUPPORTED);
        response
    }

    /// Answers a request with a new server transaction that sends `response` right away.
    #[allow(clippy::too_many_arguments)]
    fn respond_new(
        &mut self,
        now: Instant,
        key: Key,
        request: Message,
        source: SocketAddr,
        link: Link,
        response: Message,
        size: usize,
    ) {
        self.charged += size;
        if request.method() == Some(&Method::Invite) {
            let mut transaction = ServerInvite::new(&request, link.transport(), self.config.timers);
            // The 100 Trying is moot when the final answer is immediate.
            while transaction.poll_transmit().is_some() {}
            transaction.send_response(response, now);
            if let Some((.., old)) = self
                .invites
                .insert(key.clone(), (transaction, source, link, size))
            {
                self.charged -= old;
            }
            self.touched.push(Slot::Invite(key));
        } else {
            let mut transaction = ServerNonInvite::new(link.transport(), self.config.timers);
            transaction.send_response(response, now);
            if let Some((.., old)) = self
                .others
                .insert(key.clone(), (transaction, source, link, size))
            {
                self.charged -= old;
            }
            self.touched.push(Slot::Other(key));
        }
    }

    /// Whether a source outside the trusted networks may start another call: under its caps
    /// on calls at once and on calls not yet confirmed.
    fn within_source_limits(&self, source: SocketAddr) -> bool {
        if self.trusted_network(source) {
            return true;
        }
        let key = crate::admission::source_key(source.ip());
        let (mut calls, mut unconfirmed) = (0, 0);
        for call in self.calls.values() {
            if call.outbound.is_none() && crate::admission::source_key(call.source.ip()) == key {
                calls += 1;
                unconfirmed += u32::from(matches!(call.phase, Phase::Ringing | Phase::Answered));
            }
        }
        let limits = self.admission.settings();
        calls < limits.calls && unconfirmed < limits.unconfirmed_calls
    }

    /// The runtime says whether it is overloaded: messages wait too long before they are
    /// handled. While it is, new INVITEs are refused at once (a stateless 503), so what is
    /// left of the node goes to the calls it has.
    pub fn set_overloaded(&mut self, overloaded: bool) {
        self.overloaded = overloaded;
    }

    /// The node is stopping: from now on new calls are refused (503 with Retry-After, so a
    /// proxy tries another node) and OPTIONS is answered 503, so a dispatcher probing with
    /// OPTIONS takes the node out of rotation. Calls in progress go on.
    pub fn drain(&mut self) {
        self.draining = true;
    }

    fn admit(&mut self, now: Instant) -> Result<(), Refusal> {
        if self.draining {
            return Err(Refusal::Draining);
        }
        if self.overloaded {
            return Err(Refusal::Overload);
        }
        if self.calls.len() >= self.config.max_calls {
            return Err(Refusal::CallLimit);
        }
        let (start, count) = match self.window {
            Some((start, count)) if now.duration_since(start) < Duration::from_secs(1) => {
                (start, count)
            }
            _ => (now, 0),
        };
        if count >= self.config.max_calls_per_second {
            self.window = Some((start, count));
            return Err(Refusal::CallLimit);
        }
        self.window = Some((start, count + 1));
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn handle_invite(
        &mut self,
        now: Instant,
        key: Key,
        request: Message,
        parsed: RequestHeaders,
        source: SocketAddr,
        link: Link,
        size: usize,
    ) {
        let tag = hex(self.rng.as_mut(), 8);
        if !self.trusted(source, now) {
            // Statelessly: a spoofed source gets one 403, not a retransmitted series of them.
            let forbidden =
                self.with_server(response_to(&request.headers, 403, "Forbidden", Some(&tag)));
            self.respond_stateless(forbidden, source, link);
            self.stats.refuse(Refusal::Untrusted);
            return;
        }
        // Refusals are stateless too: one 503 per INVITE (and per retransmission of it).
        let admitted = if self.within_source_limits(source) {
            self.admit(now)
        } else {
            Err(Refusal::SourceLimit)
        };
        if let Err(refusal) = admitted {
            self.stats.refuse(refusal);
            self.refuse_busy(&request.headers, &tag, source, link);
            return;
        }
        let session = match extensions::SessionTimer::answering(&request.headers, None, now) {
            Ok(session) => session,
            Err((code, reason)) => {
                let mut refusal =
                    self.with_server(response_to(&request.headers, code, reason, Some(&tag)));
                if code == 422 {
                    refusal.headers.push(Name::MinSe, MIN_SE.to_string());
                }
                self.respond_stateless(refusal, source, link);
                return;
            }
        };
        let handle = CallHandle(self.next_handle);
        self.next_handle += 1;
        let remote = request
            .headers
            .get(&Name::From)
            .unwrap_or_default()
            .to_owned();
        let local = format!(
            "{};tag={tag}",
            request.headers.get(&Name::To).unwrap_or_default()
        );
        let route_set = request
            .headers
            .list(&Name::RecordRoute)
            .unwrap_or_default()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let offer = (!request.body.is_empty()).then(|| request.body.clone());
        let asserted = self
            .trusted_network(source)
            .then(|| {
                header_user(&request.headers, "P-Asserted-Identity").or(parsed
                    .from
                    .uri
                    .user
                    .clone())
            })
            .flatten();
        let call = Call {
            handle,
            phase: Phase::Ringing,
            invite_key: key.clone(),
            invite: request.clone(),
            source,
            link,
            call_id: parsed.call_id.clone(),
            local_tag: tag.clone(),
            remote,
            local,
            local_cseq: self.rng.next_u32() % 10_000 + 1,
            remote_cseq: parsed.cseq.number,
            remote_target: parsed
                .contact
                .first()
                .map_or_else(|| parsed.from.uri.to_string(), |c| c.uri.to_string()),
            route_set,
            ok: None,
            retransmit: None,
            give_up: None,
            local_sdp: None,
            offer_in_ok: offer.is_none(),
            ending: None,
            outbound: None,
            session,
            reliable: None,
            rseq: 0,
        };
        self.dialogs.insert((parsed.call_id.clone(), tag), handle);
        self.by_invite.insert(key.clone(), handle);
        self.calls.insert(handle, call);
        let mut transaction = ServerInvite::new(&request, link.transport(), self.config.timers);
        while let Some(trying) = transaction.poll_transmit() {
            let trying = self.with_server(trying);
            self.send(response_destination(&trying, source, link), link, &trying);
        }
        self.charged += size;
        if let Some((.., old)) = self
            .invites
            .insert(key.clone(), (transaction, source, link, size))
        {
            self.charged -= old;
        }
        self.touched.push(Slot::Invite(key));
        self.event(CallEvent::Incoming {
            call: handle,
            dialled: Dialled::of(&parsed, &request.headers),
            caller: parsed.from.uri.user.clone(),
            asserted,
            source,
            call_id: parsed.call_id,
            offer,
        });
    }

    /// The ACK for our 2xx (to the INVITE or to a re-INVITE): stops its retransmission. A
    /// hang-up asked for before the ACK came goes out now (RFC 3261 section 15).
    fn handle_ack(&mut self, now: Instant, handle: CallHandle, request: &Message) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        call.retransmit = None;
        call.give_up = None;
        if call.phase != Phase::Answered {
            return;
        }
        call.phase = Phase::Confirmed;
        // The caller has our 2xx: the INVITE transaction has nothing left to do but absorb a
        // retransmitted INVITE, which the call does while it lasts (see `handle_request`).
        // Ending it now, rather than after Timer L's 32 s, halves what each call leaves behind
        // in the transaction table, whose bound otherwise caps the sustained call rate.
        if let Some((.., size)) = self.invites.remove(&call.invite_key) {
            self.charged -= size;
        }
        let (answer, pending_hang_up, invite) = (
            (call.offer_in_ok && !request.body.is_empty()).then(|| request.body.clone()),
            call.ending.take(),
            Slot::Invite(call.invite_key.clone()),
        );
        self.unschedule(&invite);
        self.event(CallEvent::Established {
            call: handle,
            answer,
        });
        if let Some(reason) = pending_hang_up {
            self.send_bye(now, handle, reason);
        }
    }

    fn handle_cancel(
        &mut self,
        now: Instant,
        key: Key,
        request: Message,
        source: SocketAddr,
        link: Link,
        size: usize,
    ) {
        let tag = hex(self.rng.as_mut(), 8);
        let invite_key = key.with_method(Method::Invite);
        let call = self.by_invite.get(&invite_key).copied();
        let ringing = call.filter(|h| self.calls.get(h).is_some_and(|c| c.phase == Phase::Ringing));
        let Some(handle) = ringing else {
            // Too late to cancel a call already answered: 200, and nothing else happens
            // (RFC 3261 section 9.2). A CANCEL for nothing at all gets 481.
            let (code, phrase) = if call.is_some() {
                (200, "OK")
            } else {
                (481, "Call/Transaction Does Not Exist")
            };
            let response =
                self.with_server(response_to(&request.headers, code, phrase, Some(&tag)));
            self.respond_new(now, key, request, source, link, response, size);
            return;
        };
        let ok = self.with_server(response_to(&request.headers, 200, "OK", Some(&tag)));
        self.respond_new(now, key, request, source, link, ok, size);
        self.final_response(now, handle, 487, "Request Terminated");
        self.end(handle, EndReason::Cancelled);
    }

    #[allow(clippy::too_many_arguments)]
    fn handle_in_dialog(
        &mut self,
        now: Instant,
        key: Key,
        request: Message,
        parsed: RequestHeaders,
        handle: CallHandle,
        source: SocketAddr,
        link: Link,
        size: usize,
    ) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        if parsed.cseq.number <= call.remote_cseq && parsed.method != Method::Invite {
            let response = response_to(
                &request.headers,
                500,
                "Server Internal Error (CSeq out of order)",
                None,
            );
            let response = self.with_server(response);
            self.respond_new(now, key, request, source, link, response, size);
            return;
        }
        call.remote_cseq = parsed.cseq.number;
        let tag = call.local_tag.clone();
        let content_type = request
            .headers
            .get(&Name::ContentType)
            .map(|c| {
                c.split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        let mut response = self.with_server(response_to(&request.headers, 200, "OK", Some(&tag)));
        match parsed.method {
            Method::Bye => {
                self.respond_new(now, key, request, source, link, response, size);
                // BYE on an early dialog: our INVITE transaction still needs its end.
                match self.calls.get(&handle).map(|c| c.phase) {
                    Some(Phase::Ringing) => {
                        self.final_response(now, handle, 487, "Request Terminated");
                    }
                    Some(Phase::Dialing) => self.cancel(now, handle, EndReason::RemoteHangup),
                    _ => {}
                }
                self.end(handle, EndReason::RemoteHangup);
                return;
            }
            Method::Prack => {
                // The PRACK for our reliable 18x (RFC 3262): the 200 held back goes now.
                let Some(call) = self.calls.get_mut(&handle) else {
                    return;
                };
                let matches = |r: &extensions::Reliable| {
                    extensions::rack(&request.headers)
                        == Some((r.rseq, cseq_number(&call.invite.headers)))
                };
                let answer = match call.reliable.take_if(|r| matches(r)) {
                    Some(reliable) => reliable.answer,
                    None => {
                        response = self.with_server(response_to(
                            &request.headers,
                            481,
                            "Call/Transaction Does Not Exist",
                            Some(&tag),
                        ));
                        None
                    }
                };
                self.touched.push(Slot::Call(handle));
                self.respond_new(now, key, request, source, link, response, size);
                if let Some(sdp) = answer {
                    self.answer(now, handle, sdp);
                }
                return;
            }
            Method::Invite | Method::Update => {
                // A refresh of the session timer, or a request that names one.
                let Some(call) = self.calls.get_mut(&handle) else {
                    return;
                };
                match extensions::SessionTimer::answering(
                    &request.headers,
                    call.session.as_ref(),
                    now,
                ) {
                    Ok(timer) => {
                        if let Some(timer) = &timer {
                            extensions::add_timer(&mut response, timer);
                        }
                        call.session = timer;
                        self.touched.push(Slot::Call(handle));
                    }
                    Err((code, reason)) => {
                        let mut refusal = self.with_server(response_to(
                            &request.headers,
                            code,
                            reason,
                            Some(&tag),
                        ));
                        if code == 422 {
                            refusal.headers.push(Name::MinSe, MIN_SE.to_string());
                        }
                        self.respond_new(now, key, request, source, link, refusal, size);
                        return;
                    }
                }
                response.headers.push(Name::Supported, SUPPORTED);
                let local_sdp = self.calls.get(&handle).and_then(|c| c.local_sdp.clone());
                if !request.body.is_empty() {
                    self.event(CallEvent::Reoffer {
                        call: handle,
                        offer: request.body.clone(),
                    });
                }
                if let Some(sdp) = local_sdp {
                    response.headers.push(Name::ContentType, "application/sdp");
                    response.body = sdp;
                }
                response.headers.push(
                    Name::Contact,
                    our_contact(&self.config.advertised, None, source, link),
                );
            }
            Method::Info => {
                if let Some(digit) = info_digit(&content_type, &request.body) {
                    self.event(CallEvent::InfoDigit {
                        call: handle,
                        digit,
                    });
                }
            }
            Method::Options => {
                response = self.options_response(&request.headers, &tag);
            }
            _ => {}
        }
        if parsed.method == Method::Invite && link == Link::Udp {
            // The 2xx to a re-INVITE is ours to resend until its ACK, like the first one.
            if let Some(call) = self.calls.get_mut(&handle) {
                let mut backoff = Backoff::new(self.config.timers.t1, Some(self.config.timers.t2));
                call.ok = Some(response.clone());
                call.retransmit = Some((now + backoff.step(), backoff));
                call.give_up = Some(now + self.config.timers.transaction_timeout());
                self.touched.push(Slot::Call(handle));
            }
        }
        self.respond_new(now, key, request, source, link, response, size);
    }

    /// A response, taken only from where its request went: an answer (a challenge above all)
    /// forged from elsewhere is dropped.
    fn handle_response(&mut self, now: Instant, source: SocketAddr, response: Message) {
        let Some(key) = Key::of_response(&response) else {
            return;
        };
        let from_peer = |to: &SocketAddr| to.ip() == source.ip();
        if let Some((transaction, _, to, _)) = self.out_invites.get_mut(&key) {
            if from_peer(to) {
                transaction.handle_response(response, now);
                self.touched.push(Slot::OutInvite(key));
            }
        } else if self.trunks.iter().any(|t| t.owns(&key)) {
            if let Some(i) = self.trunk_for_response(&key, source) {
                self.trunk_response(now, i, response);
            }
        } else if let Some((transaction, _, _, to, _)) = self.requests.get_mut(&key) {
            if from_peer(to) {
                transaction.handle_response(response, now);
                self.touched.push(Slot::Request(key));
            }
        }
    }

    /// Sends a final response to a ringing call's INVITE.
    fn final_response(
        &mut self,
        now: Instant,
        handle: CallHandle,
        code: u16,
        reason: &str,
    ) -> Option<Message> {
        let call = self.calls.get(&handle)?;
        let mut response = response_to(&call.invite.headers, code, reason, Some(&call.local_tag));
        if code < 300 {
            copy_record_route(&call.invite, &mut response);
        }
        response
            .headers
            .push(Name::Server, self.config.product.clone());
        if code < 200 {
            self.send_provisional(now, handle, response.clone());
            return Some(response);
        }
        let key = call.invite_key.clone();
        let (transaction, ..) = self.invites.get_mut(&key)?;
        transaction.send_response(response.clone(), now);
        self.touched.push(Slot::Invite(key));
        Some(response)
    }

    /// Answers a ringing call with 200 OK carrying `sdp` (the answer to the caller's offer, or
    /// our offer when the INVITE had none).
    pub fn answer(&mut self, now: Instant, handle: CallHandle, sdp: Bytes) {
        if self
            .calls
            .get(&handle)
            .is_none_or(|c| c.phase != Phase::Ringing)
        {
            return;
        }
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        // RFC 3262 section 3: the 200 waits for the PRACK of our reliable 18x.
        if let Some(reliable) = call.reliable.as_mut() {
            reliable.answer = Some(sdp);
            return;
        }
        let contact = our_contact(&self.config.advertised, None, call.source, call.link);
        call.local_sdp = Some(sdp.clone());
        let mut ok = response_to(&call.invite.headers, 200, "OK", Some(&call.local_tag));
        copy_record_route(&call.invite, &mut ok);
        ok.headers.push(Name::Contact, contact);
        ok.headers.push(Name::Allow, self.capabilities.allow());
        ok.headers.push(Name::Supported, SUPPORTED);
        // The session interval runs from the answer.
        call.session = call.session.as_ref().map(|t| t.refreshed(now));
        if let Some(timer) = &call.session {
            extensions::add_timer(&mut ok, timer);
        }
        ok.headers.push(Name::Server, self.config.product.clone());
        ok.headers.push(Name::ContentType, "application/sdp");
        ok.body = sdp;
        call.phase = Phase::Answered;
        let mut backoff = Backoff::new(self.config.timers.t1, Some(self.config.timers.t2));
        if call.link == Link::Udp {
            call.retransmit = Some((now + backoff.step(), backoff));
        }
        call.give_up = Some(now + self.config.timers.transaction_timeout());
        call.ok = Some(ok.clone());
        let key = call.invite_key.clone();
        if let Some((transaction, ..)) = self.invites.get_mut(&key) {
            transaction.send_response(ok, now);
        }
        self.touched.push(Slot::Invite(key));
        self.touched.push(Slot::Call(handle));
        self.flush_transactions(now);
    }

    /// Sends 180 Ringing for a call not yet answered.
    /// Lets a call not yet answered ring: 180 Ringing, or with `early_media` (our SDP answer)
    /// 183 Session Progress, for a caller who should hear our audio before the answer.
    pub fn ring(&mut self, now: Instant, handle: CallHandle, early_media: Option<Bytes>) {
        if self
            .calls
            .get(&handle)
            .is_none_or(|c| c.phase != Phase::Ringing)
        {
            return;
        }
        match early_media {
            None => self.final_or_provisional(now, handle, 180, "Ringing"),
            Some(sdp) => {
                let Some(call) = self.calls.get(&handle) else {
                    return;
                };
                let contact = our_contact(&self.config.advertised, None, call.source, call.link);
                let mut progress = response_to(
                    &call.invite.headers,
                    183,
                    "Session Progress",
                    Some(&call.local_tag),
                );
                copy_record_route(&call.invite, &mut progress);
                progress.headers.push(Name::Contact, contact);
                progress
                    .headers
                    .push(Name::Server, self.config.product.clone());
                progress.headers.push(Name::ContentType, "application/sdp");
                progress.body = sdp;
                self.send_provisional(now, handle, progress);
                self.flush_transactions(now);
            }
        }
    }

    /// Sends a 180 or 183 for a ringing call; reliably (RFC 3262) when the INVITE requires
    /// `100rel`: with `RSeq`, resent until its PRACK, and no second one before that.
    fn send_provisional(&mut self, now: Instant, handle: CallHandle, mut response: Message) {
        let first_rseq = self.rng.next_u32() % 0x7fff_ffff + 1;
        let (t1, timeout) = (
            self.config.timers.t1,
            self.config.timers.transaction_timeout(),
        );
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        // It makes an early dialog, so it says where the dialog's requests (a PRACK) go.
        if response.headers.get(&Name::Contact).is_none() {
            let contact = our_contact(&self.config.advertised, None, call.source, call.link);
            response.headers.push(Name::Contact, contact);
        }
        response.headers.push(Name::Supported, SUPPORTED);
        if extensions::requires(&call.invite.headers, "100rel") {
            if call.reliable.is_some() {
                return;
            }
            call.rseq = if call.rseq == 0 {
                first_rseq
            } else {
                call.rseq + 1
            };
            response.headers.push(Name::Require, "100rel");
            response.headers.push(Name::RSeq, call.rseq.to_string());
            let mut backoff = Backoff::new(t1, None);
            call.reliable = Some(extensions::Reliable {
                rseq: call.rseq,
                response: response.clone(),
                resend: (call.link == Link::Udp).then(|| (now + backoff.step(), backoff)),
                give_up: now + timeout,
                answer: None,
            });
            self.touched.push(Slot::Call(handle));
        }
        let key = call.invite_key.clone();
        if let Some((transaction, ..)) = self.invites.get_mut(&key) {
            transaction.send_response(response, now);
            self.touched.push(Slot::Invite(key));
        }
    }

    fn final_or_provisional(&mut self, now: Instant, handle: CallHandle, code: u16, reason: &str) {
        self.final_response(now, handle, code, reason);
        self.flush_transactions(now);
    }

    /// Refuses a ringing call (486 busy, 488 no common codec, 480 not available …).
    pub fn reject(&mut self, now: Instant, handle: CallHandle, code: u16, reason: &str) {
        if self
            .calls
            .get(&handle)
            .is_some_and(|c| c.phase == Phase::Ringing)
        {
            self.final_or_provisional(now, handle, code, reason);
            self.end(handle, EndReason::Rejected(code));
        }
    }

    /// Ends an answered call with BYE (or refuses one still ringing with 480).
    pub fn hang_up(&mut self, now: Instant, handle: CallHandle) {
        let Some(phase) = self.calls.get(&handle).map(|c| c.phase) else {
            return;
        };
        match phase {
            Phase::Ringing => self.reject(now, handle, 480, "Temporarily Unavailable"),
            // No BYE before the ACK (RFC 3261 section 15): it goes when the ACK comes, or
            // when we give up waiting for it.
            Phase::Answered => {
                if let Some(call) = self.calls.get_mut(&handle) {
                    call.ending = Some(EndReason::LocalHangup);
                }
            }
            Phase::Confirmed => self.send_bye(now, handle, EndReason::LocalHangup),
            Phase::Dialing => self.cancel(now, handle, EndReason::LocalHangup),
            Phase::Ending => {}
        }
    }

    fn send_bye(&mut self, now: Instant, handle: CallHandle, reason: EndReason) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        call.phase = Phase::Ending;
        call.ending = Some(reason);
        call.retransmit = None;
        call.give_up = None;
        call.session = None;
        let Some((bye, key)) = self.dialog_request(handle, Method::Bye) else {
            return;
        };
        self.start_request(now, handle, bye, key, Purpose::Bye);
    }

    /// Refreshes the session with an UPDATE (RFC 4028 section 7.4); the timer runs on from
    /// now, and the answer decides whether the call goes on.
    fn send_refresh(&mut self, now: Instant, handle: CallHandle) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        let Some(timer) = call.session.as_ref().map(|t| t.refreshed(now)) else {
            return;
        };
        let session_expires = timer.header(true);
        call.session = Some(timer);
        let contact = our_contact(&self.config.advertised, None, call.source, call.link);
        let Some((mut update, key)) = self.dialog_request(handle, Method::Update) else {
            return;
        };
        update.headers.push(Name::Contact, contact);
        update.headers.push(Name::Supported, SUPPORTED);
        update.headers.push(Name::SessionExpires, session_expires);
        self.start_request(now, handle, update, key, Purpose::Refresh);
    }

    /// A request within the call's dialog, with the next CSeq, and the key its responses
    /// will match.
    fn dialog_request(&mut self, handle: CallHandle, method: Method) -> Option<(Message, Key)> {
        let branch = format!("z9hG4bK{}", hex(self.rng.as_mut(), 8));
        let call = self.calls.get_mut(&handle)?;
        call.local_cseq += 1;
        let mut request = Message::request(method.clone(), call.remote_target.clone());
        let sent_by = self.config.advertised.sent_by(call.source.ip(), call.link);
        request
            .headers
            .push(Name::Via, our_via(call.link, &sent_by, &branch));
        request.headers.push(Name::MaxForwards, "70");
        for route in &call.route_set {
            request.headers.push(Name::Route, route.clone());
        }
        request.headers.push(Name::From, call.local.clone());
        request.headers.push(Name::To, call.remote.clone());
        request.headers.push(Name::CallId, call.call_id.clone());
        request.headers.push(
            Name::CSeq,
            format!("{} {}", call.local_cseq, method.as_str()),
        );
        request
            .headers
            .push(Name::UserAgent, self.config.product.clone());
        Some((request, client_key(&sent_by, branch, method)))
    }

    /// Sends `request` (built by [`UserAgent::dialog_request`]) in a client transaction of its
    /// own to the call's peer.
    fn start_request(
        &mut self,
        now: Instant,
        handle: CallHandle,
        request: Message,
        key: Key,
        purpose: Purpose,
    ) {
        let Some(call) = self.calls.get(&handle) else {
            return;
        };
        let (to, link) = (call.source, call.link);
        let transaction = ClientNonInvite::new(request, link.transport(), self.config.timers, now);
        self.requests
            .insert(key.clone(), (transaction, Some(handle), purpose, to, link));
        self.touched.push(Slot::Request(key));
        self.flush_transactions(now);
    }

    /// Sends an OPTIONS keep-alive to a trunk's target `to` (RFC 3261 section 11); the answer,
    /// or its absence after the transaction's timeout, comes as [`CallEvent::Qualified`].
    pub fn qualify(&mut self, now: Instant, to: SocketAddr, link: Link) {
        let branch = format!("z9hG4bK{}", hex(self.rng.as_mut(), 8));
        let (tag, call_id) = (hex(self.rng.as_mut(), 8), hex(self.rng.as_mut(), 12));
        let sent_by = self.config.advertised.sent_by(to.ip(), link);
        let host = self.config.advertised.host(to.ip()).to_owned();
        let mut options = Message::request(Method::Options, format!("sip:{to}"));
        options
            .headers
            .push(Name::Via, our_via(link, &sent_by, &branch));
        options.headers.push(Name::MaxForwards, "70");
        options
            .headers
            .push(Name::From, format!("<sip:callbackd@{host}>;tag={tag}"));
        options.headers.push(Name::To, format!("<sip:{to}>"));
        options
            .headers
            .push(Name::CallId, format!("{call_id}@{host}"));
        options.headers.push(Name::CSeq, "1 OPTIONS");
        options
            .headers
            .push(Name::UserAgent, self.config.product.clone());
        let key = client_key(&sent_by, branch, Method::Options);
        let transaction = ClientNonInvite::new(options, link.transport(), self.config.timers, now);
        self.requests
            .insert(key.clone(), (transaction, None, Purpose::Qualify, to, link));
        self.touched.push(Slot::Request(key));
        self.flush_transactions(now);
    }

    fn end(&mut self, handle: CallHandle, reason: EndReason) {
        if let Some(call) = self.calls.remove(&handle) {
            self.dialogs
                .remove(&(call.call_id.clone(), call.local_tag.clone()));
            self.by_invite.remove(&call.invite_key);
            self.event(CallEvent::Ended {
                call: handle,
                reason,
            });
        }
    }

    /// Fires the timers that are due: only those, found in a heap, so the cost does not grow
    /// with the number of calls and transactions waiting.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_tidy.is_none_or(|at| at <= now) {
            self.admission.tidy(now);
            self.next_tidy = Some(now + Duration::from_secs(1));
        }
        if self.trunks.len() < self.config.registrations.len() {
            for settings in self.config.registrations.clone() {
                let call_id = format!("{}@callbackd", hex(self.rng.as_mut(), 12));
                let tag = hex(self.rng.as_mut(), 8);
                self.trunks
                    .push(trunk::TrunkState::new(settings, call_id, tag, now));
                self.trunk_timeout(now, self.trunks.len() - 1);
            }
        }
        let mut due = Vec::new();
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if let Some(slot) = self.timer_slots.remove(&id) {
                self.scheduled.remove(&slot);
                due.push(slot);
            }
        }
        for slot in due {
            match &slot {
                Slot::Invite(key) => {
                    if let Some((t, ..)) = self.invites.get_mut(key) {
                        let before = t.pending();
                        t.handle_timeout(now);
                        self.stats.retransmitted += (t.pending() - before) as u64;
                    }
                }
                Slot::Other(key) => {
                    if let Some((t, ..)) = self.others.get_mut(key) {
                        t.handle_timeout(now);
                    }
                }
                Slot::Request(key) => {
                    if let Some((t, _, _, _, _)) = self.requests.get_mut(key) {
                        let before = t.pending();
                        t.handle_timeout(now);
                        self.stats.retransmitted += (t.pending() - before) as u64;
                    }
                }
                Slot::OutInvite(key) => {
                    if let Some((t, _, _, _)) = self.out_invites.get_mut(key) {
                        let before = t.pending();
                        t.handle_timeout(now);
                        self.stats.retransmitted += (t.pending() - before) as u64;
                    }
                }
                Slot::Call(handle) => self.call_timeout(now, *handle),
                Slot::Registrar => {
                    let gone = self
                        .registrar
                        .as_mut()
                        .map(|r| r.expire(now))
                        .unwrap_or_default();
                    self.registration_events(gone);
                }
                Slot::Trunk(i) => self.trunk_timeout(now, *i),
            }
            self.touched.push(slot);
        }
        self.flush_transactions(now);
    }

    /// A call's own timers: the 2xx retransmission and giving up on the ACK, the ring
    /// timeout of a call we placed, the reliable 18x and its PRACK, the session timer.
    fn call_timeout(&mut self, now: Instant, handle: CallHandle) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        if call.give_up.is_some_and(|at| at <= now) {
            call.give_up = None;
            if call.outbound.as_ref().is_some_and(|o| o.cancelled) {
                // Our CANCEL never brought the INVITE's 487 (RFC 3261 section 9.1): stop waiting.
                let reason = call.ending.take().unwrap_or(EndReason::NoAnswer);
                self.end(handle, reason);
            } else {
                let reason = call.ending.take().unwrap_or(EndReason::NoAck);
                self.send_bye(now, handle, reason);
            }
            return;
        }
        if let Some(outbound) = call.outbound.as_mut() {
            if outbound.ring_deadline.is_some_and(|at| at <= now) {
                outbound.ring_deadline = None;
                self.cancel(now, handle, EndReason::NoAnswer);
                return;
            }
            if outbound.silent_until.is_some_and(|at| at <= now) {
                outbound.silent_until = None;
                self.fail_over(now, handle);
                return;
            }
        }
        if call.reliable.as_ref().is_some_and(|r| r.give_up <= now) {
            // RFC 3262 section 3: no PRACK within 64·T1, and the INVITE is refused.
            call.reliable = None;
            self.reject(now, handle, 504, "Server Time-out (no PRACK)");
            return;
        }
        let mut resend = Vec::new();
        if let Some((at, backoff)) = call.retransmit.as_mut().filter(|(at, _)| *at <= now) {
            *at = now + backoff.step();
            resend.extend(call.ok.clone());
        }
        if let Some(reliable) = call.reliable.as_mut() {
            if let Some((at, backoff)) = reliable.resend.as_mut().filter(|(at, _)| *at <= now) {
                *at = now + backoff.step();
                resend.push(reliable.response.clone());
            }
        }
        let confirmed = matches!(call.phase, Phase::Answered | Phase::Confirmed);
        let session = call
            .session
            .as_ref()
            .filter(|t| confirmed && t.due <= now)
            .map(|t| t.we_refresh);
        let (source, link) = (call.source, call.link);
        self.stats.retransmitted += resend.len() as u64;
        for response in resend {
            self.send(
                response_destination(&response, source, link),
                link,
                &response,
            );
        }
        match session {
            Some(true) => self.send_refresh(now, handle),
            Some(false) => self.send_bye(now, handle, EndReason::SessionExpired),
            None => {}
        }
        self.touched.push(Slot::Call(handle));
    }

    /// The answer to our session refresh: a 2xx keeps the call (with the interval it names);
    /// a 408 or 481, or none at all, means the peer has lost it (RFC 4028 section 10).
    fn refresh_answered(&mut self, now: Instant, handle: CallHandle, response: Option<&Message>) {
        let code = response.and_then(Message::code);
        match code {
            Some(200..=299) => {
                if let (Some(call), Some(response)) = (self.calls.get_mut(&handle), response) {
                    if let Some(timer) =
                        extensions::SessionTimer::from_answer(&response.headers, now)
                    {
                        call.session = Some(timer);
                        self.touched.push(Slot::Call(handle));
                    }
                }
            }
            None | Some(408 | 481) => self.send_bye(now, handle, EndReason::SessionExpired),
            Some(_) => {}
        }
    }

    fn slot_timeout(&self, slot: &Slot) -> Option<Instant> {
        match slot {
            Slot::Invite(key) => self.invites.get(key).and_then(|(t, ..)| t.poll_timeout()),
            Slot::Other(key) => self.others.get(key).and_then(|(t, ..)| t.poll_timeout()),
            Slot::Request(key) => self
                .requests
                .get(key)
                .and_then(|(t, _, _, _, _)| t.poll_timeout()),
            Slot::OutInvite(key) => self
                .out_invites
                .get(key)
                .and_then(|(t, _, _, _)| t.poll_timeout()),
            Slot::Registrar => self.registrar.as_ref().and_then(|r| r.next_expiry()),
            Slot::Trunk(i) => self.trunks.get(*i).and_then(|t| t.timeout()),
            Slot::Call(handle) => self.calls.get(handle).and_then(|c| {
                let ring = c.outbound.as_ref().and_then(|o| o.ring_deadline);
                let silent = c.outbound.as_ref().and_then(|o| o.silent_until);
                let reliable = c.reliable.as_ref();
                earliest(&[
                    c.retransmit.map(|(at, _)| at),
                    c.give_up,
                    ring,
                    reliable.and_then(|r| r.resend.as_ref().map(|(at, _)| *at)),
                    reliable.map(|r| r.give_up),
                    // The session timer runs once the call is answered.
                    c.session
                        .as_ref()
                        .filter(|_| matches!(c.phase, Phase::Answered | Phase::Confirmed))
                        .map(|t| t.due),
                    silent,
                ])
            }),
        }
    }

    /// Puts the slot's next deadline in the heap, unless it is there already.
    fn schedule(&mut self, slot: Slot) {
        match self.slot_timeout(&slot) {
            Some(at) if self.scheduled.get(&slot).map(|s| s.0) != Some(at) => {
                self.unschedule(&slot);
                let id = self.next_timer;
                self.next_timer += 1;
                self.timers.push(Reverse((at, id)));
                self.timer_slots.insert(id, slot.clone());
                self.scheduled.insert(slot, (at, id));
            }
            Some(_) => {}
            None => self.unschedule(&slot),
        }
    }

    /// Forgets a slot's deadline (its entry in the heap is skipped when it comes up).
    fn unschedule(&mut self, slot: &Slot) {
        if let Some((_, id)) = self.scheduled.remove(slot) {
            self.timer_slots.remove(&id);
        }
    }

    /// For every transaction or call touched since the last flush: moves what it wants sent to
    /// the outputs, acts on its events, forgets it when it is over, and schedules its timers.
    fn flush_transactions(&mut self, now: Instant) {
        // In rounds: acting on one slot may touch others, or the same one again (a new
        // transaction after a challenge), which the next round flushes.
        while !self.touched.is_empty() {
            let mut batch = std::mem::take(&mut self.touched);
            let mut seen = std::collections::HashSet::new();
            batch.retain(|slot| seen.insert(slot.clone()));
            for slot in batch {
                match &slot {
                    Slot::Invite(key) => {
                        if let Some((t, source, link, _)) = self.invites.get_mut(key) {
                            let (source, link, (sends, events)) = (*source, *link, t.drain());
                            self.send_responses(sends, source, link);
                            if events.contains(&Event::Terminated) {
                                if let Some((.., size)) = self.invites.remove(key) {
                                    self.charged -= size;
                                }
                            }
                        }
                    }
                    Slot::Other(key) => {
                        if let Some((t, source, link, _)) = self.others.get_mut(key) {
                            let (source, link, (sends, events)) = (*source, *link, t.drain());
                            self.send_responses(sends, source, link);
                            if events.contains(&Event::Terminated) {
                                if let Some((.., size)) = self.others.remove(key) {
                                    self.charged -= size;
                                }
                            }
                        }
                    }
                    Slot::Request(key) => {
                        let Some((transaction, handle, purpose, to, link)) =
                            self.requests.get_mut(key)
                        else {
                            continue;
                        };
                        let (handle, purpose, to, link) = (*handle, *purpose, *to, *link);
                        let (requests, events) = transaction.drain();
                        let (mut answered, mut over, mut final_response) = (false, false, None);
                        for event in events {
                            match event {
                                Event::Response(r) if r.code().is_some_and(|c| c >= 200) => {
                                    answered = true;
                                    final_response = Some(r);
                                }
                                Event::Response(_) => {}
                                Event::TimedOut => answered = true,
                                Event::Terminated => over = true,
                            }
                        }
                        for message in requests {
                            self.send(to, link, &message);
                        }
                        if over {
                            self.requests.remove(key);
                        }
                        if purpose == Purpose::Qualify && answered {
                            let status = final_response.as_ref().and_then(Message::code);
                            self.event(CallEvent::Qualified { to, status });
                        }
                        match (handle, purpose) {
                            (Some(handle), Purpose::Refresh) if answered => {
                                self.refresh_answered(now, handle, final_response.as_ref());
                            }
                            (Some(handle), Purpose::Bye) if answered || over => {
                                let reason = self
                                    .calls
                                    .get_mut(&handle)
                                    .and_then(|c| c.ending.take())
                                    .unwrap_or(EndReason::LocalHangup);
                                self.end(handle, reason);
                            }
                            _ => {}
                        }
                    }
                    Slot::OutInvite(key) => self.flush_out_invite(now, key),
                    Slot::Trunk(i) => self.flush_trunk(now, *i),
                    Slot::Call(_) | Slot::Registrar => {}
                }
                self.schedule(slot);
            }
        }
    }

    /// Sends a server transaction's responses where RFC 3261 section 18.2.2 says.
    fn send_responses(&mut self, responses: Vec<Message>, source: SocketAddr, link: Link) {
        for message in responses {
            self.send(response_destination(&message, source, link), link, &message);
        }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The next deadline (possibly of a timer since cancelled: waking early is harmless).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }
}

#[cfg(test)]
#[path = "ua_tests.rs"]
mod tests;
