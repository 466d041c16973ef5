//! Calls callbackd places, answered by SIPp playing the far end (tests/sipp/uas_*.xml): a
//! phone that answers, a busy phone, and a trunk that demands digest authentication.

mod common;

use std::path::PathBuf;

use common::{config_with, far_end, finished_cleanly, Server, SIP_TO_LOOPBACK};
use serde_json::json;

#[test]
fn a_phone_answers_and_callbackd_hangs_up() {
    let (sipp, port) = far_end("uas_answer.xml");
    let url = store::testing::sqlite_url();
    let server = Server::start(&config_with(&url, &[SIP_TO_LOOPBACK]));
    let r = server.post(
        "/api/v1/test-calls",
        &json!({"to": format!("sip:phone@127.0.0.1:{port}"), "hold_seconds": 1}),
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
    let server = Server::start(&config_with(&url, &[SIP_TO_LOOPBACK]));
    let r = server.post(
        "/api/v1/test-calls",
        &json!({"to": format!("sip:phone@127.0.0.1:{port}")}),
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
    let proxy = format!("t4 = \"5s\"\noutbound_proxy = \"127.0.0.1:{port}\"\ntrunk_username = \"callbackd\"\ntrunk_password = \"s3cret-trunk\"\ncaller_id = \"+12125550000\"");
    let server = Server::start(&config_with(
        &url,
        &[
            ("t4 = \"5s\"", &proxy),
            (
                "# sip_domains = [\"pbx.example.com\"]",
                "sip_domains = [\"trunk.example\"]",
            ),
        ],
    ));
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
    let server = Server::start(&config_with(&url, &[SIP_TO_LOOPBACK]));
    let r = server.post("/api/v1/test-calls", &json!({"to": "sip:phone@localhost"}));
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (422, Some("blocked_by_policy")),
        "a host the dialing policy does not list: {:?}",
        r.body
    );
    // Regression: test calls went anywhere, past the dialing policy (issue 17, finding 13).
    for to in [
        "sip:+19005550100@127.0.0.1:9",
        "sip:%2B19005550100@127.0.0.1:9",
        "sip:0119005550100@127.0.0.1:9",
    ] {
        for body in [
            json!({"to": to}),
            json!({"to": "sip:a@127.0.0.1:9", "connect_to": to}),
        ] {
            let r = server.post("/api/v1/test-calls", &body);
            assert_eq!(r.status, 422, "{body}: {:?}", r.body);
        }
    }
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
         trunk_username = \"callbackd\"\ntrunk_password = \"s3cret-trunk\"\ncaller_id = \"+12125550000\""
    );
    let server = Server::start(&config_with(&url, &[("t4 = \"5s\"", &trunk)]));
    let (ok, out) = finished_cleanly(sipp);
    assert!(
        ok,
        "the challenge answered, then the refresh in time: {out}"
    );
    drop(server);
}

#[test]
fn a_connecting_test_call_whispers_then_bridges_and_the_audio_crosses_transcoded() {
    // The first call reaches SIPp, which answers in PCMA and, once the whisper has played and
    // the second call is bridged, presses keys as tones. The second call reaches callbackd
    // itself (in PCMU), whose answering side hears the tones: they crossed the bridge.
    let dir = std::env::temp_dir().join(format!("callbackd-bridge-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let capture = dir.join("keys.pcap");
    std::fs::write(
        &capture,
        common::in_band_capture("2580", media::g711::Law::A),
    )
    .unwrap();
    let template = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sipp/uas_answer_inband.xml"),
    )
    .unwrap();
    let scenario = dir.join("uas_answer_inband.xml");
    std::fs::write(
        &scenario,
        template.replace("PCAP_FILE", &capture.display().to_string()),
    )
    .unwrap();
    let (sipp, port) = far_end(&scenario.display().to_string());

    let url = store::testing::sqlite_url();
    let log = dir.join("callbackd.log");
    let server = Server::start_logging(&config_with(&url, &[SIP_TO_LOOPBACK]), &log);
    let me = server.sip_udp.unwrap();
    let r = server.post(
        "/api/v1/test-calls",
        &json!({
            "to": format!("sip:agent@127.0.0.1:{port}"),
            "whisper": ["whisper-callback-for", "1", "2"],
            "connect_to": format!("sip:customer@{me}"),
            "hold_seconds": 3,
        }),
    );
    assert_eq!(
        r.body,
        json!({"answered": true, "status": null, "ended": "local_hangup",
               "connected": {"answered": true, "status": null}})
    );
    let (ok, out) = finished_cleanly(sipp);
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(ok, "{out}");
    // The second call went out only once the whisper (about 1.9 s of prompts) had played.
    let when = |needle: &str| {
        let line = text.lines().find(|l| l.contains(needle)).expect(needle);
        chrono::DateTime::parse_from_rfc3339(line.split_whitespace().next().unwrap()).unwrap()
    };
    let waited = when("incoming call") - when("placed call answered");
    assert!(
        waited >= chrono::Duration::milliseconds(1500),
        "the second call came {waited} after the first was answered"
    );
    // The first leg hears SIPp's tones too; the answering side hears them through the bridge.
    let answering = common::first_incoming_call(&text).expect("the second call came in");
    let through: Vec<_> = common::keys_logged(&text)
        .into_iter()
        .filter(|k| k.call == answering)
        .collect();
    let keys: String = through.iter().map(|k| k.key).collect();
    assert_eq!(keys, "2580", "{through:?}");
    assert!(through.iter().all(|k| k.source == "InBand"), "{through:?}");
}

#[test]
fn a_whisper_naming_an_unknown_prompt_is_refused_before_any_call() {
    let url = store::testing::sqlite_url();
    let server = Server::start(&config_with(&url, &[SIP_TO_LOOPBACK]));
    let me = server.sip_udp.unwrap();
    let r = server.post(
        "/api/v1/test-calls",
        &json!({"to": format!("sip:a@{me}"), "whisper": ["no-such-prompt"]}),
    );
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no-such-prompt"),
        "{:?}",
        r.body
    );
}
