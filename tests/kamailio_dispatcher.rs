//! Several nodes behind Kamailio's dispatcher (Debian's Kamailio 5.6 running
//! docs/operations/kamailio-dispatcher.cfg): calls go round the nodes; a node drained with
//! SIGTERM answers the dispatcher's OPTIONS probes and new INVITEs with 503, so every new call
//! goes to the other node, while the call it has finishes and it exits 0. Three nodes on one
//! PostgreSQL share the callbacks, the boards and the chats, and one killed with SIGKILL is
//! passed over without losing a change a caller heard acknowledged.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    chat_say, chat_start, config_with, free_port, run_sipp, state_of, Events, Kamailio, Server,
};
use serde_json::json;

/// A node logging to `dir/NAME.log`, each with a store of its own (the dispatcher does not
/// need them shared), draining for up to 30 s.
fn node(dir: &std::path::Path, name: &str) -> (Server, std::path::PathBuf) {
    let config = config_with(
        &store::testing::sqlite_url(),
        &[("drain_timeout = \"5m\"", "drain_timeout = \"30s\"")],
    );
    let log = dir.join(format!("{name}.log"));
    (Server::start_logging(&config, &log), log)
}

/// Kamailio's dispatcher (docs/operations/kamailio-dispatcher.cfg) in front of `nodes`, and
/// where it listens.
fn dispatcher(dir: &Path, nodes: &[&Server]) -> (Kamailio, SocketAddr) {
    let list = dir.join("nodes.list");
    let lines: String = nodes
        .iter()
        .map(|n| format!("1 sip:{}\n", n.sip_udp.unwrap()))
        .collect();
    std::fs::write(&list, lines).unwrap();
    let port = free_port();
    let kamailio = Kamailio::start(
        dir,
        "docs/operations/kamailio-dispatcher.cfg",
        port,
        &[("\"NODES\"", format!("\"{}\"", list.display()))],
    );
    (kamailio, SocketAddr::from(([127, 0, 0, 1], port)))
}

fn calls_established(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap()
        .matches("call established")
        .count()
}

