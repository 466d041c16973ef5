//! The user agent core in virtual time: a scripted caller on one side, outputs checked on
//! the other.

use super::*;
use crate::parse::parse_datagram;
use rand::{rngs::StdRng, SeedableRng};

const CALLER: &str = "127.0.0.1:5070";

fn ua() -> UserAgent {
    let config = Config {
        timers: Timers::default(),
        advertised: crate::advertise::Advertise::new(
            crate::advertise::Told {
                host: "127.0.0.1".into(),
                port: None,
            },
            5060,
            5060,
        ),
        product: "callbackd-test".into(),
        max_calls: 10,
        max_calls_per_second: 100,
        trusted: vec![],
        per_source: Default::default(),
        registrar: None,
        registrations: Vec::new(),
    };
    UserAgent::new(config, Box::new(StdRng::seed_from_u64(1)))
}

fn caller() -> SocketAddr {
    CALLER.parse().unwrap()
}

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";

fn request(
    method: &str,
    branch: &str,
    cseq: u32,
    to_tag: Option<&str>,
    extra: &str,
    body: &str,
) -> Vec<u8> {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    format!(
        "{method} sip:5000@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch={branch};rport\r\n\
         From: \"Alice\" <sip:alice@{CALLER}>;tag=caller1\r\nTo: <sip:5000@127.0.0.1:5060>{to_tag}\r\n\
         Call-ID: call-1@127.0.0.1\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n\
         Contact: <sip:alice@{CALLER}>\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn invite() -> Vec<u8> {
    request(
        "INVITE",
        "z9hG4bK-inv1",
        1,
        None,
        "Content-Type: application/sdp\r\n",
        SDP,
    )
}

/// Everything the user agent put out: messages sent (parsed, with their destination) and events.
fn drain(ua: &mut UserAgent) -> (Vec<(SocketAddr, Message)>, Vec<CallEvent>) {
    let mut sent = Vec::new();
    let mut events = Vec::new();
    while let Some(output) = ua.poll_output() {
        match output {
            Output::Send { to, bytes, .. } => sent.push((to, parse_datagram(&bytes).unwrap())),
            Output::Event(e) => events.push(e),
        }
    }
    (sent, events)
}

fn codes(sent: &[(SocketAddr, Message)]) -> Vec<u16> {
    sent.iter().filter_map(|(_, m)| m.code()).collect()
}

/// Starts a call and answers it; returns the call and our To tag.
fn answered(ua: &mut UserAgent, now: Instant) -> (CallHandle, String) {
    ua.handle_message(now, caller(), Link::Udp, &invite());
    let (_, events) = drain(ua);
    let CallEvent::Incoming { call, .. } = events[0].clone() else {
        panic!("{events:?}")
    };
    ua.answer(now, call, Bytes::from_static(b"v=0\r\n"));
    let (sent, _) = drain(ua);
    let to = sent[0].1.headers.get(&Name::To).unwrap().to_owned();
    let tag = to.split(";tag=").nth(1).unwrap().to_owned();
    (call, tag)
}

/// The caller acknowledges our 2xx (the call's To tag is `tag`).
fn acknowledge(ua: &mut UserAgent, now: Instant, tag: &str) {
    let ack = request("ACK", "z9hG4bK-ack1", 1, Some(tag), "", "");
    ua.handle_message(now, caller(), Link::Udp, &ack);
}

/// The caller hangs up the call whose To tag is `tag`.
fn hang_up_as_caller(ua: &mut UserAgent, now: Instant, tag: &str) {
    let bye = request("BYE", "z9hG4bK-bye1", 2, Some(tag), "", "");
    ua.handle_message(now, caller(), Link::Udp, &bye);
}

#[test]
fn an_inbound_call_from_invite_to_bye() {
    let now = Instant::now();
    let mut ua = ua();
    ua.handle_message(now, caller(), Link::Udp, &invite());
    let (sent, events) = drain(&mut ua);
    assert_eq!(codes(&sent), [100]);
    assert_eq!(sent[0].0, caller(), "rport: back to the source port");
    let via = sent[0].1.headers.get(&Name::Via).unwrap();
    assert!(via.contains("rport=5070"), "{via}");
    let [CallEvent::Incoming {
        call,
        dialled,
        caller: who,
        offer,
        ..
    }] = events.as_slice()
    else {
        panic!("{events:?}")
    };
    assert_eq!(
        (dialled.request_uri.as_str(), who.as_deref()),
        ("5000", Some("alice"))
    );
    assert!(offer.as_ref().unwrap().starts_with(b"v=0"));
    let call = *call;

    ua.answer(now, call, Bytes::from_static(b"v=0\r\nanswer"));
    let (sent, _) = drain(&mut ua);
    assert_eq!(codes(&sent), [200]);
    let ok = &sent[0].1;
    assert_eq!(ok.headers.get(&Name::ContentType), Some("application/sdp"));
    assert_eq!(ok.headers.get(&Name::Contact), Some("<sip:127.0.0.1:5060>"));
    assert!(ok.headers.get(&Name::To).unwrap().contains(";tag="));
    let tag = ok
        .headers
        .get(&Name::To)
        .unwrap()
        .split(";tag=")
        .nth(1)
        .unwrap()
        .to_owned();

    ua.handle_message(
        now,
        caller(),
        Link::Udp,
        &request("ACK", "z9hG4bK-ack1", 1, Some(&tag), "", ""),
    );
    let (sent, events) = drain(&mut ua);
    assert!(sent.is_empty());
    assert_eq!(events, [CallEvent::Established { call, answer: None }]);
    for at in [1, 2, 4, 8, 16] {
        ua.handle_timeout(now + Duration::from_secs(at));
    }
    assert!(
        drain(&mut ua).0.is_empty(),
        "no 2xx retransmission after the ACK"
    );

    ua.handle_message(
        now,
        caller(),
        Link::Udp,
        &request("BYE", "z9hG4bK-bye1", 2, Some(&tag), "", ""),
    );
    let (sent, events) = drain(&mut ua);
    assert_eq!(codes(&sent), [200]);
    assert_eq!(
        events,
        [CallEvent::Ended {
            call,
            reason: EndReason::RemoteHangup
        }]
    );
    assert_eq!(ua.calls(), 0);
}

#[test]
fn retransmitted_invite_is_one_call() {
    let now = Instant::now();
    let mut ua = ua();
    ua.handle_message(now, caller(), Link::Udp, &invite());
    drain(&mut ua);
    ua.handle_message(
        now + Duration::from_millis(500),
        caller(),
        Link::Udp,
        &invite(),
    );
    let (sent, events) = drain(&mut ua);
    assert_eq!(codes(&sent), [100], "the last response again");
    assert!(events.is_empty(), "never a second call");
    assert_eq!(ua.calls(), 1);
    let stats = ua.stats();
    assert_eq!(stats.repeats, 1, "counted as a repeat");
    assert_eq!(counted(&stats.received, "INVITE"), 2);
    assert_eq!(counted(&stats.sent, "1xx"), 2);
}

/// A message count by method or response class.
fn counted(messages: &Messages, label: &str) -> u64 {
    messages
        .labelled()
        .find(|(_, l, _)| *l == label)
        .map_or(0, |(.., n)| n)
}

#[test]
fn an_acknowledged_call_keeps_no_invite_transaction_and_still_absorbs_its_invite() {
    let now = Instant::now();
    let mut ua = ua();
    let (call, tag) = answered(&mut ua, now);
    assert_eq!(ua.transactions().0, 1, "the INVITE's, until the ACK");
    acknowledge(&mut ua, now, &tag);
    drain(&mut ua);
    assert_eq!(
        ua.transactions(),
        (0, 0),
        "the caller has the 2xx: nothing lingers for Timer L"
    );
    // A copy of the INVITE delayed in the network arrives after the ACK.
    ua.handle_message(now + Duration::from_secs(1), caller(), Link::Udp, &invite());
    let (sent, events) = drain(&mut ua);
    assert!(sent.is_empty() && events.is_empty(), "{sent:?} {events:?}");
    assert_eq!(ua.calls(), 1, "still the one call");
    assert_eq!(ua.transactions().0, 0);
    // The call goes on as before: the caller hangs up.
    hang_up_as_caller(&mut ua, now + Duration::from_secs(2), &tag);
    let (sent, events) = drain(&mut ua);
    assert_eq!(codes(&sent), [200]);
    assert!(matches!(events[..], [CallEvent::Ended { call: c, .. }] if c == call));
}

#[test]
fn unacknowledged_2xx_is_retransmitted_then_the_call_is_torn_down() {
    let start = Instant::now();
    let mut ua = ua();
    let (call, _) = answered(&mut ua, start);
    let mut times = Vec::new();
    let mut byes = Vec::new();
    while let Some(at) = ua
        .poll_timeout()
        .filter(|at| *at <= start + Duration::from_secs(40))
    {
        ua.handle_timeout(at);
        let (sent, _) = drain(&mut ua);
        for (_, m) in sent {
            match m.code() {
                Some(200) => times.push((at - start).as_secs_f64()),
                None => byes.push((at - start).as_secs_f64()),
                _ => {}
            }
        }
        if !byes.is_empty() {
            break;
        }
    }
    // T1, 2·T1, … capped at T2: 0.5 1.5 3.5 7.5 11.5 … 31.5, then BYE at 64·T1.
    assert_eq!(
        times,
        [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    );
    assert_eq!(byes, [32.0]);
    assert_eq!(ua.stats().retransmitted, 10);
    assert_eq!(
        counted(&ua.stats().sent, "2xx"),
        11,
        "the 2xx and its ten copies"
    );
    // The BYE goes unanswered too: the call ends when its transaction gives up.
    let mut ended = None;
    while let Some(at) = ua.poll_timeout() {
        ua.handle_timeout(at);
        let (_, events) = drain(&mut ua);
        if let Some(e) = events.into_iter().next() {
            ended = Some(e);
            break;
        }
    }
    assert_eq!(
        ended,
        Some(CallEvent::Ended {
            call,
            reason: EndReason::NoAck
        })
    );
}

#[test]
fn cancel_before_answer() {
    let now = Instant::now();
    let mut ua = ua();
    ua.handle_message(now, caller(), Link::Udp, &invite());
    let (_, events) = drain(&mut ua);
    let CallEvent::Incoming { call, .. } = events[0] else {
        panic!()
    };
    ua.handle_message(
        now,
        caller(),
        Link::Udp,
        &request("CANCEL", "z9hG4bK-inv1", 1, None, "", ""),
    );
    let (sent, events) = drain(&mut ua);
    let mut got: Vec<(u16, String)> = sent
        .iter()
        .map(|(_, m)| {
            (
                m.code().unwrap(),
                m.headers.get(&Name::CSeq).unwrap().to_owned(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [(200, "1 CANCEL".to_owned()), (487, "1 INVITE".to_owned())]
    );
    assert_eq!(
        events,
        [CallEvent::Ended {
            call,
            reason: EndReason::Cancelled
        }]
    );
    // The ACK for the 487 stops its retransmission.
    let to = sent
        .iter()
        .find(|(_, m)| m.code() == Some(487))
        .unwrap()
        .1
        .headers
        .get(&Name::To)
        .unwrap()
        .to_owned();
    let tag = to.split(";tag=").nth(1).unwrap();
    ua.handle_message(
        now,
        caller(),
        Link::Udp,
        &request("ACK", "z9hG4bK-inv1", 1, Some(tag), "", ""),
    );
    ua.handle_timeout(now + Duration::from_secs(1));
    assert!(
        drain(&mut ua).0.is_empty(),
        "no 487 retransmission after the ACK"
    );
    // A CANCEL for nothing gets 481.
    ua.handle_message(
        now,
        caller(),
        Link::Udp,
        &request("CANCEL", "z9hG4bK-other", 1, None, "", ""),
    );
    assert_eq!(codes(&drain(&mut ua).0), [481]);
}

#[test]
fn we_hang_up() {
    let now = Instant::now();
    let mut ua = ua();
    let (call, tag) = answered(&mut ua, now);
    ua.handle_message(
        now,
        caller(),
        Link::Udp,
        &request("ACK", "z9hG4bK-ack1", 1, Some(&tag), "", ""),
    );
    drain(&mut ua);
    ua.hang_up(now, call);
    let (sent, _) = drain(&mut ua);
    let (to, bye) = &sent[0];
    assert_eq!(
        *to,
        caller(),
        "in-dialog requests go where the INVITE came from"
    );
    assert_eq!(bye.method(), Some(&Method::Bye));
    assert_eq!(
        bye.uri(),
        Some("sip:alice@127.0.0.1:5070"),
        "the remote target"
    );
    assert!(bye
        .headers
        .get(&Name::From)
        .unwrap()
        .ends_with(&format!(";tag={tag}")));
    assert!(bye
        .headers
        .get(&Name::To)
        .unwrap()
        .ends_with(";tag=caller1"));
    assert_eq!(bye.headers.get(&Name::CallId), Some("call-1@127.0.0.1"));
    let mut ok = crate::validate::response_to(&bye.headers, 200, "OK", None);
    ok.headers.push(Name::ContentLength, "0");
    ua.handle_message(now, caller(), Link::Udp, &ok.to_bytes());
    let (_, events) = drain(&mut ua);
    assert_eq!(
        events,
        [CallEvent::Ended {
            call,
            reason: EndReason::LocalHangup
        }]
    );
}

#[test]
fn requests_outside_calls() {
    let now = Instant::now();
    let mut ua = ua();
    ua.handle_message(
        now,
        caller(),
        Link::Udp,
        &request("OPTIONS", "z9hG4bK-o1", 1, None, "", ""),
    );
    let (sent, _) = drain(&mut ua);
    assert_eq!(codes(&sent), [200]);
    assert_eq!(
        sent[0].1.headers.get(&Name::Allow),
        Some("INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE, PRACK")
    );
    ua.handle_message(
        now,
        caller(),
        Link::Udp,
        &request("FROBNICATE", "z9hG4bK-f1", 1, None, "", ""),
    );
    let (sent, _) = drain(&mut ua);
    assert_eq!(codes(&sent), [501]);
    assert!(sent[0].1.headers.get(&Name::Allow).is_some());
    ua.handle_message(
        now,
        caller(),
        Link::Udp,
        &request("BYE", "z9hG4bK-b1", 1, Some("nope"), "", ""),
    );
    assert_eq!(codes(&drain(&mut ua).0), [481]);
    ua.handle_message(now, caller(), Link::Udp, b"\x00\x01garbage");
    assert!(drain(&mut ua).0.is_empty(), "garbage is dropped");
    let broken = String::from_utf8(request("OPTIONS", "z9hG4bK-x", 1, None, "", ""))
        .unwrap()
        .replace("Content-Length: 0", "Content-Length: 50");
    ua.handle_message(now, caller(), Link::Udp, broken.as_bytes());
    let (sent, _) = drain(&mut ua);
    assert_eq!(codes(&sent), [400]);
}

#[test]
fn overload_gets_503_and_established_calls_are_untouched() {
    let now = Instant::now();
    let mut ua = ua();
    ua.config.max_calls = 1;
    let (_, tag) = answered(&mut ua, now);
    let second = String::from_utf8(invite())
        .unwrap()
        .replace("call-1@", "call-2@")
        .replace("z9hG4bK-inv1", "z9hG4bK-inv2");
    ua.handle_message(now, caller(), Link::Udp, second.as_bytes());
    let (sent, events) = drain(&mut ua);
    assert_eq!(codes(&sent), [503]);
    assert_eq!(sent[0].1.headers.get(&Name::RetryAfter), Some("5"));
    assert!(events.is_empty());
    ua.handle_message(
        now,
        caller(),
        Link::Udp,
        &request("ACK", "z9hG4bK-ack1", 1, Some(&tag), "", ""),
    );
    assert!(matches!(
        drain(&mut ua).1.as_slice(),
        [CallEvent::Established { .. }]
    ));

    let mut ua2 = self::ua();
    ua2.config.max_calls_per_second = 2;
    for i in 0..3 {
        let inv = String::from_utf8(invite())
            .unwrap()
            .replace("call-1@", &format!("c{i}@"))
            .replace("z9hG4bK-inv1", &format!("z9hG4bK-r{i}"));
        ua2.handle_message(now, caller(), Link::Udp, inv.as_bytes());
    }
    let (sent, events) = drain(&mut ua2);
    assert_eq!(codes(&sent), [100, 100, 503]);
    assert_eq!(events.len(), 2);
}

#[test]
fn a_draining_node_refuses_new_calls_and_keep_alives_and_keeps_its_calls() {
    let now = Instant::now();
    let mut ua = ua();
    let (call, tag) = answered(&mut ua, now);
    ua.drain();
    ua.handle_message(now, caller(), Link::Udp, &invite_numbered(2));
    let (sent, events) = drain(&mut ua);
    assert_eq!(codes(&sent), [503], "a new call goes to another node");
    assert!(events.is_empty());
    ua.handle_message(
        now,
        caller(),
        Link::Udp,
        &request("OPTIONS", "z9hG4bK-opt", 1, None, "", ""),
    );
    let (sent, _) = drain(&mut ua);
    assert_eq!(
        codes(&sent),
        [503],
        "a dispatcher's probe sees the node out"
    );
    assert_eq!(sent[0].1.headers.get(&Name::RetryAfter), Some("5"));
    assert_eq!(
        ua.stats().refused().find(|(r, _)| *r == Refusal::Draining),
        Some((Refusal::Draining, 2))
    );
    // The call in progress is acknowledged and hung up as ever.
    acknowledge(&mut ua, now, &tag);
    hang_up_as_caller(&mut ua, now, &tag);
    let (sent, events) = drain(&mut ua);
    assert_eq!(codes(&sent), [200]);
    assert!(matches!(
        events.as_slice(),
        [CallEvent::Established { .. }, CallEvent::Ended { call: c, .. }] if *c == call
    ));
}

#[test]
fn in_dialog_info_reinvite_and_options() {
    let now = Instant::now();
    let mut ua = ua();
    let (call, tag) = answered(&mut ua, now);
    ua.handle_message(
        now,
        caller(),
        Link::Udp,
        &request("ACK", "z9hG4bK-ack1", 1, Some(&tag), "", ""),
    );
    drain(&mut ua);
    for (i, (ctype, body, digit)) in [
        (
            "application/dtmf-relay",
            "Signal=5\r\nDuration=160\r\n",
            '5',
        ),
        ("application/dtmf", "#", '#'),
        ("application/dtmf-relay", "Signal= 11\r\n", '#'),
    ]
    .into_iter()
    .enumerate()
    {
        let info = request(
            "INFO",
            &format!("z9hG4bK-i{i}"),
            2 + i as u32,
            Some(&tag),
            &format!("Content-Type: {ctype}\r\n"),
            body,
        );
        ua.handle_message(now, caller(), Link::Udp, &info);
        let (sent, events) = drain(&mut ua);
        assert_eq!(codes(&sent), [200]);
        assert_eq!(events, [CallEvent::InfoDigit { call, digit }]);
    }
    let reinvite = request(
        "INVITE",
        "z9hG4bK-re1",
        9,
        Some(&tag),
        "Content-Type: application/sdp\r\n",
        SDP,
    );
    ua.handle_message(now, caller(), Link::Udp, &reinvite);
    let (sent, events) = drain(&mut ua);
    assert_eq!(codes(&sent), [200]);
    assert_eq!(&sent[0].1.body[..], b"v=0\r\n", "our current SDP");
    assert!(matches!(events.as_slice(), [CallEvent::Reoffer { .. }]));
    ua.handle_message(
        now,
        caller(),
        Link::Udp,
        &request("OPTIONS", "z9hG4bK-o2", 10, Some(&tag), "", ""),
    );
    assert_eq!(codes(&drain(&mut ua).0), [200]);
    // An old CSeq is refused.
    ua.handle_message(
        now,
        caller(),
        Link::Udp,
        &request("INFO", "z9hG4bK-old", 3, Some(&tag), "", ""),
    );
    assert_eq!(codes(&drain(&mut ua).0), [500]);
}

#[test]
fn responses_follow_via_without_rport() {
    let now = Instant::now();
    let mut ua = ua();
    let raw = String::from_utf8(request("OPTIONS", "z9hG4bK-n1", 1, None, "", ""))
        .unwrap()
        .replace(";rport", "");
    // Sent from port 6000, the Via says 5070: without rport the Via's port wins.
    ua.handle_message(
        now,
        "127.0.0.1:6000".parse().unwrap(),
        Link::Udp,
        raw.as_bytes(),
    );
    let (sent, _) = drain(&mut ua);
    assert_eq!(sent[0].0, caller());
}

#[test]
fn a_request_with_an_unusable_via_gets_400_back_at_its_source() {
    let now = Instant::now();
    let mut ua = ua();
    let raw = String::from_utf8(request("OPTIONS", "z9hG4bK-v", 1, None, "", ""))
        .unwrap()
        .replace(";branch=z9hG4bK-v;rport", ";;,;,,");
    ua.handle_message(now, caller(), Link::Udp, raw.as_bytes());
    let (sent, _) = drain(&mut ua);
    assert_eq!(codes(&sent), [400]);
    assert_eq!(sent[0].0, caller());
    let bare = String::from_utf8(request("OPTIONS", "z9hG4bK", 1, None, "", "")).unwrap();
    ua.handle_message(now, caller(), Link::Udp, bare.as_bytes());
    assert_eq!(
        codes(&drain(&mut ua).0),
        [400],
        "a bare magic-cookie branch"
    );
}

// Calls we place.

fn trunk() -> SocketAddr {
    "127.0.0.1:5080".parse().unwrap()
}

fn dial_to(uri: &str, credentials: Option<Credentials>) -> Dial {
    Dial {
        uri: uri.into(),
        from_user: "+12125550100".into(),
        destination: trunk(),
        fallbacks: Vec::new(),
        link: Link::Udp,
        offer: Bytes::from_static(b"v=0\r\noffer"),
        credentials,
        ring_timeout: Duration::from_secs(30),
        headers: Vec::new(),
    }
}

/// The callee's response to `request`, with our To tag and a Contact.
fn reply(request: &Message, code: u16, extra: &[(Name, &str)]) -> Vec<u8> {
    let mut r = crate::validate::response_to(&request.headers, code, "Reason", Some("callee1"));
    if (200..300).contains(&code) {
        r.headers.push(Name::Contact, "<sip:agent@127.0.0.1:5080>");
        r.headers.push(Name::ContentType, "application/sdp");
        r.body = Bytes::from_static(b"v=0\r\nanswer");
    }
    for (name, value) in extra {
        r.headers.push(name.clone(), *value);
    }
    r.to_bytes()
}

fn only_request(sent: &[(SocketAddr, Message)], method: Method) -> Message {
    let found: Vec<&Message> = sent
        .iter()
        .filter(|(_, m)| m.method() == Some(&method))
        .map(|(_, m)| m)
        .collect();
    assert_eq!(found.len(), 1, "{method}: {sent:?}");
    found[0].clone()
}

#[test]
fn a_placed_call_rings_is_answered_acknowledged_and_hung_up() {
    let now = Instant::now();
    let mut ua = ua();
    let call = ua.dial(now, dial_to("sip:1001@127.0.0.1:5080", None));
    let (sent, _) = drain(&mut ua);
    assert_eq!(sent[0].0, trunk());
    let invite = only_request(&sent, Method::Invite);
    assert_eq!(invite.uri(), Some("sip:1001@127.0.0.1:5080"));
    assert!(invite
        .headers
        .get(&Name::From)
        .unwrap()
        .starts_with("<sip:+12125550100@127.0.0.1>;tag="));
    assert_eq!(&invite.body[..], b"v=0\r\noffer");

    ua.handle_message(now, trunk(), Link::Udp, &reply(&invite, 180, &[]));
    let (_, events) = drain(&mut ua);
    assert_eq!(
        events,
        [CallEvent::Progress {
            call,
            code: 180,
            early_media: None
        }]
    );

    let ok = reply(&invite, 200, &[]);
    ua.handle_message(now, trunk(), Link::Udp, &ok);
    let (sent, events) = drain(&mut ua);
    assert_eq!(
        events,
        [CallEvent::Answered {
            call,
            answer: Some(Bytes::from_static(b"v=0\r\nanswer"))
        }]
    );
    let ack = only_request(&sent, Method::Ack);
    assert_eq!(
        ack.uri(),
        Some("sip:agent@127.0.0.1:5080"),
        "the ACK goes to the remote target"
    );
    assert!(ack
        .headers
        .get(&Name::To)
        .unwrap()
        .ends_with(";tag=callee1"));
    assert_eq!(ack.headers.get(&Name::CSeq), Some("1 ACK"));

    // A retransmitted 2xx gets the same ACK, and no second answer.
    ua.handle_message(now + Duration::from_millis(500), trunk(), Link::Udp, &ok);
    let (sent, events) = drain(&mut ua);
    assert!(events.is_empty());
    assert_eq!(only_request(&sent, Method::Ack), ack);

    ua.hang_up(now, call);
    let (sent, _) = drain(&mut ua);
    let bye = only_request(&sent, Method::Bye);
    assert_eq!(bye.uri(), Some("sip:agent@127.0.0.1:5080"));
    assert_eq!(bye.headers.get(&Name::CSeq), Some("2 BYE"));
    ua.handle_message(
        now,
        trunk(),
        Link::Udp,
        &crate::validate::response_to(&bye.headers, 200, "OK", None).to_bytes(),
    );
    assert_eq!(
        drain(&mut ua).1,
        [CallEvent::Ended {
            call,
            reason: EndReason::LocalHangup
        }]
    );
}

#[test]
fn a_busy_callee_fails_the_call_and_gets_its_ack() {
    let now = Instant::now();
    let mut ua = ua();
    let call = ua.dial(now, dial_to("sip:1001@127.0.0.1:5080", None));
    let invite = only_request(&drain(&mut ua).0, Method::Invite);
    ua.handle_message(now, trunk(), Link::Udp, &reply(&invite, 486, &[]));
    let (sent, events) = drain(&mut ua);
    assert_eq!(
        events,
        [CallEvent::Ended {
            call,
            reason: EndReason::Failed(486)
        }]
    );
    assert_eq!(
        only_request(&sent, Method::Ack).headers.get(&Name::CSeq),
        Some("1 ACK")
    );
}

#[test]
fn a_challenging_trunk_gets_credentials_once() {
    let now = Instant::now();
    let mut ua = ua();
    let credentials = Credentials {
        username: "callbackd".into(),
        password: "s3cret".into(),
        realm: Some("trunk".into()),
    };
    let call = ua.dial(
        now,
        dial_to("sip:+12125550199@127.0.0.1:5080", Some(credentials)),
    );
    let first = only_request(&drain(&mut ua).0, Method::Invite);
    let challenge = "Digest realm=\"trunk\", nonce=\"abc123\", algorithm=MD5, qop=\"auth\"";
    ua.handle_message(
        now,
        trunk(),
        Link::Udp,
        &reply(&first, 407, &[(Name::ProxyAuthenticate, challenge)]),
    );
    let (sent, events) = drain(&mut ua);
    assert!(events.is_empty());
    let second = only_request(&sent, Method::Invite);
    assert_eq!(second.headers.get(&Name::CSeq), Some("2 INVITE"));
    let credentials = second.headers.get(&Name::ProxyAuthorization).unwrap();
    assert!(
        credentials.contains("username=\"callbackd\"") && credentials.contains("realm=\"trunk\""),
        "{credentials}"
    );
    assert_eq!(
        second.headers.get(&Name::CallId),
        first.headers.get(&Name::CallId)
    );
    // A second challenge means the password is wrong: give up.
    ua.handle_message(
        now,
        trunk(),
        Link::Udp,
        &reply(&second, 407, &[(Name::ProxyAuthenticate, challenge)]),
    );
    assert_eq!(
        drain(&mut ua).1,
        [CallEvent::Ended {
            call,
            reason: EndReason::Failed(407)
        }]
    );
}

#[test]
fn a_redirect_is_followed_once() {
    let now = Instant::now();
    let mut ua = ua();
    let call = ua.dial(now, dial_to("sip:1001@127.0.0.1:5080", None));
    let first = only_request(&drain(&mut ua).0, Method::Invite);
    ua.handle_message(
        now,
        trunk(),
        Link::Udp,
        &reply(&first, 302, &[(Name::Contact, "<sip:1002@127.0.0.1:5080>")]),
    );
    let second = only_request(&drain(&mut ua).0, Method::Invite);
    assert_eq!(second.uri(), Some("sip:1002@127.0.0.1:5080"));
    ua.handle_message(
        now,
        trunk(),
        Link::Udp,
        &reply(
            &second,
            302,
            &[(Name::Contact, "<sip:1003@127.0.0.1:5080>")],
        ),
    );
    assert_eq!(
        drain(&mut ua).1,
        [CallEvent::Ended {
            call,
            reason: EndReason::Failed(302)
        }]
    );
}

#[test]
fn no_answer_in_time_is_cancelled() {
    let now = Instant::now();
    let mut ua = ua();
    let call = ua.dial(now, dial_to("sip:1001@127.0.0.1:5080", None));
    let invite = only_request(&drain(&mut ua).0, Method::Invite);
    ua.handle_message(now, trunk(), Link::Udp, &reply(&invite, 180, &[]));
    drain(&mut ua);
    ua.handle_timeout(now + Duration::from_secs(30));
    let (sent, _) = drain(&mut ua);
    let cancel = only_request(&sent, Method::Cancel);
    assert_eq!(
        cancel.headers.get(&Name::Via),
        invite.headers.get(&Name::Via),
        "same branch as the INVITE"
    );
    assert_eq!(cancel.headers.get(&Name::CSeq), Some("1 CANCEL"));
    ua.handle_message(
        now,
        trunk(),
        Link::Udp,
        &crate::validate::response_to(&cancel.headers, 200, "OK", Some("callee1")).to_bytes(),
    );
    ua.handle_message(now, trunk(), Link::Udp, &reply(&invite, 487, &[]));
    let (sent, events) = drain(&mut ua);
    assert_eq!(
        events,
        [CallEvent::Ended {
            call,
            reason: EndReason::NoAnswer
        }]
    );
    only_request(&sent, Method::Ack);
}

#[test]
fn a_silent_destination_times_out_after_seven_invites() {
    let start = Instant::now();
    let mut ua = ua();
    let mut dial = dial_to("sip:1001@127.0.0.1:5080", None);
    dial.ring_timeout = Duration::from_secs(120);
    let call = ua.dial(start, dial);
    let mut invites = drain(&mut ua).0.len();
    let mut ended = Vec::new();
    while let Some(at) = ua
        .poll_timeout()
        .filter(|at| *at <= start + Duration::from_secs(40))
    {
        ua.handle_timeout(at);
        let (sent, events) = drain(&mut ua);
        invites += sent.len();
        ended.extend(events);
    }
    assert_eq!(invites, 7);
    assert_eq!(
        ua.stats().retransmitted,
        6,
        "Timer A: six INVITEs after the first"
    );
    assert_eq!(
        ended,
        [CallEvent::Ended {
            call,
            reason: EndReason::Failed(408)
        }]
    );
}

#[test]
fn the_callee_hangs_up() {
    let now = Instant::now();
    let mut ua = ua();
    let call = ua.dial(now, dial_to("sip:1001@127.0.0.1:5080", None));
    let invite = only_request(&drain(&mut ua).0, Method::Invite);
    ua.handle_message(now, trunk(), Link::Udp, &reply(&invite, 200, &[]));
    drain(&mut ua);
    let from = invite.headers.get(&Name::From).unwrap();
    let our_tag = from.split(";tag=").nth(1).unwrap();
    let bye = format!(
        "BYE sip:+12125550100@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-cb1\r\n\
         From: <sip:1001@127.0.0.1:5080>;tag=callee1\r\nTo: {from}\r\nCall-ID: {}\r\nCSeq: 1 BYE\r\n\r\n",
        invite.headers.get(&Name::CallId).unwrap()
    );
    assert!(bye.contains(our_tag));
    ua.handle_message(now, trunk(), Link::Udp, bye.as_bytes());
    let (sent, events) = drain(&mut ua);
    assert_eq!(codes(&sent), [200]);
    assert_eq!(
        events,
        [CallEvent::Ended {
            call,
            reason: EndReason::RemoteHangup
        }]
    );
}

// The registrar and the trusted networks.

fn ua_with_registrar() -> UserAgent {
    let mut users = std::collections::HashMap::new();
    users.insert("1001".to_owned(), "phone-secret".to_owned());
    let config = Config {
        timers: Timers::default(),
        advertised: crate::advertise::Advertise::new(
            crate::advertise::Told {
                host: "127.0.0.1".into(),
                port: None,
            },
            5060,
            5060,
        ),
        product: "callbackd-test".into(),
        max_calls: 10,
        max_calls_per_second: 100,
        trusted: vec![("10.0.0.0".parse().unwrap(), 8)],
        per_source: Default::default(),
        registrar: Some(crate::registrar::Settings {
            realm: "callbackd".into(),
            users,
            secret: b"test secret".to_vec(),
            min_expires: 60,
            max_expires: 3600,
        }),
        registrations: Vec::new(),
    };
    UserAgent::new(config, Box::new(StdRng::seed_from_u64(2)))
}

fn register(cseq: u32, expires: u32, authorization: Option<String>) -> Vec<u8> {
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    format!(
        "REGISTER sip:127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bK-reg{cseq};rport\r\n\
         From: <sip:1001@127.0.0.1>;tag=ph1\r\nTo: <sip:1001@127.0.0.1>\r\nCall-ID: reg-1\r\nCSeq: {cseq} REGISTER\r\n\
         Contact: <sip:1001@{CALLER}>\r\nExpires: {expires}\r\n{auth}Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn answer_challenge(response: &Message, password: &str) -> String {
    answer_challenge_counted(response, password, 1)
}

/// The credentials for the `nc`th request made with the challenge's nonce.
fn answer_challenge_counted(response: &Message, password: &str, nc: u32) -> String {
    let challenge =
        crate::auth::Challenge::parse(response.headers.get(&Name::WwwAuthenticate).unwrap())
            .unwrap();
    crate::auth::respond(
        &challenge,
        "1001",
        password,
        "REGISTER",
        "sip:127.0.0.1:5060",
        "c0ffee",
        nc,
    )
    .to_header_value()
}

#[test]
fn a_phone_registers_with_digest_and_its_binding_expires() {
    let now = Instant::now();
    let mut ua = ua_with_registrar();
    ua.handle_message(now, caller(), Link::Udp, &register(1, 120, None));
    let (sent, _) = drain(&mut ua);
    assert_eq!(codes(&sent), [401]);
    let credentials = answer_challenge(&sent[0].1, "phone-secret");
    ua.handle_message(
        now,
        caller(),
        Link::Udp,
        &register(2, 120, Some(credentials)),
    );
    let (sent, events) = drain(&mut ua);
    assert_eq!(codes(&sent), [200]);
    assert_eq!(
        sent[0].1.headers.get(&Name::Contact),
        Some("<sip:1001@127.0.0.1:5070>;expires=120")
    );
    let [CallEvent::BindingsChanged { user, bindings }, registered] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!(
        (user.as_str(), bindings.len()),
        ("1001", 1),
        "kept in the store by the runtime"
    );
    assert_eq!(
        *registered,
        CallEvent::PhoneRegistered {
            user: "1001".into(),
            contact: "sip:1001@127.0.0.1:5070".into(),
            source: caller()
        }
    );
    // The registered phone may call in although its address is not a trusted network.
    ua.handle_message(now, caller(), Link::Udp, &invite());
    assert!(matches!(
        drain(&mut ua).1.as_slice(),
        [CallEvent::Incoming { .. }]
    ));
    // Calls to the agent go where the phone registered from.
    let binding = ua.binding("1001", now).expect("registered");
    assert_eq!(
        (binding.contact.as_str(), binding.source),
        ("sip:1001@127.0.0.1:5070", caller())
    );
    assert!(ua.binding("1002", now).is_none());
    assert!(ua.binding("1001", now + Duration::from_secs(121)).is_none());
    // Two minutes later the binding is gone.
    ua.handle_timeout(now + Duration::from_secs(121));
    let (_, events) = drain(&mut ua);
    assert!(
        events.contains(&CallEvent::PhoneUnregistered {
            user: "1001".into()
        }),
        "{events:?}"
    );
}

#[test]
fn phones_replaced_by_a_reload_register_with_their_new_passwords_and_removed_ones_are_gone() {
    let now = Instant::now();
    let mut ua = ua_with_registrar();
    ua.handle_message(now, caller(), Link::Udp, &register(1, 120, None));
    let challenge = drain(&mut ua).0.remove(0).1;
    let credentials = answer_challenge(&challenge, "phone-secret");
    ua.handle_message(
        now,
        caller(),
        Link::Udp,
        &register(2, 120, Some(credentials)),
    );
    assert_eq!(codes(&drain(&mut ua).0), [200]);

    let users = std::collections::HashMap::from([("1001".to_owned(), "new-secret".to_owned())]);
    assert!(ua.set_phones(users));
    assert!(
        drain(&mut ua).1.is_empty(),
        "a phone still configured keeps its binding"
    );
    assert!(ua.binding("1001", now).is_some());
    ua.handle_message(now, caller(), Link::Udp, &register(3, 120, None));
    let challenge = drain(&mut ua).0.remove(0).1;
    let old = answer_challenge(&challenge, "phone-secret");
    ua.handle_message(now, caller(), Link::Udp, &register(4, 120, Some(old)));
    assert_eq!(
        codes(&drain(&mut ua).0),
        [401],
        "the old password no longer"
    );
    ua.handle_message(now, caller(), Link::Udp, &register(5, 120, None));
    let challenge = drain(&mut ua).0.remove(0).1;
    let new = answer_challenge(&challenge, "new-secret");
    ua.handle_message(now, caller(), Link::Udp, &register(6, 120, Some(new)));
    assert_eq!(codes(&drain(&mut ua).0), [200], "the new one");

    assert!(ua.set_phones(std::collections::HashMap::new()));
    let (_, events) = drain(&mut ua);
    assert!(
        events.contains(&CallEvent::PhoneUnregistered {
            user: "1001".into()
        }),
        "{events:?}"
    );
    assert!(ua.binding("1001", now).is_none());
}

#[test]
fn wrong_passwords_short_intervals_and_strangers_are_refused() {
    let now = Instant::now();
    let mut ua = ua_with_registrar();
    ua.handle_message(now, caller(), Link::Udp, &register(1, 120, None));
    let challenge = drain(&mut ua).0.remove(0).1;
    ua.handle_message(
        now,
        caller(),
        Link::Udp,
        &register(2, 120, Some(answer_challenge(&challenge, "guess"))),
    );
    assert_eq!(
        codes(&drain(&mut ua).0),
        [401],
        "the same answer as an unknown user's"
    );
    ua.handle_message(
        now,
        caller(),
        Link::Udp,
        &register(3, 10, Some(answer_challenge(&challenge, "phone-secret"))),
    );
    let (sent, _) = drain(&mut ua);
    assert_eq!(codes(&sent), [423]);
    assert_eq!(
        sent[0].1.headers.get(&Name::Other("Min-Expires".into())),
        Some("60")
    );
    // Not registered and not from 10.0.0.0/8: a new call is forbidden.
    ua.handle_message(now, caller(), Link::Udp, &invite());
    let (sent, events) = drain(&mut ua);
    assert_eq!(codes(&sent), [403]);
    assert!(events.is_empty());
    let other = String::from_utf8(invite())
        .unwrap()
        .replace("z9hG4bK-inv1", "z9hG4bK-inv9")
        .replace("call-1@", "call-9@");
    ua.handle_message(
        now,
        "10.1.2.3:5070".parse().unwrap(),
        Link::Udp,
        other.as_bytes(),
    );
    assert!(
        matches!(drain(&mut ua).1.as_slice(), [CallEvent::Incoming { .. }]),
        "a trusted network gets in"
    );
}

fn registration(name: &str, registrar: Option<SocketAddr>, password: &str) -> TrunkRegistration {
    TrunkRegistration {
        trunk: name.into(),
        registrar,
        link: Link::Udp,
        domain: "trunk.example".into(),
        user: "callbackd".into(),
        credentials: Some(Credentials {
            username: "callbackd".into(),
            password: password.into(),
            realm: None,
        }),
        expires: 600,
    }
}

#[test]
fn each_trunk_is_registered_with_on_its_own_and_again_where_its_name_now_resolves() {
    let start = Instant::now();
    let mut ua = ua();
    let (first_at, later_at): (SocketAddr, SocketAddr) = (
        "127.0.0.2:5090".parse().unwrap(),
        "127.0.0.3:5090".parse().unwrap(),
    );
    ua.config.registrations = vec![
        registration("primary", Some(trunk()), "one"),
        registration("by-name", None, "two"),
    ];
    ua.handle_timeout(start);
    let sent = drain(&mut ua).0;
    assert_eq!(sent.len(), 1, "the trunk not yet resolved waits: {sent:?}");
    assert_eq!(sent[0].0, trunk());
    let primary = sent[0].1.clone();

    ua.set_registrar(start, "by-name", first_at);
    let (sent, _) = drain(&mut ua);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].0, first_at,
        "registered as soon as its name resolves"
    );
    let by_name = sent[0].1.clone();
    assert_ne!(
        by_name.headers.get(&Name::CallId),
        primary.headers.get(&Name::CallId),
        "a registration of its own"
    );
    // The answer to one is not taken for the other, nor from the other's address.
    ua.handle_message(start, first_at, Link::Udp, &reply(&primary, 200, &[]));
    let events = drain(&mut ua).1;
    assert!(
        events.is_empty(),
        "a 200 from the wrong registrar: {events:?}"
    );
    let mut ok = crate::validate::response_to(&by_name.headers, 200, "OK", None);
    ok.headers.push(Name::Expires, "300");
    ua.handle_message(start, first_at, Link::Udp, &ok.to_bytes());
    assert_eq!(
        drain(&mut ua).1,
        [CallEvent::TrunkRegistered {
            trunk: "by-name".into(),
            expires: 300
        }]
    );
    // Each challenge is answered with its own trunk's password.
    let challenge = "Digest realm=\"trunk.example\", nonce=\"n1\"";
    ua.handle_message(
        start,
        trunk(),
        Link::Udp,
        &reply(&primary, 401, &[(Name::WwwAuthenticate, challenge)]),
    );
    let answered = only_request(&drain(&mut ua).0, Method::Register);
    let expected = crate::auth::respond(
        &crate::auth::Challenge::parse(challenge).unwrap(),
        "callbackd",
        "one",
        "REGISTER",
        "sip:trunk.example",
        "",
        1,
    );
    let sent = answered.headers.get(&Name::Authorization).unwrap();
    let response = |h: &str| h.split("response=\"").nth(1).map(|r| r[..32].to_owned());
    assert_eq!(response(sent), response(&expected.to_header_value()));

    // The name now resolves elsewhere: registered there at once, not at the refresh.
    let later = start + Duration::from_secs(10);
    ua.set_registrar(later, "by-name", later_at);
    let (sent, _) = drain(&mut ua);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, later_at);
    assert_eq!(sent[0].1.method(), Some(&Method::Register));
    // The same address again changes nothing.
    ua.set_registrar(later, "by-name", later_at);
    assert!(drain(&mut ua).0.is_empty());
}

#[test]
fn callbackd_registers_with_its_trunk_and_refreshes_in_time() {
    let start = Instant::now();
    let mut ua = ua();
    ua.config.registrations = vec![registration("carrier", Some(trunk()), "s3cret")];
    ua.handle_timeout(start);
    let first = only_request(&drain(&mut ua).0, Method::Register);
    assert_eq!(first.uri(), Some("sip:trunk.example"));
    assert_eq!(
        first.headers.get(&Name::To),
        Some("<sip:callbackd@trunk.example>")
    );
    assert_eq!(first.headers.get(&Name::Expires), Some("600"));
    let challenge = "Digest realm=\"trunk.example\", nonce=\"n1\", qop=\"auth\"";
    ua.handle_message(
        start,
        trunk(),
        Link::Udp,
        &reply(&first, 401, &[(Name::WwwAuthenticate, challenge)]),
    );
    let second = only_request(&drain(&mut ua).0, Method::Register);
    assert!(second
        .headers
        .get(&Name::Authorization)
        .unwrap()
        .contains("username=\"callbackd\""));
    assert_eq!(second.headers.get(&Name::CSeq), Some("2 REGISTER"));
    assert_eq!(
        second.headers.get(&Name::CallId),
        first.headers.get(&Name::CallId),
        "one Call-ID for the registration"
    );
    let mut ok = crate::validate::response_to(&second.headers, 200, "OK", None);
    ok.headers
        .push(Name::Contact, "<sip:callbackd@127.0.0.1:5060>;expires=60");
    ua.handle_message(start, trunk(), Link::Udp, &ok.to_bytes());
    assert_eq!(
        drain(&mut ua).1,
        [CallEvent::TrunkRegistered {
            trunk: "carrier".into(),
            expires: 60
        }],
        "the registrar's lifetime wins"
    );
    // Refreshed a tenth of the lifetime before it runs out.
    ua.handle_timeout(start + Duration::from_secs(53));
    assert!(drain(&mut ua)
        .0
        .iter()
        .all(|(_, m)| m.method() != Some(&Method::Register)));
    ua.handle_timeout(start + Duration::from_secs(54));
    let refresh = only_request(&drain(&mut ua).0, Method::Register);
    assert_eq!(refresh.headers.get(&Name::CSeq), Some("3 REGISTER"));
    // A refusal is reported and retried 30 s later.
    ua.handle_message(
        start + Duration::from_secs(54),
        trunk(),
        Link::Udp,
        &reply(&refresh, 403, &[]),
    );
    assert_eq!(
        drain(&mut ua).1,
        [CallEvent::TrunkRegistrationFailed {
            trunk: "carrier".into(),
            status: 403
        }]
    );
    ua.handle_timeout(start + Duration::from_secs(84));
    only_request(&drain(&mut ua).0, Method::Register);
}

// Regressions found in review.

#[test]
fn bye_on_an_early_dialog_ends_the_invite_with_487() {
    // The INVITE transaction of a call ended by BYE while ringing was left waiting forever.
    let now = Instant::now();
    let mut ua = ua();
    ua.handle_message(now, caller(), Link::Udp, &invite());
    let CallEvent::Incoming { call, .. } = drain(&mut ua).1[0].clone() else {
        panic!()
    };
    ua.ring(now, call, None);
    let (sent, _) = drain(&mut ua);
    let tag = sent[0]
        .1
        .headers
        .get(&Name::To)
        .unwrap()
        .split(";tag=")
        .nth(1)
        .unwrap()
        .to_owned();
    ua.handle_message(
        now,
        caller(),
        Link::Udp,
        &request("BYE", "z9hG4bK-eb", 2, Some(&tag), "", ""),
    );
    let (sent, events) = drain(&mut ua);
    let mut got = codes(&sent);
    got.sort();
    assert_eq!(got, [200, 487]);
    assert_eq!(
        events,
        [CallEvent::Ended {
            call,
            reason: EndReason::RemoteHangup
        }]
    );
}

#[test]
fn a_cancel_that_never_brings_487_still_ends_the_call() {
    let now = Instant::now();
    let mut ua = ua();
    let call = ua.dial(now, dial_to("sip:1001@127.0.0.1:5080", None));
    let invite = only_request(&drain(&mut ua).0, Method::Invite);
    ua.handle_message(now, trunk(), Link::Udp, &reply(&invite, 180, &[]));
    ua.hang_up(now, call);
    let cancel = only_request(&drain(&mut ua).0, Method::Cancel);
    ua.handle_message(
        now,
        trunk(),
        Link::Udp,
        &crate::validate::response_to(&cancel.headers, 200, "OK", None).to_bytes(),
    );
    ua.handle_timeout(now + Duration::from_secs(31));
    assert!(drain(&mut ua).1.is_empty());
    ua.handle_timeout(now + Duration::from_secs(32));
    assert_eq!(
        drain(&mut ua).1,
        [CallEvent::Ended {
            call,
            reason: EndReason::LocalHangup
        }]
    );
}

#[test]
fn a_repeated_final_response_is_acknowledged_after_the_call_ended() {
    let now = Instant::now();
    let mut ua = ua();
    ua.dial(now, dial_to("sip:1001@127.0.0.1:5080", None));
    let invite = only_request(&drain(&mut ua).0, Method::Invite);
    let busy = reply(&invite, 486, &[]);
    ua.handle_message(now, trunk(), Link::Udp, &busy);
    only_request(&drain(&mut ua).0, Method::Ack);
    ua.handle_message(now + Duration::from_secs(1), trunk(), Link::Udp, &busy);
    let (sent, _) = drain(&mut ua);
    assert_eq!(
        only_request(&sent, Method::Ack).headers.get(&Name::CSeq),
        Some("1 ACK")
    );
    assert_eq!(sent[0].0, trunk());
}

#[test]
fn answered_calls_cancelled_too_late_get_200_and_the_reinvite_2xx_is_resent_until_its_ack() {
    let now = Instant::now();
    let mut ua = ua();
    let (_, tag) = answered(&mut ua, now);
    ua.handle_message(
        now,
        caller(),
        Link::Udp,
        &request("ACK", "z9hG4bK-ack1", 1, Some(&tag), "", ""),
    );
    drain(&mut ua);
    ua.handle_message(
        now,
        caller(),
        Link::Udp,
        &request("CANCEL", "z9hG4bK-inv1", 1, None, "", ""),
    );
    assert_eq!(
        codes(&drain(&mut ua).0),
        [200],
        "too late to cancel, but not an error"
    );
    let reinvite = request(
        "INVITE",
        "z9hG4bK-re2",
        5,
        Some(&tag),
        "Content-Type: application/sdp\r\n",
        SDP,
    );
    ua.handle_message(now, caller(), Link::Udp, &reinvite);
    assert_eq!(codes(&drain(&mut ua).0), [200]);
    ua.handle_timeout(now + Duration::from_millis(500));
    assert_eq!(codes(&drain(&mut ua).0), [200], "resent at T1 while no ACK");
    ua.handle_message(
        now,
        caller(),
        Link::Udp,
        &request("ACK", "z9hG4bK-ack5", 5, Some(&tag), "", ""),
    );
    ua.handle_timeout(now + Duration::from_secs(2));
    assert!(drain(&mut ua).0.is_empty(), "the ACK stops it");
}

#[test]
fn hanging_up_before_the_ack_waits_for_it() {
    let now = Instant::now();
    let mut ua = ua();
    let (call, tag) = answered(&mut ua, now);
    ua.hang_up(now, call);
    assert!(
        drain(&mut ua)
            .0
            .iter()
            .all(|(_, m)| m.method() != Some(&Method::Bye)),
        "no BYE before the ACK"
    );
    ua.handle_message(
        now,
        caller(),
        Link::Udp,
        &request("ACK", "z9hG4bK-ack1", 1, Some(&tag), "", ""),
    );
    let (sent, events) = drain(&mut ua);
    assert!(matches!(events.as_slice(), [CallEvent::Established { .. }]));
    only_request(&sent, Method::Bye);
}

#[test]
fn dialog_making_responses_carry_record_route() {
    let now = Instant::now();
    let mut ua = ua();
    let raw = request("INVITE", "z9hG4bK-rr", 1, None, "Record-Route: <sip:proxy1.example;lr>\r\nRecord-Route: <sip:proxy2.example;lr>\r\nContent-Type: application/sdp\r\n", SDP);
    ua.handle_message(now, caller(), Link::Udp, &raw);
    let CallEvent::Incoming { call, .. } = drain(&mut ua).1[0].clone() else {
        panic!()
    };
    ua.answer(now, call, Bytes::from_static(b"v=0\r\n"));
    let (sent, _) = drain(&mut ua);
    let routes: Vec<&str> = sent[0].1.headers.all(&Name::RecordRoute).collect();
    assert_eq!(
        routes,
        ["<sip:proxy1.example;lr>", "<sip:proxy2.example;lr>"]
    );
}

#[test]
fn a_refused_register_changes_no_binding() {
    let now = Instant::now();
    let mut ua = ua_with_registrar();
    ua.handle_message(now, caller(), Link::Udp, &register(1, 120, None));
    let challenge = drain(&mut ua).0.remove(0).1;
    let two = String::from_utf8(register(
        2,
        3600,
        Some(answer_challenge(&challenge, "phone-secret")),
    ))
    .unwrap()
    .replace(
        "Contact: <sip:1001@127.0.0.1:5070>",
        "Contact: <sip:1001@127.0.0.1:5070>, <sip:1001@127.0.0.1:5072>;expires=10",
    );
    ua.handle_message(now, caller(), Link::Udp, two.as_bytes());
    let (sent, events) = drain(&mut ua);
    assert_eq!(codes(&sent), [423]);
    assert!(events.is_empty(), "nothing was bound");
    ua.handle_message(
        now,
        caller(),
        Link::Udp,
        &register(
            3,
            120,
            Some(answer_challenge_counted(&challenge, "phone-secret", 2)),
        ),
    );
    let (sent, events) = drain(&mut ua);
    assert_eq!(codes(&sent), [200]);
    assert!(
        matches!(
            events.as_slice(),
            [
                CallEvent::BindingsChanged { .. },
                CallEvent::PhoneRegistered { .. }
            ]
        ),
        "the first real binding logs the phone in"
    );
}

#[test]
fn bindings_restored_after_a_restart_let_the_phone_call_in() {
    let now = Instant::now();
    let mut ua = ua_with_registrar();
    ua.restore_binding(
        "1001".into(),
        crate::registrar::Binding {
            contact: "sip:1001@127.0.0.1:5070".into(),
            source: caller(),
            link: Link::Udp,
            expires_at: now + Duration::from_secs(60),
        },
    );
    ua.handle_message(now, caller(), Link::Udp, &invite());
    assert!(matches!(
        drain(&mut ua).1.as_slice(),
        [CallEvent::Incoming { .. }]
    ));
    ua.handle_timeout(now + Duration::from_secs(61));
    let events = drain(&mut ua).1;
    assert!(
        events.contains(&CallEvent::PhoneUnregistered {
            user: "1001".into()
        }),
        "{events:?}"
    );
}

#[test]
fn early_media_rings_with_183_and_our_sdp() {
    let now = Instant::now();
    let mut ua = ua();
    ua.handle_message(now, caller(), Link::Udp, &invite());
    let CallEvent::Incoming { call, .. } = drain(&mut ua).1[0].clone() else {
        panic!()
    };
    ua.ring(now, call, Some(Bytes::from_static(b"v=0\r\nearly")));
    let (sent, _) = drain(&mut ua);
    assert_eq!(codes(&sent), [183]);
    assert_eq!(&sent[0].1.body[..], b"v=0\r\nearly");
    assert_eq!(
        sent[0].1.headers.get(&Name::ContentType),
        Some("application/sdp")
    );
}

#[test]
fn only_a_trusted_peer_asserts_who_is_calling() {
    let now = Instant::now();
    let mut ua = ua_with_registrar();
    let invite_from = |ua: &mut UserAgent, source: &str, branch: &str, extra: &str| {
        let text = String::from_utf8(request(
            "INVITE",
            branch,
            1,
            None,
            &format!("{extra}Content-Type: application/sdp\r\n"),
            SDP,
        ))
        .unwrap()
        .replace("call-1@", &format!("{branch}@"));
        ua.handle_message(now, source.parse().unwrap(), Link::Udp, text.as_bytes());
        match drain(ua).1.as_slice() {
            [CallEvent::Incoming {
                caller, asserted, ..
            }] => (caller.clone(), asserted.clone()),
            other => panic!("{other:?}"),
        }
    };
    let pai = "P-Asserted-Identity: \"Ada\" <tel:+12125550100;cpc=ordinary>\r\n";
    assert_eq!(
        invite_from(&mut ua, "10.1.2.3:5060", "z9hG4bK-a1", pai),
        (Some("alice".into()), Some("+12125550100".into())),
        "a trunk's P-Asserted-Identity"
    );
    let sip_pai = "P-Asserted-Identity: <sip:+12125550101@carrier.example;user=phone>\r\n";
    assert_eq!(
        invite_from(&mut ua, "10.1.2.3:5060", "z9hG4bK-a2", sip_pai).1,
        Some("+12125550101".into())
    );
    assert_eq!(
        invite_from(&mut ua, "10.1.2.3:5060", "z9hG4bK-a3", "").1,
        Some("alice".into()),
        "a trusted peer's From, without one"
    );
    // A phone registered from elsewhere may call, but asserts nothing.
    ua.handle_message(now, caller(), Link::Udp, &register(1, 120, None));
    let challenge = drain(&mut ua).0.remove(0).1;
    let credentials = answer_challenge(&challenge, "phone-secret");
    ua.handle_message(
        now,
        caller(),
        Link::Udp,
        &register(2, 120, Some(credentials)),
    );
    drain(&mut ua);
    assert_eq!(
        invite_from(&mut ua, CALLER, "z9hG4bK-a4", pai),
        (Some("alice".into()), None)
    );
}

// Sources that attack (issue 17): floods, password guessing, replays.

/// A REGISTER from `source` for user 1001 with `credentials`, on a branch of its own.
fn register_from(cseq: u32, credentials: &str, contact: &str) -> Vec<u8> {
    String::from_utf8(register(cseq, 120, Some(credentials.to_owned())))
        .unwrap()
        .replace(
            "Contact: <sip:1001@127.0.0.1:5070>",
            &format!("Contact: <{contact}>"),
        )
        .into_bytes()
}

fn challenge_for(ua: &mut UserAgent, now: Instant, source: SocketAddr) -> Message {
    ua.handle_message(now, source, Link::Udp, &register(1, 120, None));
    drain(ua).0.remove(0).1
}

// Regression: 71,174 wrong passwords in 5 s from one socket, all answered, none limited
// (finding 4).
#[test]
fn a_password_guesser_is_banned_after_ten_failures_and_others_still_register() {
    let now = Instant::now();
    let mut ua = ua_with_registrar();
    let guesser: SocketAddr = "192.0.2.66:5060".parse().unwrap();
    let challenge = challenge_for(&mut ua, now, guesser);
    let mut answered = 0;
    let mut banned = 0;
    for i in 0..100u32 {
        let credentials = answer_challenge_counted(&challenge, &format!("guess{i}"), i + 1);
        let at = now + Duration::from_millis(u64::from(i) * 10);
        ua.handle_message(
            at,
            guesser,
            Link::Udp,
            &register_from(i + 2, &credentials, "sip:x@192.0.2.66"),
        );
        let (sent, events) = drain(&mut ua);
        answered += sent.len();
        banned += events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    CallEvent::SourceBanned {
                        reason: crate::admission::BanReason::AuthFailures,
                        ..
                    }
                )
            })
            .count();
    }
    assert_eq!(
        answered, 11,
        "ten failures answered, the eleventh banned the source"
    );
    assert_eq!(banned, 1);
    // The real phone, elsewhere, is not affected.
    let challenge = challenge_for(&mut ua, now, caller());
    let credentials = answer_challenge(&challenge, "phone-secret");
    ua.handle_message(
        now,
        caller(),
        Link::Udp,
        &register(200, 120, Some(credentials)),
    );
    assert_eq!(codes(&drain(&mut ua).0), [200]);
}

