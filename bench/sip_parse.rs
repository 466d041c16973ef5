//! How long parsing a typical INVITE takes (goal: 3 µs or less), and parsing plus the user
//! agent server's checks. Run with `cargo bench --bench sip_parse`; figures in bench/README.md.

use std::hint::black_box;
use std::time::Instant;

use sip::message::Method;
use sip::parse::parse_datagram;
use sip::validate::{check_request, Capabilities};

/// What a PBX or SIPp sends: 11 headers and an SDP offer with PCMU, PCMA and telephone-event.
const INVITE: &[u8] = b"INVITE sip:5000@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-524287-1---c8b7e91d1a7a3b2f;rport\r\n\
Max-Forwards: 70\r\n\
Contact: <sip:alice@127.0.0.1:5070>\r\n\
To: <sip:5000@127.0.0.1:5060>\r\n\
From: \"Alice\" <sip:alice@127.0.0.1:5070>;tag=8f3e2a1b\r\n\
Call-ID: 1-29453@127.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE\r\n\
Content-Type: application/sdp\r\n\
User-Agent: SIPp/3.6.1\r\n\
Content-Length: 229\r\n\
\r\n\
v=0\r\n\
o=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n\
s=-\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
m=audio 6000 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

fn time(name: &str, iterations: u32, mut f: impl FnMut()) {
    for _ in 0..iterations / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    let per = start.elapsed().as_nanos() as f64 / f64::from(iterations);
    println!("| {name} | {:.2} µs |", per / 1000.0);
}

fn main() {
    assert!(parse_datagram(INVITE).is_ok_and(|m| m.body.len() == 229));
    let caps = Capabilities {
        methods: vec![
            Method::Invite,
            Method::Ack,
            Method::Bye,
            Method::Cancel,
            Method::Options,
        ],
        extensions: vec![],
    };
    println!("| step | time per INVITE |\n| --- | --- |");
    time(
        "parse (framing, unfolding, header lines)",
        1_000_000,
        || {
            black_box(parse_datagram(black_box(INVITE)).unwrap());
        },
    );
    time(
        "parse + check (Via, From, To, CSeq, URI, ...)",
        1_000_000,
        || {
            let m = parse_datagram(black_box(INVITE)).unwrap();
            black_box(check_request(&m, &caps).unwrap());
        },
    );
}
