//! RTP packets sprayed at a call's port (issue 17, finding 11): callbackd learns the far end's
//! source only from the address its SDP named, after several packets in sequence, so a
//! sprayer from elsewhere never takes the call's audio, before or after the caller's own
//! audio starts.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::{config_with, Server};

fn rtp(ssrc: u32, sequence: u16) -> Vec<u8> {
    let mut packet = vec![0x80, 0];
    packet.extend(sequence.to_be_bytes());
    packet.extend((u32::from(sequence) * 160).to_be_bytes());
    packet.extend(ssrc.to_be_bytes());
    packet.extend([0xff; 160]);
    packet
}

/// Packets `socket` receives within `within`.
fn count_received(socket: &UdpSocket, within: Duration) -> usize {
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let deadline = Instant::now() + within;
    let mut buffer = [0; 2048];
    let mut count = 0;
    while Instant::now() < deadline {
        if socket.recv(&mut buffer).is_ok() {
            count += 1;
        }
    }
    count
}

// Regression: the first packet from any address latched the stream, and ports went up by two,
// so packets sprayed at the next port took all of callbackd's audio and the caller heard none.
#[test]
fn a_sprayer_at_the_calls_port_gets_nothing_and_the_caller_hears_the_prompts() {
    let url = store::testing::sqlite_url();
    let server = Server::start(&config_with(&url, &[]));
    let target = server.sip_udp.unwrap();
    let signalling = UdpSocket::bind("127.0.0.1:0").unwrap();
    let media = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (me, media_at) = (
        signalling.local_addr().unwrap(),
        media.local_addr().unwrap(),
    );
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 0\r\n",
        media_at.port()
    );
    let invite = format!(
        "INVITE sip:5000@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-spray;rport\r\n\
         From: <sip:+13125550199@{me}>;tag=c1\r\nTo: <sip:5000@{target}>\r\nCall-ID: spray@{me}\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:caller@{me}>\r\nMax-Forwards: 70\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    signalling.send_to(invite.as_bytes(), target).unwrap();
    signalling
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buffer = vec![0; 4096];
    let ok = loop {
        let n = signalling.recv(&mut buffer).unwrap();
        let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
        if text.starts_with("SIP/2.0 200") {
            break text;
        }
    };
    let port: u16 = ok
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap();
    let to_tag = ok
        .lines()
        .find(|l| l.starts_with("To:"))
        .and_then(|l| l.split(";tag=").nth(1))
        .unwrap()
        .trim()
        .to_owned();
    let rtp_at = SocketAddr::new(target.ip(), port);
    // Before the caller's audio starts, a sprayer from another address sends a stream in
    // sequence at the call's port, and goes on.
    let sprayer = UdpSocket::bind("127.0.0.2:0").unwrap();
    for seq in 0..50 {
        sprayer.send_to(&rtp(0xbad, seq), rtp_at).unwrap();
    }
    let ack = format!(
        "ACK sip:5000@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-spray-ack;rport\r\n\
         From: <sip:+13125550199@{me}>;tag=c1\r\nTo: <sip:5000@{target}>;tag={to_tag}\r\n\
         Call-ID: spray@{me}\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    signalling.send_to(ack.as_bytes(), target).unwrap();
    let (heard_by_caller, heard_by_sprayer) = std::thread::scope(|s| {
        let sprayer_counts = s.spawn(|| count_received(&sprayer, Duration::from_secs(3)));
        let caller_counts = s.spawn(|| count_received(&media, Duration::from_secs(3)));
        // The caller's own audio, every 20 ms, interleaved with more spraying.
        for seq in 0..100u16 {
            media.send_to(&rtp(0x600d, 1000 + seq), rtp_at).unwrap();
            sprayer.send_to(&rtp(0xbad, 50 + seq), rtp_at).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        (
            caller_counts.join().unwrap(),
            sprayer_counts.join().unwrap(),
        )
    });
    assert_eq!(
        heard_by_sprayer, 0,
        "the sprayer gets none of callbackd's audio"
    );
    assert!(
        heard_by_caller >= 100,
        "the caller hears the prompts: {heard_by_caller} packets in 3 s"
    );
}