#[test]
fn unknown_users_and_wrong_passwords_get_the_same_answer() {
    let now = Instant::now();
    let mut ua = ua_with_registrar();
    let challenge = challenge_for(&mut ua, now, caller());
    let answer =
        |ua: &mut UserAgent, cseq: u32, user: &str, password: &str, nonce: Option<&str>| {
            let mut credentials = answer_challenge_counted(&challenge, password, cseq);
            credentials = credentials.replace("username=\"1001\"", &format!("username=\"{user}\""));
            if let Some(nonce) = nonce {
                let old = crate::auth::Credentials::parse(&credentials).unwrap().nonce;
                credentials = credentials.replace(&old, nonce);
            }
            let text = String::from_utf8(register(cseq, 120, Some(credentials)))
                .unwrap()
                .replace("sip:1001@127.0.0.1>", &format!("sip:{user}@127.0.0.1>"));
            ua.handle_message(now, caller(), Link::Udp, text.as_bytes());
            let (sent, _) = drain(ua);
            let response = &sent[0].1;
            let challenge = crate::auth::Challenge::parse(
                response
                    .headers
                    .get(&Name::WwwAuthenticate)
                    .unwrap_or_default(),
            )
            .ok()
            .map(|c| (c.realm, c.stale, c.qop));
            (response.code(), challenge)
        };
    let wrong_password = answer(&mut ua, 2, "1001", "guess", None);
    let unknown_user = answer(&mut ua, 3, "1002", "guess", None);
    let foreign_nonce_known = answer(&mut ua, 4, "1001", "guess", Some("abc"));
    let foreign_nonce_unknown = answer(&mut ua, 5, "1002", "guess", Some("abc"));
    assert_eq!(
        wrong_password,
        (
            Some(401),
            Some(("callbackd".to_owned(), false, vec![crate::auth::Qop::Auth]))
        )
    );
    assert_eq!(unknown_user, wrong_password);
    assert_eq!(foreign_nonce_known, wrong_password);
    assert_eq!(foreign_nonce_unknown, wrong_password);
}

