//! The SIP trace an operator switches on when a carrier complains: for one number, through
//! the API, while calls go on. It must hold that number's calls and no others, mask the keys
//! of SIP INFO, stop when switched off, and open in sngrep and tcpdump. And the log as a
//! collector reads it: JSON lines with the Call-ID, and the access log by route.

mod common;

use std::path::Path;
use std::process::Command;

use common::{config_with, filled_scenario, run_sipp, Server};
use serde_json::{json, Value};

/// The UDP payloads of a pcap file as callbackd writes it (Ethernet, IPv4, UDP).
fn payloads(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..4], &0xa1b2_c3d4u32.to_le_bytes(), "a pcap file");
    let mut at = 24;
    let mut payloads = Vec::new();
    while at + 16 <= bytes.len() {
        let length = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = &bytes[at + 16..at + 16 + length];
        payloads.push(String::from_utf8_lossy(&frame[14 + 20 + 8..]).into_owned());
        at += 16 + length;
    }
    assert_eq!(at, bytes.len(), "whole records");
    payloads
}

#[test]
fn a_trace_for_one_number_holds_its_calls_masked_and_opens_in_sngrep() {
    let dir = std::env::temp_dir().join(format!("callbackd-trace-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("trace.pcap");
    let config = config_with(
        &store::testing::sqlite_url(),
        &[(
            "sip_trace = \"sip-trace.pcap\"",
            &format!("sip_trace = \"{}\"", file.display()),
        )],
    );
    let server = Server::start(&config);
    let r = server.get("/api/v1/sip/trace");
    assert_eq!(r.body["on"], false, "off at start: {:?}", r.body);

    let r = server.request(
        "PUT",
        "/api/v1/sip/trace",
        &[],
        Some(&json!({"numbers": ["+1 212 555 0101"]})),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["on"], true);
    assert_eq!(r.body["file"], Value::from(file.display().to_string()));
    let r = server.request(
        "PUT",
        "/api/v1/sip/trace",
        &[],
        Some(&json!({"every": true})),
    );
    assert_eq!(r.status, 422, "an unknown field: {:?}", r.body);

    // The traced number presses 4, # and 9 as SIP INFO; another caller makes a basic call.
    let traced = filled_scenario(
        &dir,
        "uac_dtmf_info.xml",
        &[("sip:sipp@", "sip:+12125550101@")],
    );
    let (ok, failed, out) = run_sipp(server.sip_udp.unwrap(), &traced, 1, &[]);
    assert_eq!((ok, failed), (1, 0), "{out}");
    let (ok, failed, out) = run_sipp(server.sip_udp.unwrap(), "uac_basic.xml", 1, &[]);
    assert_eq!((ok, failed), (1, 0), "{out}");

    let r = server.request("DELETE", "/api/v1/sip/trace", &[], None);
    assert_eq!(r.body["on"], false, "{:?}", r.body);
    let (ok, _, out) = run_sipp(server.sip_udp.unwrap(), &traced, 1, &[]);
    assert_eq!(ok, 1, "{out}");

    let messages = payloads(&file);
    let starts: Vec<&str> = messages
        .iter()
        .map(|m| m.lines().next().unwrap_or(""))
        .collect();
    let count = |start: &str| starts.iter().filter(|s| s.starts_with(start)).count();
    // One call, both ways: its INVITE, ACK, three INFOs and BYE, and callbackd's answers.
    assert_eq!(count("INVITE "), 1, "{starts:#?}");
    assert_eq!(count("ACK "), 1, "{starts:#?}");
    assert_eq!(count("INFO "), 3, "{starts:#?}");
    assert_eq!(count("BYE "), 1, "{starts:#?}");
    assert!(count("SIP/2.0 200") >= 5, "{starts:#?}");
    for message in &messages {
        assert!(
            message.contains("+12125550101"),
            "only the traced number's: {message}"
        );
    }
    let bodies: Vec<&str> = messages
        .iter()
        .filter(|m| m.starts_with("INFO "))
        .map(|m| m.split("\r\n\r\n").nth(1).unwrap_or(""))
        .collect();
    assert!(
        bodies.iter().all(|b| !b.contains(['4', '#', '9'])),
        "keys masked: {bodies:?}"
    );
    assert!(
        bodies.iter().any(|b| b.starts_with("Signal=x")),
        "{bodies:?}"
    );

    // tcpdump reads every packet as UDP between loopback addresses.
    let out = Command::new("tcpdump")
        .args(["-nn", "-r"])
        .arg(&file)
        .output()
        .expect("tcpdump runs (Debian package tcpdump; scripts/test.sh installs it)");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(listed.lines().count(), messages.len(), "{listed}");
    assert!(
        listed
            .lines()
            .all(|l| l.contains("IP 127.0.0.1.") && l.contains("UDP")),
        "{listed}"
    );
    // sngrep finds the one dialog and writes its messages out again.
    let copy = dir.join("copy.pcap");
    let out = Command::new("timeout")
        .args(["20", "sngrep", "-N", "-q", "-I"])
        .arg(&file)
        .arg("-O")
        .arg(&copy)
        .env("TERM", "dumb")
        .output()
        .expect("sngrep runs (Debian package sngrep; scripts/test.sh installs it)");
    assert!(copy.exists(), "sngrep wrote its copy: {out:?}");
    assert_eq!(
        payloads(&copy).len(),
        messages.len(),
        "sngrep took every message: {out:?}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn json_logs_carry_the_call_id_and_the_access_log_its_route() {
    let dir = std::env::temp_dir().join(format!("callbackd-json-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = config_with(
        &store::testing::sqlite_url(),
        &[("format = \"text\"", "format = \"json\"")],
    );
    let log = dir.join("callbackd.log");
    let server = Server::start_logging(&config, &log);
    let (ok, failed, out) = run_sipp(server.sip_udp.unwrap(), "uac_basic.xml", 1, &[]);
    assert_eq!((ok, failed), (1, 0), "{out}");
    assert_eq!(server.get("/api/v1/callbacks/111111111").status, 404);
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let ended = lines
        .iter()
        .find(|l| l["message"] == "call ended")
        .unwrap_or_else(|| panic!("a call ended line: {text}"));
    assert!(
        ended["call_id"].as_str().is_some_and(|c| !c.is_empty()),
        "{ended}"
    );
    assert_eq!(ended["level"], "INFO");
    let access = lines
        .iter()
        .find(|l| l["target"] == "callbackd::access" && l["status"] == 404)
        .unwrap_or_else(|| panic!("an access line: {text}"));
    assert_eq!(
        access["route"], "/api/v1/callbacks/{confirmation_id}",
        "{access}"
    );
    assert!(!text.contains("111111111"), "no IDs from paths in the log");
    std::fs::remove_dir_all(&dir).ok();
}
