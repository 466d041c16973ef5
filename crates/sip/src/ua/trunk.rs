//! Registering callbackd with its SIP trunks (RFC 3261 section 10.2), each on its own: a
//! REGISTER with digest authentication when challenged, refreshed before the binding runs
//! out, retried after a failure, and sent again at once when the trunk's address changes (a
//! trunk given by name).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{client_key, hex, our_contact, our_via, CallEvent, Credentials, Link, Slot, UserAgent};
use crate::auth::{self, Challenge};
use crate::message::{Message, Method, Name};
use crate::transaction::client_non_invite::ClientNonInvite;
use crate::transaction::{Drain, Event, Key};

/// How callbackd registers with a trunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkRegistration {
    /// The trunk's name, in events.
    pub trunk: String,
    /// Where the REGISTER goes; `None` until the trunk's name resolves (see
    /// [`UserAgent::set_registrar`]).
    pub registrar: Option<SocketAddr>,
    pub link: Link,
    /// The trunk's domain: the Request-URI is `sip:DOMAIN`, the address of record
    /// `sip:USER@DOMAIN`.
    pub domain: String,
    pub user: String,
    pub credentials: Option<Credentials>,
    /// The binding lifetime asked for, in seconds.
    pub expires: u32,
}

/// Wait after a failed registration before trying again.
const RETRY: Duration = Duration::from_secs(30);

pub(super) struct TrunkState {
    pub(super) settings: TrunkRegistration,
    call_id: String,
    tag: String,
    cseq: u32,
    /// The REGISTER in flight.
    transaction: Option<(Key, ClientNonInvite)>,
    /// Whether the REGISTER in flight already answers a challenge.
    authenticated: bool,
    /// When to send the next REGISTER (refresh or retry).
    pub(super) next: Option<Instant>,
}

impl TrunkState {
    pub(super) fn new(
        settings: TrunkRegistration,
        call_id: String,
        tag: String,
        now: Instant,
    ) -> TrunkState {
        TrunkState {
            settings,
            call_id,
            tag,
            cseq: 0,
            transaction: None,
            authenticated: false,
            next: Some(now),
        }
    }

    pub(super) fn timeout(&self) -> Option<Instant> {
        let transaction = self
            .transaction
            .as_ref()
            .and_then(|(_, t)| t.poll_timeout());
        super::earliest(&[self.next, transaction])
    }

    pub(super) fn owns(&self, key: &Key) -> bool {
        self.transaction.as_ref().is_some_and(|(k, _)| k == key)
    }
}

impl UserAgent {
    /// Registers with the trunk `name` at `registrar` from now on (its name resolved anew):
    /// at once if the address changed, since the binding at the old one does not carry calls
    /// from the new.
    pub fn set_registrar(&mut self, now: Instant, name: &str, registrar: SocketAddr) {
        let Some(i) = self.trunks.iter().position(|t| t.settings.trunk == name) else {
            return;
        };
        let state = &mut self.trunks[i];
        if state.settings.registrar == Some(registrar) {
            return;
        }
        state.settings.registrar = Some(registrar);
        state.transaction = None;
        state.next = Some(now);
        self.trunk_timeout(now, i);
        self.flush_transactions(now);
    }

    /// Sends a REGISTER for trunk `i`, with credentials answering `challenge` if given.
    fn send_register(&mut self, now: Instant, i: usize, challenge: Option<(Name, Challenge)>) {
        let branch = format!("z9hG4bK{}", hex(self.rng.as_mut(), 8));
        let cnonce = hex(self.rng.as_mut(), 8);
        let product = self.config.product.clone();
        let Some(state) = self.trunks.get_mut(i) else {
            return;
        };
        let s = &state.settings;
        let Some(registrar) = s.registrar else {
            // Not resolved yet: set_registrar sends it.
            return;
        };
        let sent_by = self.config.advertised.sent_by(registrar.ip(), s.link);
        state.cseq += 1;
        state.next = None;
        let uri = format!("sip:{}", s.domain);
        let aor = format!("<sip:{}@{}>", s.user, s.domain);
        let mut register = Message::request(Method::Register, uri.clone());
        register
            .headers
            .push(Name::Via, our_via(s.link, &sent_by, &branch));
        register.headers.push(Name::MaxForwards, "70");
        register
            .headers
            .push(Name::From, format!("{aor};tag={}", state.tag));
        register.headers.push(Name::To, aor);
        register.headers.push(Name::CallId, state.call_id.clone());
        register
            .headers
            .push(Name::CSeq, format!("{} REGISTER", state.cseq));
        register.headers.push(
            Name::Contact,
            our_contact(&self.config.advertised, Some(&s.user), registrar, s.link),
        );
        register.headers.push(Name::Expires, s.expires.to_string());
        state.authenticated = false;
        if let (Some((name, challenge)), Some(credentials)) = (challenge, s.credentials.as_ref()) {
            let answer = auth::respond(
                &challenge,
                &credentials.username,
                &credentials.password,
                "REGISTER",
                &uri,
                &cnonce,
                1,
            );
            register.headers.push(name, answer.to_header_value());
            state.authenticated = true;
        }
        register.headers.push(Name::UserAgent, product);
        let key = client_key(&sent_by, branch, Method::Register);
        let transaction =
            ClientNonInvite::new(register, s.link.transport(), self.config.timers, now);
        state.transaction = Some((key, transaction));
        self.touched.push(Slot::Trunk(i));
    }