// Regression: a sniffed REGISTER replayed from another address with another Contact took the
// agent's calls: nonce counts were not tracked and the digest uri not compared (finding 5).
#[test]
fn a_replayed_register_is_refused_and_the_binding_stays() {
    let now = Instant::now();
    let mut ua = ua_with_registrar();
    let challenge = challenge_for(&mut ua, now, caller());
    let credentials = answer_challenge(&challenge, "phone-secret");
    ua.handle_message(
        now,
        caller(),
        Link::Udp,
        &register(2, 120, Some(credentials.clone())),
    );
    assert_eq!(codes(&drain(&mut ua).0), [200]);
    let thief: SocketAddr = "192.0.2.66:5060".parse().unwrap();
    ua.handle_message(
        now,
        thief,
        Link::Udp,
        &register_from(3, &credentials, "sip:1001@192.0.2.66:5060"),
    );
    let (sent, events) = drain(&mut ua);
    assert_eq!(codes(&sent), [401]);
    let challenge_again = sent[0].1.headers.get(&Name::WwwAuthenticate).unwrap();
    assert!(
        challenge_again.contains("stale=TRUE"),
        "only the password's holder can answer: {challenge_again}"
    );
    assert!(events.is_empty(), "no failure counted: {events:?}");
    assert_eq!(
        ua.binding("1001", now).unwrap().source,
        caller(),
        "still the phone's"
    );
    // The same count again from the phone itself is a replay too; the next count is not.
    let again = answer_challenge_counted(&challenge, "phone-secret", 1);
    ua.handle_message(now, caller(), Link::Udp, &register(4, 120, Some(again)));
    assert_eq!(codes(&drain(&mut ua).0), [401]);
    let next = answer_challenge_counted(&challenge, "phone-secret", 2);
    ua.handle_message(now, caller(), Link::Udp, &register(5, 120, Some(next)));
    assert_eq!(codes(&drain(&mut ua).0), [200]);
    // A digest computed for another URI does not authenticate this request.
    let elsewhere = crate::auth::respond(
        &crate::auth::Challenge::parse(challenge.headers.get(&Name::WwwAuthenticate).unwrap())
            .unwrap(),
        "1001",
        "phone-secret",
        "REGISTER",
        "sip:other.example.com",
        "c0ffee",
        3,
    )
    .to_header_value();
    ua.handle_message(now, caller(), Link::Udp, &register(6, 120, Some(elsewhere)));
    assert_eq!(codes(&drain(&mut ua).0), [401]);
}

