//! A small registrar for agents' phones (RFC 3261 section 10): digest authentication against
//! configured users, bindings with expiry held in memory, and the events that log an agent in
//! or out when their phone registers or unregisters.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::auth::{Algorithm, AuthError, Credentials, UserSecret, Verifier};
use crate::message::{Message, Name};
use crate::ua::Link;
use crate::validate::{response_to, RequestHeaders};

/// How long a nonce stays good before the phone is asked again with `stale=true`.
const NONCE_LIFETIME_SECS: u64 = 300;

/// Where a registered phone is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The Contact URI the phone registered.
    pub contact: String,
    /// The address its REGISTER came from: requests to the phone go there.
    pub source: SocketAddr,
    pub link: Link,
    pub expires_at: Instant,
}

/// Authentication failures for one user within a minute before that user's REGISTERs are
/// refused unchecked for the rest of the minute (except from where a live binding of theirs
/// registered: the phone itself keeps working).
const USER_FAILURES_PER_MINUTE: usize = 20;

/// What a REGISTER got: the response, the changes to the bindings, and when digest
/// authentication failed, the user named.
#[derive(Debug)]
pub struct Answer {
    pub response: Message,
    pub changes: Vec<Registration>,
    pub failed: Option<String>,
}

/// A phone coming or going.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// The user has a binding now and had none before.
    Registered {
        user: String,
        contact: String,
        source: SocketAddr,
    },
    /// The user's last binding was removed or expired.
    Unregistered { user: String },
    /// The user's bindings after a successful REGISTER or an expiry, to keep across restarts.
    Bindings {
        user: String,
        bindings: Vec<Binding>,
    },
}

/// Registrar settings.
#[derive(Clone)]
pub struct Settings {
    pub realm: String,
    /// User name → password.
    pub users: HashMap<String, String>,
    /// Signs nonces (random, per process).
    pub secret: Vec<u8>,
    pub min_expires: u32,
    pub max_expires: u32,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("realm", &self.realm)
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub struct Registrar {
    verifier: Verifier,
    settings: Settings,
    bindings: HashMap<String, Vec<Binding>>,
    /// The instant second 0 of nonce time refers to.
    epoch: Option<Instant>,
    /// Nonces that authenticated a REGISTER: when each was issued, and the highest nonce count
    /// used with it (0 for the legacy computation without one, which makes it single-use).
    /// A request that does not count past it is a replay.
    used: HashMap<String, (u64, u32)>,
    /// Recent authentication failures per configured user.
    failures: HashMap<String, Vec<Instant>>,
    /// The password checked for user names that do not exist, so they take the same path
    /// (and time) as a wrong password.
    decoy: String,
}

impl Registrar {
    pub fn new(settings: Settings) -> Registrar {
        let decoy = crate::auth::hex(&settings.secret);
        Registrar {
            verifier: Verifier::new(settings.realm.clone(), &settings.secret),
            settings,
            bindings: HashMap::new(),
            epoch: None,
            used: HashMap::new(),
            failures: HashMap::new(),
            decoy,
        }
    }

    /// Whether `user` has failed too often lately to be checked again, from `source`.
    fn user_locked(&mut self, user: &str, source: SocketAddr, now: Instant) -> bool {
        let Some(times) = self.failures.get_mut(user) else {
            return false;
        };
        times.retain(|t| now.saturating_duration_since(*t) < Duration::from_secs(60));
        let from_their_phone = self.bindings.get(user).is_some_and(|list| {
            list.iter()
                .any(|b| b.source.ip() == source.ip() && b.expires_at > now)
        });
        times.len() >= USER_FAILURES_PER_MINUTE && !from_their_phone
    }

    /// Whether the credentials reuse a nonce count already seen (a replay); if not, they are
    /// remembered. Nonces past their lifetime are forgotten: they are refused as stale anyway.
    fn replayed(&mut self, credentials: &Credentials, seconds: u64) -> bool {
        self.used
            .retain(|_, (issued, _)| seconds.saturating_sub(*issued) <= NONCE_LIFETIME_SECS);
        let Ok(issued) = crate::auth::Nonce::issued_at(&credentials.nonce, &self.settings.secret)
        else {
            return true;
        };
        let count = credentials.nc.unwrap_or(0);
        match self.used.get_mut(&credentials.nonce) {
            Some((_, highest)) if count <= *highest => true,
            Some((_, highest)) => {
                *highest = count;
                false
            }
            None => {
                self.used.insert(credentials.nonce.clone(), (issued, count));
                false
            }
        }
    }

