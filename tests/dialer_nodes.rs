//! Two callbackd nodes on one PostgreSQL share a queue of several hundred due callbacks and a
//! team of agents (SIPp answering for all of them; another SIPp answering as every customer
//! and logging each INVITE it gets). Every callback must be completed and no attempt placed
//! twice: with both nodes running, each callback is dialed exactly once; with one node killed
//! (SIGKILL) or stopped past its lease (SIGSTOP) mid-run, the other takes its callbacks over
//! and a customer never gets more INVITEs than their callback has attempts; an attempt of
//! unknown outcome is retried only after the backoff; and a stopped node, once resumed, sends
//! no INVITE for an attempt another node has taken over (each INVITE is traced to its node by
//! its Via).

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Local, NaiveDateTime, Utc};
use common::{config_with, free_port, Server};
use serde_json::{json, Value};

const CALLBACKS: usize = 300;
const AGENTS: usize = 30;

/// A SIPp answering up to `calls` calls with `scenario`, logging every message to `log`.
fn peer(scenario: &Path, calls: usize, log: &Path) -> (Child, u16) {
    let port = free_port();
    let child = Command::new(common::sipp())
        .arg("-sf")
        .arg(scenario)
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-mp",
            &common::media_port().to_string(),
        ])
        .args([
            "-m",
            &calls.to_string(),
            "-nostdin",
            "-trace_msg",
            "-message_file",
        ])
        .arg(log)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp runs");
    (child, port)
}

/// An INVITE a customer got: to whom, its Call-ID, the SIP port of the node that sent it
/// (from its Via), and when it arrived.
struct Invite {
    user: String,
    call_id: String,
    node_port: u16,
    at: DateTime<Utc>,
}

/// The INVITEs a SIPp message log shows, retransmissions included.
fn invites(log: &Path) -> Vec<Invite> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.split("----------------------------------------------- ")
        .filter_map(|block| {
            let (stamp, message) = block.split_once('\n')?;
            if !message.contains("message received") {
                return None;
            }
            let header = |name: &str| {
                message.lines().find_map(|l| {
                    let (key, value) = l.split_once(':')?;
                    (key.trim() == name).then(|| value.trim())
                })
            };
            let user = message
                .lines()
                .find_map(|l| l.strip_prefix("INVITE sip:"))?
                .split('@')
                .next()?;
            let node_port = header("Via")?
                .split(';')
                .next()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()?;
            // SIPp writes the local time.
            let at = NaiveDateTime::parse_from_str(stamp.trim(), "%Y-%m-%d %H:%M:%S%.f")
                .ok()?
                .and_local_timezone(Local)
                .single()?
                .with_timezone(&Utc);
            Some(Invite {
                user: user.to_owned(),
                call_id: header("Call-ID")?.to_owned(),
                node_port,
                at,
            })
        })
        .collect()
}

/// A time the API shows.
fn time(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value.as_str().unwrap_or_else(|| panic!("a time: {value}")))
        .unwrap()
        .with_timezone(&Utc)
}

/// A node's configuration, with `extra` replacements besides.
fn node_config(url: &str, name: &str, extra: &[(&str, &str)]) -> PathBuf {
    let node = format!("node = \"{name}\"");
    let mut replacements = vec![
        (
            "# sip_domains = [\"pbx.example.com\"]",
            "sip_domains = [\"127.0.0.1\"]",
        ),
        ("# node = \"callbackd-1\"", node.as_str()),
        // The SIPp peers stand for a trunk and a PBX's phones: many calls from one address.
        ("trusted = []", "trusted = [\"127.0.0.1\"]"),
        ("lease = \"30s\"", "lease = \"3s\""),
        ("wrap_up = \"10s\"", "wrap_up = \"0s\""),
        ("whisper = true", "whisper = false"),
        ("greeting = true", "greeting = false"),
        ("max_attempts = 3", "max_attempts = 5"),
        (
            "retry_backoff = [\"5m\", \"15m\", \"1h\"]",
            "retry_backoff = [\"2s\"]",
        ),
    ];
    replacements.extend_from_slice(extra);
    config_with(url, &replacements)
}

