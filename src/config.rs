//! The configuration file: one TOML file, a few environment overrides, checked at start-up.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use callbacks::{serde_duration, DialingPolicy, Policy, Queue};
use serde::Deserialize;
use sip::admission::Network;
use sip::advertise::Told;

/// The configuration shipped in the repository, used when no file is given and
/// `callbackd.toml` is not in the working directory.
pub const DEFAULT: &str = include_str!("../callbackd.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub api: ApiConfig,
    pub store: StoreConfig,
    pub sip: SipConfig,
    #[serde(default)]
    pub ivr: IvrConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    pub media: MediaConfig,
    #[serde(default)]
    pub dialer: DialerConfig,
    #[serde(default)]
    pub notifier: NotifierConfig,
    #[serde(default)]
    pub chat: ChatConfig,
    pub dialing: DialingPolicy,
    pub queues: BTreeMap<String, Queue>,
    /// Trunks and PBXs calls to numbers go through, by name.
    #[serde(default)]
    pub trunks: BTreeMap<String, TrunkConfig>,
    /// Which trunks a number goes through: the most specific rule that matches.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub dns: DnsConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
}

/// How long personal data is kept: past its age it is deleted, checked every minute.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Call records, from the call's start.
    #[serde(deserialize_with = "serde_duration::deserialize")]
    pub calls: chrono::Duration,
    /// Callbacks once closed (completed, cancelled, failed, expired), with their histories
    /// and dial attempts, from their closing.
    #[serde(deserialize_with = "serde_duration::deserialize")]
    pub closed_callbacks: chrono::Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            calls: chrono::Duration::days(90),
            closed_callbacks: chrono::Duration::days(365),
        }
    }
}

/// What the log looks like, and where the SIP trace goes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// The SIP trace's file, written while the trace is on (`/api/v1/sip/trace`).
    pub sip_trace: PathBuf,
    /// Past this size the trace starts a new file, keeping the full one as `FILE.1`.
    pub sip_trace_max_mb: u64,
    /// Whether each call's record goes to the store.
    pub call_records: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            sip_trace: PathBuf::from("sip-trace.pcap"),
            sip_trace_max_mb: 100,
            call_records: true,
        }
    }
}

/// Lines of text, or one JSON object a line (for a log collector).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// How trunks' host names are looked up.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// DNS servers (`ip:port`) to ask; the system's (`/etc/resolv.conf`) without any.
    #[serde(default)]
    pub servers: Vec<SocketAddr>,
}

/// A SIP trunk or PBX that carries the calls callbackd places to numbers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkConfig {
    /// Its address, or a host name: looked up by SRV (RFC 3263) without a port, by A/AAAA
    /// with one.
    pub host: String,
    /// Without one, 5060 for an address, and what SRV records say for a name.
    pub port: Option<u16>,
    #[serde(default)]
    pub transport: Transport,
    /// Digest credentials for its challenges.
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// A file holding the password instead (a systemd credential, a container secret).
    pub password_file: Option<PathBuf>,
    /// The realm its challenges name: the credentials answer no other. Without one, any
    /// challenge from the trunk's address is answered.
    pub realm: Option<String>,
    /// The host of the Request-URI (`sip:NUMBER@domain`) and, when registering, of the
    /// address of record; the address by default.
    pub domain: Option<String>,
    /// Register as `username@domain` and stay registered.
    #[serde(default)]
    pub register: bool,
    /// How numbers are written in the Request-URI.
    #[serde(default)]
    pub numbers: NumberFormat,
    /// For `national`: the country's calling code (`"1"`, `"44"`), the prefix national
    /// numbers take (`"0"` in most of Europe, nothing in North America), and the one
    /// international numbers take (`"00"`, `"011"`).
    #[serde(default)]
    pub country_code: String,
    #[serde(default)]
    pub national_prefix: String,
    #[serde(default = "default_international_prefix")]
    pub international_prefix: String,
    /// Put before every number (a technical prefix the carrier asks for).
    #[serde(default)]
    pub prefix: String,
    /// The caller ID presented through this trunk, unless the queue has its own.
    pub caller_id: Option<String>,
    /// On calls from this trunk's address, what names the number dialled (which chooses the
    /// dialplan entry): carriers delivering to a registered contact put it in `To`.
    #[serde(default)]
    pub called_number: CalledNumber,
    /// Assert the caller ID to the trunk (RFC 3325 P-Asserted-Identity), as trunks that
    /// trust callbackd's network want.
    #[serde(default)]
    pub asserted_identity: bool,
    /// `Privacy` to send (RFC 3323), e.g. `"id"` to withhold the caller ID from the customer.
    pub privacy: Option<String>,
    /// How often each target is sent an OPTIONS keep-alive; one that does not answer before
    /// the next is down, and is tried last. `"0s"` (the default) sends none.
    #[serde(default = "zero", deserialize_with = "serde_duration::deserialize")]
    pub qualify: chrono::Duration,
}

/// Where an INVITE names the number dialled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CalledNumber {
    /// The Request-URI's user part.
    #[default]
    RequestUri,
    /// The To header's user part.
    To,
    /// P-Called-Party-ID (RFC 3455).
    PCalledPartyId,
    /// The first Diversion header (RFC 5806): the number the call was first made to.
    Diversion,
}

/// How a trunk wants numbers written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NumberFormat {
    /// `+12125550100`.
    #[default]
    E164,
    /// `12125550100`.
    Digits,
    /// `2125550100` at home (with `national_prefix`), `international_prefix` + digits abroad.
    National,
}

/// A SIP transport a trunk is reached over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    #[default]
    Udp,
    Tcp,
}

/// Which trunks carry numbers starting with `prefix` (in E.164, `+` included), for one queue
/// or all: the first trunk, else the next when it cannot be used.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    #[serde(default)]
    pub prefix: String,
    pub queue: Option<String>,
    pub trunks: Vec<String>,
}

/// The name `sip.outbound_proxy` goes by as a trunk.
pub const LEGACY_TRUNK: &str = "default";

fn default_international_prefix() -> String {
    "00".into()
}

/// The IVR: the dialplan calls run, and how many failed look-ups one call may make.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IvrConfig {
    /// Relative paths start where callbackd runs.
    pub dialplan: PathBuf,
    /// Failed look-ups one call may make; the last ends the call.
    pub max_failures_per_call: u64,
}

impl Default for IvrConfig {
    fn default() -> Self {
        IvrConfig {
            dialplan: "dialplans/default.toml".into(),
            max_failures_per_call: 3,
        }
    }
}