    fn seconds(&mut self, now: Instant) -> u64 {
        now.duration_since(*self.epoch.get_or_insert(now)).as_secs()
    }

    /// Answers a REGISTER: a challenge, a refusal, or 200 with the user's bindings.
    ///
    /// An unknown user, a wrong password, a digest for another URI and a user locked after many
    /// failures all get the same answer: 401 with a fresh challenge. A replayed nonce count
    /// gets a fresh one with `stale=true`, which only the password's holder can answer.
    #[allow(clippy::too_many_arguments)]
    pub fn handle(
        &mut self,
        now: Instant,
        request: &Message,
        parsed: &RequestHeaders,
        source: SocketAddr,
        link: Link,
        random: [u8; 8],
        tag: &str,
    ) -> Answer {
        let seconds = self.seconds(now);
        let headers = &request.headers;
        let user = parsed.to.uri.user.clone().unwrap_or_default();
        let challenge = |stale: bool, verifier: &Verifier| {
            let mut r = response_to(headers, 401, "Unauthorized", Some(tag));
            let c = verifier.challenge(Algorithm::Md5, seconds, random, stale);
            r.headers.push(Name::WwwAuthenticate, c.to_header_value());
            r
        };
        let Some(credentials) = headers
            .get(&Name::Authorization)
            .and_then(|v| Credentials::parse(v).ok())
        else {
            return Answer {
                response: challenge(false, &self.verifier),
                changes: Vec::new(),
                failed: None,
            };
        };
        // A user locked after many failures is checked all the same (the same work, so the
        // time taken does not tell them apart), and refused.
        let locked = self.user_locked(&credentials.username, source, now);
        let failed = |registrar: &mut Registrar| {
            if !locked && registrar.settings.users.contains_key(&credentials.username) {
                let times = registrar
                    .failures
                    .entry(credentials.username.clone())
                    .or_default();
                if times.len() >= USER_FAILURES_PER_MINUTE {
                    times.remove(0);
                }
                times.push(now);
            }
            Answer {
                response: challenge(false, &registrar.verifier),
                changes: Vec::new(),
                failed: Some(credentials.username.chars().take(64).collect()),
            }
        };
        // Ask again with `stale=true`: only the password's holder can answer that.
        let stale = |registrar: &Registrar| Answer {
            response: challenge(true, &registrar.verifier),
            changes: Vec::new(),
            failed: None,
        };
        // The digest must be for this very request, not one captured elsewhere.
        let same_uri = crate::uri::Uri::parse(&credentials.uri).is_ok_and(|u| {
            u.scheme == parsed.uri.scheme
                && u.user == parsed.uri.user
                && u.host.eq_ignore_ascii_case(&parsed.uri.host)
                && u.port == parsed.uri.port
        });
        let password = self
            .settings
            .users
            .get(&credentials.username)
            .filter(|_| credentials.username == user)
            .cloned();
        let known = password.is_some();
        let secret = UserSecret::Password(password.unwrap_or_else(|| self.decoy.clone()));
        let verified = self.verifier.verify(
            &credentials,
            &secret,
            "REGISTER",
            seconds,
            NONCE_LIFETIME_SECS,
        );
        match verified {
            Ok(()) if known && same_uri && !locked => {
                // The right digest, with a nonce count used before: a replay (or a phone
                // counting wrongly). Not a failure: it does not guess at the password.
                if self.replayed(&credentials, seconds) {
                    return stale(self);
                }
            }
            // The password was right, the nonce only old: ask again without troubling the user.
            Err(AuthError::StaleNonce { .. }) if known && same_uri && !locked => {
                return stale(self)
            }
            _ => return failed(self),
        }
        let default_expires = headers
            .get(&Name::Expires)
            .and_then(|e| e.trim().parse::<u64>().ok())
            .unwrap_or(3600);
        let had = self.bindings.get(&user).is_some_and(|b| !b.is_empty());
        let wildcard = headers.get(&Name::Contact).is_some_and(|c| c.trim() == "*");
        if wildcard {
            if default_expires != 0 {
                return Answer {
                    response: response_to(
                        headers,
                        400,
                        "Bad Request (Contact: * needs Expires: 0)",
                        Some(tag),
                    ),
                    changes: Vec::new(),
                    failed: None,
                };
            }
            self.bindings.remove(&user);
        }
        // Every Contact is checked before any binding changes, so a refusal changes nothing.
        let mut asked = Vec::new();
        for contact in &parsed.contact {
            let expires = contact
                .param("expires")
                .flatten()
                .and_then(|e| e.parse::<u64>().ok())
                .unwrap_or(default_expires);
            if expires != 0 && expires < u64::from(self.settings.min_expires) {
                let mut r = response_to(headers, 423, "Interval Too Brief", Some(tag));
                r.headers.push(
                    Name::Other("Min-Expires".into()),
                    self.settings.min_expires.to_string(),
                );
                return Answer {
                    response: r,
                    changes: Vec::new(),
                    failed: None,
                };
            }
            asked.push((
                contact.uri.to_string(),
                expires.min(u64::from(self.settings.max_expires)),
            ));
        }
        let list = self.bindings.entry(user.clone()).or_default();
        for (uri, expires) in asked {
            list.retain(|b| b.contact != uri);
            if expires > 0 {
                list.push(Binding {
                    contact: uri,
                    source,
                    link,
                    expires_at: now + Duration::from_secs(expires),
                });
            }
        }
        let mut ok = response_to(headers, 200, "OK", Some(tag));
        let current = self.bindings.get(&user).cloned().unwrap_or_default();
        for b in &current {
            let left = b.expires_at.saturating_duration_since(now).as_secs();
            ok.headers
                .push(Name::Contact, format!("<{}>;expires={left}", b.contact));
        }
        let mut changes = vec![Registration::Bindings {
            user: user.clone(),
            bindings: current.clone(),
        }];
        match (had, current.first()) {
            (false, Some(b)) => changes.push(Registration::Registered {
                user,
                contact: b.contact.clone(),
                source,
            }),
            (true, None) => {
                self.bindings.remove(&user);
                changes.push(Registration::Unregistered { user });
            }
            _ => {}
        }
        Answer {
            response: ok,
            changes,
            failed: None,
        }
    }

