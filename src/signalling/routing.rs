//! Where the calls callbackd places go, and placing them: the Request-URI, the address and
//! the transport for a URI, the RTP port and the SDP offer, and the INVITE.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::RngCore;
use sip::sdp;
use sip::ua::{CallHandle, Credentials, Dial, EndReason, Link};
use tracing::{info, warn};

use super::calls::ActiveCall;
use super::{Loop, PlaceError};
use crate::routing::Target;

impl Loop {
    /// Where a call to `target` goes: the Request-URI, the address, the transport, the
    /// credentials for its challenges and the caller ID its trunk presents. Through its trunk
    /// when it has one; a phone registered with callbackd (a URI whose host is `sip.realm`)
    /// where it registered from; else the address the URI names.
    pub(super) fn route(&self, target: &Target) -> Result<Route, PlaceError> {
        if let Some(name) = &target.trunk {
            let routes = self.routes.load();
            let trunk = routes
                .trunk(name)
                .ok_or_else(|| PlaceError::NoRoute(target.uri.clone()))?;
            // The first target, then the others if it fails (RFC 3263 section 4.3).
            let mut targets = trunk.ordered_targets().into_iter();
            let destination = targets
                .next()
                .ok_or_else(|| PlaceError::Unresolved(name.clone()))?;
            return Ok(Route {
                uri: target.uri.clone(),
                destination,
                fallbacks: targets.collect(),
                link: trunk.link,
                credentials: trunk.credentials.clone(),
                caller_id: trunk.caller_id.clone(),
                trunk: Some(name.clone()),
            });
        }
        let direct = |uri: String, destination, link| Route {
            uri,
            destination,
            fallbacks: Vec::new(),
            link,
            credentials: None,
            caller_id: None,
            trunk: None,
        };
        let uri = match sip::uri::Uri::parse(&target.uri) {
            Ok(uri) if uri.is_sip() => uri,
            _ => return Err(PlaceError::BadUri(target.uri.clone())),
        };
        if uri.host.eq_ignore_ascii_case(&self.sip.realm) {
            let user = uri.user.clone().unwrap_or_default();
            return self
                .ua
                .binding(&user, Instant::now())
                .map(|b| direct(b.contact.clone(), b.source, b.link))
                .ok_or(PlaceError::NotRegistered(user));
        }
        let address = uri.host.trim_start_matches('[').trim_end_matches(']');
        match address.parse::<IpAddr>() {
            Ok(ip) => {
                let at = SocketAddr::new(ip, uri.port.unwrap_or(5060));
                Ok(direct(target.uri.clone(), at, Link::Udp))
            }
            // A host name: through the default route's trunk.
            Err(_) => match self.routes.load().default_trunk(None) {
                Some(trunk) => self.route(&Target {
                    uri: target.uri.clone(),
                    trunk: Some(trunk.to_owned()),
                    then: Vec::new(),
                }),
                None => Err(PlaceError::NoRoute(target.uri.clone())),
            },
        }
    }