/// The limits on guessing confirmation IDs and on booking, for callers and the chat alike,
/// counted in the store so they hold across nodes (see `limits.rs` and docs/security.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Failed look-ups one source (an address, an IPv6 /64, or a trusted trunk with the
    /// identity it asserts) may make within `source_window`; past them every look-up from it
    /// fails as a wrong answer would.
    pub failures_per_source: u64,
    #[serde(deserialize_with = "serde_duration::deserialize")]
    pub source_window: chrono::Duration,
    /// Failed look-ups of one confirmation ID, from any sources, within `id_window`; past them
    /// even the right answer fails, so the last four digits cannot be guessed.
    pub failures_per_id: u64,
    #[serde(deserialize_with = "serde_duration::deserialize")]
    pub id_window: chrono::Duration,
    /// Past this many failed look-ups in an hour (from anyone), every caller must give the
    /// last four digits of the callback's number, even calling from it.
    pub failed_lookups_per_hour: u64,
    /// Past this many failed look-ups in an hour (from anyone), every look-up fails as a wrong
    /// answer would: a guesser with many addresses gets no further than this.
    pub lockdown_failures_per_hour: u64,
    /// Callbacks one source may book (by phone or chat) in an hour.
    pub bookings_per_source_per_hour: u64,
    /// Bookings one number may receive (from any sources) in a day.
    pub bookings_per_number_per_day: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            failures_per_source: 10,
            source_window: chrono::Duration::hours(24),
            failures_per_id: 5,
            id_window: chrono::Duration::days(30),
            failed_lookups_per_hour: 100,
            lockdown_failures_per_hour: 1000,
            bookings_per_source_per_hour: 5,
            bookings_per_number_per_day: 3,
        }
    }
}

/// The chat: its bots, and how long a conversation lasts unused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChatConfig {
    /// Relative paths start where callbackd runs.
    pub bots: PathBuf,
    #[serde(deserialize_with = "serde_duration::deserialize")]
    pub session_idle: chrono::Duration,
    /// Web pages on other origins that may hold the chat (CORS), e.g. "https://www.example.com".
    pub allowed_origins: Vec<String>,
    /// Conversations one address may hold open at once.
    pub sessions_per_address: usize,
    /// Messages one address may send a minute, over all its conversations.
    pub messages_per_minute: u32,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            allowed_origins: Vec::new(),
            sessions_per_address: 20,
            messages_per_minute: 30,
            bots: "chatbots/default.toml".into(),
            session_idle: chrono::Duration::minutes(30),
        }
    }
}

/// Text-message confirmations (see `notifier.rs`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifierConfig {
    /// The SMS gateway's webhook, `http://HOST:PORT/PATH`; none: no text messages.
    pub url: Option<String>,
}

/// The outbound dialer: how it places callbacks and how long it waits for whom.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DialerConfig {
    /// Whether this node places callbacks.
    pub enabled: bool,
    /// This node's name in leases and histories; the host name and process ID by default.
    pub node: Option<String>,
    /// How long a callback being dialed stays this node's without a renewal; another node
    /// takes it over once it runs out.
    #[serde(deserialize_with = "serde_duration::deserialize")]
    pub lease: chrono::Duration,
    /// How long an agent stays in wrap-up after a call before being offered the next.
    #[serde(deserialize_with = "serde_duration::deserialize")]
    pub wrap_up: chrono::Duration,
    /// How long an agent's phone rings before the agent counts as missed (not ready).
    #[serde(deserialize_with = "serde_duration::deserialize")]
    pub agent_ring_timeout: chrono::Duration,
    /// How long a customer's phone rings before the attempt counts as no answer.
    #[serde(deserialize_with = "serde_duration::deserialize")]
    pub customer_ring_timeout: chrono::Duration,
    /// Whether the customer hears "this is your callback from …" on answering; without it
    /// they are connected at once.
    pub greeting: bool,
    /// How long after the greeting the customer has to press 1; "0s" connects them after the
    /// greeting without asking.
    #[serde(deserialize_with = "serde_duration::deserialize")]
    pub confirm_timeout: chrono::Duration,
    /// The prompt naming the company in "this is your callback from …".
    pub company_prompt: String,
    /// Whether agents hear who is next (department and when it was requested) before the
    /// customer is called.
    pub whisper: bool,
    /// Agents whose address is `sip:USER@<sip.realm>` are logged in when their phone
    /// registers and logged out when it unregisters.
    pub login_on_register: bool,
    /// How often a caller holding for an agent hears where they stand (and the callback
    /// offer) over the hold music.
    #[serde(deserialize_with = "serde_duration::deserialize")]
    pub hold_announcement: chrono::Duration,
}

impl DialerConfig {
    /// This node's name: `node`, else the host name and the process ID.
    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "callbackd".into());
            format!("{host}-{}", std::process::id())
        })
    }
}