    /// Fires trunk `i`'s registration timers.
    pub(super) fn trunk_timeout(&mut self, now: Instant, i: usize) {
        let Some(state) = self.trunks.get_mut(i) else {
            return;
        };
        if let Some((_, transaction)) = state.transaction.as_mut() {
            transaction.handle_timeout(now);
        }
        // A REGISTER that has its final answer no longer stands in the way of the next one.
        let idle = state.transaction.as_ref().is_none_or(|(_, t)| {
            use crate::transaction::client_non_invite::State;
            matches!(t.state(), State::Completed | State::Terminated)
        });
        if state.next.is_some_and(|at| at <= now) && idle {
            self.send_register(now, i, None);
        }
        self.touched.push(Slot::Trunk(i));
    }

    /// The trunk registration a response is for: the one whose REGISTER in flight has `key`,
    /// if the response came from its registrar.
    pub(super) fn trunk_for_response(&self, key: &Key, source: SocketAddr) -> Option<usize> {
        self.trunks.iter().position(|t| {
            t.owns(key) && t.settings.registrar.is_some_and(|r| r.ip() == source.ip())
        })
    }

    pub(super) fn trunk_response(&mut self, now: Instant, i: usize, response: Message) {
        if let Some((_, transaction)) = self.trunks.get_mut(i).and_then(|s| s.transaction.as_mut())
        {
            transaction.handle_response(response, now);
        }
        self.touched.push(Slot::Trunk(i));
    }

    /// Sends what trunk `i`'s REGISTER transaction wants sent and acts on its outcome.
    pub(super) fn flush_trunk(&mut self, now: Instant, i: usize) {
        let Some(state) = self.trunks.get_mut(i) else {
            return;
        };
        let (Some(destination), link) = (state.settings.registrar, state.settings.link) else {
            return;
        };
        let (sends, events) = state
            .transaction
            .as_mut()
            .map(|(_, t)| t.drain())
            .unwrap_or_default();
        for message in sends {
            self.send(destination, link, &message);
        }
        for event in events {
            match event {
                Event::Response(r) => self.on_register_response(now, i, r),
                Event::TimedOut => self.register_failed(now, i, 408),
                Event::Terminated => {
                    if let Some(state) = self.trunks.get_mut(i) {
                        if state.transaction.as_ref().is_some_and(|(_, t)| {
                            t.state() == crate::transaction::client_non_invite::State::Terminated
                        }) {
                            state.transaction = None;
                        }
                    }
                }
            }
        }
    }

    fn on_register_response(&mut self, now: Instant, i: usize, response: Message) {
        let (Some(code), Some(state)) = (response.code(), self.trunks.get(i)) else {
            return;
        };
        let trunk = state.settings.trunk.clone();
        match code {
            100..=199 => {}
            200..=299 => {
                let asked = state.settings.expires;
                let s = &state.settings;
                let ours = s
                    .registrar
                    .map(|r| our_contact(&self.config.advertised, Some(&s.user), r, s.link))
                    .unwrap_or_default();
                let ours = ours.trim_start_matches('<').trim_end_matches('>');
                // The registrar's word wins: our Contact's expires (the account may list other
                // devices' bindings too), else the Expires header.
                let granted = response
                    .headers
                    .list(&Name::Contact)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|c| crate::header::NameAddr::parse(c).ok())
                    .filter(|c| c.uri.as_str().eq_ignore_ascii_case(ours))
                    .find_map(|c| c.param("expires")??.parse::<u32>().ok())
                    .or_else(|| response.headers.get(&Name::Expires)?.trim().parse().ok())
                    .unwrap_or(asked);
                if let Some(state) = self.trunks.get_mut(i) {
                    // Refresh with a tenth of the lifetime (at least a second) to spare.
                    let lifetime = Duration::from_secs(u64::from(granted.max(1)));
                    let margin = (lifetime / 10)
                        .max(Duration::from_secs(1))
                        .min(lifetime / 2);
                    state.next = Some(now + lifetime - margin);
                }
                self.event(CallEvent::TrunkRegistered {
                    trunk,
                    expires: granted,
                });
            }
            401 | 407 => {
                let name = if code == 401 {
                    Name::WwwAuthenticate
                } else {
                    Name::ProxyAuthenticate
                };
                let answer = if code == 401 {
                    Name::Authorization
                } else {
                    Name::ProxyAuthorization
                };
                let challenge = response
                    .headers
                    .get(&name)
                    .and_then(|v| Challenge::parse(v).ok());
                let retry = |c: &Challenge| {
                    !state.authenticated
                        && state
                            .settings
                            .credentials
                            .as_ref()
                            .is_some_and(|k| k.answers(&c.realm))
                };
                match challenge.filter(retry) {
                    Some(challenge) => {
                        if let Some(state) = self.trunks.get_mut(i) {
                            state.transaction = None;
                        }
                        self.send_register(now, i, Some((answer, challenge)));
                    }
                    None => self.register_failed(now, i, code),
                }
            }
            _ => self.register_failed(now, i, code),
        }
    }

    fn register_failed(&mut self, now: Instant, i: usize, status: u16) {
        let Some(state) = self.trunks.get_mut(i) else {
            return;
        };
        state.next = Some(now + RETRY);
        let trunk = state.settings.trunk.clone();
        self.event(CallEvent::TrunkRegistrationFailed { trunk, status });
    }
}