    /// Places a call to `target` (see [`Loop::route`], unless `at` says where to send it)
    /// from `caller_id` (else its trunk's, else `sip.caller_id`, else `callbackd`) that rings
    /// for at most `ring`, unless the dialer's `deadline` has passed: that is checked last,
    /// on the clock read afresh (not `now`), just before the INVITE goes, so a node stopped
    /// meanwhile (SIGSTOP, a stall) does not dial late once it runs again.
    pub(super) fn place(
        &mut self,
        now: Instant,
        target: &Target,
        at: Option<SocketAddr>,
        caller_id: Option<&str>,
        ring: Duration,
        deadline: Option<Instant>,
    ) -> Result<CallHandle, PlaceError> {
        let route = match at {
            Some(at) => Route {
                uri: target.uri.clone(),
                destination: at,
                fallbacks: Vec::new(),
                link: Link::Udp,
                credentials: None,
                caller_id: None,
                trunk: None,
            },
            None => self.route(target)?,
        };
        let rtp = self
            .ports
            .allocate(&mut self.rng, self.addresses.media_bind)
            .ok_or(PlaceError::NoPort)?;
        let port = rtp.local_addr().map(|a| a.port()).unwrap_or_default();
        let destination = route.destination;
        let media_ip = self.addresses.sdp(destination.ip());
        let offer = sdp::offer(media_ip, port, self.rng.next_u64() >> 1, 1);
        let from_user = caller_id
            .or(route.caller_id.as_deref())
            .or(self.sip.caller_id.as_deref())
            .unwrap_or("callbackd")
            .to_owned();
        let routes = self.routes.load();
        let headers = route
            .trunk
            .as_deref()
            .and_then(|name| routes.trunk(name))
            .map(|t| t.identity_headers(&from_user))
            .unwrap_or_default();
        let to = sip::uri::Uri::parse(&route.uri)
            .ok()
            .and_then(|u| u.user)
            .unwrap_or_default();
        let record = (from_user.clone(), to);
        let dial = Dial {
            uri: route.uri,
            from_user,
            destination,
            fallbacks: route.fallbacks,
            link: route.link,
            offer: Bytes::from(offer.to_string()),
            credentials: route.credentials,
            ring_timeout: ring,
            headers,
        };
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(PlaceError::TooLate);
        }
        let call = self.ua.dial(now, dial);
        info!(%call, %destination, trunk = route.trunk.as_deref().unwrap_or(""), "call placed");
        let call_id = self.ua.call_id(call).unwrap_or_default().to_owned();
        let (from, to) = record;
        let record = store::CallRecord {
            trunk: route.trunk.clone(),
            ..self.new_record(call_id, "outbound", Some(from), to)
        };
        let instead = (!target.then.is_empty()).then(|| Instead {
            targets: target.then.clone(),
            caller_id: caller_id.map(str::to_owned),
            ring,
            deadline,
        });
        self.calls.insert(
            call,
            ActiveCall {
                record,
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
                instead,
                changed: false,
            },
        );
        Ok(call)
    }

    /// Places a call that `reason` ended through the next trunk of its route, when there is
    /// one and the reason says its trunk could not carry it (nothing answered, 408, or a
    /// server error, 5xx) rather than that the callee would not take it (busy, declined,
    /// unknown number). The new call, or `None`.
    pub(super) fn place_instead(
        &mut self,
        now: Instant,
        instead: Option<Instead>,
        reason: &EndReason,
    ) -> Option<CallHandle> {
        let &EndReason::Failed(status @ (408 | 500..=599)) = reason else {
            return None;
        };
        let mut instead = instead?;
        while !instead.targets.is_empty() {
            let mut next = instead.targets.remove(0);
            next.then = std::mem::take(&mut instead.targets);
            let trunk = next.trunk.clone().unwrap_or_default();
            info!(
                status,
                trunk, "the trunk could not carry the call; trying the route's next trunk"
            );
            let placed = self.place(
                now,
                &next,
                None,
                instead.caller_id.as_deref(),
                instead.ring,
                instead.deadline,
            );
            match placed {
                Ok(call) => return Some(call),
                Err(error) => {
                    warn!(trunk, %error, "cannot place the call through the route's next trunk");
                    instead.targets = next.then;
                }
            }
        }
        None
    }
}

/// A call's route's next trunks, and how it was placed, for [`Loop::place_instead`].
pub(super) struct Instead {
    targets: Vec<Target>,
    caller_id: Option<String>,
    ring: Duration,
    deadline: Option<Instant>,
}

impl Loop {
    /// Sends each trunk's targets their OPTIONS keep-alive when due; a target whose last one
    /// is still unanswered by then is down.
    pub(super) fn qualify_trunks(&mut self, now: Instant) {
        let due: Vec<(String, std::time::Duration, Link, Vec<SocketAddr>)> = self
            .routes
            .load()
            .trunks()
            .filter_map(|(name, t)| Some((name.clone(), t.qualify?, t.link, t.targets.get())))
            .filter(|(name, ..)| self.qualify_due.get(name).map_or(true, |at| *at <= now))
            .collect();
        for (name, every, link, targets) in due {
            self.qualify_due.insert(name, now + every);
            for target in targets {
                if !self.unanswered.insert(target) {
                    self.qualified(target, false);
                }
                self.ua.qualify(now, target, link);
            }
        }
    }

    /// What a keep-alive found of `target`: up when it answered anything at all.
    pub(super) fn qualified(&mut self, target: SocketAddr, up: bool) {
        if up {
            self.unanswered.remove(&target);
        }
        for (name, trunk) in self.routes.load().trunks() {
            if trunk.targets.get().contains(&target) && trunk.down.set(target, up) {
                if up {
                    info!(trunk = name, %target, "trunk target up: it answers OPTIONS");
                } else {
                    warn!(trunk = name, %target, "trunk target down: no answer to OPTIONS; tried last until it answers");
                }
            }
        }
    }
}

/// Where one call goes, as [`Loop::route`] found it.
pub(super) struct Route {
    uri: String,
    destination: SocketAddr,
    /// Where to try next when `destination` answers 503 or nothing.
    fallbacks: Vec<SocketAddr>,
    link: Link,
    credentials: Option<Credentials>,
    caller_id: Option<String>,
    /// The trunk that carries it, for the identity headers it wants.
    trunk: Option<String>,
}
