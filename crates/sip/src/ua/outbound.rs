//! Calls we place (for the dialer): INVITE through a trunk, proxy or straight to a peer,
//! provisional responses and early media, the answer and its ACK, digest authentication when
//! the trunk challenges, one redirection, and CANCEL when nobody answers in time.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{
    client_key, cseq_number, extensions, hex, our_contact, our_via, Call, CallEvent, CallHandle,
    EndReason, Link, Phase, Purpose, Slot, UserAgent, SUPPORTED,
};
use crate::auth::{self, Challenge};
use crate::header::NameAddr;
use crate::message::{Message, Method, Name};
use crate::transaction::client_invite::ClientInvite;
use crate::transaction::client_non_invite::ClientNonInvite;
use crate::transaction::{Drain, Event, Key};

/// A username and password for a trunk that challenges our requests (RFC 3261 section 22).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// The realm the trunk's challenges name: a challenge naming another is not answered, so
    /// the password is never hashed for a foreign challenger. `None` answers any.
    pub realm: Option<String>,
}

impl Credentials {
    /// Whether a challenge in `realm` may be answered with these.
    pub(super) fn answers(&self, realm: &str) -> bool {
        self.realm
            .as_deref()
            .is_none_or(|ours| ours.eq_ignore_ascii_case(realm))
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({}, ****)", self.username)
    }
}

/// A call to place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dial {
    /// The Request-URI: `sip:+12125550100@trunk.example.com`, `sip:1001@127.0.0.1:5080`.
    pub uri: String,
    /// The user part of our From: the caller ID the callee sees.
    pub from_user: String,
    /// Where the INVITE goes: the trunk or outbound proxy, or the peer itself. Every request
    /// of the call goes there; nothing is sent to an address read from a header.
    pub destination: SocketAddr,
    /// Where to try next, in order, when the destination answers 503 or nothing at all
    /// (RFC 3263 section 4.3): a trunk's other targets.
    pub fallbacks: Vec<SocketAddr>,
    pub link: Link,
    /// Our SDP offer.
    pub offer: Bytes,
    pub credentials: Option<Credentials>,
    /// How long it may ring before we CANCEL.
    pub ring_timeout: Duration,
    /// Headers every INVITE of the call carries besides ours: what a trunk wants to see
    /// (P-Asserted-Identity, Privacy).
    pub headers: Vec<(Name, String)>,
}

/// What a call we placed carries beyond its dialog.
pub(super) struct Outbound {
    dial: Dial,
    /// The INVITE transaction now in charge (a challenge or a redirection starts another).
    key: Key,
    pub(super) ring_deadline: Option<Instant>,
    authenticated: bool,
    redirected: bool,
    /// The ACK for the 2xx, sent again for every retransmission of the 2xx.
    ack: Option<Message>,
    /// The `RSeq` of the last reliable provisional response we sent a PRACK for.
    pracked: Option<u32>,
    /// The targets left to try, and when the current one, silent so far, is given up on.
    fallbacks: std::collections::VecDeque<SocketAddr>,
    pub(super) silent_until: Option<Instant>,
    pub(super) cancelled: bool,
}