impl Default for DialerConfig {
    fn default() -> Self {
        DialerConfig {
            enabled: true,
            node: None,
            lease: chrono::Duration::seconds(30),
            wrap_up: chrono::Duration::seconds(10),
            agent_ring_timeout: chrono::Duration::seconds(20),
            customer_ring_timeout: chrono::Duration::seconds(30),
            greeting: true,
            confirm_timeout: chrono::Duration::seconds(10),
            company_prompt: "company".into(),
            whisper: true,
            login_on_register: true,
            hold_announcement: chrono::Duration::seconds(45),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// Without one, a token is generated at first start and kept in the store.
    #[serde(default)]
    pub token: Option<Secret>,
    /// A file holding the token instead.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Host names the API and the pages answer to, besides IP addresses and `localhost`;
    /// requests naming another host get 421, so DNS rebinding gets nowhere.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Reverse proxies whose `X-Forwarded-For` or `Forwarded` says who the client is.
    #[serde(default, deserialize_with = "networks")]
    pub trusted_proxies: Vec<(std::net::IpAddr, u8)>,
    /// HTTP connections at once, in all and from one address (trusted proxies count in all
    /// only).
    #[serde(default = "default_http_connections")]
    pub max_connections: usize,
    #[serde(default = "default_http_connections_per_address")]
    pub max_connections_per_address: usize,
    /// Prometheus metrics at `/metrics` (with the token).
    #[serde(default = "yes")]
    pub metrics: bool,
}

fn yes() -> bool {
    true
}

fn default_http_connections() -> usize {
    512
}

fn default_http_connections_per_address() -> usize {
    64
}

/// SIP: where it listens, how hard it may be pushed, and its timers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipConfig {
    #[serde(default)]
    pub udp: Vec<SocketAddr>,
    #[serde(default)]
    pub tcp: Vec<SocketAddr>,
    /// `host` or `host:port` peers reach us at (Via, Contact, SDP); without a port, the port
    /// SIP listens on for the transport. The first listen address by default.
    #[serde(default, deserialize_with = "advertised")]
    pub advertised: Option<Told>,
    /// Peers in these networks are told another address (the host's own on their side):
    /// network → `host` or `host:port`; the most specific network holding a peer wins.
    #[serde(default, deserialize_with = "advertised_to")]
    pub advertised_to: Vec<(Network, Told)>,
    #[serde(default = "default_max_calls")]
    pub max_calls: usize,
    #[serde(default = "default_max_calls_per_second")]
    pub max_calls_per_second: u32,
    /// How long an inbound call rings (180) before it is answered; 0 answers at once.
    #[serde(default = "zero", deserialize_with = "serde_duration::deserialize")]
    pub ring_time: chrono::Duration,
    /// Ring with 183 Session Progress and our SDP (early media) instead of 180 Ringing.
    #[serde(default)]
    pub early_media: bool,
    /// Calls are hung up after this long, whatever happens in them.
    #[serde(
        default = "two_hours",
        deserialize_with = "serde_duration::deserialize"
    )]
    pub max_call_duration: chrono::Duration,
    #[serde(
        default = "default_t1",
        deserialize_with = "serde_duration::deserialize"
    )]
    pub t1: chrono::Duration,
    #[serde(
        default = "default_t2",
        deserialize_with = "serde_duration::deserialize"
    )]
    pub t2: chrono::Duration,
    #[serde(
        default = "default_t4",
        deserialize_with = "serde_duration::deserialize"
    )]
    pub t4: chrono::Duration,
    /// Where calls callbackd places go: the trunk or PBX (`host:port` as an address).
    #[serde(default)]
    pub outbound_proxy: Option<SocketAddr>,
    /// Digest credentials for a trunk that challenges callbackd's calls.
    #[serde(default)]
    pub trunk_username: Option<String>,
    #[serde(default)]
    pub trunk_password: Option<Secret>,
    /// A file holding `trunk_password` instead.
    #[serde(default)]
    pub trunk_password_file: Option<PathBuf>,
    /// When set (with outbound_proxy and trunk_username), callbackd registers as
    /// trunk_username@trunk_domain with the trunk and keeps the registration fresh.
    #[serde(default)]
    pub trunk_domain: Option<String>,
    /// The caller ID (From user) of calls callbackd places, unless their queue has its own:
    /// a number the trunk lets callbackd present. Without one, calls that need no trunk
    /// (phones, SIP URIs) come from `callbackd`.
    #[serde(default)]
    pub caller_id: Option<String>,
    /// Networks new calls may come from, `"192.0.2.0/24"` or a single address; empty: anywhere.
    /// Registered phones may always call from where they registered.
    #[serde(default, deserialize_with = "networks")]
    pub trusted: Vec<(std::net::IpAddr, u8)>,
    /// Agents' phones that may REGISTER with callbackd: user → password. None: no registrar.
    #[serde(default)]
    pub phones: BTreeMap<String, Secret>,
    /// The dialplan entry a call starts at, by the number dialled (the Request-URI user).
    #[serde(default)]
    pub entries: BTreeMap<String, String>,
    /// The entry for numbers not in `entries`.
    #[serde(default = "default_entry")]
    pub default_entry: String,
    /// The digest realm of the registrar.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// How long a call callbackd places may ring before it is cancelled.
    #[serde(
        default = "default_ring_timeout",
        deserialize_with = "serde_duration::deserialize"
    )]
    pub ring_timeout: chrono::Duration,
    /// After SIGTERM, how long calls in progress may go on before they are hung up.
    #[serde(
        default = "default_drain_timeout",
        deserialize_with = "serde_duration::deserialize"
    )]
    pub drain_timeout: chrono::Duration,
    /// Limits on each source outside `trusted`.
    #[serde(default)]
    pub per_source: PerSourceConfig,
}

/// Limits on each source address outside `sip.trusted` (an IPv6 source is its /64), in the
/// style of Kamailio's pike (see crates/sip/src/admission.rs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PerSourceConfig {
    /// SIP requests a second, sustained (twice as many in a burst); past it the source is
    /// banned.
    pub requests_per_second: u32,
    /// Calls at once.
    pub calls: u32,
    /// Calls ringing, or answered and not yet acknowledged, at once.
    pub unconfirmed_calls: u32,
    /// Failed REGISTER authentications within a minute before the source is banned.
    pub auth_failures_per_minute: u32,
    /// How long a banned source's messages are dropped unread.
    #[serde(deserialize_with = "serde_duration::deserialize")]
    pub ban: chrono::Duration,
    /// SIP connections over TCP at once.
    pub tcp_connections: usize,
}

impl Default for PerSourceConfig {
    fn default() -> Self {
        let sip = sip::admission::Settings::default();
        PerSourceConfig {
            requests_per_second: sip.requests_per_second,
            calls: sip.calls,
            unconfirmed_calls: sip.unconfirmed_calls,
            auth_failures_per_minute: sip.auth_failures_per_minute,
            ban: chrono::Duration::from_std(sip.ban).unwrap_or_default(),
            tcp_connections: 16,
        }
    }
}

impl PerSourceConfig {
    pub fn admission(&self) -> sip::admission::Settings {
        sip::admission::Settings {
            requests_per_second: self.requests_per_second,
            calls: self.calls,
            unconfirmed_calls: self.unconfirmed_calls,
            auth_failures_per_minute: self.auth_failures_per_minute,
            ban: self.ban.to_std().unwrap_or_default(),
        }
    }
}

fn default_entry() -> String {
    "self_service".into()
}

impl SipConfig {
    /// The dialplan entry for a call to `dialled`.
    pub fn entry(&self, dialled: &str) -> &str {
        self.entries.get(dialled).unwrap_or(&self.default_entry)
    }
}

fn default_realm() -> String {
    "callbackd".into()
}

fn networks<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<(std::net::IpAddr, u8)>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|text| network(text).map_err(serde::de::Error::custom))
        .collect()
}

/// `"192.0.2.0/24"`, or one address (`"192.0.2.7"`, a network of its own).
fn network(text: &str) -> Result<(std::net::IpAddr, u8), String> {
    let (address, prefix) = text.split_once('/').unwrap_or((text, ""));
    let ip: std::net::IpAddr = address
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not an address or network such as \"192.0.2.0/24\""))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if prefix.is_empty() {
        return Ok((ip, max));
    }
    let prefix = prefix
        .parse::<u8>()
        .ok()
        .filter(|p| *p <= max)
        .ok_or_else(|| format!("`{text}` has a prefix length above {max}"))?;
    Ok((ip, prefix))
}

/// `host` or `host:port` (IPv6 in brackets), as told to peers.
fn told(text: &str) -> Result<Told, String> {
    let bad = || format!("`{text}` is not a host or host:port such as \"192.0.2.10:5060\"");
    let (host, port) = sip::uri::split_hostport(text).map_err(|_| bad())?;
    let host = host.trim();
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    Ok(Told {
        host: host.to_owned(),
        port,
    })
}

fn advertised<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Told>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|text| told(&text))
        .transpose()
        .map_err(serde::de::Error::custom)
}

fn advertised_to<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<(Network, Told)>, D::Error> {
    BTreeMap::<String, String>::deserialize(d)?
        .iter()
        .map(|(net, text)| Ok((network(net)?, told(text)?)))
        .collect::<Result<_, String>>()
        .map_err(serde::de::Error::custom)
}

fn default_ring_timeout() -> chrono::Duration {
    chrono::Duration::seconds(30)
}