#[test]
fn a_user_guessed_at_from_many_addresses_is_refused_except_from_their_phone() {
    let now = Instant::now();
    let mut ua = ua_with_registrar();
    let challenge = challenge_for(&mut ua, now, caller());
    ua.handle_message(
        now,
        caller(),
        Link::Udp,
        &register(2, 120, Some(answer_challenge(&challenge, "phone-secret"))),
    );
    assert_eq!(codes(&drain(&mut ua).0), [200]);
    // Twenty guesses, each from an address of its own (none reaches a ban).
    for i in 0..20u8 {
        let source = SocketAddr::from(([192, 0, 2, i], 5060));
        let guess = answer_challenge_counted(&challenge, "guess", u32::from(i) + 10);
        let cseq = 10 + u32::from(i);
        ua.handle_message(
            now,
            source,
            Link::Udp,
            &register_from(cseq, &guess, "sip:x@192.0.2.1"),
        );
        drain(&mut ua);
    }
    // Now even the right password from a new address is refused...
    let stranger: SocketAddr = "198.51.100.9:5060".parse().unwrap();
    let right = answer_challenge_counted(&challenge, "phone-secret", 100);
    ua.handle_message(
        now,
        stranger,
        Link::Udp,
        &register_from(4, &right, "sip:1001@198.51.100.9"),
    );
    assert_eq!(codes(&drain(&mut ua).0), [401]);
    // ...while the phone itself refreshes its registration.
    let right = answer_challenge_counted(&challenge, "phone-secret", 101);
    ua.handle_message(now, caller(), Link::Udp, &register(5, 120, Some(right)));
    assert_eq!(codes(&drain(&mut ua).0), [200]);
    // A minute later the user is checked again from anywhere.
    let later = now + Duration::from_secs(61);
    let right = answer_challenge_counted(&challenge, "phone-secret", 102);
    ua.handle_message(
        later,
        stranger,
        Link::Udp,
        &register_from(6, &right, "sip:1001@198.51.100.9"),
    );
    assert_eq!(codes(&drain(&mut ua).0), [200]);
}