impl UserAgent {
    /// Places a call; what happens comes as `Progress`, `Answered` and `Ended` events.
    pub fn dial(&mut self, now: Instant, dial: Dial) -> CallHandle {
        let handle = CallHandle(self.next_handle);
        self.next_handle += 1;
        let tag = hex(self.rng.as_mut(), 8);
        let peer = dial.destination.ip();
        let host = self.config.advertised.host(peer);
        let call_id = format!("{}@{host}", hex(self.rng.as_mut(), 12));
        let local = format!("<sip:{}@{host}>;tag={tag}", dial.from_user);
        let remote = format!("<{}>", dial.uri);
        let mut call = Call {
            handle,
            phase: Phase::Dialing,
            invite_key: Key::Branch {
                branch: String::new(),
                sent_by: String::new(),
                method: Method::Invite,
            },
            invite: Message::request(Method::Invite, dial.uri.clone()),
            source: dial.destination,
            link: dial.link,
            call_id: call_id.clone(),
            local_tag: tag.clone(),
            remote,
            local,
            local_cseq: 0,
            remote_cseq: 0,
            remote_target: dial.uri.clone(),
            route_set: Vec::new(),
            ok: None,
            retransmit: None,
            give_up: None,
            local_sdp: Some(dial.offer.clone()),
            offer_in_ok: false,
            ending: None,
            session: None,
            reliable: None,
            rseq: 0,
            outbound: Some(Outbound {
                ring_deadline: Some(now + dial.ring_timeout),
                key: Key::Branch {
                    branch: String::new(),
                    sent_by: String::new(),
                    method: Method::Invite,
                },
                dial: dial.clone(),
                authenticated: false,
                redirected: false,
                ack: None,
                pracked: None,
                fallbacks: dial.fallbacks.iter().copied().collect(),
                silent_until: None,
                cancelled: false,
            }),
        };
        let invite = self.next_invite(&mut call, &dial.uri, None);
        self.start_invite(now, &mut call, invite);
        self.dialogs.insert((call_id, tag), handle);
        self.calls.insert(handle, call);
        self.touched.push(Slot::Call(handle));
        self.flush_transactions(now);
        handle
    }

    /// The next INVITE of a call: a new branch and CSeq, optionally with credentials.
    fn next_invite(
        &mut self,
        call: &mut Call,
        uri: &str,
        authorization: Option<(Name, String)>,
    ) -> Message {
        let branch = format!("z9hG4bK{}", hex(self.rng.as_mut(), 8));
        call.local_cseq += 1;
        let mut invite = Message::request(Method::Invite, uri);
        let sent_by = self.config.advertised.sent_by(call.source.ip(), call.link);
        invite
            .headers
            .push(Name::Via, our_via(call.link, &sent_by, &branch));
        invite.headers.push(Name::MaxForwards, "70");
        invite.headers.push(Name::From, call.local.clone());
        invite.headers.push(Name::To, format!("<{uri}>"));
        invite.headers.push(Name::CallId, call.call_id.clone());
        invite
            .headers
            .push(Name::CSeq, format!("{} INVITE", call.local_cseq));
        let from_user = call
            .outbound
            .as_ref()
            .map_or("callbackd", |o| o.dial.from_user.as_str());
        invite.headers.push(
            Name::Contact,
            our_contact(
                &self.config.advertised,
                Some(from_user),
                call.source,
                call.link,
            ),
        );
        if let Some((name, value)) = authorization {
            invite.headers.push(name, value);
        }
        invite.headers.push(Name::Allow, self.capabilities.allow());
        invite.headers.push(Name::Supported, SUPPORTED);
        if let Some(outbound) = &call.outbound {
            for (name, value) in &outbound.dial.headers {
                invite.headers.push(name.clone(), value.clone());
            }
        }
        invite
            .headers
            .push(Name::UserAgent, self.config.product.clone());
        invite.headers.push(Name::ContentType, "application/sdp");
        invite.body = call.local_sdp.clone().unwrap_or_default();
        call.remote = format!("<{uri}>");
        call.remote_target = uri.to_owned();
        invite
    }

    fn start_invite(&mut self, now: Instant, call: &mut Call, invite: Message) {
        let branch = invite
            .headers
            .get(&Name::Via)
            .and_then(|v| crate::header::Via::parse(v).ok())
            .and_then(|v| v.branch().map(str::to_owned))
            .unwrap_or_default();
        let sent_by = self.config.advertised.sent_by(call.source.ip(), call.link);
        let key = client_key(&sent_by, branch, Method::Invite);
        call.invite = invite.clone();
        call.invite_key = key.clone();
        if let Some(outbound) = call.outbound.as_mut() {
            outbound.key = key.clone();
            // A target that answers nothing, not even 100 Trying, within 4·T1 is taken for
            // down when there is another to try.
            outbound.silent_until =
                (!outbound.fallbacks.is_empty()).then(|| now + self.config.timers.t1 * 4);
        }
        let transaction = ClientInvite::new(invite, call.link.transport(), self.config.timers, now);
        self.out_invites.insert(
            key.clone(),
            (transaction, call.handle, call.source, call.link),
        );
        self.touched.push(Slot::OutInvite(key));
    }

