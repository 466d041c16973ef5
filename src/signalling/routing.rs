//! Where the calls callbackd places go, and placing them: the Request-URI, the address and
//! the transport for a URI, the RTP port and the SDP offer, and the INVITE.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::RngCore;
use sip::sdp;
use sip::ua::{CallHandle, Credentials, Dial, Link};
use tracing::info;

use super::calls::ActiveCall;
use super::{Loop, PlaceError};

impl Loop {
    /// Where a call to `to` goes, as the Request-URI, the address and the transport: a phone
    /// registered with callbackd (a URI whose host is `sip.realm`) where it registered from;
    /// anything else to `sip.outbound_proxy` when set, else to the IP address the URI names.
    pub(super) fn route(&self, to: &str) -> Result<(String, SocketAddr, Link), PlaceError> {
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
    pub(super) fn place(
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
}