fn default_drain_timeout() -> chrono::Duration {
    chrono::Duration::minutes(5)
}

fn default_max_calls() -> usize {
    500
}
fn default_max_calls_per_second() -> u32 {
    200
}
fn zero() -> chrono::Duration {
    chrono::Duration::zero()
}
fn two_hours() -> chrono::Duration {
    chrono::Duration::hours(2)
}
fn default_t1() -> chrono::Duration {
    chrono::Duration::milliseconds(500)
}
fn default_t2() -> chrono::Duration {
    chrono::Duration::seconds(4)
}
fn default_t4() -> chrono::Duration {
    chrono::Duration::seconds(5)
}

impl SipConfig {
    pub fn timers(&self) -> sip::transaction::Timers {
        let std = |d: chrono::Duration| d.to_std().unwrap_or_default();
        sip::transaction::Timers {
            t1: std(self.t1),
            t2: std(self.t2),
            t4: std(self.t4),
        }
    }
}

/// Media: the RTP port range.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    /// The address RTP sockets bind: the first SIP listen address's by default. What peers are
    /// told in SDP is the advertised address (see `SipConfig::advertised`).
    #[serde(default)]
    pub address: Option<std::net::IpAddr>,
    /// `"20000-29999"`: calls take even ports from this range.
    #[serde(deserialize_with = "port_range")]
    pub rtp_ports: (u16, u16),
    /// A call whose far end sends no RTP for this long is hung up.
    #[serde(
        default = "default_rtp_timeout",
        deserialize_with = "serde_duration::deserialize"
    )]
    pub rtp_timeout: chrono::Duration,
    /// The directory of prompt WAV files (8 kHz); relative paths start where callbackd runs.
    #[serde(default = "default_prompts")]
    pub prompts: std::path::PathBuf,
    /// Threads sending RTP on the 20 ms clock.
    #[serde(default = "default_pacing_threads")]
    pub pacing_threads: usize,
}

fn default_prompts() -> std::path::PathBuf {
    "prompts".into()
}

fn default_pacing_threads() -> usize {
    2
}

fn default_rtp_timeout() -> chrono::Duration {
    chrono::Duration::seconds(30)
}

fn port_range<'de, D: serde::Deserializer<'de>>(d: D) -> Result<(u16, u16), D::Error> {
    let text = String::deserialize(d)?;
    let parsed = text
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)))
        .filter(|(a, b)| *a >= 1024 && b > a);
    parsed.ok_or_else(|| {
        serde::de::Error::custom(format!(
            "`{text}` is not a port range such as \"20000-29999\" (from 1024 up)"
        ))
    })
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub url: Secret,
    /// A file holding the URL instead (it names a password).
    #[serde(default)]
    pub url_file: Option<PathBuf>,
}

/// A string that is never printed: API tokens, store URLs with passwords.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl From<String> for Secret {
    fn from(secret: String) -> Secret {
        Secret(secret)
    }
}

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares in a time that depends only on the candidate's length, not on the secret's
    /// length or on where the two differ.
    pub fn matches(&self, candidate: &str) -> bool {
        let (secret, candidate) = (self.0.as_bytes(), candidate.as_bytes());
        if secret.is_empty() {
            return false;
        }
        let mut diff = secret.len() ^ candidate.len();
        for (i, byte) in candidate.iter().enumerate() {
            diff |= usize::from(byte ^ secret[i % secret.len()]);
        }
        diff == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

/// A configuration that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {key}: {message}")]
    Invalid {
        file: String,
        key: String,
        message: String,
    },
}

/// Where the configuration comes from.
#[derive(Debug, Clone)]
pub enum Source {
    File(PathBuf),
    /// The built-in default: no file was named and none is in the usual places.
    Builtin,
}

/// Where a configuration is looked for when none is named, in order.
const USUAL_PLACES: [&str; 2] = ["callbackd.toml", "/etc/callbackd/callbackd.toml"];

impl Source {
    /// The configuration's text.
    pub fn read(&self) -> Result<String, ConfigError> {
        match self {
            Source::File(path) => std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
                path: path.clone(),
                source: e,
            }),
            Source::Builtin => Ok(DEFAULT.to_owned()),
        }
    }

    /// The file named (`--config`, or `CALLBACKD_CONFIG`), else the first of
    /// `./callbackd.toml` and `/etc/callbackd/callbackd.toml` that exists, else the built-in
    /// default.
    pub fn choose(named: Option<PathBuf>) -> Self {
        named
            .or_else(|| USUAL_PLACES.iter().map(PathBuf::from).find(|p| p.exists()))
            .map_or(Source::Builtin, Source::File)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Builtin => f.write_str("the built-in default configuration"),
        }
    }
}

/// The process's environment, as the configuration reads it.
pub type Environment = BTreeMap<String, String>;

/// A setting from the environment: the variable's name, the key's path and the value.
type Override = (String, Vec<String>, toml::Value);

/// The settings `CALLBACKD_SECTION__KEY=value` (`CALLBACKD_TRUNKS__CARRIER__PASSWORD` for
/// `trunks.carrier.password`): the path lower-cased, the value read as TOML (a number,
/// `true`, an array) or else taken as a string.
fn overrides(env: &Environment) -> Result<Vec<Override>, (String, String)> {
    let mut settings = Vec::new();
    for (name, value) in env {
        let Some(path) = name.strip_prefix("CALLBACKD_").filter(|p| p.contains("__")) else {
            continue;
        };
        let path: Vec<String> = path.split("__").map(str::to_lowercase).collect();
        if path.iter().any(String::is_empty) {
            return Err((
                name.clone(),
                "an empty part in the name (___ or a trailing __)".into(),
            ));
        }
        let value = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.clone()));
        settings.push((name.clone(), path, value));
    }
    Ok(settings)
}

/// The configuration `text` with each setting from the environment put in.
fn with_overrides(text: &str, overrides: &[Override]) -> Result<String, String> {
    let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    for (name, path, value) in overrides {
        let (key, sections) = path.split_last().expect("a path has a key");
        let mut at = &mut table;
        for section in sections {
            at = at
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| format!("{name}: `{section}` is a setting, not a section"))?;
        }
        at.insert(key.clone(), value.clone());
    }
    Ok(table.to_string())
}

impl Config {
    /// Reads, applies the environment's overrides from `env`, and checks. Relative paths in
    /// a file (the dialplan, the prompts, the bots, an SQLite store) are taken from the file's
    /// folder, so callbackd runs from anywhere; the built-in default's, from the working
    /// folder (a checkout).
    pub fn load(source: &Source, env: &Environment) -> Result<Config, ConfigError> {
        Self::load_text(source, &source.read()?, env)
    }

