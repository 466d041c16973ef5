//! Every RFC 4475 and RFC 5118 message sent to the running callbackd over a real UDP socket,
//! checking the first answer (or that none comes). These messages name foreign hosts
//! (192.0.2.x, example.com) in their Via headers: before sending, the top Via's sent-by is
//! rewritten to this test's own loopback socket, so no answer can leave the machine
//! (callbackd answers to the packet's source address in any case).

mod common;

use std::net::UdpSocket;
use std::path::PathBuf;
use std::time::Duration;

use common::{config, Server};

fn corpus(folder: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/sip-torture")
        .join(folder)
}

/// Replaces the host[:port] of the first Via header in the head with `sent_by`, keeping
/// everything else (folding, odd spacing, parameters) byte for byte.
fn rewrite_top_via(message: &[u8], sent_by: &str) -> Vec<u8> {
    let head_end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(message.len());
    let mut line_start = 0;
    while line_start < head_end {
        let line_end = message[line_start..head_end]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(head_end, |p| line_start + p);
        let line = &message[line_start..line_end];
        let name_end = line.iter().position(|b| *b == b':').unwrap_or(0);
        let name = String::from_utf8_lossy(&line[..name_end])
            .trim()
            .to_ascii_lowercase();
        if name == "via" || name == "v" {
            // After the second '/', skip the transport token and whitespace (folding included).
            let mut i = line_start + name_end + 1;
            let mut slashes = 0;
            while slashes < 2 && i < head_end {
                if message[i] == b'/' {
                    slashes += 1;
                }
                i += 1;
            }
            let skip_space = |mut i: usize| {
                while i < head_end && b" \t\r\n".contains(&message[i]) {
                    i += 1;
                }
                i
            };
            i = skip_space(i);
            while i < head_end && !b" \t\r\n".contains(&message[i]) {
                i += 1;
            }
            let host_start = skip_space(i);
            let mut host_end = host_start;
            while host_end < head_end && !b";, \t\r\n".contains(&message[host_end]) {
                host_end += 1;
            }
            let mut out = message[..host_start].to_vec();
            out.extend_from_slice(sent_by.as_bytes());
            out.extend_from_slice(&message[host_end..]);
            return out;
        }
        line_start = line_end + 2;
    }
    message.to_vec()
}

/// The first status callbackd answers each RFC 4475 message with; `None`: no answer.
/// callbackd is a user agent, not a registrar: REGISTER gets 405 once the message is sound.
fn expected_4475(name: &str) -> Option<u16> {
    match name {
        // Sound INVITEs: 100 Trying comes first.
        "esc01" | "longreq" | "baddate" | "inv2543" => Some(100),
        // A sound INVITE with a To tag is a re-INVITE, and there is no such dialog here.
        "wsinv" => Some(481),
        "semiuri" | "transports" | "lwsdisp" | "zeromf" => Some(200),
        "escnull" | "dblreq" | "regaut01" | "cparam01" | "cparam02" | "regescrt" | "unksm2"
        | "mpart01" => Some(405),
        "intmeth" | "esc02" | "mismatch02" => Some(501),
        "unreason" | "noreason" | "bcast" | "scalarlg" | "bigcode" => None,
        "badinv01" | "clerr" | "ncl" | "scalar02" | "quotbal" | "ltgtruri" | "lwsruri"
        | "lwsstart" | "trws" | "escruri" | "regbadct" | "badaspec" | "baddn" | "mismatch01"
        | "badbranch" | "insuf" | "multi01" | "mcl01" => Some(400),
        "badvers" => Some(505),
        "unkscm" | "novelsc" => Some(416),
        "bext01" => Some(420),
        "invut" => Some(415),
        "sdp01" => Some(406),
        other => panic!("no expectation for {other}"),
    }
}

fn first_answer(socket: &UdpSocket, expect_one: bool) -> Option<u16> {
    socket
        .set_read_timeout(Some(Duration::from_millis(if expect_one {
            3000
        } else {
            400
        })))
        .unwrap();
    let mut buffer = [0; 65_535];
    let (n, _) = socket.recv_from(&mut buffer).ok()?;
    let text = String::from_utf8_lossy(&buffer[..n]);
    text.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

#[tokio::test]
async fn rfc4475_over_udp() {
    let url = store::testing::sqlite_url();
    let server = Server::start(&config(&url, ""));
    let target = server.sip_udp.unwrap();
    let dir = corpus("rfc4475");
    let expect = std::fs::read_to_string(dir.join("EXPECT.tsv")).unwrap();
    let mut failures = Vec::new();
    for line in expect.lines().skip(1) {
        let name = line.split('\t').next().unwrap();
        // A fresh socket per message, so a late answer to one is never read as the next's.
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let me = socket.local_addr().unwrap().to_string();
        let raw = std::fs::read(dir.join(format!("{name}.dat"))).unwrap();
        socket.send_to(&rewrite_top_via(&raw, &me), target).unwrap();
        let want = expected_4475(name);
        let got = first_answer(&socket, want.is_some());
        if got != want {
            failures.push(format!("{name}: got {got:?}, want {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    drop(server);
    store::testing::discard(&url).await;
}

#[tokio::test]
async fn rfc5118_over_udp() {
    let url = store::testing::sqlite_url();
    let server = Server::start(&config(&url, ""));
    let target = server.sip_udp.unwrap();
    let dir = corpus("rfc5118");
    let expect = std::fs::read_to_string(dir.join("EXPECT.tsv")).unwrap();
    let mut failures = Vec::new();
    for line in expect.lines().skip(1) {
        let mut fields = line.split('\t');
        let (name, class) = (fields.next().unwrap(), fields.nth(1).unwrap());
        // As SOURCE.md says: LF to CRLF, close the header section, recompute Content-Length.
        let text =
            String::from_utf8(std::fs::read(dir.join(format!("{name}.dat"))).unwrap()).unwrap();
        let (head, body) = text
            .split_once("\n\n")
            .unwrap_or((text.trim_end_matches('\n'), ""));
        let body = body.replace('\n', "\r\n");
        let head: Vec<String> = head
            .lines()
            .map(|l| {
                if l.to_ascii_lowercase().starts_with("content-length") {
                    format!("Content-Length: {}", body.len())
                } else {
                    l.to_owned()
                }
            })
            .collect();
        let message = format!("{}\r\n\r\n{body}", head.join("\r\n"));
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let me = socket.local_addr().unwrap().to_string();
        socket
            .send_to(&rewrite_top_via(message.as_bytes(), &me), target)
            .unwrap();
        let method = message.split(' ').next().unwrap();
        let want = match (class, method) {
            ("invalid", _) => 400,
            (_, "INVITE") => 100,
            (_, "REGISTER") => 405,
            // BYE for a dialog that does not exist here.
            (_, "BYE") => 481,
            _ => 200,
        };
        let got = first_answer(&socket, true);
        if got != Some(want) {
            failures.push(format!("{name} ({method}): got {got:?}, want {want}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    drop(server);
    store::testing::discard(&url).await;
}

#[test]
fn the_rewrite_keeps_everything_but_the_sent_by() {
    let folded = b"INVITE sip:a@b SIP/2.0\r\nVia  : SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw\r\nv: SIP/2.0/TCP x.example.com\r\n\r\n";
    let out = String::from_utf8(rewrite_top_via(folded, "127.0.0.1:9")).unwrap();
    assert_eq!(out, "INVITE sip:a@b SIP/2.0\r\nVia  : SIP  /   2.0\r\n /UDP\r\n    127.0.0.1:9;branch=390skdjuw\r\nv: SIP/2.0/TCP x.example.com\r\n\r\n");
}
