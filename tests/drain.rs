//! Stopping a node without dropping its calls: the first SIGTERM drains it (new calls and
//! OPTIONS get 503, `/readyz` says draining, calls in progress go on), it exits 0 once they
//! are over, hangs up what is left after `sip.drain_timeout`, and stops at once on a second
//! signal.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::Duration;

use common::{config_with, exited, held_call_scenario, sipp_caller, Server};

/// A node with this drain time, and its configuration.
fn server(drain_timeout: &str) -> (Server, std::path::PathBuf) {
    let url = store::testing::sqlite_url();
    let config = config_with(
        &url,
        &[(
            "drain_timeout = \"5m\"",
            &format!("drain_timeout = \"{drain_timeout}\""),
        )],
    );
    (Server::start(&config), config)
}

fn signal(server: &Server, name: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{name}"), &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// The status line of the final answer to `request`, sent from a socket of its own.
fn final_answer(target: SocketAddr, request: impl Fn(SocketAddr) -> String) -> String {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let me = socket.local_addr().unwrap();
    socket.send_to(request(me).as_bytes(), target).unwrap();
    let mut buf = [0; 4096];
    loop {
        let (n, _) = socket.recv_from(&mut buf).expect("an answer");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let status = text.lines().next().unwrap_or_default().to_owned();
        if !status.starts_with("SIP/2.0 1") {
            return status;
        }
    }
}

fn invite(me: SocketAddr) -> String {
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n",
        ip = me.ip()
    );
    format!(
        "INVITE sip:5000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKdrain;rport\r\n\
         From: <sip:late@{me}>;tag=late\r\nTo: <sip:5000@127.0.0.1>\r\nCall-ID: late@{me}\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:late@{me}>\r\nMax-Forwards: 70\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

fn options(me: SocketAddr) -> String {
    format!(
        "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKprobe;rport\r\n\
         From: <sip:probe@{me}>;tag=probe\r\nTo: <sip:127.0.0.1>\r\nCall-ID: probe@{me}\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

/// An open board: `GET /api/v1/events`, read in the background until the server ends it.
fn open_board(server: &Server) -> std::thread::JoinHandle<()> {
    let mut stream = TcpStream::connect(server.addr).unwrap();
    write!(
        stream,
        "GET /api/v1/events HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Accept: text/event-stream\r\n\r\n",
        server.addr, server.token
    )
    .unwrap();
    std::thread::spawn(move || {
        let mut buf = [0; 4096];
        while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
    })
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("callbackd-{name}-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_draining_node_refuses_new_calls_and_probes_lets_its_call_finish_and_exits_0() {
    let dir = temp_dir("drain");
    let (mut server, config) = server("30s");
    let target = server.sip_udp.unwrap();
    assert_eq!(final_answer(target, options), "SIP/2.0 200 OK");
    assert_eq!(server.get("/readyz").status, 200);
    // An operator watches the drain on the board; it must not hold the stop open.
    let board = open_board(&server);
    let call = sipp_caller(target, &held_call_scenario(&dir, 3000));
    std::thread::sleep(Duration::from_secs(1));

    signal(&server, "TERM");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        final_answer(target, invite).starts_with("SIP/2.0 503"),
        "a new call is sent elsewhere"
    );
    assert!(
        final_answer(target, options).starts_with("SIP/2.0 503"),
        "a dispatcher probing with OPTIONS takes the node out"
    );
    let ready = server.get("/readyz");
    assert_eq!(ready.status, 503);
    assert_eq!(ready.body["status"], "draining");
    assert!(
        exited(&mut server.child, Duration::from_millis(500)).is_none(),
        "the node waits for its call"
    );

    let out = call.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the call in progress finished as the caller wished: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let status = exited(&mut server.child, Duration::from_secs(5))
        .expect("the node stops once its call is over, open board and all");
    assert!(status.success(), "{status:?}");
    board.join().unwrap();
    // The call that ended just before the stop was recorded before the store closed.
    let exported = common::cli(&config, &["calls", "export", "--format", "jsonl"]);
    let record: serde_json::Value = serde_json::from_str(exported.trim()).unwrap();
    assert_eq!(record["end_reason"], "remote_hangup", "{exported}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn calls_left_when_the_drain_time_runs_out_are_hung_up() {
    let (mut server, _) = server("1s");
    let target = server.sip_udp.unwrap();
    // This caller stays until callbackd hangs up, and answers its BYE.
    let call = sipp_caller(target, &common::sipp_scenario("uac_callbackd_hangs_up.xml"));
    std::thread::sleep(Duration::from_secs(1));
    signal(&server, "TERM");
    let out = call.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "callbackd hung up with a BYE: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let status = exited(&mut server.child, Duration::from_secs(5)).expect("the node stops");
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_second_signal_stops_the_node_at_once() {
    let dir = temp_dir("drain-twice");
    let (mut server, _) = server("60s");
    let target = server.sip_udp.unwrap();
    let mut call = sipp_caller(target, &held_call_scenario(&dir, 30_000));
    std::thread::sleep(Duration::from_secs(1));
    signal(&server, "TERM");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        exited(&mut server.child, Duration::ZERO).is_none(),
        "draining"
    );
    signal(&server, "INT");
    let status = exited(&mut server.child, Duration::from_secs(3)).expect("stopped at once");
    assert!(status.success(), "{status:?}");
    let _ = call.kill();
    let _ = call.wait();
    std::fs::remove_dir_all(&dir).unwrap();
}