    /// Sends what an INVITE transaction wants sent and acts on what it says.
    pub(super) fn flush_out_invite(&mut self, now: Instant, key: &Key) {
        let Some((transaction, handle, to, link)) = self.out_invites.get_mut(key) else {
            return;
        };
        let (handle, to, link, (sends, events)) = (*handle, *to, *link, transaction.drain());
        for message in sends {
            self.send(to, link, &message);
        }
        for event in events {
            match event {
                Event::Response(response) => self.on_invite_response(now, handle, key, response),
                Event::TimedOut => {
                    if self.current_invite(handle, key) && !self.fail_over(now, handle) {
                        self.end(handle, EndReason::Failed(408));
                    }
                }
                Event::Terminated => {
                    self.out_invites.remove(key);
                }
            }
        }
    }

    /// Whether `key` is the call's INVITE now in charge (not one replaced after a challenge).
    fn current_invite(&self, handle: CallHandle, key: &Key) -> bool {
        self.calls
            .get(&handle)
            .and_then(|c| c.outbound.as_ref())
            .is_some_and(|o| o.key == *key)
    }

    fn on_invite_response(
        &mut self,
        now: Instant,
        handle: CallHandle,
        key: &Key,
        response: Message,
    ) {
        let Some(code) = response.code() else {
            return;
        };
        // The target answered: it is not silent, and an answered call has nowhere else to go.
        if let Some(outbound) = self
            .calls
            .get_mut(&handle)
            .and_then(|c| c.outbound.as_mut())
        {
            outbound.silent_until = None;
            if (200..300).contains(&code) {
                outbound.fallbacks.clear();
            }
        }
        if (200..300).contains(&code) {
            return self.on_answer(now, handle, response);
        }
        if !self.current_invite(handle, key) {
            return;
        }
        if code == 503 && self.fail_over(now, handle) {
            return;
        }
        match code {
            100 => {}
            101..=199 => {
                if let Some(rseq) = extensions::rseq(&response.headers) {
                    let Some(outbound) = self
                        .calls
                        .get_mut(&handle)
                        .and_then(|c| c.outbound.as_mut())
                    else {
                        return;
                    };
                    // A retransmission (or an older one) was acknowledged already.
                    if outbound.pracked.is_some_and(|last| rseq <= last) {
                        return;
                    }
                    outbound.pracked = Some(rseq);
                    self.send_prack(now, handle, &response, rseq);
                }
                let early_media = (!response.body.is_empty()).then(|| response.body.clone());
                self.event(CallEvent::Progress {
                    call: handle,
                    code,
                    early_media,
                });
            }
            300..=399 => {
                let target = response
                    .headers
                    .list(&Name::Contact)
                    .and_then(|c| c.first().and_then(|v| NameAddr::parse(v).ok()))
                    .filter(|c| c.uri.is_sip());
                let Some(mut call) = self.calls.remove(&handle) else {
                    return;
                };
                let follow = call.outbound.as_ref().is_some_and(|o| !o.redirected);
                match target.filter(|_| follow) {
                    Some(contact) => {
                        if let Some(o) = call.outbound.as_mut() {
                            o.redirected = true;
                        }
                        let uri = contact.uri.to_string();
                        let invite = self.next_invite(&mut call, &uri, None);
                        self.start_invite(now, &mut call, invite);
                        self.calls.insert(handle, call);
                    }
                    None => {
                        self.calls.insert(handle, call);
                        self.end(handle, EndReason::Failed(code));
                    }
                }
            }
            401 | 407 => {
                let (challenge_name, answer_name) = if code == 401 {
                    (Name::WwwAuthenticate, Name::Authorization)
                } else {
                    (Name::ProxyAuthenticate, Name::ProxyAuthorization)
                };
                let challenge = response
                    .headers
                    .get(&challenge_name)
                    .and_then(|v| Challenge::parse(v).ok());
                let Some(mut call) = self.calls.remove(&handle) else {
                    return;
                };
                let credentials = call
                    .outbound
                    .as_ref()
                    .filter(|o| !o.authenticated)
                    .and_then(|o| o.dial.credentials.clone());
                let challenge =
                    challenge.filter(|c| credentials.as_ref().is_some_and(|k| k.answers(&c.realm)));
                match (challenge, credentials) {
                    (Some(challenge), Some(credentials)) => {
                        if let Some(o) = call.outbound.as_mut() {
                            o.authenticated = true;
                        }
                        let uri = call.remote_target.clone();
                        let cnonce = hex(self.rng.as_mut(), 8);
                        let answer = auth::respond(
                            &challenge,
                            &credentials.username,
                            &credentials.password,
                            "INVITE",
                            &uri,
                            &cnonce,
                            1,
                        );
                        let invite = self.next_invite(
                            &mut call,
                            &uri,
                            Some((answer_name, answer.to_header_value())),
                        );
                        self.start_invite(now, &mut call, invite);
                        self.calls.insert(handle, call);
                    }
                    _ => {
                        self.calls.insert(handle, call);
                        self.end(handle, EndReason::Failed(code));
                    }
                }
            }
            _ => {
                let reason = match self.calls.get_mut(&handle) {
                    Some(call)
                        if code == 487 && call.outbound.as_ref().is_some_and(|o| o.cancelled) =>
                    {
                        call.ending.take().unwrap_or(EndReason::NoAnswer)
                    }
                    _ => EndReason::Failed(code),
                };
                self.end(handle, reason);
            }
        }
    }