/// An INVITE from `source` with a Call-ID and branch of its own.
fn invite_numbered(i: u32) -> Vec<u8> {
    String::from_utf8(invite())
        .unwrap()
        .replace("z9hG4bK-inv1", &format!("z9hG4bK-flood{i}"))
        .replace("call-1@", &format!("flood-{i}@"))
        .into_bytes()
}

/// A user agent with room for many calls, from `trusted` networks only (anyone when empty).
fn big_ua(trusted: Vec<(std::net::IpAddr, u8)>) -> UserAgent {
    let config = Config {
        timers: Timers::default(),
        advertised: crate::advertise::Advertise::new(
            crate::advertise::Told {
                host: "127.0.0.1".into(),
                port: None,
            },
            5060,
            5060,
        ),
        product: "callbackd-test".into(),
        max_calls: 500,
        max_calls_per_second: 10_000,
        trusted,
        per_source: Default::default(),
        registrar: None,
        registrations: Vec::new(),
    };
    UserAgent::new(config, Box::new(StdRng::seed_from_u64(3)))
}

// Regression: 10,000 INVITEs from one socket took every call slot, and each refusal was a
// stateful 503 retransmitted ten times (finding 6).
#[test]
fn one_source_gets_its_own_share_of_calls_and_refusals_are_one_packet() {
    let start = Instant::now();
    let mut ua = big_ua(Vec::new());
    let flooder: SocketAddr = "192.0.2.66:5060".parse().unwrap();
    let (mut incoming, mut refused) = (0, 0);
    // Twenty INVITEs a second for ten seconds: within the source's request rate.
    for i in 0..200u32 {
        let now = start + Duration::from_millis(u64::from(i) * 50);
        ua.handle_message(now, flooder, Link::Udp, &invite_numbered(i));
        let (sent, events) = drain(&mut ua);
        incoming += events
            .iter()
            .filter(|e| matches!(e, CallEvent::Incoming { .. }))
            .count();
        refused += codes(&sent).iter().filter(|c| **c == 503).count();
    }
    assert_eq!(
        incoming, 10,
        "per_source.unconfirmed_calls: none of them is answered"
    );
    assert_eq!(refused, 190);
    // Time passes: a refusal is never sent again.
    ua.handle_timeout(start + Duration::from_secs(40));
    assert!(
        codes(&drain(&mut ua).0).iter().all(|c| *c != 503),
        "stateless refusals are not retransmitted"
    );
    // Another source still gets its calls in.
    let other: SocketAddr = "192.0.2.67:5060".parse().unwrap();
    ua.handle_message(
        start + Duration::from_secs(40),
        other,
        Link::Udp,
        &invite_numbered(1000),
    );
    assert!(matches!(
        drain(&mut ua).1.as_slice(),
        [CallEvent::Incoming { .. }]
    ));
}

