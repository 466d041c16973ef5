//! Reloading the dialplan (API or SIGHUP): new calls take the new one, and a dialplan with
//! problems is refused while the one in use stays.

mod common;

use common::{config_with, Server, SIP_TO_LOOPBACK};
use serde_json::json;

/// How a 1-second test call from callbackd to itself ended: `local_hangup` when the
/// answering side kept the call (the default dialplan waits for keys), `remote_hangup` when
/// its dialplan hung up first.
fn call_self(server: &Server) -> String {
    let me = server.sip_udp.unwrap();
    let r = server.post(
        "/api/v1/test-calls",
        &json!({"to": format!("sip:ivr@{me}"), "hold_seconds": 1}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["ended"].as_str().unwrap().to_owned()
}

#[test]
fn new_calls_take_a_reloaded_dialplan_and_a_bad_one_is_refused() {
    let dialplan =
        std::env::temp_dir().join(format!("dialplan-{:016x}.toml", rand::random::<u64>()));
    std::fs::copy("dialplans/default.toml", &dialplan).unwrap();
    let url = store::testing::sqlite_url();
    let line = format!("dialplan = \"{}\"", dialplan.display());
    let server = Server::start(&config_with(
        &url,
        &[
            ("dialplan = \"dialplans/default.toml\"", &line),
            SIP_TO_LOOPBACK,
        ],
    ));
    assert_eq!(call_self(&server), "local_hangup");

    std::fs::write(
        &dialplan,
        "[entries]\nself_service = \"start\"\n\n[nodes.start]\nkind = \"play\"\nprompts = [\"welcome\"]\nnext = \"nowhere\"\n",
    )
    .unwrap();
    let r = server.post("/api/v1/dialplan/reload", &json!({}));
    assert_eq!(r.status, 422, "{:?}", r.body);
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "{}:4:1: there is no node `nowhere`",
            dialplan.display()
        )),
        "{message}"
    );
    assert_eq!(call_self(&server), "local_hangup", "the old dialplan stays");

    std::fs::write(
        &dialplan,
        "[entries]\nself_service = \"bye\"\n\n[nodes.bye]\nkind = \"hangup\"\n",
    )
    .unwrap();
    let r = server.post("/api/v1/dialplan/reload", &json!({}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.body["reloaded"]
        .as_str()
        .unwrap()
        .ends_with("1 entries, 1 nodes"));
    assert_eq!(
        call_self(&server),
        "remote_hangup",
        "new calls take the new one"
    );

    // SIGHUP: back to the default.
    std::fs::copy("dialplans/default.toml", &dialplan).unwrap();
    let hangup = std::process::Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hangup.success());
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(call_self(&server), "local_hangup");
    std::fs::remove_file(&dialplan).ok();
}