    /// A 2xx: the first makes the dialog (remote tag, target, route set) and is acknowledged;
    /// a retransmission gets the same ACK again. A 2xx after our CANCEL or hang-up is
    /// acknowledged and ended with BYE.
    fn on_answer(&mut self, now: Instant, handle: CallHandle, response: Message) {
        let branch = format!("z9hG4bK{}", hex(self.rng.as_mut(), 8));
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        let sent_by = self.config.advertised.sent_by(call.source.ip(), call.link);
        let Some(outbound) = call.outbound.as_mut() else {
            return;
        };
        if let Some(ack) = outbound.ack.clone() {
            let (to, link) = (call.source, call.link);
            self.send(to, link, &ack);
            return;
        }
        outbound.ring_deadline = None;
        if let Some(to) = response.headers.get(&Name::To) {
            call.remote = to.to_owned();
        }
        if let Some(contact) = response
            .headers
            .list(&Name::Contact)
            .and_then(|c| c.first().and_then(|v| NameAddr::parse(v).ok()))
        {
            call.remote_target = contact.uri.to_string();
        }
        call.route_set = response
            .headers
            .list(&Name::RecordRoute)
            .unwrap_or_default()
            .into_iter()
            .rev()
            .map(str::to_owned)
            .collect();
        let mut ack = Message::request(Method::Ack, call.remote_target.clone());
        ack.headers
            .push(Name::Via, our_via(call.link, &sent_by, &branch));
        ack.headers.push(Name::MaxForwards, "70");
        for route in &call.route_set {
            ack.headers.push(Name::Route, route.clone());
        }
        ack.headers.push(Name::From, call.local.clone());
        ack.headers.push(Name::To, call.remote.clone());
        ack.headers.push(Name::CallId, call.call_id.clone());
        // The INVITE's number, whatever PRACKs came between (RFC 3261 section 13.2.2.4).
        ack.headers.push(
            Name::CSeq,
            format!("{} ACK", cseq_number(&call.invite.headers)),
        );
        call.session = extensions::SessionTimer::from_answer(&response.headers, now);
        outbound.ack = Some(ack.clone());
        let (to, link) = (call.source, call.link);
        let late = call.phase != Phase::Dialing;
        let reason = call.ending.take();
        call.phase = Phase::Confirmed;
        self.send(to, link, &ack);
        if late {
            self.send_bye(now, handle, reason.unwrap_or(EndReason::LocalHangup));
            return;
        }
        let answer = (!response.body.is_empty()).then(|| response.body.clone());
        self.event(CallEvent::Answered {
            call: handle,
            answer,
        });
    }