fn signal(child: &Child, name: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{name}");
}

fn completed(server: &Server) -> usize {
    server
        .get("/api/v1/callbacks?state=completed&limit=1000")
        .body["callbacks"]
        .as_array()
        .map_or(0, Vec::len)
}

/// What to do to the second node once a third of the callbacks are done.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Trouble {
    None,
    Kill,
    /// SIGSTOP for well past the lease, then SIGCONT.
    Stop,
}

async fn share_a_queue(trouble: Trouble) {
    let dir = std::env::temp_dir().join(format!("callbackd-nodes-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let silence = dir.join("silence.pcap");
    std::fs::write(&silence, common::in_band_capture("", media::g711::Law::Mu)).unwrap();
    let template = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sipp/uas_customer.xml"),
    )
    .unwrap();
    let customer_scenario = dir.join("uas_customer.xml");
    std::fs::write(
        &customer_scenario,
        template
            .replace("PCAP_FILE", &silence.display().to_string())
            .replace("TALK_MS", "300"),
    )
    .unwrap();
    let agent_scenario =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sipp/uas_answer.xml");
    let customers_log = dir.join("customers.log");
    let (mut customers, customer_port) = peer(&customer_scenario, CALLBACKS * 5, &customers_log);
    let (mut agents, agent_port) = peer(&agent_scenario, CALLBACKS * 5, &dir.join("agents.log"));

    let url = store::testing::postgres_url().await;
    let a = Server::start(&node_config(&url, "node-a", &[]));
    let b_log = dir.join("node-b.log");
    let b = Server::start_logging(&node_config(&url, "node-b", &[]), &b_log);
    let mut ids = Vec::new();
    for i in 0..CALLBACKS {
        let r = a.post(
            "/api/v1/callbacks",
            &json!({"queue": "support", "media": "sip",
                    "address": format!("sip:c{i}@127.0.0.1:{customer_port}")}),
        );
        assert_eq!(r.status, 201, "{:?}", r.body);
        ids.push(r.body["confirmation_id"].as_str().unwrap().to_owned());
    }
    let started = Instant::now();
    for i in 0..AGENTS {
        let id = format!("agent-{i}");
        let r = a.post(
            "/api/v1/agents",
            &json!({"id": id, "name": id, "skills": ["billing"],
                    "address": format!("sip:{id}@127.0.0.1:{agent_port}")}),
        );
        assert_eq!(r.status, 201, "{:?}", r.body);
        // Every other agent logs in on the second node: both nodes hear of it.
        let node = if i % 2 == 0 { &a } else { &b };
        let r = node.request(
            "PUT",
            &format!("/api/v1/agents/{id}/state"),
            &[],
            Some(&json!({"state": "ready"})),
        );
        assert_eq!(r.status, 200, "{:?}", r.body);
    }

    let b_port = b.sip_udp.unwrap().port();
    let mut b = Some(b);
    let mut stopped_at = None;
    if trouble != Trouble::None {
        while completed(&a) < CALLBACKS / 3 {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "a third done in time"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let node = b.as_ref().unwrap();
        match trouble {
            Trouble::Kill => {
                signal(&node.child, "KILL");
                b = None;
            }
            Trouble::Stop => {
                stopped_at = Some(Utc::now());
                signal(&node.child, "STOP");
                std::thread::sleep(Duration::from_secs(8));
                signal(&node.child, "CONT");
            }
            Trouble::None => unreachable!(),
        }
    }
    while completed(&a) < CALLBACKS {
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "only {} of {CALLBACKS} callbacks completed",
            completed(&a)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let took = started.elapsed();
    // Let any late INVITE from a node that lost its leases arrive before counting.
    std::thread::sleep(Duration::from_secs(2));
    customers.kill().ok();
    agents.kill().ok();
    customers.wait().ok();
    agents.wait().ok();

    let invites = invites(&customers_log);
    let mut dialed: HashMap<&str, HashSet<&str>> = HashMap::new();
    // Each INVITE's first arrival: a retransmission is not a new dial.
    let mut first: HashMap<&str, &Invite> = HashMap::new();
    for invite in &invites {
        dialed
            .entry(invite.user.as_str())
            .or_default()
            .insert(invite.call_id.as_str());
        first.entry(invite.call_id.as_str()).or_insert(invite);
    }
    let (mut unknown, mut nodes, mut resumed_dials) = (0, HashSet::new(), 0);
    // Attempts of the troubled node that the other took over.
    let mut taken_from_b = 0;
    for (i, id) in ids.iter().enumerate() {
        let cb: Value = a.get(&format!("/api/v1/callbacks/{id}")).body;
        assert_eq!(cb["state"], "completed", "{cb:#}");
        let attempts = cb["dial_attempts"].as_array().unwrap();
        for (k, attempt) in attempts.iter().enumerate() {
            nodes.insert(attempt["node"].as_str().unwrap().to_owned());
            if attempt["outcome"] == "unknown" {
                unknown += 1;
                taken_from_b += usize::from(attempt["node"] == "node-b");
                // Taken over, it is retried after the backoff (2 s here), not at once.
                if let Some(next) = attempts.get(k + 1) {
                    assert!(
                        time(&next["started_at"]) - time(&attempt["ended_at"])
                            >= chrono::Duration::milliseconds(1900),
                        "c{i} retried before the backoff: {cb:#}"
                    );
                }
            }
        }
        let user = format!("c{i}");
        let got = dialed.get(user.as_str()).map_or(0, HashSet::len);
        assert!(got >= 1, "customer c{i} was called");
        assert!(
            got <= attempts.len(),
            "customer c{i} got {got} INVITEs for {} attempts: {cb:#}",
            attempts.len()
        );
        if trouble == Trouble::None {
            assert_eq!((got, attempts.len()), (1, 1), "c{i} dialed exactly once");
            assert_eq!(attempts[0]["outcome"], "connected");
        }
        // The fence: once resumed, the stopped node never dials for an attempt another node
        // has taken over (recorded `unknown`, ended) by then. One whose lease nobody took in
        // time is still its own, and may go on. A second after the signal it is surely
        // stopped.
        if let Some(stopped_at) = stopped_at {
            let stopped = stopped_at + chrono::Duration::seconds(1);
            for invite in first
                .values()
                .filter(|v| v.user == user && v.node_port == b_port && v.at > stopped)
            {
                resumed_dials += 1;
                // The INVITE belongs to node-b's latest attempt begun before it.
                let attempt = attempts
                    .iter()
                    .filter(|a| a["node"] == "node-b" && time(&a["started_at"]) <= invite.at)
                    .max_by_key(|a| time(&a["started_at"]))
                    .unwrap_or_else(|| panic!("node-b dialed c{i} with no attempt: {cb:#}"));
                assert!(
                    !(attempt["outcome"] == "unknown" && time(&attempt["ended_at"]) <= invite.at),
                    "node-b dialed c{i} at {} for an attempt already taken over: {cb:#}",
                    invite.at
                );
            }
        }
    }
    assert_eq!(nodes.len(), 2, "both nodes dialed: {nodes:?}");
    if trouble != Trouble::None {
        assert!(
            unknown > 0,
            "the second node had calls in flight when it stopped"
        );
    }
    if trouble == Trouble::Stop && taken_from_b > 0 {
        // Resumed, it learns it lost its calls' leases: a renewal is refused, the deadline
        // has passed before the next INVITE, or recording the outcome is refused. (A node
        // stopped in the middle of a transaction can hold the rows the other would take over
        // until it resumes; then it lost nothing, and has nothing to learn.)
        let log = std::fs::read_to_string(&b_log).unwrap();
        assert!(
            log.contains("another node took the callback over")
                || log.contains("the dialer's lease ran out before")
                || log.contains("another node holds the callback now"),
            "the stopped node learnt it had lost {taken_from_b} leases: {log}"
        );
    }
    eprintln!(
        "{CALLBACKS} callbacks, {AGENTS} agents, two nodes: all completed in {:.1} s ({unknown} attempts of unknown outcome; {resumed_dials} customers dialed by the stopped node once resumed, none for an attempt taken over)",
        took.as_secs_f64()
    );
    drop(b);
    drop(a);
    store::testing::discard(&url).await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_dial_each_callback_exactly_once() {
    share_a_queue(Trouble::None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_leaves_no_callback_stuck_and_none_dialed_twice() {
    share_a_queue(Trouble::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_past_its_lease_cannot_dial_late() {
    share_a_queue(Trouble::Stop).await;
}

/// LISTEN/NOTIFY is only a wake-up hint. With the store's notices switched off altogether, a
/// callback resumed on a node without a dialer is still dialed by the other node, found by its
/// look at all the work every second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_whose_notice_never_comes_is_dialed_all_the_same() {
    let dir = std::env::temp_dir().join(format!("callbackd-notice-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let tests_sipp = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sipp");
    let customers_log = dir.join("customers.log");
    let (mut customer, customer_port) = peer(&tests_sipp.join("uas_answer.xml"), 1, &customers_log);
    let (mut agent, agent_port) = peer(
        &tests_sipp.join("uas_answer.xml"),
        1,
        &dir.join("agents.log"),
    );
    let url = store::testing::postgres_url().await;
    let dialing = Server::start(&node_config(&url, "node-a", &[]));
    let api_only = Server::start(&node_config(
        &url,
        "node-b",
        &[(
            "and bridges the two.\nenabled = true",
            "and bridges the two.\nenabled = false",
        )],
    ));

    let r = api_only.post(
        "/api/v1/callbacks",
        &json!({"queue": "support", "media": "sip",
                "address": format!("sip:customer@127.0.0.1:{customer_port}")}),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let path = format!(
        "/api/v1/callbacks/{}",
        r.body["confirmation_id"].as_str().unwrap()
    );
    let pause = api_only.post(
        &format!("{path}/modifications"),
        &json!({"action": "pause"}),
    );
    assert_eq!(pause.status, 200, "{:?}", pause.body);
    let r = dialing.post(
        "/api/v1/agents",
        &json!({"id": "ag", "name": "Ag", "skills": ["billing"],
                "address": format!("sip:ag@127.0.0.1:{agent_port}")}),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = dialing.request(
        "PUT",
        "/api/v1/agents/ag/state",
        &[],
        Some(&json!({"state": "ready"})),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    // Ready, with nothing to take: only a paused callback waits.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(dialing.get(&path).body["dial_attempts"], json!([]));

    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    for table in ["callbacks", "agents"] {
        sqlx::query(&format!(
            "ALTER TABLE {table} DISABLE TRIGGER {table}_changed"
        ))
        .execute(&mut db)
        .await
        .unwrap();
    }
    let resumed = Instant::now();
    let r = api_only.post(
        &format!("{path}/modifications"),
        &json!({"action": "resume"}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let mut cb = dialing.get(&path).body;
    while cb["dial_attempts"].as_array().is_none_or(Vec::is_empty) {
        assert!(
            resumed.elapsed() < Duration::from_secs(5),
            "the resumed callback was not dialed within 5 s: {cb:#}"
        );
        std::thread::sleep(Duration::from_millis(50));
        cb = dialing.get(&path).body;
    }
    let took = resumed.elapsed();
    assert_eq!(cb["dial_attempts"][0]["node"], "node-a", "{cb:#}");
    // The re-check comes every second; a notice would have taken milliseconds.
    assert!(took < Duration::from_millis(2500), "dialed after {took:?}");
    eprintln!("with no notice, the resumed callback was dialed after {took:?}");
    customer.kill().ok();
    agent.kill().ok();
    customer.wait().ok();
    agent.wait().ok();
    drop(api_only);
    drop(dialing);
    store::testing::discard(&url).await;
    std::fs::remove_dir_all(&dir).ok();
}
