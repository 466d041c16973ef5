//! Call control: what the user agent reports about calls (a call coming in, answered,
//! re-offered, ended) turned into media sessions, IVR sessions and bridges, and what the
//! media reports (keys, silence, prompts played) turned back into SIP.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ivr::session::{Session, Value};
use media::g711::Law;
use media::leg::{Leg, LegEvent};
use media::rtp::{self, PayloadTypes};
use rand::RngCore;
use sip::sdp::{self, SessionDescription};
use sip::ua::{CallEvent, CallHandle, Link};
use tracing::{debug, info, warn};

use crate::media::MediaEvent;

use super::{Loop, Side};

pub(super) struct ActiveCall {
    /// The call's record, filled in as it goes and stored once it has ended; its Call-ID
    /// and its start (when its INVITE came or went) are the call's.
    pub(super) record: store::CallRecord,
    pub(super) started: Instant,
    pub(super) hanging_up: bool,
    /// Our SDP offer (a call we placed, or an INVITE that came without one), to settle the
    /// media with the answer.
    pub(super) offer: Option<SessionDescription>,
    /// The connection this call is part of, and which side it is.
    pub(super) bridge: Option<(u64, Side)>,
    /// For a call holding in a queue: its place and what it hears.
    pub(super) holding: Option<super::holding::Holding>,
    /// When callbackd hangs the call up (a test call's hold).
    pub(super) hang_up_at: Option<Instant>,
    /// The RTP socket holding the port named in our SDP, until the call is answered and the
    /// media runtime takes it.
    pub(super) rtp: Option<std::net::UdpSocket>,
    /// What offer and answer settled.
    pub(super) media: Option<CallMedia>,
    /// Whether the media runtime has the call.
    pub(super) in_media: bool,
    /// For an inbound call: the dialplan entry it starts at and who is calling; then the
    /// dialplan session once the call is answered.
    pub(super) ivr: Option<(String, String)>,
    pub(super) session: Option<Session>,
    /// Failed look-ups so far in this call.
    pub(super) failures: u32,
    /// Whether one of its dialplan operations changed a callback.
    pub(super) changed: bool,
    /// Where the call's INVITE came from (placed calls: where it went).
    pub(super) source: SocketAddr,
    /// Who the limiter counts for the call's look-ups and bookings (see `limits::client_of`).
    pub(super) client: String,
    /// For a call placed through a trunk with others after it on its route: where to place
    /// it if this trunk cannot carry it.
    pub(super) instead: Option<super::routing::Instead>,
}

/// A call's media as offer and answer settled it.
#[derive(Debug, Clone, Copy)]
pub(super) struct CallMedia {
    pub(super) types: PayloadTypes,
    pub(super) law: Law,
    /// The far end's RTP address from its SDP (latching may move it).
    pub(super) remote: SocketAddr,
}

impl CallMedia {
    pub(super) fn from(m: &sdp::NegotiatedMedia) -> CallMedia {
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
    pub(super) fn private(ip: IpAddr) -> bool {
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

impl Loop {
    pub(super) fn on_media(&mut self, now: Instant, event: MediaEvent<CallHandle>) {
        match event {
            MediaEvent::Silent { call } => {
                if let Some(active) = self.calls.get_mut(&call).filter(|a| !a.hanging_up) {
                    warn!(%call, call_id = %active.record.call_id, "no RTP from the far end for media.rtp_timeout; hanging up");
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
                metrics::counter!("callbackd_keys_total", "source" => source.as_str()).increment(1);
                if let Some(active) = self.calls.get_mut(&call) {
                    let record = &mut active.record;
                    record
                        .keys_source
                        .get_or_insert_with(|| source.as_str().to_owned());
                }
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
            MediaEvent::Closed { call, counters } => {
                if let Some(mut record) = self.closing.remove(&call) {
                    record.rtp_sent = counters.sent;
                    record.rtp_received = counters.received;
                    record.rtp_lost = counters.lost;
                    self.records.record(record);
                }
            }
        }
    }

    pub(super) fn on_event(&mut self, event: CallEvent) {
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
                let dialled = self.routes.load().dialled(source.ip(), &dialled);
                let entry = self.sip.entry(&dialled).to_owned();
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
                let record = store::CallRecord {
                    entry: Some(entry.clone()),
                    ..self.new_record(call_id, "inbound", caller.clone(), dialled.clone())
                };
                self.calls.insert(
                    call,
                    ActiveCall {
                        record,
                        started: now,
                        hanging_up: false,
                        offer: our_offer,
                        bridge: None,
                        holding: None,
                        hang_up_at: None,
                        rtp: Some(rtp),
                        media,
                        in_media: false,
                        ivr: Some((entry, caller.clone().unwrap_or_default())),
                        session: None,
                        failures: 0,
                        source,
                        client,
                        instead: None,
                        changed: false,
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
            CallEvent::Qualified { to, status } => self.qualified(to, status.is_some()),
            CallEvent::FailedOver { call, to } => {
                info!(%call, %to, "the trunk's target answered 503 or nothing; trying the next");
                if let Some(active) = self.calls.get_mut(&call) {
                    active.source = to;
                }
            }
            CallEvent::Answered { call, answer } => {
                if let Some(active) = self.calls.get_mut(&call) {
                    info!(%call, call_id = %active.record.call_id, "placed call answered");
                    self.settle(now, call, answer.as_deref());
                }
            }
            CallEvent::Established { call, answer } => {
                if let Some(active) = self.calls.get(&call) {
                    info!(%call, call_id = %active.record.call_id, "call established");
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
            CallEvent::TrunkRegistered { trunk, expires } => {
                info!(trunk, expires, "registered with the trunk")
            }
            CallEvent::TrunkRegistrationFailed { trunk, status } => {
                warn!(
                    trunk,
                    status, "the trunk refused the registration; retrying in 30 s"
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
                    info!(%call, call_id = %active.record.call_id, ?reason, seconds = active.started.elapsed().as_secs(), "call ended");
                    let mut record = std::mem::take(&mut active.record);
                    record.ended_at = chrono::Utc::now();
                    record.end_reason = reason.as_str().to_owned();
                    if let sip::ua::EndReason::Rejected(status)
                    | sip::ua::EndReason::Failed(status) = reason
                    {
                        record.sip_status = Some(status);
                    }
                    if let Some((id, _)) = active.bridge {
                        record.attempt_id = self.bridges.get(&id).and_then(|b| b.attempt());
                    }
                    if active.in_media {
                        // Its RTP totals come with the leg's closing.
                        self.media.close(call);
                        self.closing.insert(call, record);
                    } else {
                        self.records.record(record);
                    }
                    if let Some(holding) = active.holding.take() {
                        self.holding_over(holding);
                    }
                    let direction = if active.ivr.is_some() {
                        let flow = if active.changed {
                            "changed"
                        } else {
                            "unchanged"
                        };
                        metrics::counter!("callbackd_ivr_flows_total", "outcome" => flow)
                            .increment(1);
                        "inbound"
                    } else {
                        "outbound"
                    };
                    metrics::counter!("callbackd_calls_total", "direction" => direction, "outcome" => reason.as_str())
                        .increment(1);
                    if let Some((id, side)) = active.bridge {
                        match self.place_instead(now, active.instead.take(), &reason) {
                            Some(instead) => self.bridge_leg_placed(id, side, instead),
                            None => self.bridge_left(now, id, side, reason),
                        }
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
        active.record.answered_at = Some(chrono::Utc::now());
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
