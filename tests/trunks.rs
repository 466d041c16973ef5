//! Several trunks, each played by SIPp: numbers routed by prefix and by queue, each trunk's
//! number format and caller ID as seen in the INVITE it receives, and credentials kept from
//! a challenger in another realm.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{config_with, far_end, far_end_for, finished_cleanly, Server, SIP_TO_LOOPBACK};
use serde_json::{json, Value};

/// uas_unavailable.xml, checking the INVITE's Request-URI user and From user against
/// regular expressions (in XML: `<` as `&lt;`).
fn trunk_scenario(dir: &Path, name: &str, request_user: &str, from_user: &str) -> String {
    let check = format!(
        "<recv request=\"INVITE\" crlf=\"true\">\n    <action>\n      \
         <ereg regexp=\"^INVITE sip:({request_user})@\" search_in=\"msg\" check_it=\"true\" assign_to=\"all,user\"/>\n      \
         <ereg regexp=\"From: &lt;sip:{from_user}@\" search_in=\"msg\" check_it=\"true\" assign_to=\"from\"/>\n    \
         </action>\n  </recv>\n  <Reference variables=\"all,user,from\"/>"
    );
    let text = std::fs::read_to_string(common::sipp_scenario("uas_unavailable.xml"))
        .unwrap()
        .replace("<recv request=\"INVITE\" crlf=\"true\"/>", &check);
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn wait_for_attempt(server: &Server, id: &str) -> Value {
    let start = Instant::now();
    loop {
        let cb = server.get(&format!("/api/v1/callbacks/{id}")).body;
        let done = cb["dial_attempts"]
            .as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(|a| !a["outcome"].is_null()));
        if done {
            return cb;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{cb:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn numbers_go_to_the_trunk_their_prefix_and_queue_choose_written_its_way() {
    let dir = std::env::temp_dir().join(format!("callbackd-trunks-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    // Trunk "us": E.164 with +, its own caller ID. Trunk "uk": national numbers with a
    // technical prefix 99, international ones with 00, and a caller ID of its own.
    let (us, us_port) = far_end_for(
        &trunk_scenario(&dir, "us.xml", "\\+12125550100", "\\+12125550000"),
        1,
    );
    let (uk, uk_port) = far_end_for(
        &trunk_scenario(
            &dir,
            "uk.xml",
            "9902071234567|990013125550100",
            "\\+442071230000",
        ),
        2,
    );
    let (agent, agent_port) = far_end_for("uas_answer.xml", 3);
    let trunks = format!(
        r#"
[trunks.us]
host = "127.0.0.1"
port = {us_port}
caller_id = "+12125550000"

[trunks.uk]
host = "127.0.0.1"
port = {uk_port}
numbers = "national"
country_code = "44"
national_prefix = "0"
prefix = "99"
caller_id = "+442071230000"

[[routes]]
prefix = "+1"
trunks = ["us"]

[[routes]]
prefix = "+44"
trunks = ["uk"]

# The support queue's Chicago numbers go through the UK trunk, before the rule for +1.
[[routes]]
queue = "support"
prefix = "+1312"
trunks = ["uk"]
"#
    );
    let url = store::testing::sqlite_url();
    let config = config_with(
        &url,
        &[
            (
                "# allowed_regions = [\"US\", \"CA\"]",
                "allowed_regions = [\"US\", \"GB\"]",
            ),
            ("wrap_up = \"10s\"", "wrap_up = \"1s\""),
            (
                "customer_ring_timeout = \"30s\"",
                "customer_ring_timeout = \"5s\"",
            ),
            ("[queues.support]", &format!("{trunks}\n[queues.support]")),
        ],
    );
    let server = Server::start(&config);
    let r = server.post(
        "/api/v1/agents",
        &json!({"id": "ann", "name": "Ann", "skills": ["billing"],
                "address": format!("sip:ann@127.0.0.1:{agent_port}")}),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let ids: Vec<String> = ["+12125550100", "+442071234567", "+13125550100"]
        .iter()
        .map(|number| {
            let r = server.post(
                "/api/v1/callbacks",
                &json!({"queue": "support", "skill": "billing", "media": "voice", "address": number}),
            );
            assert_eq!(r.status, 201, "{number}: {:?}", r.body);
            assert!(r.body.get("unroutable").is_none(), "{:?}", r.body);
            r.body["confirmation_id"].as_str().unwrap().to_owned()
        })
        .collect();
    server.request(
        "PUT",
        "/api/v1/agents/ann/state",
        &[],
        Some(&json!({"state": "ready"})),
    );
    for id in &ids {
        let cb = wait_for_attempt(&server, id);
        assert_eq!(
            cb["dial_attempts"][0]["sip_status"], 503,
            "the trunk was reached and refused: {cb:#}"
        );
    }
    for (name, sipp) in [("us", us), ("uk", uk)] {
        let (ok, out) = finished_cleanly(sipp);
        assert!(
            ok,
            "trunk {name} saw its numbers written its way, with its caller ID: {out}"
        );
    }
    let _ = finished_cleanly(agent);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn credentials_are_not_given_to_a_challenge_in_another_realm() {
    let (sipp, port) = far_end("uas_foreign_challenge.xml");
    let url = store::testing::sqlite_url();
    let trunk = format!(
        "\n[trunks.carrier]\nhost = \"127.0.0.1\"\nport = {port}\ndomain = \"trunk.example\"\n\
         username = \"callbackd\"\npassword = \"s3cret-trunk\"\nrealm = \"trunk.example\"\n\
         caller_id = \"+12125550000\"\n\n[[routes]]\ntrunks = [\"carrier\"]\n\n[queues.support]"
    );
    let server = Server::start(&config_with(
        &url,
        &[
            SIP_TO_LOOPBACK,
            (
                "sip_domains = [\"127.0.0.1\"]",
                "sip_domains = [\"127.0.0.1\", \"trunk.example\"]",
            ),
            ("[queues.support]", &trunk),
        ],
    ));
    let r = server.post(
        "/api/v1/test-calls",
        &json!({"to": "sip:+12125550100@trunk.example"}),
    );
    assert_eq!(
        r.body,
        json!({"answered": false, "status": 401, "ended": "failed"}),
        "{:?}",
        r.body
    );
    let (ok, out) = finished_cleanly(sipp);
    assert!(ok, "no credentials went to the foreign realm: {out}");
}
