//! The outbound dialer with real peers on loopback: agents and customers are SIPp instances
//! (tests/sipp/uas_*.xml) or callbackd itself, callbacks and agents are made through the API,
//! and the tests check what an operator would: attempts, states, histories and the audio.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{config_with, far_end, far_end_for, finished_cleanly, Server};
use serde_json::{json, Value};

/// callbackd with callbacks to SIP addresses on loopback allowed and short dialer waits.
fn dialer_config(url: &str, confirm: &str) -> PathBuf {
    dialer_config_with(url, confirm, &[])
}

/// The same, with more replacements.
fn dialer_config_with(url: &str, confirm: &str, extra: &[(&str, &str)]) -> PathBuf {
    let confirm = format!("confirm_timeout = \"{confirm}\"");
    let mut replacements = vec![
        (
            "# sip_domains = [\"pbx.example.com\"]",
            "sip_domains = [\"127.0.0.1\"]",
        ),
        ("wrap_up = \"10s\"", "wrap_up = \"1s\""),
        (
            "agent_ring_timeout = \"20s\"",
            "agent_ring_timeout = \"2s\"",
        ),
        (
            "customer_ring_timeout = \"30s\"",
            "customer_ring_timeout = \"3s\"",
        ),
        ("confirm_timeout = \"10s\"", confirm.as_str()),
    ];
    replacements.extend_from_slice(extra);
    config_with(url, &replacements)
}

/// A callback to a SIPp customer who answers, presses `keys` as tones 1 s later and hangs
/// up `talk_ms` after that, with callbackd itself as the ready agent "ada" (its answering
/// side logs the keys it hears), run to completion.
struct CallThrough {
    server: Server,
    dir: PathBuf,
    log: PathBuf,
    /// callbackd's SIP address (the agent's calls go there) and the customer's port.
    me: std::net::SocketAddr,
    port: u16,
    /// The node's sockets before the calls.
    sockets: u64,
    /// The callback as it ended.
    cb: Value,
}

fn call_through(extra: &[(&str, &str)], keys: &str, talk_ms: &str) -> CallThrough {
    let dir = temp_dir("call-through");
    let capture = dir.join("keys.pcap");
    std::fs::write(
        &capture,
        common::in_band_capture(keys, media::g711::Law::Mu),
    )
    .unwrap();
    let customer = common::filled_scenario(
        &dir,
        "uas_customer.xml",
        &[
            ("PCAP_FILE", &capture.display().to_string()),
            ("TALK_MS", talk_ms),
        ],
    );
    let (sipp, port) = far_end(&customer);
    let url = store::testing::sqlite_url();
    let log = dir.join("callbackd.log");
    let server = Server::start_logging(&dialer_config_with(&url, "10s", extra), &log);
    let me = server.sip_udp.unwrap();
    let sockets = at_rest(&server);
    ready_agent(&server, "ada", &format!("sip:agent@{me}"));
    let id = callback_to(&server, &format!("sip:customer@127.0.0.1:{port}"));
    let cb = wait_for(
        &server,
        &format!("/api/v1/callbacks/{id}"),
        Duration::from_secs(30),
        |cb| cb["state"] == "completed" && finished_attempts(cb),
    );
    let (ok, out) = finished_cleanly(sipp);
    assert!(ok, "the customer's call ran its course: {out}");
    CallThrough {
        server,
        dir,
        log,
        me,
        port,
        sockets,
        cb,
    }
}

impl CallThrough {
    /// Stops callbackd; its log.
    fn finish(self) -> String {
        drop(self.server);
        let text = std::fs::read_to_string(&self.log).unwrap();
        std::fs::remove_dir_all(&self.dir).unwrap();
        text
    }
}

/// The keys the agent's side (the first call callbackd answered) heard, in a callbackd log.
fn heard_by_agent(log: &str) -> String {
    let agent_side = common::first_incoming_call(log).expect("the agent's call reached callbackd");
    common::keys_logged(log)
        .into_iter()
        .filter(|k| k.call == agent_side)
        .map(|k| k.key)
        .collect()
}

/// An agent with the billing skill at `address`, logged in and ready.
fn ready_agent(server: &Server, id: &str, address: &str) {
    let r = server.post(
        "/api/v1/agents",
        &json!({"id": id, "name": format!("Agent {id}"), "skills": ["billing"], "address": address}),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["state"], "logged_out");
    set_state(server, id, json!({"state": "ready"}));
}

fn set_state(server: &Server, id: &str, body: Value) -> common::Response {
    server.request(
        "PUT",
        &format!("/api/v1/agents/{id}/state"),
        &[],
        Some(&body),
    )
}