    /// Whether a phone registered from this address (its calls are let in).
    pub fn knows_source(&self, source: SocketAddr, now: Instant) -> bool {
        self.bindings
            .values()
            .flatten()
            .any(|b| b.source.ip() == source.ip() && b.expires_at > now)
    }

    /// Where `user`'s phone is reached at `now`: its most recently refreshed binding.
    pub fn binding(&self, user: &str, now: Instant) -> Option<&Binding> {
        self.bindings
            .get(user)?
            .iter()
            .filter(|b| b.expires_at > now)
            .max_by_key(|b| b.expires_at)
    }

    /// Forgets expired bindings; users left without one are unregistered.
    pub fn expire(&mut self, now: Instant) -> Vec<Registration> {
        let mut changes = Vec::new();
        self.bindings.retain(|user, list| {
            let before = list.len();
            list.retain(|b| b.expires_at > now);
            if list.len() != before {
                changes.push(Registration::Bindings {
                    user: user.clone(),
                    bindings: list.clone(),
                });
            }
            if list.is_empty() {
                changes.push(Registration::Unregistered { user: user.clone() });
            }
            !list.is_empty()
        });
        changes
    }

    /// Puts `users` in place of the configured users (a reload). The bindings of users no
    /// longer configured are removed, and those users unregistered.
    pub fn set_users(&mut self, users: HashMap<String, String>) -> Vec<Registration> {
        self.settings.users = users;
        let mut changes = Vec::new();
        self.bindings.retain(|user, _| {
            let kept = self.settings.users.contains_key(user);
            if !kept {
                changes.push(Registration::Bindings {
                    user: user.clone(),
                    bindings: Vec::new(),
                });
                changes.push(Registration::Unregistered { user: user.clone() });
            }
            kept
        });
        self.failures
            .retain(|user, _| self.settings.users.contains_key(user));
        changes
    }

    /// Puts back a binding kept from before a restart.
    pub fn restore(&mut self, user: String, binding: Binding) {
        let list = self.bindings.entry(user).or_default();
        list.retain(|b| b.contact != binding.contact);
        list.push(binding);
    }

    /// The earliest binding expiry.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.bindings.values().flatten().map(|b| b.expires_at).min()
    }
}
