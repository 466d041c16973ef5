//! Attacks on the HTTP side, against the built callbackd over real sockets (issue 17,
//! findings 8, 9 and 14): idle connections by the thousand, a chat client opening every
//! conversation or writing one without end, pages from other sites starting conversations,
//! DNS rebinding, and an API left without a token. Each is refused while others are served,
//! and calls keep their RTP ports.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{config_with, Server};
use serde_json::json;

fn server(extra: &[(&str, &str)]) -> Server {
    let url = store::testing::sqlite_url();
    let mut replacements = vec![("\nenabled = true", "\nenabled = false")];
    replacements.extend_from_slice(extra);
    Server::start(&config_with(&url, &replacements))
}

fn open_files(server: &Server) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", server.child.id()))
        .unwrap()
        .count()
}

/// Whether the server has closed `stream` (within a moment).
fn closed(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut byte = [0; 1];
    matches!(stream.read(&mut byte), Ok(0))
        || matches!(stream.read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
}

// Regression: 1,000 idle connections took the file descriptors; then every call got 503 (no
// RTP port could open) and the SIP accept loop spun logging errors (finding 8).
#[test]
fn idle_connections_are_capped_per_address_and_closed_while_calls_and_others_are_served() {
    let server = server(&[]);
    let before = open_files(&server);
    let mut idle: Vec<TcpStream> = (0..1000)
        .filter_map(|_| TcpStream::connect(server.addr).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let kept = idle.iter_mut().map(closed).filter(|c| !c).count();
    assert_eq!(kept, 64, "api.max_connections_per_address");
    assert!(
        open_files(&server) < before + 100,
        "{} files open, {before} before",
        open_files(&server)
    );
    // Another address is answered, and a call still gets its RTP port.
    let mut other = common::connect_from("127.0.0.2", server.addr).unwrap();
    write!(
        other,
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        server.addr
    )
    .unwrap();
    let mut answer = String::new();
    other.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (ok, failed, out) = common::run_sipp(server.sip_udp.unwrap(), "uac_basic.xml", 3, &[]);
    assert_eq!((ok, failed), (3, 0), "{out}");
    // A connection that never sends its request is closed after 10 s.
    let started = Instant::now();
    while idle.iter_mut().any(|s| !closed(s)) {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "idle connections left open"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn start_chat(server: &Server, from: &str) -> (u16, serde_json::Value) {
    let mut stream = common::connect_from(from, server.addr).unwrap();
    write!(
        stream,
        "POST /api/v1/chat/sessions HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: 2\r\nConnection: close\r\n\r\n{{}}",
        server.addr
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or_default())
}

// Regression: one client opened all 10,000 conversations in 2.6 s, and everyone else got 503
// for 30 minutes (finding 9).
#[test]
fn one_address_holds_only_its_share_of_conversations() {
    let server = server(&[]);
    let mut opened = 0;
    for _ in 0..100 {
        let (status, body) = start_chat(&server, "127.0.0.1");
        match status {
            201 => opened += 1,
            429 => assert_eq!(body["error"]["code"], "too_many_chats"),
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(opened, 20, "chat.sessions_per_address");
    let (status, _) = start_chat(&server, "127.0.0.2");
    assert_eq!(status, 201, "another address still chats");
}

// Regression: a conversation's transcript grew without bound: 51,191 messages took the process
// from 24 MB to 255 MB, which it never gave back (finding 9).
#[test]
fn a_conversation_takes_so_many_messages_and_memory_comes_back() {
    let server = server(&[("messages_per_minute = 30", "messages_per_minute = 100000")]);
    let chat = server.post("/api/v1/chat/sessions", &json!({})).body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = common::rss_kib(&server);
    let text = "x".repeat(999);
    let mut taken = 0;
    for _ in 0..1000 {
        let r = server.post(
            &format!("/api/v1/chat/sessions/{chat}/messages"),
            &json!({ "text": text }),
        );
        match r.status {
            200 => taken += 1,
            413 => assert_eq!(r.body["error"]["code"], "conversation_too_long"),
            other => panic!("{other}: {:?}", r.body),
        }
    }
    assert_eq!(taken, 65, "64 KiB of text in all");
    let after = common::rss_kib(&server);
    assert!(
        after < before + before / 10,
        "memory {before} KiB before, {after} KiB after"
    );
}

#[test]
fn one_address_sends_so_many_messages_a_minute() {
    let server = server(&[]);
    let chat = server.post("/api/v1/chat/sessions", &json!({})).body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let statuses: Vec<u16> = (0..40)
        .map(|_| {
            server
                .post(
                    &format!("/api/v1/chat/sessions/{chat}/messages"),
                    &json!({"text": "hello"}),
                )
                .status
        })
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 30);
    assert!(statuses[30..].iter().all(|s| *s == 429), "{statuses:?}");
}

// Regression: starting a conversation needed no body, so any web page could start them
// cross-site; the API did not check Host, so DNS rebinding reached it; the pages had no CSP
// (findings 9 and 14).
#[test]
fn other_sites_and_other_host_names_are_refused() {
    let server = server(&[(
        "allowed_origins = []",
        "allowed_origins = [\"https://shop.example\"]",
    )]);
    let post = |headers: &[(&str, &str)], body: &str| {
        common::request(
            server.addr,
            "POST",
            "/api/v1/chat/sessions",
            headers,
            Some(body),
        )
        .unwrap()
    };
    let json = ("Content-Type", "application/json");
    // A plain form post (what a page elsewhere can send without asking) starts nothing.
    let mut stream = TcpStream::connect(server.addr).unwrap();
    write!(
        stream,
        "POST /api/v1/chat/sessions HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: 3\r\nConnection: close\r\n\r\na=b",
        server.addr
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 415"), "{answer}");
    // A page elsewhere is refused; the allowed one gets its CORS answer.
    let evil = post(&[json, ("Origin", "https://evil.example")], "{}");
    assert_eq!(evil.status, 403, "{:?}", evil.body);
    let shop = post(&[json, ("Origin", "https://shop.example")], "{}");
    assert_eq!(shop.status, 201, "{:?}", shop.body);
    assert_eq!(
        shop.header("access-control-allow-origin"),
        Some("https://shop.example")
    );
    // The same origin (the widget on callbackd's own page) is fine.
    let same = post(
        &[json, ("Origin", &format!("http://{}", server.addr))],
        "{}",
    );
    assert_eq!(same.status, 201);
    // An API write from another site is refused even with the token.
    let bearer = format!("Bearer {}", server.token);
    let r = common::request(
        server.addr,
        "POST",
        "/api/v1/callbacks",
        &[
            json,
            ("Authorization", &bearer),
            ("Origin", "https://shop.example"),
        ],
        Some(r#"{"queue": "support", "address": "+12125550100"}"#),
    )
    .unwrap();
    assert_eq!(r.status, 403);
    // DNS rebinding: a name that is not ours.
    let mut stream = TcpStream::connect(server.addr).unwrap();
    write!(stream, "GET /api/v1/queues HTTP/1.1\r\nHost: evil.example:8080\r\nAuthorization: {bearer}\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 421"), "{answer}");
}

// Regression: without a configured token the API had none at all (finding 14).
#[test]
fn without_a_configured_token_one_is_made_at_first_start_and_required() {
    let url = store::testing::sqlite_url();
    let config = config_with(&url, &[]);
    let first = Server::start_without_token(&config);
    let token = first.token.clone();
    assert_eq!(token.len(), 48, "the token printed at first start");
    let r = common::request(first.addr, "GET", "/api/v1/queues", &[], None).unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(first.get("/api/v1/queues").status, 200);
    drop(first);
    // The next start keeps it, and `callbackd token` tells it.
    let second = Server::start_without_token(&config);
    assert_eq!(second.token, token, "the same, from `callbackd token`");
    let bearer = format!("Bearer {token}");
    let r = common::request(
        second.addr,
        "GET",
        "/api/v1/queues",
        &[("Authorization", &bearer)],
        None,
    )
    .unwrap();
    assert_eq!(r.status, 200);
}