/// A billing callback to `address`, due now; its confirmation ID.
fn callback_to(server: &Server, address: &str) -> String {
    let r = server.post(
        "/api/v1/callbacks",
        &json!({"queue": "support", "skill": "billing", "media": "sip", "address": address,
                "customer_name": "Ada"}),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body["confirmation_id"].as_str().unwrap().to_owned()
}

/// Whether the node holds nothing for calls.
fn idle(status: &Value) -> bool {
    ["calls", "dialogs", "bridges", "rtp_ports"]
        .iter()
        .all(|gauge| status["sip"][gauge] == 0)
        && status["dialer"]["attempts"] == 0
}

/// The node's sockets now, once it holds nothing for calls (waiting for that).
fn at_rest(server: &Server) -> u64 {
    let status = wait_for(server, "/api/v1/status", Duration::from_secs(10), idle);
    status["sockets"].as_u64().unwrap()
}

/// Waits until the node holds nothing for calls and every socket the calls took is closed
/// again (`sockets`, as at rest before them); a socket still open after 10 s fails.
fn back_at_rest(server: &Server, sockets: u64) {
    wait_for(server, "/api/v1/status", Duration::from_secs(10), |s| {
        idle(s) && s["sockets"] == sockets
    });
}

/// Polls `what` until `done` holds of it, or fails after `limit` saying what was last seen.
fn wait_for(server: &Server, what: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let body = server.get(what).body;
        if done(&body) {
            return body;
        }
        assert!(start.elapsed() < limit, "{what} after {limit:?}: {body:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn finished_attempts(cb: &Value) -> bool {
    cb["dial_attempts"]
        .as_array()
        .is_some_and(|a| !a.is_empty() && a.iter().all(|a| !a["outcome"].is_null()))
}

fn agent_steps(server: &Server, id: &str) -> Vec<String> {
    server.get(&format!("/api/v1/agents/{id}")).body["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["to"].as_str().unwrap().to_owned())
        .collect()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("callbackd-{name}-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_ready_agent_is_connected_to_the_customer_who_presses_1_and_the_audio_crosses() {
    // The customer presses 1 as a tone to be connected, then 2580 two seconds later: those
    // keys can only reach the agent's side through the bridge.
    let call = call_through(&[], "1,,2580", "5000");
    let cb = &call.cb;
    let attempts = cb["dial_attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["outcome"], "connected");
    assert_eq!(attempts[0]["agent_id"], "ada");
    assert_eq!(attempts[0]["number"], 1);
    let actions: Vec<&str> = cb["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["created", "dial", "connected", "attempt"]);
    assert_eq!(cb["history"][3]["channel"], "dialer");
    // The agent took the call, wrapped up, and is ready for the next.
    wait_for(
        &call.server,
        "/api/v1/agents/ada",
        Duration::from_secs(10),
        |a| a["state"] == "ready",
    );
    // The customer hung up: both calls, their ports and the bridge are gone.
    back_at_rest(&call.server, call.sockets);
    // Both calls placed for the attempt are recorded with it: the agent's, and the customer's.
    let records = wait_for(
        &call.server,
        "/api/v1/calls",
        Duration::from_secs(10),
        |r| r["calls"].as_array().is_some_and(|c| c.len() == 3),
    );
    let placed: Vec<&Value> = records["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["direction"] == "outbound")
        .collect();
    assert_eq!(placed.len(), 2, "{records}");
    assert!(
        placed.iter().all(|r| r["attempt_id"] == attempts[0]["id"]),
        "{records} {attempts:?}"
    );
    assert_eq!(placed[1]["to"], "customer", "{records}");
    assert_eq!(
        agent_steps(&call.server, "ada"),
        [
            "logged_out",
            "ready",
            "reserved",
            "on_call",
            "wrap_up",
            "ready"
        ]
    );
    let heard = heard_by_agent(&call.finish());
    // The tail of the 1 that connected them may cross too: it is heard as it ends.
    assert!(
        heard == "2580" || heard == "12580",
        "the customer's keys crossed the bridge: {heard}"
    );
}

#[test]
fn the_agent_hanging_up_ends_the_customers_call_and_the_agents_audio_reaches_the_customer() {
    // The agent is SIPp: it answers, plays 2580 as tones 2 s later, and hangs up with its own
    // BYE. The customer is callbackd itself, whose answering side logs the keys it hears:
    // they can only come from the agent across the bridge. No whisper and no greeting, so
    // the customer is bridged as soon as they answer.
    let dir = temp_dir("agent-hangs-up");
    let capture = dir.join("keys.pcap");
    std::fs::write(
        &capture,
        common::in_band_capture(",2580", media::g711::Law::Mu),
    )
    .unwrap();
    let agent_scenario = common::filled_scenario(
        &dir,
        "uas_customer.xml",
        &[
            ("PCAP_FILE", &capture.display().to_string()),
            ("TALK_MS", "3000"),
        ],
    );
    let (agent, agent_port) = far_end(&agent_scenario);
    let url = store::testing::sqlite_url();
    let log = dir.join("callbackd.log");
    let config = dialer_config_with(
        &url,
        "10s",
        &[
            ("whisper = true", "whisper = false"),
            ("greeting = true", "greeting = false"),
        ],
    );
    let server = Server::start_logging(&config, &log);
    let me = server.sip_udp.unwrap();
    let sockets = at_rest(&server);
    ready_agent(&server, "al", &format!("sip:al@127.0.0.1:{agent_port}"));
    let id = callback_to(&server, &format!("sip:customer@{me}"));
    let cb = wait_for(
        &server,
        &format!("/api/v1/callbacks/{id}"),
        Duration::from_secs(30),
        |cb| cb["state"] == "completed" && finished_attempts(cb),
    );
    assert_eq!(cb["dial_attempts"][0]["outcome"], "connected", "{cb:#}");
    let (ok, out) = finished_cleanly(agent);
    assert!(ok, "the agent's call ran its course: {out}");
    // The agent hung up: the customer's call went with it, and everything is given back.
    back_at_rest(&server, sockets);
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let customer_side =
        common::first_incoming_call(&text).expect("the customer's call reached callbackd");
    let heard: String = common::keys_logged(&text)
        .into_iter()
        .filter(|k| k.call == customer_side)
        .map(|k| k.key)
        .collect();
    assert_eq!(heard, "2580", "the agent's keys crossed the bridge: {text}");
}

#[test]
fn a_busy_customer_is_retried_after_the_backoff_and_the_agent_is_told() {
    let (agent, agent_port) = far_end("uas_answer.xml");
    let (customer, customer_port) = far_end("uas_busy.xml");
    let url = store::testing::sqlite_url();
    let dir = temp_dir("busy");
    let log = dir.join("callbackd.log");
    let server = Server::start_logging(&dialer_config(&url, "10s"), &log);
    let sockets = at_rest(&server);
    ready_agent(&server, "bo", &format!("sip:bo@127.0.0.1:{agent_port}"));
    let id = callback_to(&server, &format!("sip:customer@127.0.0.1:{customer_port}"));
    let cb = wait_for(
        &server,
        &format!("/api/v1/callbacks/{id}"),
        Duration::from_secs(30),
        finished_attempts,
    );
    assert_eq!(cb["dial_attempts"][0]["outcome"], "busy");
    assert_eq!(cb["dial_attempts"][0]["sip_status"], 486);
    assert_eq!(
        (cb["state"].as_str(), cb["attempts"].as_u64()),
        (Some("queued"), Some(1))
    );
    let retry =
        chrono::DateTime::parse_from_rfc3339(cb["next_attempt_at"].as_str().unwrap()).unwrap();
    let ended =
        chrono::DateTime::parse_from_rfc3339(cb["dial_attempts"][0]["ended_at"].as_str().unwrap())
            .unwrap();
    assert_eq!(
        retry - ended,
        chrono::Duration::minutes(5),
        "the queue's first backoff"
    );
    // The agent heard that the customer was not reached, and was hung up on.
    let (ok, out) = finished_cleanly(agent);
    assert!(ok, "the agent's call got callbackd's BYE: {out}");
    let (ok, out) = finished_cleanly(customer);
    assert!(ok, "{out}");
    wait_for(&server, "/api/v1/agents/bo", Duration::from_secs(10), |a| {
        a["state"] == "ready"
    });
    // callbackd hung up on the agent: everything the calls took is given back.
    back_at_rest(&server, sockets);
    assert!(agent_steps(&server, "bo").contains(&"wrap_up".to_owned()));
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        text.lines().any(
            |l| l.contains("told the other side was not reached") && l.contains("how=Finished")
        ),
        "the agent heard \"the customer could not be reached\" to its end: {text}"
    );
}

#[test]
fn an_agent_who_does_not_answer_is_set_not_ready_and_the_customer_keeps_the_place() {
    let (agent, agent_port) = far_end("uas_no_answer.xml");
    let url = store::testing::sqlite_url();
    let server = Server::start(&dialer_config(&url, "10s"));
    ready_agent(&server, "cy", &format!("sip:cy@127.0.0.1:{agent_port}"));
    let id = callback_to(&server, "sip:customer@127.0.0.1:9");
    let cb = wait_for(
        &server,
        &format!("/api/v1/callbacks/{id}"),
        Duration::from_secs(20),
        finished_attempts,
    );
    assert_eq!(cb["dial_attempts"][0]["outcome"], "agent_no_answer");
    assert_eq!(
        (cb["state"].as_str(), cb["attempts"].as_u64()),
        (Some("queued"), Some(0)),
        "an attempt the agent missed does not count against the customer"
    );
    let created = server.get(&format!("/api/v1/callbacks/{id}")).body;
    assert_eq!(
        created["enqueued_at"], cb["enqueued_at"],
        "the place in line is kept"
    );
    let agent_now = wait_for(&server, "/api/v1/agents/cy", Duration::from_secs(5), |a| {
        a["state"] == "not_ready"
    });
    assert_eq!(
        agent_now["reason"], "missed",
        "not offered the next callback at once"
    );
    let (ok, out) = finished_cleanly(agent);
    assert!(ok, "the agent's phone got callbackd's CANCEL: {out}");
    // Nobody else is ready, so the callback waits, counted as not yet tried.
    std::thread::sleep(Duration::from_millis(1500));
    let cb = server.get(&format!("/api/v1/callbacks/{id}")).body;
    assert_eq!(
        (
            cb["state"].as_str(),
            cb["dial_attempts"].as_array().unwrap().len()
        ),
        (Some("queued"), 1)
    );
}

#[test]
fn a_customer_who_does_not_press_1_is_not_connected() {
    let (agent, agent_port) = far_end("uas_answer.xml");
    let (customer, customer_port) = far_end("uas_answer.xml");
    let url = store::testing::sqlite_url();
    let server = Server::start(&dialer_config(&url, "1s"));
    ready_agent(&server, "di", &format!("sip:di@127.0.0.1:{agent_port}"));
    let id = callback_to(&server, &format!("sip:customer@127.0.0.1:{customer_port}"));
    let cb = wait_for(
        &server,
        &format!("/api/v1/callbacks/{id}"),
        Duration::from_secs(30),
        finished_attempts,
    );
    assert_eq!(cb["dial_attempts"][0]["outcome"], "not_confirmed");
    assert_eq!(cb["state"], "queued");
    for (phone, who) in [(agent, "agent"), (customer, "customer")] {
        let (ok, out) = finished_cleanly(phone);
        assert!(ok, "the {who} got callbackd's BYE: {out}");
    }
}

#[test]
fn pausing_a_callback_while_the_customer_rings_hangs_up_both_calls() {
    change_while_the_customer_rings("pause", "paused");
}

#[test]
fn cancelling_a_callback_while_the_customer_rings_hangs_up_both_calls() {
    change_while_the_customer_rings("cancel", "cancelled");
}

/// A callback given `action` through the API while its customer's phone rings: both calls
/// are hung up, the attempt is aborted, and the callback is left `state`.
fn change_while_the_customer_rings(action: &str, state: &str) {
    let (agent, agent_port) = far_end("uas_answer.xml");
    let (customer, customer_port) = far_end("uas_no_answer.xml");
    let url = store::testing::sqlite_url();
    let config = config_with(
        &url,
        &[
            (
                "# sip_domains = [\"pbx.example.com\"]",
                "sip_domains = [\"127.0.0.1\"]",
            ),
            (
                "customer_ring_timeout = \"30s\"",
                "customer_ring_timeout = \"20s\"",
            ),
        ],
    );
    let dir = temp_dir(action);
    let log = dir.join("callbackd.log");
    let server = Server::start_logging(&config, &log);
    ready_agent(&server, "ed", &format!("sip:ed@127.0.0.1:{agent_port}"));
    let id = callback_to(&server, &format!("sip:customer@127.0.0.1:{customer_port}"));
    // The customer's phone rings once the whisper has played to the agent: the second call.
    let start = Instant::now();
    while std::fs::read_to_string(&log)
        .unwrap_or_default()
        .matches("call placed")
        .count()
        < 2
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the customer was never called"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    // The agent is on the call: operators cannot pull them off it.
    let r = set_state(&server, "ed", json!({"state": "ready"}));
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (409, Some("illegal_in_state"))
    );
    assert_eq!(server.get("/api/v1/agents/ed").body["state"], "on_call");
    let changed_at = Instant::now();
    let r = server.post(
        &format!("/api/v1/callbacks/{id}/modifications"),
        &json!({ "action": action }),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let cb = wait_for(
        &server,
        &format!("/api/v1/callbacks/{id}"),
        Duration::from_secs(10),
        finished_attempts,
    );
    assert!(
        changed_at.elapsed() < Duration::from_secs(3),
        "hung up within {:?}",
        changed_at.elapsed()
    );
    assert_eq!(cb["dial_attempts"][0]["outcome"], "aborted");
    assert_eq!(cb["state"], state, "the customer's choice stands");
    std::fs::remove_dir_all(&dir).unwrap();
    for (phone, who) in [(agent, "agent (BYE)"), (customer, "customer (CANCEL)")] {
        let (ok, out) = finished_cleanly(phone);
        assert!(ok, "the {who}: {out}");
    }
}

#[test]
fn agents_are_checked_and_only_operators_states_are_set_through_the_api() {
    let url = store::testing::sqlite_url();
    let server = Server::start(&config_with(&url, &[]));
    let r = server.post(
        "/api/v1/agents",
        &json!({"id": "fi", "name": "Fi", "skills": ["billing", {"name": "sales", "level": 3}], "address": "sip:1001@callbackd"}),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(
        r.body["skills"],
        json!([{"name": "billing"}, {"name": "sales", "level": 3}])
    );
    let again = server.post(
        "/api/v1/agents",
        &json!({"id": "fi", "name": "Fi", "skills": ["billing"], "address": "sip:1001@callbackd"}),
    );
    assert_eq!(
        (again.status, again.body["error"]["code"].as_str()),
        (409, Some("duplicate_agent"))
    );
    let bad = server.post(
        "/api/v1/agents",
        &json!({"id": "x", "name": "X", "skills": ["cooking"], "address": "sip:1@callbackd"}),
    );
    assert_eq!(bad.status, 422);
    assert!(bad.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("cooking"));
    let r = set_state(&server, "fi", json!({"state": "on_call"}));
    assert_eq!(r.status, 422, "on_call is the dialer's: {:?}", r.body);
    let r = set_state(
        &server,
        "fi",
        json!({"state": "not_ready", "reason": "training"}),
    );
    assert_eq!(
        (r.status, r.body["reason"].as_str()),
        (200, Some("training"))
    );
    let r = set_state(&server, "nobody", json!({"state": "ready"}));
    assert_eq!(r.status, 404);
    let r = set_state(&server, "fi", json!({"state": "asleep"}));
    assert_eq!(r.status, 422);
    let all = server.get("/api/v1/agents").body;
    assert_eq!(all["agents"][0]["state"], "not_ready");
    assert_eq!(agent_steps(&server, "fi"), ["logged_out", "not_ready"]);
}

/// The phone 1001 registers for `expires` seconds with callbackd at `target`; 0 removes all
/// its bindings (`Contact: *`).
fn register(target: std::net::SocketAddr, expires: u32) {
    let dir = temp_dir("register");
    let contact = "Contact: <sip:1001@[local_ip]:[local_port]>";
    let path = common::filled_scenario(
        &dir,
        "uac_register.xml",
        &[
            ("Expires: 120", &format!("Expires: {expires}")),
            (contact, if expires == 0 { "Contact: *" } else { contact }),
        ],
    );
    let out = std::process::Command::new(common::sipp())
        .args(["-sf", &path, &target.to_string(), "-i", "127.0.0.1"])
        .args(["-p", &common::free_port().to_string(), "-m", "1"])
        .args(["-nostdin", "-timeout", "20s", "-timeout_error"])
        .output()
        .expect("sipp runs");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn an_agents_phone_registering_logs_the_agent_in_and_unregistering_out() {
    let url = store::testing::sqlite_url();
    let server = Server::start(&config_with(
        &url,
        &[(
            "# 1001 = \"a long phone password\"",
            "1001 = \"phone-secret\"",
        )],
    ));
    let r = server.post(
        "/api/v1/agents",
        &json!({"id": "gu", "name": "Gu", "skills": ["billing"], "address": "sip:1001@callbackd"}),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    register(server.sip_udp.unwrap(), 120);
    wait_for(&server, "/api/v1/agents/gu", Duration::from_secs(5), |a| {
        a["state"] == "ready"
    });
    register(server.sip_udp.unwrap(), 0);
    wait_for(&server, "/api/v1/agents/gu", Duration::from_secs(5), |a| {
        a["state"] == "logged_out"
    });
    let history = server.get("/api/v1/agents/gu").body["history"].clone();
    assert_eq!(history[1]["actor"], "registrar");
    assert_eq!(
        agent_steps(&server, "gu"),
        ["logged_out", "ready", "logged_out"]
    );
}

#[test]
fn the_line_and_the_estimated_wait_are_shown_per_callback_and_per_skill() {
    // No dialer on this node, so nothing leaves the line while it is looked at.
    let url = store::testing::sqlite_url();
    let server = Server::start(&config_with(
        &url,
        &[
            ("enabled = true", "enabled = false"),
            (
                "# sip_domains = [\"pbx.example.com\"]",
                "sip_domains = [\"127.0.0.1\"]",
            ),
        ],
    ));
    let first = callback_to(&server, "sip:one@127.0.0.1:9");
    let second = callback_to(&server, "sip:two@127.0.0.1:9");
    let line = server.get(&format!("/api/v1/callbacks/{second}")).body["line"].clone();
    assert_eq!(
        line,
        json!({"position": 2, "estimated_wait_seconds": null}),
        "no agent logged in: no estimate"
    );
    ready_agent(&server, "ha", "sip:ha@127.0.0.1:9");
    // One agent ready, none measured: the queue's handle_time (5 minutes) stands.
    let line = server.get(&format!("/api/v1/callbacks/{first}")).body["line"].clone();
    assert_eq!(line, json!({"position": 1, "estimated_wait_seconds": 0}));
    let line = server.get(&format!("/api/v1/callbacks/{second}")).body["line"].clone();
    assert_eq!(line, json!({"position": 2, "estimated_wait_seconds": 300}));
    let queue = server.get("/api/v1/queues/support").body;
    assert_eq!(
        queue["lines"]["billing"],
        json!({"waiting": 2, "agents_ready": 1, "agents_busy": 0, "average_handle_seconds": 300,
               "new_arrival": {"position": 3, "estimated_wait_seconds": 600}})
    );
    assert_eq!(queue["lines"]["technical"]["waiting"], 0);
    let r = server.post(
        &format!("/api/v1/callbacks/{first}/modifications"),
        &json!({"action": "pause"}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        server.get(&format!("/api/v1/callbacks/{first}")).body["line"],
        Value::Null
    );
    let line = server.get(&format!("/api/v1/callbacks/{second}")).body["line"].clone();
    assert_eq!(
        line["position"], 1,
        "a paused callback leaves the line; resumed, it comes back to its place"
    );
}

#[test]
fn nothing_is_dialed_outside_the_calling_window_or_to_a_number_now_blocked() {
    let (mut agent, agent_port) = far_end("uas_answer.xml");
    let url = store::testing::sqlite_url();
    // Closed all week: the callback waits in line, never dialed, while an agent is ready.
    let closed = config_with(
        &url,
        &[
            (
                "# sip_domains = [\"pbx.example.com\"]",
                "sip_domains = [\"127.0.0.1\"]",
            ),
            (
                "calling_window = { all = \"00:00-24:00\" }",
                "calling_window = { all = \"closed\" }",
            ),
        ],
    );
    let server = Server::start(&closed);
    ready_agent(&server, "ix", &format!("sip:ix@127.0.0.1:{agent_port}"));
    let id = callback_to(&server, "sip:customer@127.0.0.1:9");
    std::thread::sleep(Duration::from_millis(2500));
    let cb = server.get(&format!("/api/v1/callbacks/{id}")).body;
    assert_eq!(
        (
            cb["state"].as_str(),
            cb["dial_attempts"].as_array().unwrap().len()
        ),
        (Some("queued"), 0)
    );
    assert_eq!(server.get("/api/v1/agents/ix").body["state"], "ready");
    drop(server);
    // Open again, but 127.0.0.1 is no longer an allowed SIP domain: the callback fails
    // without a call, and the agent is free at once.
    let server = Server::start(&config_with(&url, &[]));
    let cb = wait_for(
        &server,
        &format!("/api/v1/callbacks/{id}"),
        Duration::from_secs(10),
        finished_attempts,
    );
    assert_eq!(cb["dial_attempts"][0]["outcome"], "blocked");
    assert_eq!(cb["state"], "failed");
    assert_eq!(server.get("/api/v1/agents/ix").body["state"], "ready");
    agent.kill().ok();
    agent.wait().ok();
}

/// A caller (+12125550100) dials the queue entry (5000) of callbackd at `target`, says nothing
/// for `wait_ms` (so holds for an agent), presses `keys` as tones (see
/// [`common::in_band_capture`]) and hangs up `hang_up_ms` later; SIPp must see it through.
fn hold_in_queue(target: std::net::SocketAddr, keys: &str, wait_ms: u32, hang_up_ms: u32) {
    let dir = temp_dir("hold");
    let capture = dir.join("keys.pcap");
    std::fs::write(
        &capture,
        common::in_band_capture(keys, media::g711::Law::Mu),
    )
    .unwrap();
    let caller = common::filled_scenario(
        &dir,
        "uac_hold.xml",
        &[
            ("PCAP_FILE", &capture.display().to_string()),
            ("WAIT_MS", &wait_ms.to_string()),
            ("HANG_UP_MS", &hang_up_ms.to_string()),
            ("CALLER", "+12125550100"),
        ],
    );
    let out = std::process::Command::new(common::sipp())
        .args([
            "-sf",
            &caller,
            "-s",
            "5000",
            &target.to_string(),
            "-i",
            "127.0.0.1",
        ])
        .args([
            "-p",
            &common::free_port().to_string(),
            "-mp",
            &common::media_port().to_string(),
        ])
        .args(["-m", "1", "-nostdin", "-timeout", "60s", "-timeout_error"])
        .output()
        .expect("sipp runs");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The default configuration with the queue entry on 5000.
fn queue_entry_config(url: &str, extra: &[(&str, &str)]) -> PathBuf {
    let mut replacements = vec![(
        "# \"5001\" = \"queue_support\"",
        "\"5000\" = \"queue_support\"",
    )];
    replacements.extend_from_slice(extra);
    config_with(url, &replacements)
}

#[test]
fn a_caller_who_holds_is_connected_to_the_next_agent_and_the_audio_crosses() {
    // The caller dials the queue entry and says nothing: they hear where they stand and the
    // offer, then hold. The agent is callbackd itself (its answering side logs the keys it
    // hears); once connected, the caller's 2580 can only reach it across the bridge.
    let url = store::testing::sqlite_url();
    let dir = temp_dir("hold-log");
    let log = dir.join("callbackd.log");
    let config = queue_entry_config(&url, &[("wrap_up = \"10s\"", "wrap_up = \"1s\"")]);
    let server = Server::start_logging(&config, &log);
    let me = server.sip_udp.unwrap();
    let sockets = at_rest(&server);
    ready_agent(&server, "jo", &format!("sip:agent@{me}"));
    hold_in_queue(me, "2580", 17_000, 3_000);
    wait_for(&server, "/api/v1/agents/jo", Duration::from_secs(10), |a| {
        a["state"] == "ready"
    });
    assert_eq!(
        agent_steps(&server, "jo"),
        [
            "logged_out",
            "ready",
            "reserved",
            "on_call",
            "wrap_up",
            "ready"
        ]
    );
    back_at_rest(&server, sockets);
    let queue = server.get("/api/v1/queues/support").body;
    assert_eq!(
        queue["lines"]["billing"]["waiting"], 0,
        "the caller left the line"
    );
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(text.contains("caller holding for an agent"), "{text}");
    let incoming: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("incoming call"))
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("call=")))
        .collect();
    let agent_side = incoming.get(1).expect("the agent's call reached callbackd");
    let heard: String = common::keys_logged(&text)
        .into_iter()
        .filter(|k| k.call == *agent_side)
        .map(|k| k.key)
        .collect();
    assert_eq!(heard, "2580", "the caller's keys crossed the bridge");
}

#[test]
fn a_holding_caller_is_told_where_they_stand_every_hold_announcement() {
    // Nobody is logged in, so the caller holds (about 18 s of the 30 s they wait, after the
    // queue entry's prompts), told where they stand every 5 s. They send no audio meanwhile,
    // so the RTP timeout is lengthened past the call.
    let url = store::testing::sqlite_url();
    let dir = temp_dir("hold-announcements");
    let log = dir.join("callbackd.log");
    let config = queue_entry_config(
        &url,
        &[
            ("hold_announcement = \"45s\"", "hold_announcement = \"5s\""),
            ("rtp_timeout = \"30s\"", "rtp_timeout = \"60s\""),
        ],
    );
    let server = Server::start_logging(&config, &log);
    hold_in_queue(server.sip_udp.unwrap(), "", 30_000, 500);
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(text.contains("caller holding for an agent"), "{text}");
    let told = text
        .lines()
        .filter(|l| {
            l.contains("a holding caller is told where they stand") && l.contains("position=1")
        })
        .count();
    assert!(told >= 2, "told {told} times: {text}");
}

#[test]
fn a_holding_caller_who_presses_1_books_a_callback_keeping_their_place() {
    // Nobody is logged in, so the caller holds; 14 s in they press 1 (the offer), then 1
    // again (to be called at the number they call from).
    let url = store::testing::sqlite_url();
    let server = Server::start(&queue_entry_config(&url, &[]));
    let called = chrono::Utc::now();
    hold_in_queue(server.sip_udp.unwrap(), "1,,,,,1", 14_000, 12_000);
    let listed = wait_for(
        &server,
        "/api/v1/callbacks?queue=support",
        Duration::from_secs(10),
        |b| b["callbacks"].as_array().is_some_and(|c| c.len() == 1),
    );
    let cb = &listed["callbacks"][0];
    assert_eq!(
        (cb["source"].as_str(), cb["address"].as_str()),
        (Some("ivr"), Some("+12125550100"))
    );
    let enqueued =
        chrono::DateTime::parse_from_rfc3339(cb["enqueued_at"].as_str().unwrap()).unwrap();
    let created = chrono::DateTime::parse_from_rfc3339(cb["created_at"].as_str().unwrap()).unwrap();
    assert!(
        (enqueued.to_utc() - called).num_seconds().abs() <= 2 && created - enqueued >= chrono::Duration::seconds(10),
        "the callback keeps the time the caller called ({enqueued}), not when it was booked ({created})"
    );
    assert_eq!(
        server.get("/api/v1/queues/support").body["lines"]["billing"]["waiting"],
        1,
        "the callback took the caller's place; the caller left the line"
    );
}

#[test]
fn customer_first_calls_the_customer_then_connects_the_agent() {
    // The customer answers, presses 1, holds a moment while the agent is called (no whisper,
    // to keep it short), then presses 2580, which can only reach the agent across the bridge.
    let call = call_through(
        &[
            ("customer_first = false", "customer_first = true"),
            ("whisper = true", "whisper = false"),
        ],
        "1,,,,,,,2580",
        "10000",
    );
    assert_eq!(call.cb["dial_attempts"][0]["outcome"], "connected");
    wait_for(
        &call.server,
        "/api/v1/agents/ada",
        Duration::from_secs(10),
        |a| a["state"] == "ready",
    );
    let (me, port) = (call.me, call.port);
    let text = call.finish();
    let placed: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("call placed"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("destination="))
        })
        .collect();
    assert_eq!(
        placed,
        [format!("127.0.0.1:{port}"), me.to_string()],
        "the customer first, then the agent"
    );
    // Here the agent answers within a millisecond, so the tail of the 1 may cross too.
    let heard = heard_by_agent(&text);
    assert!(
        heard == "2580" || heard == "12580",
        "the customer's keys crossed the bridge: {heard}"
    );
}

#[test]
fn a_customer_who_declines_or_does_not_answer_is_recorded_as_such() {
    for (scenario_file, outcome, status) in [
        ("uas_decline.xml", "rejected", json!(603)),
        ("uas_no_answer.xml", "no_answer", Value::Null),
    ] {
        let (agent, agent_port) = far_end("uas_answer.xml");
        let (customer, customer_port) = far_end(scenario_file);
        let url = store::testing::sqlite_url();
        let server = Server::start(&dialer_config(&url, "10s"));
        ready_agent(&server, "lu", &format!("sip:lu@127.0.0.1:{agent_port}"));
        let id = callback_to(&server, &format!("sip:customer@127.0.0.1:{customer_port}"));
        let cb = wait_for(
            &server,
            &format!("/api/v1/callbacks/{id}"),
            Duration::from_secs(30),
            finished_attempts,
        );
        assert_eq!(
            (
                &cb["dial_attempts"][0]["outcome"],
                &cb["dial_attempts"][0]["sip_status"]
            ),
            (&json!(outcome), &status),
            "{scenario_file}"
        );
        assert_eq!(
            (cb["state"].as_str(), cb["attempts"].as_u64()),
            (Some("queued"), Some(1)),
            "retried later"
        );
        for (phone, who) in [(agent, "agent"), (customer, "customer")] {
            let (ok, out) = finished_cleanly(phone);
            assert!(
                ok,
                "{scenario_file}: the {who}'s call ran its course: {out}"
            );
        }
    }
}

#[test]
fn an_unreachable_customer_is_tried_up_to_max_attempts_then_the_callback_fails() {
    let (agent, agent_port) = far_end_for("uas_answer.xml", 2);
    let (customer, customer_port) = far_end_for("uas_unavailable.xml", 2);
    let url = store::testing::sqlite_url();
    let server = Server::start(&dialer_config_with(
        &url,
        "10s",
        &[
            ("max_attempts = 3", "max_attempts = 2"),
            (
                "retry_backoff = [\"5m\", \"15m\", \"1h\"]",
                "retry_backoff = [\"1s\"]",
            ),
        ],
    ));
    ready_agent(&server, "cy", &format!("sip:cy@127.0.0.1:{agent_port}"));
    let id = callback_to(&server, &format!("sip:customer@127.0.0.1:{customer_port}"));
    let cb = wait_for(
        &server,
        &format!("/api/v1/callbacks/{id}"),
        Duration::from_secs(40),
        |cb| cb["state"] == "failed" && finished_attempts(cb),
    );
    let attempts = cb["dial_attempts"].as_array().unwrap();
    let seen: Vec<(&Value, &Value)> = attempts
        .iter()
        .map(|a| (&a["outcome"], &a["sip_status"]))
        .collect();
    assert_eq!(
        seen,
        [(&json!("unreachable"), &json!(503)); 2],
        "two attempts, then no more: {cb:#}"
    );
    let time = |a: &Value, field: &str| {
        chrono::DateTime::parse_from_rfc3339(a[field].as_str().unwrap()).unwrap()
    };
    assert!(
        time(&attempts[1], "started_at") - time(&attempts[0], "ended_at")
            >= chrono::Duration::seconds(1),
        "the second after the backoff: {cb:#}"
    );
    assert_eq!(
        cb["history"].as_array().unwrap().last().unwrap()["to_state"],
        "failed"
    );
    for (phone, who) in [(agent, "agent"), (customer, "customer")] {
        let (ok, out) = finished_cleanly(phone);
        assert!(ok, "the {who}'s two calls ran their course: {out}");
    }
}

#[test]
fn a_new_number_given_between_attempts_is_the_one_dialed_next() {
    let dir = temp_dir("new-number");
    let silence = dir.join("silence.pcap");
    std::fs::write(&silence, common::in_band_capture("", media::g711::Law::Mu)).unwrap();
    let answers = common::filled_scenario(
        &dir,
        "uas_customer.xml",
        &[
            ("PCAP_FILE", &silence.display().to_string()),
            ("TALK_MS", "300"),
        ],
    );
    let (agent, agent_port) = far_end_for("uas_answer.xml", 2);
    let (old, old_port) = far_end("uas_unavailable.xml");
    let (new, new_port) = far_end(&answers);
    let url = store::testing::sqlite_url();
    let server = Server::start(&dialer_config_with(
        &url,
        "10s",
        &[
            ("greeting = true", "greeting = false"),
            (
                "retry_backoff = [\"5m\", \"15m\", \"1h\"]",
                "retry_backoff = [\"3s\"]",
            ),
        ],
    ));
    ready_agent(&server, "di", &format!("sip:di@127.0.0.1:{agent_port}"));
    let id = callback_to(&server, &format!("sip:customer@127.0.0.1:{old_port}"));
    let path = format!("/api/v1/callbacks/{id}");
    wait_for(&server, &path, Duration::from_secs(20), finished_attempts);
    // Between the attempts (the backoff is 3 s), the customer gives another number.
    let r = server.post(
        &format!("{path}/modifications"),
        &json!({"action": "change_address", "address": format!("sip:customer@127.0.0.1:{new_port}")}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let cb = wait_for(&server, &path, Duration::from_secs(30), |cb| {
        cb["state"] == "completed" && finished_attempts(cb)
    });
    let outcomes: Vec<&Value> = cb["dial_attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["outcome"])
        .collect();
    assert_eq!(
        outcomes,
        [&json!("unreachable"), &json!("connected")],
        "{cb:#}"
    );
    for (phone, who) in [(agent, "agent"), (old, "old number"), (new, "new number")] {
        let (ok, out) = finished_cleanly(phone);
        assert!(ok, "the {who}'s calls ran their course: {out}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

// Regression: with the dialer on and no trunk (the default configuration), each attempt on a
// callback to a number was recorded as `unreachable`, and after max_attempts the callback
// failed without a call ever placed.
#[test]
fn a_callback_nothing_can_reach_keeps_its_place_and_attempts_and_says_why() {
    let (agent, agent_port) = far_end("uas_answer.xml");
    let (customer, customer_port) = far_end("uas_unavailable.xml");
    let url = store::testing::sqlite_url();
    let dir = temp_dir("unroutable");
    let log = dir.join("callbackd.log");
    let server = Server::start_logging(&dialer_config(&url, "10s"), &log);
    let r = server.post(
        "/api/v1/callbacks",
        &json!({"queue": "support", "skill": "billing", "media": "voice",
                "address": "+12125550100"}),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let number = r.body["confirmation_id"].as_str().unwrap().to_owned();
    // Behind it in line, a customer the dialer can reach.
    let reachable = callback_to(&server, &format!("sip:customer@127.0.0.1:{customer_port}"));
    ready_agent(&server, "ida", &format!("sip:ida@127.0.0.1:{agent_port}"));
    wait_for(
        &server,
        &format!("/api/v1/callbacks/{reachable}"),
        Duration::from_secs(20),
        finished_attempts,
    );
    let cb = server.get(&format!("/api/v1/callbacks/{number}")).body;
    assert_eq!(cb["state"], "queued", "{cb:#}");
    assert_eq!(cb["attempts"], 0, "{cb:#}");
    assert_eq!(cb["dial_attempts"], json!([]), "{cb:#}");
    let reason = cb["unroutable"].as_str().unwrap_or_default();
    assert!(reason.contains("through a trunk"), "{cb:#}");
    let listed = server.get("/api/v1/callbacks?state=queued").body;
    assert_eq!(listed["callbacks"][0]["unroutable"], reason, "{listed:#}");
    // The one the dialer could reach is not marked.
    let other = server.get(&format!("/api/v1/callbacks/{reachable}")).body;
    assert!(other.get("unroutable").is_none(), "{other:#}");
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("the dialer is on, but no trunk is configured"),
        "start-up warns: {text}"
    );
    let _ = (finished_cleanly(agent), finished_cleanly(customer));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// [`common::filled_scenario`] with a check that the INVITE it receives comes from `from_user`.
fn expecting_caller_id(dir: &Path, name: &str, from_user: &str) -> String {
    let check = format!(
        "<recv request=\"INVITE\" crlf=\"true\">\n    <action>\n      <ereg regexp=\"From: &lt;sip:\\{from_user}@\" search_in=\"msg\" check_it=\"true\" assign_to=\"from\"/>\n    </action>\n  </recv>\n  <Reference variables=\"from\"/>"
    );
    common::filled_scenario(
        dir,
        name,
        &[("<recv request=\"INVITE\" crlf=\"true\"/>", &check)],
    )
}

#[test]
fn the_customer_sees_the_queues_caller_id_and_the_agent_the_global_one() {
    let dir = temp_dir("caller-id");
    let (agent, agent_port) = far_end(&expecting_caller_id(&dir, "uas_answer.xml", "+12125550000"));
    let (customer, customer_port) = far_end(&expecting_caller_id(
        &dir,
        "uas_unavailable.xml",
        "+12125550001",
    ));
    let url = store::testing::sqlite_url();
    let server = Server::start(&dialer_config_with(
        &url,
        "10s",
        &[
            (
                "# caller_id = \"+12125550000\"",
                "caller_id = \"+12125550000\"",
            ),
            (
                "# caller_id = \"+12125550001\"",
                "caller_id = \"+12125550001\"",
            ),
        ],
    ));
    ready_agent(&server, "cid", &format!("sip:cid@127.0.0.1:{agent_port}"));
    let id = callback_to(&server, &format!("sip:customer@127.0.0.1:{customer_port}"));
    wait_for(
        &server,
        &format!("/api/v1/callbacks/{id}"),
        Duration::from_secs(20),
        finished_attempts,
    );
    let (ok, out) = finished_cleanly(customer);
    assert!(
        ok,
        "the customer's INVITE came from the queue's number: {out}"
    );
    let (ok, out) = finished_cleanly(agent);
    assert!(ok, "the agent's INVITE came from sip.caller_id: {out}");
    std::fs::remove_dir_all(&dir).unwrap();
}
