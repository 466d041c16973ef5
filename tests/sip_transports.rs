//! Transports: SIP over TCP framed by Content-Length (a message trickling in one byte at a
//! time, two messages in one segment, a broken Content-Length that closes the connection
//! after its 400), and UDP answers leaving from the socket the request reached.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{config, Server};

fn options(call_id: &str) -> Vec<u8> {
    format!(
        "OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK-{call_id}\r\n\
         From: <sip:b@127.0.0.1>;tag=1\r\nTo: <sip:a@127.0.0.1>\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn read_until(stream: &mut TcpStream, count: usize) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut text = String::new();
    let mut buffer = [0; 8192];
    while text.matches("SIP/2.0 ").count() < count {
        let n = stream.read(&mut buffer).unwrap();
        if n == 0 {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&buffer[..n]));
    }
    text
}

#[tokio::test]
async fn messages_are_framed_whatever_the_segments() {
    let url = store::testing::sqlite_url();
    let server = Server::start(&config(&url, ""));
    let mut stream = TcpStream::connect(server.sip_tcp.unwrap()).unwrap();
    stream.set_nodelay(true).unwrap();
    for byte in options("trickle") {
        stream.write_all(&[byte]).unwrap();
    }
    let first = read_until(&mut stream, 1);
    assert!(
        first.starts_with("SIP/2.0 200 OK") && first.contains("Call-ID: trickle"),
        "{first}"
    );
    let mut two = options("one");
    two.extend(options("two"));
    stream.write_all(&two).unwrap();
    let both = read_until(&mut stream, 2);
    assert!(
        both.contains("Call-ID: one") && both.contains("Call-ID: two"),
        "{both}"
    );

    // A Content-Length that cannot be followed: 400, then the connection closes.
    let mut broken = TcpStream::connect(server.sip_tcp.unwrap()).unwrap();
    broken
        .write_all(
            &String::from_utf8(options("bad"))
                .unwrap()
                .replace("Content-Length: 0", "Content-Length: -5")
                .into_bytes(),
        )
        .unwrap();
    let answer = read_until(&mut broken, 1);
    assert!(answer.starts_with("SIP/2.0 400"), "{answer}");
    let mut rest = Vec::new();
    assert_eq!(broken.read_to_end(&mut rest).unwrap(), 0, "closed");
    drop(server);
    store::testing::discard(&url).await;
}

#[tokio::test]
async fn udp_answers_leave_from_the_socket_the_request_reached() {
    let url = store::testing::sqlite_url();
    let two = [(
        "udp = [\"127.0.0.1:0\"]",
        "udp = [\"127.0.0.1:0\", \"127.0.0.2:0\"]",
    )];
    let server = Server::start(&common::config_with(&url, &two));
    assert_eq!(server.sip_udp_all.len(), 2);
    let second = server.sip_udp_all[1];
    let me = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let request = String::from_utf8(options("which-socket")).unwrap().replace(
        "SIP/2.0/TCP 127.0.0.1:9",
        &format!("SIP/2.0/UDP {};rport", me.local_addr().unwrap()),
    );
    me.send_to(request.as_bytes(), second).unwrap();
    me.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buffer = [0; 4096];
    let (n, from) = me.recv_from(&mut buffer).unwrap();
    assert!(buffer[..n].starts_with(b"SIP/2.0 200"));
    assert_eq!(
        from, second,
        "answered from the address the request was sent to"
    );
    drop(server);
    store::testing::discard(&url).await;
}