    /// Gives up on the current target of a call not yet answered and sends the INVITE to the
    /// next (a new transaction, the same dialog identifiers); `false` when none is left.
    pub(super) fn fail_over(&mut self, now: Instant, handle: CallHandle) -> bool {
        let Some(mut call) = self.calls.remove(&handle) else {
            return false;
        };
        // Only a call still being placed, and not given up on, goes on to another target.
        let next = call
            .outbound
            .as_mut()
            .filter(|o| !o.cancelled && call.phase == Phase::Dialing)
            .and_then(|o| o.fallbacks.pop_front());
        let (Some(next), Some(old)) = (next, call.outbound.as_ref().map(|o| o.key.clone())) else {
            self.calls.insert(handle, call);
            return false;
        };
        // No more retransmissions to the target given up on; the next starts afresh: its own
        // challenge, its own RSeq.
        self.out_invites.remove(&old);
        if let Some(outbound) = call.outbound.as_mut() {
            outbound.authenticated = false;
            outbound.pracked = None;
        }
        call.source = next;
        let uri = call.remote_target.clone();
        let invite = self.next_invite(&mut call, &uri, None);
        self.start_invite(now, &mut call, invite);
        self.calls.insert(handle, call);
        self.event(CallEvent::FailedOver {
            call: handle,
            to: next,
        });
        self.flush_transactions(now);
        true
    }

    /// Acknowledges a reliable provisional response (RFC 3262 section 4) within its early
    /// dialog: to its Contact, along its Record-Route, with its To tag.
    fn send_prack(&mut self, now: Instant, handle: CallHandle, response: &Message, rseq: u32) {
        let branch = format!("z9hG4bK{}", hex(self.rng.as_mut(), 8));
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        call.local_cseq += 1;
        let target = response
            .headers
            .list(&Name::Contact)
            .and_then(|c| c.first().and_then(|v| NameAddr::parse(v).ok()))
            .map_or_else(|| call.remote_target.clone(), |c| c.uri.to_string());
        let mut prack = Message::request(Method::Prack, target);
        let sent_by = self.config.advertised.sent_by(call.source.ip(), call.link);
        prack
            .headers
            .push(Name::Via, our_via(call.link, &sent_by, &branch));
        prack.headers.push(Name::MaxForwards, "70");
        let routes = response
            .headers
            .list(&Name::RecordRoute)
            .unwrap_or_default();
        for route in routes.into_iter().rev() {
            prack.headers.push(Name::Route, route);
        }
        prack.headers.push(Name::From, call.local.clone());
        let to = response.headers.get(&Name::To).unwrap_or_default();
        prack.headers.push(Name::To, to);
        prack.headers.push(Name::CallId, call.call_id.clone());
        prack
            .headers
            .push(Name::CSeq, format!("{} PRACK", call.local_cseq));
        prack.headers.push(
            Name::RAck,
            format!("{rseq} {} INVITE", cseq_number(&call.invite.headers)),
        );
        prack
            .headers
            .push(Name::UserAgent, self.config.product.clone());
        let key = client_key(&sent_by, branch, Method::Prack);
        self.start_request(now, handle, prack, key, Purpose::Prack);
    }

    /// Gives up on a call still ringing: CANCEL now, the call ends with `reason` when the
    /// INVITE's 487 comes (RFC 3261 section 9.1).
    pub(super) fn cancel(&mut self, now: Instant, handle: CallHandle, reason: EndReason) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        let Some(outbound) = call.outbound.as_mut().filter(|o| !o.cancelled) else {
            return;
        };
        outbound.cancelled = true;
        outbound.ring_deadline = None;
        outbound.silent_until = None;
        outbound.fallbacks.clear();
        call.phase = Phase::Ending;
        call.ending = Some(reason);
        call.give_up = Some(now + self.config.timers.transaction_timeout());
        self.touched.push(Slot::Call(handle));
        let key = outbound.key.clone();
        let Some((transaction, _, _, _)) = self.out_invites.get(&key) else {
            return;
        };
        let cancel = transaction.cancel_request();
        let cancel_key = key.with_method(Method::Cancel);
        let transaction =
            ClientNonInvite::new(cancel, call.link.transport(), self.config.timers, now);
        let (to, link) = (call.source, call.link);
        self.requests.insert(
            cancel_key.clone(),
            (transaction, Some(handle), Purpose::Cancel, to, link),
        );
        self.touched.push(Slot::Request(cancel_key));
        self.flush_transactions(now);
    }
}