    /// The same with the text `source` was found to hold.
    pub fn load_text(
        source: &Source,
        text: &str,
        env: &Environment,
    ) -> Result<Config, ConfigError> {
        let mut config = Self::parse(&source.to_string(), text, env)?;
        let store_from_env = [
            "DATABASE_URL",
            "CALLBACKD_STORE_URL",
            "CALLBACKD_STORE__URL",
        ]
        .iter()
        .any(|k| env.contains_key(*k));
        if let Source::File(path) = source {
            let folder = path.parent().unwrap_or(Path::new(""));
            config.resolve_paths(folder, !store_from_env);
        }
        let invalid = |(key, message): (String, String)| ConfigError::Invalid {
            file: source.to_string(),
            key,
            message,
        };
        let token_from_env = ["CALLBACKD_API_TOKEN", "CALLBACKD_API__TOKEN"]
            .iter()
            .any(|k| env.contains_key(*k));
        config
            .read_secret_files(!store_from_env, !token_from_env)
            .map_err(invalid)?;
        config.check().map_err(invalid)?;
        Ok(config)
    }

    /// Takes each secret named by a `*_file` key from its file (the whole file, less a final
    /// line break), unless the environment gave it. A secret given both ways is refused.
    fn read_secret_files(&mut self, store: bool, token: bool) -> Result<(), (String, String)> {
        fn read(
            key: &str,
            file: &Option<PathBuf>,
            secret: &mut Option<Secret>,
        ) -> Result<(), (String, String)> {
            let Some(file) = file else {
                return Ok(());
            };
            if secret.is_some() {
                return Err((
                    key.to_owned(),
                    format!("give `{key}` or `{key}_file`, not both"),
                ));
            }
            let text = std::fs::read_to_string(file).map_err(|e| {
                (
                    format!("{key}_file"),
                    format!("cannot read {}: {e}", file.display()),
                )
            })?;
            *secret = Some(Secret(text.trim_end_matches(['\r', '\n']).to_owned()));
            Ok(())
        }
        if token {
            read("api.token", &self.api.token_file, &mut self.api.token)?;
        }
        read(
            "sip.trunk_password",
            &self.sip.trunk_password_file,
            &mut self.sip.trunk_password,
        )?;
        for (name, trunk) in &mut self.trunks {
            read(
                &format!("trunks.{name}.password"),
                &trunk.password_file,
                &mut trunk.password,
            )?;
        }
        if store {
            if let Some(file) = &self.store.url_file {
                let mut url = None;
                read("store.url", &Some(file.clone()), &mut url)?;
                self.store.url = url.unwrap_or_else(|| self.store.url.clone());
            }
        }
        Ok(())
    }

    /// Takes the relative paths of a file's configuration from its `folder` (the store's
    /// too, when it came from the file).
    fn resolve_paths(&mut self, folder: &Path, store: bool) {
        let secrets = [
            self.api.token_file.as_mut(),
            self.sip.trunk_password_file.as_mut(),
            self.store.url_file.as_mut(),
        ];
        let trunks = self
            .trunks
            .values_mut()
            .filter_map(|t| t.password_file.as_mut());
        for path in [
            &mut self.ivr.dialplan,
            &mut self.media.prompts,
            &mut self.chat.bots,
            &mut self.log.sip_trace,
        ]
        .into_iter()
        .chain(secrets.into_iter().flatten())
        .chain(trunks)
        {
            if path.is_relative() {
                *path = folder.join(&*path);
            }
        }
        let url = self.store.url.expose();
        if let Some(file) = url.strip_prefix("sqlite://").filter(|_| store) {
            if !file.starts_with('/') && !file.starts_with(':') && !file.is_empty() {
                self.store.url = Secret(format!("sqlite://{}", folder.join(file).display()));
            }
        }
    }

