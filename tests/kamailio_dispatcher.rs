//! Several nodes behind Kamailio's dispatcher (Debian's Kamailio 5.6 running
//! docs/operations/kamailio-dispatcher.cfg): calls go round the nodes; a node drained with
//! SIGTERM answers the dispatcher's OPTIONS probes and new INVITEs with 503, so every new call
//! goes to the other node, while the call it has finishes and it exits 0.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{config_with, free_port, run_sipp, Kamailio, Server};

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
    let nodes = dir.join("nodes.list");
    std::fs::write(
        &nodes,
        format!(
            "1 sip:{}\n1 sip:{}\n",
            a.sip_udp.unwrap(),
            b.sip_udp.unwrap()
        ),
    )
    .unwrap();
    let port = free_port();
    let _kamailio = Kamailio::start(
        &dir,
        "docs/operations/kamailio-dispatcher.cfg",
        port,
        &[("\"NODES\"", format!("\"{}\"", nodes.display()))],
    );
    let through = format!("127.0.0.1:{port}").parse().unwrap();

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