#[test]
fn a_trusted_network_carries_many_callers_past_the_per_source_limits() {
    let now = Instant::now();
    let mut ua = big_ua(vec![("10.0.0.0".parse().unwrap(), 8)]);
    let trunk: SocketAddr = "10.1.2.3:5060".parse().unwrap();
    for i in 0..200u32 {
        ua.handle_message(now, trunk, Link::Udp, &invite_numbered(i));
    }
    let (_, events) = drain(&mut ua);
    let incoming = events
        .iter()
        .filter(|e| matches!(e, CallEvent::Incoming { .. }))
        .count();
    assert_eq!(incoming, 200);
}

#[test]
fn a_source_flooding_past_its_rate_is_banned_and_dropped_unread() {
    let now = Instant::now();
    let mut ua = big_ua(Vec::new());
    let flooder: SocketAddr = "192.0.2.66:5060".parse().unwrap();
    let mut answered = 0;
    let mut events = Vec::new();
    for i in 0..1000u32 {
        let options = format!(
            "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.66:5060;branch=z9hG4bK-o{i}\r\n\
             From: <sip:a@192.0.2.66>;tag=a\r\nTo: <sip:127.0.0.1>\r\nCall-ID: o{i}\r\nCSeq: 1 OPTIONS\r\n\
             Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        ua.handle_message(now, flooder, Link::Udp, options.as_bytes());
        let (sent, e) = drain(&mut ua);
        answered += sent.len();
        events.extend(e);
    }
    assert_eq!(
        answered, 60,
        "a burst of twice per_source.requests_per_second"
    );
    assert!(
        matches!(
            events.as_slice(),
            [CallEvent::SourceBanned {
                reason: crate::admission::BanReason::Flood,
                ..
            }]
        ),
        "{events:?}"
    );
    assert_eq!(
        ua.transactions().0,
        0,
        "OPTIONS are answered without a transaction"
    );
    let other: SocketAddr = "192.0.2.67:5060".parse().unwrap();
    ua.handle_message(now, other, Link::Udp, &invite_numbered(1));
    assert!(matches!(
        drain(&mut ua).1.as_slice(),
        [CallEvent::Incoming { .. }]
    ));
}

// Regression: past capacity, every INVITE was taken on until retransmissions swamped the
// node and goodput halved (finding 10). Overloaded, new calls get one 503 each; the calls
// already in progress go on.
#[test]
fn overloaded_new_calls_get_a_stateless_503_and_calls_in_progress_go_on() {
    let now = Instant::now();
    let mut ua = big_ua(Vec::new());
    let (call, tag) = answered(&mut ua, now);
    ua.set_overloaded(true);
    let other: SocketAddr = "192.0.2.67:5060".parse().unwrap();
    ua.handle_message(now, other, Link::Udp, &invite_numbered(7));
    let (sent, events) = drain(&mut ua);
    assert_eq!(codes(&sent), [503]);
    assert!(events.is_empty());
    assert_eq!(
        ua.transactions().0,
        1,
        "only the answered call's INVITE is kept"
    );
    // The answered call's BYE is handled as ever.
    ua.handle_message(
        now,
        caller(),
        Link::Udp,
        &request("BYE", "z9hG4bK-bye1", 2, Some(&tag), "", ""),
    );
    let (sent, events) = drain(&mut ua);
    assert_eq!(codes(&sent), [200]);
    assert!(events.contains(&CallEvent::Ended {
        call,
        reason: EndReason::RemoteHangup
    }));
    ua.set_overloaded(false);
    ua.handle_message(now, other, Link::Udp, &invite_numbered(8));
    assert!(matches!(
        drain(&mut ua).1.as_slice(),
        [CallEvent::Incoming { .. }]
    ));
}

/// Behind NAT with a PBX on the private side: the carrier is told the public address, the PBX
/// the private one, in Via and Contact, and over TCP the Contact says so.
#[test]
fn each_peer_is_told_the_address_for_its_side() {
    let mut ua = ua();
    ua.config.advertised = {
        use crate::advertise::{Advertise, Told};
        let told = |host: &str| Told {
            host: host.into(),
            port: None,
        };
        Advertise::new(told("198.51.100.1"), 5060, 5061)
            .with_network(("127.0.0.0".parse().unwrap(), 8), told("10.1.0.2"))
    };
    let now = Instant::now();
    let via_and_contact = |ua: &mut UserAgent, to: &str, link: Link| {
        let mut dial = dial_to("sip:1001@host", None);
        (dial.destination, dial.link) = (to.parse().unwrap(), link);
        ua.dial(now, dial);
        let (sent, _) = drain(ua);
        let invite = only_request(&sent, Method::Invite);
        let header = |name| invite.headers.get(&name).unwrap().to_owned();
        (header(Name::Via), header(Name::Contact), header(Name::From))
    };
    let (via, contact, from) = via_and_contact(&mut ua, "203.0.113.9:5060", Link::Udp);
    assert!(via.starts_with("SIP/2.0/UDP 198.51.100.1:5060;"), "{via}");
    assert_eq!(contact, "<sip:+12125550100@198.51.100.1:5060>");
    assert!(
        from.starts_with("<sip:+12125550100@198.51.100.1>;tag="),
        "{from}"
    );
    let (via, contact, _) = via_and_contact(&mut ua, "127.0.0.9:5060", Link::Tcp);
    assert!(via.starts_with("SIP/2.0/TCP 10.1.0.2:5061;"), "{via}");
    assert_eq!(contact, "<sip:+12125550100@10.1.0.2:5061;transport=tcp>");
    // An inbound call from the private side is answered with the private Contact.
    let (_, _) = answered(&mut ua, now);
    let ok = ua.calls.values().find_map(|c| c.ok.clone()).unwrap();
    assert_eq!(ok.headers.get(&Name::Contact), Some("<sip:10.1.0.2:5060>"));
}

// Session timers and reliable provisional responses (ua/extensions.rs).

fn invite_with(extra: &str) -> Vec<u8> {
    request(
        "INVITE",
        "z9hG4bK-inv1",
        1,
        None,
        &format!("Content-Type: application/sdp\r\n{extra}"),
        SDP,
    )
}

/// An inbound call made with `extra` headers, answered and acknowledged; its handle, our
/// tag and the 200.
/// An inbound call made with `extra` headers, not yet answered.
fn incoming_with(ua: &mut UserAgent, now: Instant, extra: &str) -> CallHandle {
    ua.handle_message(now, caller(), Link::Udp, &invite_with(extra));
    let (_, events) = drain(ua);
    let CallEvent::Incoming { call, .. } = events[0].clone() else {
        panic!("{events:?}")
    };
    call
}

/// Our BYE, sent by now, is answered at `at`: the call ends with `reason`.
fn our_bye_answered(ua: &mut UserAgent, at: Instant, call: CallHandle, reason: EndReason) {
    let (sent, _) = drain(ua);
    let bye = only_request(&sent, Method::Bye);
    ua.handle_message(at, caller(), Link::Udp, &reply(&bye, 200, &[]));
    let (_, events) = drain(ua);
    assert_eq!(events, [CallEvent::Ended { call, reason }]);
}

fn confirmed_with(ua: &mut UserAgent, now: Instant, extra: &str) -> (CallHandle, String, Message) {
    let call = incoming_with(ua, now, extra);
    ua.answer(now, call, Bytes::from_static(b"v=0\r\n"));
    let (sent, _) = drain(ua);
    let ok = sent[0].1.clone();
    let tag = ok
        .headers
        .get(&Name::To)
        .unwrap()
        .split(";tag=")
        .nth(1)
        .unwrap()
        .to_owned();
    ua.handle_message(
        now,
        caller(),
        Link::Udp,
        &request("ACK", "z9hG4bK-ack1", 1, Some(&tag), "", ""),
    );
    drain(ua);
    (call, tag, ok)
}

#[test]
fn a_session_the_caller_stops_refreshing_is_hung_up_and_a_refresh_keeps_it() {
    let now = Instant::now();
    let mut ua = ua();
    let (call, tag, ok) = confirmed_with(
        &mut ua,
        now,
        "Supported: timer\r\nSession-Expires: 120;refresher=uac\r\n",
    );
    assert_eq!(
        ok.headers.get(&Name::SessionExpires),
        Some("120;refresher=uac")
    );
    assert_eq!(ok.headers.get(&Name::Require), Some("timer"));
    assert!(ok.headers.get(&Name::Supported).unwrap().contains("100rel"));
    // A refresh by UPDATE at 60 s is answered with the timer and starts it again.
    let update = request(
        "UPDATE",
        "z9hG4bK-upd1",
        2,
        Some(&tag),
        "Supported: timer\r\nSession-Expires: 120;refresher=uac\r\n",
        "",
    );
    ua.handle_message(now + Duration::from_secs(60), caller(), Link::Udp, &update);
    let (sent, _) = drain(&mut ua);
    assert_eq!(codes(&sent), [200]);
    assert_eq!(
        sent[0].1.headers.get(&Name::SessionExpires),
        Some("120;refresher=uac")
    );
    // 120 s less a third (40, capped at 32): 88 s after the refresh, not after the answer.
    ua.handle_timeout(now + Duration::from_secs(100));
    assert!(drain(&mut ua).0.is_empty(), "refreshed at 60 s");
    ua.handle_timeout(now + Duration::from_secs(148));
    our_bye_answered(
        &mut ua,
        now + Duration::from_secs(148),
        call,
        EndReason::SessionExpired,
    );
}

#[test]
fn callbackd_refreshes_with_update_when_it_is_the_refresher_and_hangs_up_on_481() {
    let now = Instant::now();
    let mut ua = ua();
    let (call, _, ok) = confirmed_with(
        &mut ua,
        now,
        "Supported: timer\r\nSession-Expires: 90;refresher=uas\r\n",
    );
    assert_eq!(
        ok.headers.get(&Name::SessionExpires),
        Some("90;refresher=uas")
    );
    assert_eq!(
        ok.headers.get(&Name::Require),
        None,
        "the caller need not refresh"
    );
    ua.handle_timeout(now + Duration::from_secs(45));
    let (sent, _) = drain(&mut ua);
    let update = only_request(&sent, Method::Update);
    assert_eq!(
        update.headers.get(&Name::SessionExpires),
        Some("90;refresher=uac")
    );
    ua.handle_message(
        now + Duration::from_secs(45),
        caller(),
        Link::Udp,
        &reply(&update, 200, &[(Name::SessionExpires, "90;refresher=uac")]),
    );
    assert!(drain(&mut ua).1.is_empty());
    ua.handle_timeout(now + Duration::from_secs(90));
    let (sent, _) = drain(&mut ua);
    let update = only_request(&sent, Method::Update);
    ua.handle_message(
        now + Duration::from_secs(90),
        caller(),
        Link::Udp,
        &reply(&update, 481, &[]),
    );
    our_bye_answered(
        &mut ua,
        now + Duration::from_secs(90),
        call,
        EndReason::SessionExpired,
    );
}

#[test]
fn session_intervals_too_small_or_unreadable_are_refused_with_what_is_wrong() {
    let now = Instant::now();
    let mut ua = ua();
    ua.handle_message(
        now,
        caller(),
        Link::Udp,
        &invite_with("Supported: timer\r\nSession-Expires: 30\r\n"),
    );
    let (sent, events) = drain(&mut ua);
    assert_eq!(codes(&sent), [422]);
    assert_eq!(sent[0].1.headers.get(&Name::MinSe), Some("90"));
    assert!(events.is_empty(), "no call");
    ua.handle_message(
        now,
        caller(),
        Link::Udp,
        &request(
            "INVITE",
            "z9hG4bK-inv2",
            1,
            None,
            "Session-Expires: later\r\n",
            "",
        ),
    );
    let (sent, _) = drain(&mut ua);
    assert_eq!(codes(&sent), [400]);
    assert!(
        matches!(&sent[0].1.start, crate::message::StartLine::Response { reason, .. } if reason == "Bad Session-Expires"),
        "{:?}",
        sent[0].1.start
    );
    // Require: timer and 100rel are understood, not refused with 420.
    ua.handle_message(
        now,
        caller(),
        Link::Udp,
        &request(
            "INVITE",
            "z9hG4bK-inv3",
            1,
            None,
            "Require: timer, 100rel\r\nSession-Expires: 1800\r\n",
            "",
        ),
    );
    let (sent, events) = drain(&mut ua);
    assert_eq!(codes(&sent), [100]);
    assert_eq!(events.len(), 1);
}

#[test]
fn a_ringing_required_reliable_is_resent_until_its_prack_and_the_200_waits_for_it() {
    let now = Instant::now();
    let mut ua = ua();
    let call = incoming_with(
        &mut ua,
        now,
        "Require: 100rel
",
    );
    ua.ring(now, call, None);
    let (sent, _) = drain(&mut ua);
    assert_eq!(codes(&sent), [180]);
    let ringing = &sent[0].1;
    assert_eq!(ringing.headers.get(&Name::Require), Some("100rel"));
    let rseq: u32 = ringing.headers.get(&Name::RSeq).unwrap().parse().unwrap();
    let tag = ringing
        .headers
        .get(&Name::To)
        .unwrap()
        .split(";tag=")
        .nth(1)
        .unwrap()
        .to_owned();
    // Answered before the PRACK: the 200 is held back, the 180 resent after T1.
    ua.answer(now, call, Bytes::from_static(b"v=0\r\n"));
    assert!(drain(&mut ua).0.is_empty());
    ua.handle_timeout(now + Duration::from_millis(500));
    let (sent, _) = drain(&mut ua);
    assert_eq!(codes(&sent), [180]);
    assert_eq!(
        sent[0].1.headers.get(&Name::RSeq),
        Some(rseq.to_string().as_str())
    );
    // A PRACK for another RSeq is not it.
    let prack = |branch: &str, cseq: u32, rack: u32| {
        request(
            "PRACK",
            branch,
            cseq,
            Some(&tag),
            &format!("RAck: {rack} 1 INVITE\r\n"),
            "",
        )
    };
    ua.handle_message(now, caller(), Link::Udp, &prack("z9hG4bK-pr1", 2, rseq + 1));
    assert_eq!(codes(&drain(&mut ua).0), [481]);
    ua.handle_message(now, caller(), Link::Udp, &prack("z9hG4bK-pr2", 3, rseq));
    let (sent, _) = drain(&mut ua);
    assert_eq!(codes(&sent), [200, 200], "the PRACK's, then the INVITE's");
    assert_eq!(sent[1].1.headers.get(&Name::CSeq), Some("1 INVITE"));
    ua.handle_timeout(now + Duration::from_millis(1500));
    assert!(
        !codes(&drain(&mut ua).0).contains(&180),
        "no 180 after its PRACK"
    );
}

#[test]
fn a_reliable_18x_without_its_prack_refuses_the_call_after_64_t1() {
    let now = Instant::now();
    let mut ua = ua();
    let call = incoming_with(
        &mut ua,
        now,
        "Require: 100rel
",
    );
    ua.ring(now, call, None);
    drain(&mut ua);
    ua.handle_timeout(now + Duration::from_secs(32));
    let (sent, events) = drain(&mut ua);
    assert!(codes(&sent).contains(&504), "{sent:?}");
    assert_eq!(
        events,
        [CallEvent::Ended {
            call,
            reason: EndReason::Rejected(504)
        }]
    );
}

#[test]
fn a_placed_call_pracks_a_reliable_18x_once_and_keeps_its_invite_cseq_for_the_ack() {
    let now = Instant::now();
    let mut ua = ua();
    ua.dial(now, dial_to("sip:1001@127.0.0.1:5080", None));
    let (sent, _) = drain(&mut ua);
    let invite = only_request(&sent, Method::Invite);
    assert_eq!(invite.headers.get(&Name::Supported), Some("100rel, timer"));
    let ringing = reply(
        &invite,
        180,
        &[
            (Name::Require, "100rel"),
            (Name::RSeq, "7"),
            (Name::Contact, "<sip:callee@127.0.0.1:5099>"),
        ],
    );
    ua.handle_message(now, trunk(), Link::Udp, &ringing);
    let (sent, events) = drain(&mut ua);
    let prack = only_request(&sent, Method::Prack);
    assert_eq!(prack.uri(), Some("sip:callee@127.0.0.1:5099"));
    assert_eq!(prack.headers.get(&Name::RAck), Some("7 1 INVITE"));
    assert!(prack
        .headers
        .get(&Name::To)
        .unwrap()
        .contains("tag=callee1"));
    assert_eq!(events.len(), 1, "ringing reported: {events:?}");
    ua.handle_message(now, trunk(), Link::Udp, &reply(&prack, 200, &[]));
    ua.handle_message(now, trunk(), Link::Udp, &ringing);
    let (sent, events) = drain(&mut ua);
    assert!(
        sent.is_empty() && events.is_empty(),
        "a resent 180 is not PRACKed again"
    );
    // The callee asks callbackd to refresh every 90 s.
    ua.handle_message(
        now,
        trunk(),
        Link::Udp,
        &reply(
            &invite,
            200,
            &[
                (Name::SessionExpires, "90;refresher=uac"),
                (Name::Require, "timer"),
            ],
        ),
    );
    let (sent, _) = drain(&mut ua);
    let ack = only_request(&sent, Method::Ack);
    assert_eq!(ack.headers.get(&Name::CSeq), Some("1 ACK"));
    ua.handle_timeout(now + Duration::from_secs(45));
    let (sent, _) = drain(&mut ua);
    let update = only_request(&sent, Method::Update);
    assert_eq!(
        update.headers.get(&Name::SessionExpires),
        Some("90;refresher=uac")
    );
    assert_eq!(update.headers.get(&Name::CSeq), Some("3 UPDATE"));
}

/// Credentials go only to the trunk's own challenges: another realm, or a challenge forged from
/// another address, gets nothing, and the call fails with the challenge's status.
#[test]
fn credentials_answer_only_the_trunks_own_realm_from_its_own_address() {
    let now = Instant::now();
    let credentials = Credentials {
        username: "callbackd".into(),
        password: "s3cret".into(),
        realm: Some("trunk".into()),
    };
    let challenge = |realm: &str| {
        format!("Digest realm=\"{realm}\", nonce=\"abc123\", algorithm=MD5, qop=\"auth\"")
    };
    // From the trunk's address, in another realm.
    let mut agent = ua();
    let call = agent.dial(
        now,
        dial_to("sip:+12125550199@127.0.0.1:5080", Some(credentials.clone())),
    );
    let first = only_request(&drain(&mut agent).0, Method::Invite);
    agent.handle_message(
        now,
        trunk(),
        Link::Udp,
        &reply(
            &first,
            407,
            &[(Name::ProxyAuthenticate, &challenge("elsewhere"))],
        ),
    );
    let (sent, events) = drain(&mut agent);
    assert!(
        sent.iter()
            .all(|(_, m)| m.headers.get(&Name::ProxyAuthorization).is_none()),
        "{sent:?}"
    );
    assert_eq!(
        events,
        [CallEvent::Ended {
            call,
            reason: EndReason::Failed(407)
        }]
    );
    // In the trunk's realm, but from another address: not even read.
    let mut agent = ua();
    agent.dial(
        now,
        dial_to("sip:+12125550199@127.0.0.1:5080", Some(credentials)),
    );
    let first = only_request(&drain(&mut agent).0, Method::Invite);
    let forger: SocketAddr = "127.0.0.66:5080".parse().unwrap();
    agent.handle_message(
        now,
        forger,
        Link::Udp,
        &reply(
            &first,
            407,
            &[(Name::ProxyAuthenticate, &challenge("trunk"))],
        ),
    );
    let (sent, events) = drain(&mut agent);
    assert!(sent.is_empty() && events.is_empty(), "{sent:?} {events:?}");
}

#[test]
fn every_header_that_may_name_the_number_dialled_is_read() {
    let mut ua = ua();
    let extra = "P-Called-Party-ID: <tel:+12125550111;phone-context=x>\r\n\
                 Diversion: <sip:+12125550122@carrier.example>;reason=unconditional, <sip:999@x>\r\n";
    ua.handle_message(
        Instant::now(),
        caller(),
        Link::Udp,
        &request("INVITE", "z9hG4bK-did", 1, None, extra, ""),
    );
    let (_, events) = drain(&mut ua);
    let CallEvent::Incoming { dialled, .. } = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(
        dialled,
        &Dialled {
            request_uri: "5000".into(),
            to: Some("5000".into()),
            p_called_party_id: Some("+12125550111".into()),
            diversion: Some("+12125550122".into()),
        }
    );
}

/// RFC 3263 section 4.3: a target that answers 503, or nothing within 4·T1, is left for the
/// next; the dialog's identifiers stay, the INVITE is new.
#[test]
fn a_trunk_target_that_refuses_or_stays_silent_is_left_for_the_next() {
    let now = Instant::now();
    let mut ua = ua();
    let second: SocketAddr = "127.0.0.1:5082".parse().unwrap();
    let third: SocketAddr = "127.0.0.1:5083".parse().unwrap();
    let mut dial = dial_to("sip:+12125550199@trunk.example", None);
    dial.fallbacks = vec![second, third];
    let call = ua.dial(now, dial);
    let (sent, _) = drain(&mut ua);
    let first = only_request(&sent, Method::Invite);
    assert_eq!(sent[0].0, trunk());
    ua.handle_message(now, trunk(), Link::Udp, &reply(&first, 503, &[]));
    let (sent, events) = drain(&mut ua);
    assert_eq!(events, [CallEvent::FailedOver { call, to: second }]);
    let to_second: Vec<&Message> = sent
        .iter()
        .filter(|(to, _)| *to == second)
        .map(|(_, m)| m)
        .collect();
    let invite = to_second[0];
    assert_eq!(invite.method(), Some(&Method::Invite));
    assert_eq!(
        invite.headers.get(&Name::CallId),
        first.headers.get(&Name::CallId)
    );
    assert_eq!(invite.headers.get(&Name::CSeq), Some("2 INVITE"));
    // The second says nothing at all: after 4·T1 (2 s) the third is tried, and the second
    // hears no more.
    ua.handle_timeout(now + Duration::from_millis(1999));
    let (sent, _) = drain(&mut ua);
    assert!(sent.iter().all(|(to, _)| *to == second), "{sent:?}");
    ua.handle_timeout(now + Duration::from_secs(2));
    let (sent, events) = drain(&mut ua);
    assert_eq!(events, [CallEvent::FailedOver { call, to: third }]);
    assert!(sent.iter().all(|(to, _)| *to == third), "{sent:?}");
    // The last answers: no more fail-over, however long it rings.
    let invite = only_request(&sent, Method::Invite);
    ua.handle_message(
        now + Duration::from_secs(2),
        third,
        Link::Udp,
        &reply(&invite, 180, &[]),
    );
    ua.handle_timeout(now + Duration::from_secs(10));
    let (sent, events) = drain(&mut ua);
    assert!(sent.iter().all(|(to, _)| *to == third), "{sent:?}");
    assert!(
        events
            .iter()
            .all(|e| !matches!(e, CallEvent::FailedOver { .. })),
        "{events:?}"
    );
}

#[test]
fn a_keep_alive_reports_an_answer_or_its_absence() {
    let now = Instant::now();
    let mut ua = ua();
    ua.qualify(now, trunk(), Link::Udp);
    let (sent, _) = drain(&mut ua);
    let options = only_request(&sent, Method::Options);
    assert_eq!(options.uri(), Some("sip:127.0.0.1:5080"));
    ua.handle_message(now, trunk(), Link::Udp, &reply(&options, 200, &[]));
    assert_eq!(
        drain(&mut ua).1,
        [CallEvent::Qualified {
            to: trunk(),
            status: Some(200)
        }]
    );
    let silent: SocketAddr = "127.0.0.1:5099".parse().unwrap();
    ua.qualify(now, silent, Link::Udp);
    drain(&mut ua);
    ua.handle_timeout(now + Duration::from_secs(32));
    let (_, events) = drain(&mut ua);
    assert_eq!(
        events,
        [CallEvent::Qualified {
            to: silent,
            status: None
        }]
    );
}

/// What the fail-over must not do: move an answered call, go on after a hang-up, or keep the
/// last target's state (its challenge) for the next.
#[test]
fn fail_over_leaves_answered_and_cancelled_calls_alone_and_starts_each_target_afresh() {
    let now = Instant::now();
    let second: SocketAddr = "127.0.0.1:5082".parse().unwrap();
    let with_fallback = |credentials| {
        let mut dial = dial_to("sip:+12125550199@trunk.example", credentials);
        dial.fallbacks = vec![second];
        dial
    };
    // A 200 straight away (no 100 first): the call stays where it is.
    let mut agent = ua();
    agent.dial(now, with_fallback(None));
    let invite = only_request(&drain(&mut agent).0, Method::Invite);
    agent.handle_message(now, trunk(), Link::Udp, &reply(&invite, 200, &[]));
    drain(&mut agent);
    agent.handle_timeout(now + Duration::from_secs(5));
    let (sent, events) = drain(&mut agent);
    assert!(sent.iter().all(|(to, _)| *to != second), "{sent:?}");
    assert!(
        events
            .iter()
            .all(|e| !matches!(e, CallEvent::FailedOver { .. })),
        "{events:?}"
    );
    // Hung up while the first target is silent: nothing goes to the second.
    let mut agent = ua();
    let call = agent.dial(now, with_fallback(None));
    drain(&mut agent);
    agent.hang_up(now, call);
    agent.handle_timeout(now + Duration::from_secs(5));
    let (sent, events) = drain(&mut agent);
    assert!(sent.iter().all(|(to, _)| *to != second), "{sent:?}");
    assert!(
        events
            .iter()
            .all(|e| !matches!(e, CallEvent::FailedOver { .. })),
        "{events:?}"
    );
    // The first target challenges and then refuses: the second's challenge is answered too.
    let credentials = Credentials {
        username: "callbackd".into(),
        password: "s3cret".into(),
        realm: None,
    };
    let challenge = "Digest realm=\"trunk\", nonce=\"abc\", algorithm=MD5, qop=\"auth\"";
    let mut agent = ua();
    agent.dial(now, with_fallback(Some(credentials)));
    let first = only_request(&drain(&mut agent).0, Method::Invite);
    agent.handle_message(
        now,
        trunk(),
        Link::Udp,
        &reply(&first, 407, &[(Name::ProxyAuthenticate, challenge)]),
    );
    let again = only_request(&drain(&mut agent).0, Method::Invite);
    agent.handle_message(now, trunk(), Link::Udp, &reply(&again, 503, &[]));
    let (sent, _) = drain(&mut agent);
    let to_second = only_request(&sent, Method::Invite);
    agent.handle_message(
        now,
        second,
        Link::Udp,
        &reply(&to_second, 407, &[(Name::ProxyAuthenticate, challenge)]),
    );
    let (sent, _) = drain(&mut agent);
    let answered = only_request(&sent, Method::Invite);
    assert!(
        answered.headers.get(&Name::ProxyAuthorization).is_some(),
        "{answered:?}"
    );
}

/// A call with a session interval that rings past it: the timer waits for the answer rather
/// than firing again and again.
#[test]
fn a_session_timer_waits_while_the_call_rings() {
    let now = Instant::now();
    let mut ua = ua();
    ua.handle_message(
        now,
        caller(),
        Link::Udp,
        &invite_with("Supported: timer\r\nSession-Expires: 90\r\n"),
    );
    drain(&mut ua);
    let later = now + Duration::from_secs(100);
    ua.handle_timeout(later);
    assert!(
        ua.poll_timeout().is_none_or(|at| at > later),
        "no deadline already past: {:?}",
        ua.poll_timeout()
            .map(|at| at.saturating_duration_since(now))
    );
}