#[test]
fn calls_spread_over_the_nodes_and_avoid_one_that_drains() {
    let dir = std::env::temp_dir().join(format!(
        "callbackd-dispatcher-{:016x}",
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (mut a, a_log) = node(&dir, "a");
    let (b, b_log) = node(&dir, "b");
    let (_kamailio, through) = dispatcher(&dir, &[&a, &b]);

    let (ok, failed, out) = run_sipp(through, "uac_basic.xml", 10, &[]);
    assert_eq!((ok, failed), (10, 0), "{out}");
    let (on_a, on_b) = (calls_established(&a_log), calls_established(&b_log));
    assert!(
        on_a > 0 && on_b > 0,
        "calls went round: {on_a} on a, {on_b} on b"
    );

    // Node a has a call of its own when it is told to stop.
    let call = common::sipp_caller(a.sip_udp.unwrap(), &common::held_call_scenario(&dir, 4000));
    std::thread::sleep(Duration::from_secs(1));
    let on_a = calls_established(&a_log);
    let stopped = Command::new("kill")
        .args(["-TERM", &a.child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let (ok, failed, out) = run_sipp(through, "uac_basic.xml", 10, &[]);
    assert_eq!((ok, failed), (10, 0), "every new call found a node: {out}");
    assert_eq!(
        calls_established(&a_log),
        on_a,
        "the draining node took no new call"
    );

    let out = call.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "node a's own call finished: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let status = common::exited(&mut a.child, Duration::from_secs(10)).expect("node a stops");
    assert!(status.success(), "{status:?}");
    drop(b);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// What reaches a dead node's SIP address once it is gone: the test takes the address over
/// and notes every request, and when it came.
struct Watch {
    heard: Arc<Mutex<Vec<(Instant, String)>>>,
    stop: Arc<AtomicBool>,
}

impl Watch {
    fn start(address: SocketAddr) -> Watch {
        let socket = UdpSocket::bind(address).expect("the dead node's SIP port is free");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let (heard, stop): (Arc<Mutex<Vec<_>>>, _) =
            (Arc::default(), Arc::new(AtomicBool::new(false)));
        let (into, stopped) = (Arc::clone(&heard), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut buffer = [0u8; 65536];
            while !stopped.load(Ordering::Relaxed) {
                if let Ok((n, _)) = socket.recv_from(&mut buffer) {
                    let text = String::from_utf8_lossy(&buffer[..n]);
                    let first = text.lines().next().unwrap_or_default().to_owned();
                    into.lock().unwrap().push((Instant::now(), first));
                }
            }
        });
        Watch { heard, stop }
    }

    /// The requests heard with `method`, and when.
    fn heard(&self, method: &str) -> Vec<Instant> {
        let heard = self.heard.lock().unwrap();
        heard
            .iter()
            .filter(|(_, line)| line.starts_with(&format!("{method} ")))
            .map(|(at, _)| *at)
            .collect()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Keypad flows, one SIPp each, all at once through `through`: for each, whether it ran its
/// course (callbackd said its result and hung up), which is when the caller has heard the
/// change acknowledged.
fn phone_in(through: SocketAddr, dir: &Path, flows: &[(&str, String)]) -> Vec<bool> {
    std::thread::scope(|s| {
        let runs: Vec<_> = flows
            .iter()
            .map(|(from, keys)| {
                let path = dir.join(format!("flow-{:016x}.xml", rand::random::<u64>()));
                common::keypad_scenario(from, "5000", keys, false, &path);
                s.spawn(move || {
                    let (ok, _, _) = run_sipp(through, &path.display().to_string(), 1, &[]);
                    ok == 1
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    })
}

/// The changes made by phone to callback `id`, as any node shows its history.
fn phone_changes(node: &Server, id: &str) -> Vec<String> {
    let shown = node.get(&format!("/api/v1/callbacks/{id}")).body;
    shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["channel"] == "ivr" && e["outcome"] == "success")
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect()
}

/// Three nodes on one PostgreSQL behind Kamailio's dispatcher: keypad flows spread over them;
/// a board open on one node shows a pause made on another; a chat goes on from node to node;
/// a node killed with SIGKILL is passed over once a probe finds it gone, the others take the
/// new calls, and every change a caller heard acknowledged is in the store.
#[test]
fn three_nodes_on_one_postgresql() {
    let url = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(common::store_url("postgres"));
    let dir = std::env::temp_dir().join(format!(
        "callbackd-three-nodes-{:016x}",
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    // Kamailio relays the callers' asserted numbers: it is a trunk callbackd trusts.
    let config = config_with(&url, &[("trusted = []", "trusted = [\"127.0.0.1\"]")]);
    let log = |name: &str| dir.join(format!("{name}.log"));
    let a = Server::start_logging(&config, &log("a"));
    let b = Server::start_logging(&config, &log("b"));
    let mut c = Server::start_logging(&config, &log("c"));
    let (_kamailio, through) = dispatcher(&dir, &[&a, &b, &c]);
    let numbers: Vec<String> = (0..9).map(|i| format!("+1212555{:04}", 300 + i)).collect();
    let ids: Vec<String> = numbers
        .iter()
        .map(|n| common::create_callback(&config, n))
        .collect();

    // Six callers pause their callbacks: the calls go round the three nodes.
    let flows: Vec<(&str, String)> = (0..6)
        .map(|i| (numbers[i].as_str(), format!("{}#5*", ids[i])))
        .collect();
    let ran = phone_in(through, &dir, &flows);
    assert!(ran.iter().all(|r| *r), "every flow ran its course: {ran:?}");
    let taken: Vec<usize> = ["a", "b", "c"]
        .iter()
        .map(|n| calls_established(&log(n)))
        .collect();
    assert!(
        taken.iter().all(|n| *n > 0),
        "every node took calls: {taken:?}"
    );
    for id in &ids[..6] {
        assert_eq!(phone_changes(&a, id), ["pause"], "{id}");
    }

    // A board open on node a sees what node c changes.
    let mut board = Events::open(&a, "", true).unwrap();
    let first = board.next_snapshot();
    assert_eq!(state_of(&first, &ids[6]).as_deref(), Some("queued"));
    let r = c.post(
        &format!("/api/v1/callbacks/{}/modifications", ids[6]),
        &json!({"action": "pause"}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let changed = Instant::now();
    while state_of(&board.next_snapshot(), &ids[6]).as_deref() != Some("paused") {}
    println!(
        "node a's board showed node c's pause after {:?}",
        changed.elapsed()
    );

    // A conversation started on node a goes on through b and c.
    let chat = chat_start(&a);
    assert!(
        chat_say(&a, &chat, "I was charged twice for the same month")
            .ends_with("Would you like us to call you back?")
    );
    assert!(chat_say(&b, &chat, "yes please").starts_with("What number should we call?"));
    assert!(chat_say(&c, &chat, "+1 212 555 0399").starts_with("When should we call?"));
    let booked = chat_say(&b, &chat, "as soon as possible");
    assert!(booked.contains("confirmation number"), "{booked}");

    // Three callers resume theirs; node c is killed in the middle of its call.
    let c_address = c.sip_udp.unwrap();
    let c_before = calls_established(&log("c"));
    let flows: Vec<(&str, String)> = (0..3)
        .map(|i| (numbers[i].as_str(), format!("{}#5*", ids[i])))
        .collect();
    let (killed, watch, resumed) = std::thread::scope(|s| {
        let resumes = s.spawn(|| phone_in(through, &dir, &flows));
        // Each call is established within a second or two, and lasts ten.
        let deadline = Instant::now() + Duration::from_secs(10);
        while calls_established(&log("c")) == c_before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            calls_established(&log("c")) > c_before,
            "node c took one of the three calls"
        );
        std::thread::sleep(Duration::from_secs(2));
        c.child.kill().unwrap();
        let _ = c.child.wait();
        let killed = Instant::now();
        let watch = Watch::start(c_address);
        (killed, watch, resumes.join().unwrap())
    });
    assert_eq!(
        resumed.iter().filter(|r| **r).count(),
        2,
        "the calls on a and b ran their course, the one on c did not: {resumed:?}"
    );
    // A probe every second, answered within two or not at all: the dispatcher has found
    // node c gone within three seconds.
    std::thread::sleep((killed + Duration::from_secs(4)).saturating_duration_since(Instant::now()));
    let flows: Vec<(&str, String)> = (6..9)
        .map(|i| (numbers[i].as_str(), format!("{}#5*", ids[i])))
        .collect();
    let after = Instant::now();
    let ran = phone_in(through, &dir, &flows);
    assert!(
        ran.iter().all(|r| *r),
        "new calls succeed on a and b: {ran:?}"
    );
    let invites = watch.heard("INVITE");
    assert!(
        invites.iter().all(|at| *at < after),
        "no new call was sent to the dead node once the probes found it gone ({} INVITEs, {} OPTIONS heard)",
        invites.len(),
        watch.heard("OPTIONS").len()
    );
    assert!(
        !watch.heard("OPTIONS").is_empty(),
        "the dispatcher goes on probing the dead node, to take it back when it answers"
    );

    // Every change a caller heard acknowledged is in the store: the resumes on a and b, and
    // the last three calls' (callback 6 was paused on c's API, so its call resumed it).
    for (i, acknowledged) in resumed.iter().enumerate() {
        if *acknowledged {
            assert_eq!(phone_changes(&b, &ids[i]), ["pause", "resume"], "{i}");
        }
    }
    for (id, change) in ids[6..].iter().zip(["resume", "pause", "pause"]) {
        assert_eq!(phone_changes(&b, id), [change], "{id}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
