//! Call records as an operator reads them: every call, inbound or placed, gets one once it
//! has ended, through the API's pages and `callbackd calls export`; and past the retention's
//! age records and closed callbacks are gone.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{cli, config_with, far_end, finished_cleanly, run_sipp, Server, SIP_TO_LOOPBACK};
use serde_json::{json, Value};

/// Every record the API has, page by page of `limit`; waits up to 10 s for `want` of them
/// (records are written once their calls have ended).
fn records(server: &Server, want: usize, limit: u32) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut all = Vec::new();
        let mut path = format!("/api/v1/calls?limit={limit}");
        loop {
            let r = server.get(&path);
            assert_eq!(r.status, 200, "{:?}", r.body);
            all.extend(r.body["calls"].as_array().unwrap().iter().cloned());
            match r.body["next_cursor"].as_str() {
                Some(cursor) => path = format!("/api/v1/calls?limit={limit}&cursor={cursor}"),
                None => break,
            }
        }
        if all.len() >= want || Instant::now() > deadline {
            return all;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn export(config: &Path, args: &[&str]) -> String {
    cli(config, &[&["calls", "export"], args].concat())
}

#[test]
fn on_sqlite() {
    every_call_gets_a_record_readable_by_page_and_by_export_until_its_retention_ends(
        &store::testing::sqlite_url(),
    );
}

#[tokio::test]
async fn on_postgres() {
    let url = common::store_url("postgres").await;
    every_call_gets_a_record_readable_by_page_and_by_export_until_its_retention_ends(&url);
    store::testing::discard(&url).await;
}

fn every_call_gets_a_record_readable_by_page_and_by_export_until_its_retention_ends(url: &str) {
    let config = config_with(url, &[SIP_TO_LOOPBACK]);
    let server = Server::start(&config);

    // In: a call that hangs up after half a second, and one that presses keys as SIP INFO.
    let (ok, failed, out) = run_sipp(server.sip_udp.unwrap(), "uac_basic.xml", 1, &[]);
    assert_eq!((ok, failed), (1, 0), "{out}");
    let (ok, failed, out) = run_sipp(server.sip_udp.unwrap(), "uac_dtmf_info.xml", 1, &[]);
    assert_eq!((ok, failed), (1, 0), "{out}");
    // Out: a test call a phone answers, which callbackd hangs up after a second.
    let (sipp, port) = far_end("uas_answer.xml");
    let r = server.post(
        "/api/v1/test-calls",
        &json!({"to": format!("sip:phone@127.0.0.1:{port}"), "hold_seconds": 1}),
    );
    assert_eq!(r.body["ended"], "local_hangup", "{:?}", r.body);
    assert!(finished_cleanly(sipp).0);

    // Pages of one: three records, each once, oldest first.
    let all = records(&server, 3, 1);
    assert_eq!(all.len(), 3, "{all:#?}");
    let ids: std::collections::BTreeSet<&str> =
        all.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3, "no record twice: {all:#?}");
    let (basic, info, placed) = (&all[0], &all[1], &all[2]);
    assert_eq!(basic["direction"], "inbound");
    assert_eq!(basic["from"], "sipp");
    assert_eq!(basic["to"], "5000");
    assert_eq!(basic["entry"], "self_service");
    assert_eq!(basic["end_reason"], "remote_hangup");
    assert!(basic["answered_at"].is_string(), "{basic}");
    assert!(basic["call_id"].as_str().is_some_and(|c| !c.is_empty()));
    assert!(
        basic["rtp_sent"].as_u64().unwrap() > 0,
        "prompts played: {basic}"
    );
    assert_eq!(basic["keys_source"], Value::Null);
    assert_eq!(info["keys_source"], "info", "{info}");
    assert_eq!(placed["direction"], "outbound");
    assert_eq!(placed["to"], "phone");
    assert_eq!(placed["end_reason"], "local_hangup");
    assert!(placed["answered_at"].is_string(), "{placed}");
    assert!(
        placed["call_id"].as_str().is_some_and(|c| !c.is_empty()),
        "{placed}"
    );
    let r = server.get("/api/v1/calls?cursor=nonsense");
    assert_eq!(r.status, 400, "{:?}", r.body);
    let r = server.get("/api/v1/calls?since=2999-01-01");
    assert_eq!(r.body["calls"], json!([]));

    // The export says the same.
    let csv = export(&config, &["--format", "csv"]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(
        lines[0].starts_with("id,call_id,node,direction,from,to,"),
        "{csv}"
    );
    assert!(lines[1].starts_with(basic["id"].as_str().unwrap()), "{csv}");
    let jsonl = export(&config, &["--format", "jsonl", "--since", "2020-01-01"]);
    let exported: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(exported, all);
    assert_eq!(
        export(&config, &["--since", "2999-01-01"]).lines().count(),
        1
    );

    // A closed callback, and a callback still open.
    let closed = server.post(
        "/api/v1/callbacks",
        &json!({"queue": "support", "address": "+12125550101"}),
    );
    let closed = closed.body["confirmation_id"].as_str().unwrap().to_owned();
    let r = server.post(
        &format!("/api/v1/callbacks/{closed}/modifications"),
        &json!({"action": "cancel"}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let open = server.post(
        "/api/v1/callbacks",
        &json!({"queue": "support", "address": "+12125550102"}),
    );
    let open = open.body["confirmation_id"].as_str().unwrap().to_owned();
    drop(server);

    // Past a retention of one second: the records and the closed callback go at start-up.
    std::thread::sleep(Duration::from_millis(1100));
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("calls = \"90d\"", "calls = \"1s\"")
            .replace("closed_callbacks = \"365d\"", "closed_callbacks = \"1s\""),
    )
    .unwrap();
    let server = Server::start(&config);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !records(&server, 0, 100).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(records(&server, 0, 100), Vec::<Value>::new());
    assert_eq!(
        server.get(&format!("/api/v1/callbacks/{closed}")).status,
        404
    );
    assert_eq!(server.get(&format!("/api/v1/callbacks/{open}")).status, 200);
}
