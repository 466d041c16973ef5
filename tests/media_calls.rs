//! Calls callbackd places to itself over SIP and RTP on loopback: what one leg sends, the
//! other hears.

mod common;

use common::{config_with, keys_logged, Server, SIP_TO_LOOPBACK};
use serde_json::json;

#[test]
fn keys_a_test_call_presses_arrive_on_the_answering_side_as_telephone_events() {
    let url = store::testing::sqlite_url();
    let log =
        std::env::temp_dir().join(format!("callbackd-keys-{:016x}.log", rand::random::<u64>()));
    let server = Server::start_logging(&config_with(&url, &[SIP_TO_LOOPBACK]), &log);
    let me = server.sip_udp.unwrap();
    let r = server.post(
        "/api/v1/test-calls",
        &json!({"to": format!("sip:ivr@{me}"), "hold_seconds": 2, "keys": "147#*D"}),
    );
    assert_eq!(
        r.body,
        json!({"answered": true, "status": null, "ended": "local_hangup"})
    );
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    let answering = common::first_incoming_call(&text).expect("the call came in");
    let heard = keys_logged(&text);
    let keys: String = heard.iter().map(|k| k.key).collect();
    assert_eq!(keys, "147#*D", "{heard:?}");
    assert!(
        heard
            .iter()
            .all(|k| k.source == "TelephoneEvent" && k.call == answering),
        "{heard:?}"
    );
}

#[test]
fn bad_keys_are_refused_before_any_call() {
    let url = store::testing::sqlite_url();
    let server = Server::start(&config_with(&url, &[SIP_TO_LOOPBACK]));
    let me = server.sip_udp.unwrap();
    for keys in ["12x", "1 2", &"1".repeat(33)] {
        let r = server.post(
            "/api/v1/test-calls",
            &json!({"to": format!("sip:ivr@{me}"), "keys": keys}),
        );
        assert_eq!(r.status, 400, "{keys}: {:?}", r.body);
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("keys"),
            "{:?}",
            r.body
        );
    }
}