    /// Reads `text` with the environment's settings (`CALLBACKD_SECTION__KEY`, and the
    /// single ones that came first) over it, and checks it.
    pub fn parse(file: &str, text: &str, env: &Environment) -> Result<Config, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            file: file.to_owned(),
            key: key.to_owned(),
            message,
        };
        let overrides = overrides(env).map_err(|(name, message)| invalid(&name, message))?;
        let text = match overrides.is_empty() {
            true => text.to_owned(),
            false => with_overrides(text, &overrides).map_err(|m| invalid("(top level)", m))?,
        };
        let mut config: Config = serde_path_to_error::deserialize(toml::Deserializer::new(&text))
            .map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." {
                "(top level)".to_owned()
            } else {
                key
            };
            let mut message = e.into_inner().to_string().trim().replace('\n', "\n    ");
            if !overrides.is_empty() {
                let names: Vec<&str> = overrides.iter().map(|(n, ..)| n.as_str()).collect();
                message += &format!(
                    "\n    (with settings from the environment: {})",
                    names.join(", ")
                );
            }
            invalid(&key, message)
        })?;
        if let Some(url) = env
            .get("DATABASE_URL")
            .or_else(|| env.get("CALLBACKD_STORE_URL"))
        {
            config.store.url = Secret(url.clone());
        }
        if let Some(listen) = env.get("CALLBACKD_API_LISTEN") {
            config.api.listen = listen.parse().map_err(|_| {
                invalid(
                    "api.listen",
                    format!(
                        "CALLBACKD_API_LISTEN=`{listen}` is not an address such as 127.0.0.1:8080"
                    ),
                )
            })?;
        }
        if let Some(token) = env.get("CALLBACKD_API_TOKEN") {
            config.api.token = Some(Secret(token.clone()));
        }
        config
            .check()
            .map_err(|(key, message)| invalid(&key, message))?;
        Ok(config)
    }

    fn check(&self) -> Result<(), (String, String)> {
        let problem = |key: &str, message: &str| Err((key.to_owned(), message.to_owned()));
        if self.api.token.as_ref().is_some_and(|t| t.0.len() < 16) {
            return problem("api.token", "a token must be at least 16 characters long");
        }
        if self.api.max_connections == 0 || self.api.max_connections_per_address == 0 {
            return problem(
                "api.max_connections",
                "connection limits must be at least 1",
            );
        }
        if self.chat.sessions_per_address == 0 || self.chat.messages_per_minute == 0 {
            return problem(
                "chat",
                "sessions_per_address and messages_per_minute must be at least 1",
            );
        }
        if let Some(origin) = self
            .chat
            .allowed_origins
            .iter()
            .find(|o| axum::http::HeaderValue::from_str(o).is_err() || !o.contains("://"))
        {
            return problem(
                "chat.allowed_origins",
                &format!("`{origin}` is not an origin such as \"https://www.example.com\""),
            );
        }
        let url = self.store.url.expose();
        if !["sqlite:", "postgres://", "postgresql://"]
            .iter()
            .any(|p| url.starts_with(p))
        {
            return problem("store.url", "must start with sqlite:// or postgres://");
        }
        if self.sip.udp.is_empty() && self.sip.tcp.is_empty() {
            return problem("sip", "SIP needs at least one udp or tcp address");
        }
        if self.sip.t1 <= chrono::Duration::zero()
            || self.sip.t2 < self.sip.t1
            || self.sip.t4 <= chrono::Duration::zero()
        {
            return problem("sip.t1", "timers must be positive, with t2 at least t1");
        }
        if self.sip.max_calls == 0 || self.sip.max_calls_per_second == 0 {
            return problem(
                "sip.max_calls",
                "max_calls and max_calls_per_second must be at least 1",
            );
        }
        let per_source = &self.sip.per_source;
        if [
            per_source.requests_per_second,
            per_source.calls,
            per_source.unconfirmed_calls,
            per_source.auth_failures_per_minute,
        ]
        .contains(&0)
            || per_source.tcp_connections == 0
        {
            return problem("sip.per_source", "every limit must be at least 1");
        }
        if per_source.ban < chrono::Duration::seconds(1) {
            return problem("sip.per_source.ban", "must be at least 1s");
        }
        if self.dialer.lease < chrono::Duration::seconds(3) {
            return problem(
                "dialer.lease",
                "must be at least 3s (it is renewed every third)",
            );
        }
        if self.dialer.hold_announcement < chrono::Duration::seconds(5) {
            return problem("dialer.hold_announcement", "must be at least 5s");
        }
        if self.ivr.max_failures_per_call == 0 {
            return problem("ivr.max_failures_per_call", "must be at least 1");
        }
        let limits = &self.limits;
        if [
            limits.failures_per_source,
            limits.failures_per_id,
            limits.failed_lookups_per_hour,
            limits.lockdown_failures_per_hour,
            limits.bookings_per_source_per_hour,
            limits.bookings_per_number_per_day,
        ]
        .contains(&0)
        {
            return problem("limits", "every limit must be at least 1");
        }
        if limits.source_window < chrono::Duration::minutes(1)
            || limits.id_window < chrono::Duration::minutes(1)
        {
            return problem("limits", "source_window and id_window must be at least 1m");
        }
        if [
            self.dialer.wrap_up,
            self.dialer.agent_ring_timeout,
            self.dialer.customer_ring_timeout,
            self.dialer.confirm_timeout,
        ]
        .iter()
        .any(|d| *d < chrono::Duration::zero())
        {
            return problem("dialer", "durations must not be negative");
        }
        if let Some(Err(message)) = self
            .notifier
            .url
            .as_deref()
            .map(crate::notifier::Webhook::parse)
        {
            return problem("notifier.url", &message);
        }
        if let Some(message) = self.dialing.problem() {
            return problem("dialing", &message);
        }
        if self.queues.is_empty() {
            return problem(
                "queues",
                "at least one queue is needed, e.g. [queues.support]",
            );
        }
        let is_number = |id: &str| {
            let digits = id.strip_prefix('+').unwrap_or(id);
            (3..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
        };
        if self.sip.outbound_proxy.is_some() && !self.trunks.is_empty() {
            return problem(
                "sip.outbound_proxy",
                "is the shorthand for one trunk; with [trunks] as well, move it there",
            );
        }
        let trunks = self.trunks();
        for (name, trunk) in &trunks {
            let key = |k: &str| format!("trunks.{name}.{k}");
            if let Some(id) = trunk.caller_id.as_deref().filter(|id| !is_number(id)) {
                return problem(
                    &key("caller_id"),
                    &format!("`{id}` is not a number such as \"+12125550000\""),
                );
            }
            if trunk.numbers == NumberFormat::National
                && (trunk.country_code.is_empty()
                    || !trunk.country_code.bytes().all(|b| b.is_ascii_digit()))
            {
                return problem(
                    &key("country_code"),
                    "national numbers need the country's calling code, e.g. \"44\"",
                );
            }
            if trunk.register && trunk.username.is_none() {
                return problem(&key("register"), "registering needs a username");
            }
            let privacy_values = ["none", "id", "header", "session", "user", "critical"];
            if let Some(p) = trunk.privacy.as_deref().filter(|p| {
                p.split(';')
                    .any(|v| !privacy_values.contains(&v.trim().to_ascii_lowercase().as_str()))
            }) {
                return problem(
                    &key("privacy"),
                    &format!("`{p}` is not a Privacy value (RFC 3323: none, id, header, session, user, critical)"),
                );
            }
            let is_name = |h: &str| {
                !h.is_empty()
                    && h.len() <= 253
                    && h.split('.').all(|label| {
                        !label.is_empty()
                            && label.len() <= 63
                            && label
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    })
            };
            let address = trunk.host.parse::<std::net::IpAddr>().is_ok();
            if !address && !is_name(&trunk.host) {
                return problem(
                    &key("host"),
                    &format!("`{}` is neither an address nor a host name", trunk.host),
                );
            }
        }
        for (i, route) in self.routes.iter().enumerate() {
            let key = format!("routes[{i}]");
            if route.trunks.is_empty() {
                return problem(&key, "a route needs at least one trunk");
            }
            if let Some(unknown) = route.trunks.iter().find(|t| !trunks.contains_key(*t)) {
                return problem(&key, &format!("there is no trunk `{unknown}` in [trunks]"));
            }
            if let Some(queue) = route
                .queue
                .as_deref()
                .filter(|q| !self.queues.contains_key(*q))
            {
                return problem(&key, &format!("there is no queue `{queue}`"));
            }
            let digits = route.prefix.strip_prefix('+').unwrap_or("x");
            if !route.prefix.is_empty() && !digits.bytes().all(|b| b.is_ascii_digit()) {
                return problem(
                    &key,
                    &format!(
                        "the prefix `{}` is not the start of an E.164 number, such as \"+1\"",
                        route.prefix
                    ),
                );
            }
        }
        if let Some(id) = self.sip.caller_id.as_deref().filter(|id| !is_number(id)) {
            return problem(
                "sip.caller_id",
                &format!("`{id}` is not a number such as \"+12125550000\""),
            );
        }
        for (name, queue) in &self.queues {
            if let Some(id) = queue.caller_id.as_deref().filter(|id| !is_number(id)) {
                return problem(
                    &format!("queues.{name}.caller_id"),
                    &format!("`{id}` is not a number such as \"+12125550000\""),
                );
            }
            // A trunk presents the caller ID to customers: calling from a name gets the call
            // refused or the number replaced.
            if self.dialer.enabled
                && trunks.values().any(|t| t.caller_id.is_none())
                && queue.caller_id.is_none()
                && self.sip.caller_id.is_none()
            {
                return problem(
                    &format!("queues.{name}.caller_id"),
                    "calls through the trunk need a caller ID: set sip.caller_id, or this \
                     queue's caller_id, to a number the trunk lets you present",
                );
            }
            if queue.skills.is_empty() || queue.skills.iter().any(|s| s.trim().is_empty()) {
                return problem(
                    &format!("queues.{name}.skills"),
                    "a queue needs at least one non-empty skill",
                );
            }
            if queue.max_attempts == 0 {
                return problem(&format!("queues.{name}.max_attempts"), "must be at least 1");
            }
            if queue.retry_backoff.is_empty() {
                return problem(
                    &format!("queues.{name}.retry_backoff"),
                    "needs at least one wait, e.g. [\"5m\"]",
                );
            }
        }
        Ok(())
    }

    /// The trunks, with `sip.outbound_proxy` read as one named `default`: the shorthand for a
    /// single trunk, registering when `sip.trunk_domain` is set.
    pub fn trunks(&self) -> BTreeMap<String, TrunkConfig> {
        let mut trunks = self.trunks.clone();
        if let Some(proxy) = self.sip.outbound_proxy {
            trunks.insert(
                LEGACY_TRUNK.to_owned(),
                TrunkConfig {
                    host: proxy.ip().to_string(),
                    port: Some(proxy.port()),
                    transport: Transport::Udp,
                    username: self.sip.trunk_username.clone(),
                    password: self.sip.trunk_password.clone(),
                    password_file: None,
                    realm: None,
                    domain: self.sip.trunk_domain.clone(),
                    register: self.sip.trunk_domain.is_some() && self.sip.trunk_username.is_some(),
                    numbers: NumberFormat::E164,
                    country_code: String::new(),
                    national_prefix: String::new(),
                    international_prefix: default_international_prefix(),
                    prefix: String::new(),
                    caller_id: None,
                    called_number: CalledNumber::RequestUri,
                    asserted_identity: false,
                    privacy: None,
                    qualify: chrono::Duration::zero(),
                },
            );
        }
        trunks
    }

    /// The routing rules, with everything through the `sip.outbound_proxy` shorthand's trunk.
    pub fn routes(&self) -> Vec<RouteConfig> {
        let mut routes = self.routes.clone();
        if self.sip.outbound_proxy.is_some() {
            routes.push(RouteConfig {
                prefix: String::new(),
                queue: None,
                trunks: vec![LEGACY_TRUNK.to_owned()],
            });
        }
        routes
    }

    pub fn policy(&self) -> Policy {
        let mut dialing = self.dialing.clone();
        if !self.sip.phones.is_empty() {
            dialing.phones_domain = Some(self.sip.realm.clone());
        }
        Policy {
            queues: self.queues.clone(),
            dialing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse("test.toml", text, &Environment::new()).map_err(|e| e.to_string())
    }

    #[test]
    fn the_default_configuration_is_valid() {
        let config = Config::parse("callbackd.toml", DEFAULT, &Environment::new()).unwrap();
        assert_eq!(config.api.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.store.url.expose(), "sqlite://callbackd.db");
        assert_eq!(
            config.queues["support"].skills,
            ["billing", "technical", "sales"]
        );
        assert!(config.api.token.is_none());
    }

    #[test]
    fn unknown_keys_name_file_and_key() {
        let text = DEFAULT.replace("max_attempts = 3", "max_attempts = 3\nmax_attempt = 4");
        let err = parse(&text).unwrap_err();
        assert!(
            err.starts_with("test.toml: queues.support.max_attempt:"),
            "{err}"
        );
        assert!(err.contains("unknown field `max_attempt`"), "{err}");
        assert!(err.contains("line"), "says where: {err}");
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        let cases = [
            (
                "time_zone = \"America/New_York\"",
                "time_zone = \"Mars/Olympus\"",
                "queues.support.time_zone",
            ),
            (
                "expiry = \"2d\"",
                "expiry = \"2 days\"",
                "queues.support.expiry",
            ),
            (
                "home_region = \"US\"",
                "home_region = \"USA\"",
                "dialing.home_region",
            ),
            (
                "calling_window = { all = \"00:00-24:00\" }",
                "calling_window = { al = \"00:00-24:00\" }",
                "queues.support.calling_window",
            ),
            (
                "listen = \"127.0.0.1:8080\"",
                "listen = \"localhost\"",
                "api.listen",
            ),
            ("\"toll_free\"", "\"toll-free\"", "dialing.allowed_types"),
            (
                "# advertised = \"203.0.113.10\"",
                "advertised = \"203.0.113.10:http\"",
                "sip.advertised",
            ),
            (
                "# \"10.0.0.0/8\" = \"10.0.0.5\"",
                "\"10.0.0.0/33\" = \"10.0.0.5\"",
                "sip.advertised_to",
            ),
            (
                "# \"10.0.0.0/8\" = \"10.0.0.5\"",
                "\"10.0.0.0/8\" = \"10.0.0.5 :5060\"",
                "sip.advertised_to",
            ),
            (
                "# address = \"10.0.0.5\"",
                "address = \"eth0\"",
                "media.address",
            ),
        ];
        for (from, to, key) in cases {
            let err = parse(&DEFAULT.replace(from, to)).unwrap_err();
            assert!(err.starts_with(&format!("test.toml: {key}")), "{to}: {err}");
        }
        let err = parse("[api\nlisten=1").unwrap_err();
        assert!(err.starts_with("test.toml:"), "{err}");
    }

    #[test]
    fn advertised_addresses_read_with_and_without_ports() {
        let config = parse(
            &DEFAULT
                .replace(
                    "# advertised = \"203.0.113.10\"",
                    "advertised = \"[2001:db8::1]:5070\"",
                )
                .replace(
                    "# \"10.0.0.0/8\" = \"10.0.0.5\"",
                    "\"10.0.0.0/8\" = \"10.0.0.5\"",
                ),
        )
        .unwrap();
        let told = |host: &str, port| Told {
            host: host.into(),
            port,
        };
        assert_eq!(
            config.sip.advertised,
            Some(told("[2001:db8::1]", Some(5070)))
        );
        assert_eq!(
            config.sip.advertised_to,
            [(("10.0.0.0".parse().unwrap(), 8), told("10.0.0.5", None))]
        );
    }

    #[test]
    fn calls_through_a_trunk_need_a_numeric_caller_id() {
        let trunk = DEFAULT.replace(
            "# outbound_proxy = \"192.0.2.20:5060\"",
            "outbound_proxy = \"192.0.2.20:5060\"",
        );
        let err = parse(&trunk).unwrap_err();
        assert!(
            err.starts_with("test.toml: queues.support.caller_id:"),
            "{err}"
        );
        assert!(err.contains("set sip.caller_id"), "{err}");
        let global = trunk.replace(
            "# caller_id = \"+12125550000\"",
            "caller_id = \"+12125550000\"",
        );
        assert!(parse(&global).is_ok());
        let per_queue = trunk.replace(
            "# caller_id = \"+12125550001\"",
            "caller_id = \"+12125550001\"",
        );
        assert!(parse(&per_queue).is_ok());
        let named = global.replace("\"+12125550000\"", "\"callbackd\"");
        assert!(parse(&named)
            .unwrap_err()
            .starts_with("test.toml: sip.caller_id: `callbackd` is not a number"));
    }

    #[test]
    fn trunks_and_routes_are_checked_at_start_up() {
        let with = |extra: &str| {
            parse(&DEFAULT.replace("[queues.support]", &format!("{extra}\n[queues.support]")))
        };
        let trunk = "[trunks.t]\nhost = \"192.0.2.20\"\ncaller_id = \"+12125550000\"\n";
        assert!(with(&format!(
            "{trunk}[[routes]]\nprefix = \"+1\"\ntrunks = [\"t\"]"
        ))
        .is_ok());
        let cases = [
            ("[[routes]]\ntrunks = [\"nope\"]", "routes[0]", "no trunk `nope`"),
            ("[[routes]]\nprefix = \"1\"\ntrunks = [\"t\"]", "routes[0]", "E.164"),
            ("[[routes]]\nqueue = \"sales\"\ntrunks = [\"t\"]", "routes[0]", "no queue"),
            ("[trunks.n]\nhost = \"192.0.2.21\"\nnumbers = \"national\"\ncaller_id = \"+1212555\"", "trunks.n.country_code", "calling code"),
            ("[trunks.n]\nhost = \"exa mple.com\"", "trunks.n.host", "neither"),
            (
                "[trunks.n]\nhost = \"192.0.2.21\"\nprivacy = \"secret\"",
                "trunks.n.privacy",
                "not a Privacy value",
            ),
        ];
        for (extra, key, message) in cases {
            let err = with(&format!("{trunk}{extra}")).unwrap_err();
            assert!(
                err.starts_with(&format!("test.toml: {key}")),
                "{extra}: {err}"
            );
            assert!(err.contains(message), "{extra}: {err}");
        }
        let both = DEFAULT
            .replace(
                "# outbound_proxy = \"192.0.2.20:5060\"",
                "outbound_proxy = \"192.0.2.20:5060\"",
            )
            .replace("[queues.support]", &format!("{trunk}\n[queues.support]"));
        assert!(parse(&both)
            .unwrap_err()
            .starts_with("test.toml: sip.outbound_proxy:"));
    }

    #[test]
    fn a_configured_token_is_long_enough() {
        let with_token = DEFAULT.replace(
            "# token = \"a long random string\"",
            "token = \"0123456789abcdef0123\"",
        );
        assert!(parse(&with_token).is_ok());
        let short = with_token.replace("0123456789abcdef0123", "short");
        assert!(parse(&short).unwrap_err().contains("at least 16"));
    }

    #[test]
    fn semantic_problems_name_the_queue() {
        let err = parse(&DEFAULT.replace(
            "skills = [\"billing\", \"technical\", \"sales\"]",
            "skills = []",
        ))
        .unwrap_err();
        assert!(
            err.starts_with("test.toml: queues.support.skills:"),
            "{err}"
        );
        let err = parse(&DEFAULT.replace(
            "# blocked_prefixes = [\"+1900\"]",
            "blocked_prefixes = [\"1900\"]",
        ))
        .unwrap_err();
        assert!(
            err.starts_with("test.toml: dialing:") && err.contains("`1900`"),
            "{err}"
        );
    }

    #[test]
    fn environment_overrides_single_settings() {
        let env = environment(&[
            ("DATABASE_URL", "postgres://cb:pw@127.0.0.1/cb"),
            ("CALLBACKD_API_LISTEN", "127.0.0.1:9999"),
        ]);
        let config = Config::parse("x", DEFAULT, &env).unwrap();
        assert_eq!(config.store.url.expose(), "postgres://cb:pw@127.0.0.1/cb");
        assert_eq!(config.api.listen.port(), 9999);
        let bad = Config::parse(
            "x",
            DEFAULT,
            &environment(&[("CALLBACKD_API_LISTEN", "nope")]),
        );
        assert!(bad
            .unwrap_err()
            .to_string()
            .contains("CALLBACKD_API_LISTEN=`nope`"));
    }

    fn environment(pairs: &[(&str, &str)]) -> Environment {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_setting_can_come_from_the_environment() {
        let env = environment(&[
            ("CALLBACKD_SIP__MAX_CALLS", "800"),
            ("CALLBACKD_SIP__UDP", "[\"127.0.0.1:5070\", \"[::1]:5070\"]"),
            ("CALLBACKD_STORE__URL", "postgres://cb:pw@db/cb"),
            ("CALLBACKD_API__METRICS", "false"),
            ("CALLBACKD_QUEUES__SUPPORT__TIME_ZONE", "Europe/Paris"),
            // A section the file does not have.
            ("CALLBACKD_TRUNKS__CARRIER__HOST", "127.0.0.1"),
            // Quoted, as it would read as a number.
            ("CALLBACKD_SIP__CALLER_ID", "\"+12125550001\""),
            ("CALLBACKD_LOG", "debug"),
        ]);
        let config = Config::parse("x", DEFAULT, &env).unwrap();
        assert_eq!(config.sip.max_calls, 800);
        assert_eq!(config.sip.udp.len(), 2);
        assert_eq!(config.store.url.expose(), "postgres://cb:pw@db/cb");
        assert!(!config.api.metrics);
        assert_eq!(config.queues["support"].time_zone.name(), "Europe/Paris");
        assert!(config.trunks.contains_key("carrier"));
        assert_eq!(config.sip.caller_id.as_deref(), Some("+12125550001"));

        let wrong = |name: &str, value: &str| {
            Config::parse("x", DEFAULT, &environment(&[(name, value)]))
                .unwrap_err()
                .to_string()
        };
        let typo = wrong("CALLBACKD_SIP__MAX_CALS", "800");
        assert!(
            typo.contains("max_cals") && typo.contains("CALLBACKD_SIP__MAX_CALS"),
            "{typo}"
        );
        let not_a_number = wrong("CALLBACKD_SIP__MAX_CALLS", "many");
        assert!(not_a_number.contains("sip.max_calls"), "{not_a_number}");
        let into_a_value = wrong("CALLBACKD_API__LISTEN__PORT", "1");
        assert!(
            into_a_value.contains("`listen` is a setting"),
            "{into_a_value}"
        );
    }

    #[test]
    fn the_number_dialled_chooses_the_entry() {
        let text = DEFAULT.replace(
            "# \"5001\" = \"queue_support\"",
            "\"5001\" = \"queue_support\"",
        );
        let config = parse(&text).unwrap();
        assert_eq!(config.sip.entry("5001"), "queue_support");
        assert_eq!(config.sip.entry("5000"), "self_service");
        assert_eq!(config.sip.entry(""), "self_service");
    }

    #[test]
    fn secrets_stay_secret() {
        let env = environment(&[("CALLBACKD_API_TOKEN", "0123456789abcdef-secret")]);
        let config = Config::parse("x", DEFAULT, &env).unwrap();
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("secret") && !debug.contains("callbackd.db"),
            "{debug}"
        );
        let token = config.api.token.unwrap();
        assert!(token.matches("0123456789abcdef-secret"));
        assert!(!token.matches("0123456789abcdef-secreT"));
        assert!(!token.matches(""));
        assert!(
            !token.matches("0123456789abcdef-secret0123456789abcdef-secret"),
            "a repeat is not a match"
        );
    }
}
