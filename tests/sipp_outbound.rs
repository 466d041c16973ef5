//! Calls callbackd places, answered by SIPp playing the far end (tests/sipp/uas_*.xml): a
//! phone that answers, a busy phone, and a trunk that demands digest authentication.

mod common;

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{config_with, Server};
use serde_json::json;

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// SIPp answering one call with `scenario` on a free port.
fn far_end(scenario: &str) -> (Child, u16) {
    let port = free_port();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(scenario);
    let child = Command::new("sipp")
        .arg("-sf")
        .arg(&path)
        .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-mp", &free_port().to_string()])
        .args(["-m", "1", "-nostdin", "-timeout", "30s", "-timeout_error"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("sipp is not installed ({e}): apt-get install sip-tester (scripts/test.sh installs it)"));
    std::thread::sleep(Duration::from_millis(300));
    (child, port)
}

fn finished_cleanly(child: Child) -> (bool, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn a_phone_answers_and_callbackd_hangs_up() {
    let (sipp, port) = far_end("uas_answer.xml");
    let url = store::testing::sqlite_url();
    let server = Server::start(&config_with(&url, &[]));
    let r = server.post(
        "/api/v1/test-calls",
        &json!({"to": format!("sip:1001@127.0.0.1:{port}"), "hold_seconds": 1}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body,
        json!({"answered": true, "status": null, "ended": "local_hangup"})
    );
    let (ok, out) = finished_cleanly(sipp);
    assert!(ok, "SIPp saw INVITE, ACK and BYE in order: {out}");
}

#[test]
fn a_busy_phone_fails_the_call_with_486() {
    let (sipp, port) = far_end("uas_busy.xml");
    let url = store::testing::sqlite_url();
    let server = Server::start(&config_with(&url, &[]));
    let r = server.post(
        "/api/v1/test-calls",
        &json!({"to": format!("sip:1001@127.0.0.1:{port}")}),
    );
    assert_eq!(
        r.body,
        json!({"answered": false, "status": 486, "ended": "failed"})
    );
    let (ok, out) = finished_cleanly(sipp);
    assert!(ok, "SIPp got the ACK for its 486: {out}");
}

#[test]
fn a_trunk_that_challenges_gets_digest_credentials() {
    let (sipp, port) = far_end("uas_trunk_challenge.xml");
    let url = store::testing::sqlite_url();
    let proxy = format!("t4 = \"5s\"\noutbound_proxy = \"127.0.0.1:{port}\"\ntrunk_username = \"callbackd\"\ntrunk_password = \"s3cret-trunk\"");
    let server = Server::start(&config_with(&url, &[("t4 = \"5s\"", &proxy)]));
    // The number goes to the trunk, whatever host the URI names.
    let r = server.post(
        "/api/v1/test-calls",
        &json!({"to": "sip:+12125550100@trunk.example", "hold_seconds": 1}),
    );
    assert_eq!(
        r.body,
        json!({"answered": true, "status": null, "ended": "local_hangup"}),
        "a 403 means the credentials were wrong"
    );
    let (ok, out) = finished_cleanly(sipp);
    assert!(ok, "{out}");
}

#[test]
fn test_calls_refuse_what_cannot_be_reached() {
    let url = store::testing::sqlite_url();
    let server = Server::start(&config_with(&url, &[]));
    let r = server.post(
        "/api/v1/test-calls",
        &json!({"to": "sip:1001@pbx.example.com"}),
    );
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (422, Some("invalid_input")),
        "no route without a proxy"
    );
    let r = server.post("/api/v1/test-calls", &json!({"to": "tel:+12125550100"}));
    assert_eq!(r.status, 422);
    let r = server.post(
        "/api/v1/test-calls",
        &json!({"to": "sip:1@127.0.0.1:9", "hold_seconds": 600}),
    );
    assert_eq!(r.status, 400);
}

#[test]
fn callbackd_registers_with_the_trunk_and_refreshes() {
    let (sipp, port) = far_end("uas_trunk_registrar.xml");
    let url = store::testing::sqlite_url();
    let trunk = format!(
        "t4 = \"5s\"\noutbound_proxy = \"127.0.0.1:{port}\"\ntrunk_domain = \"trunk.example\"\n\
         trunk_username = \"callbackd\"\ntrunk_password = \"s3cret-trunk\""
    );
    let server = Server::start(&config_with(&url, &[("t4 = \"5s\"", &trunk)]));
    let (ok, out) = finished_cleanly(sipp);
    assert!(
        ok,
        "the challenge answered, then the refresh in time: {out}"
    );
    drop(server);
}
