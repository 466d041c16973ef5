//! Real calls from SIPp (Debian's sip-tester) to the built callbackd on loopback, with the
//! scenarios in tests/sipp/: a basic call over UDP and TCP, retransmissions under 10% loss,
//! CANCEL before answer, and callbackd hanging up.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::Command;

use common::{config_with, free_port, Server};
use media::g711::Law;

fn sipp() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("sipp"))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("sipp is not installed: apt-get install sip-tester (scripts/test.sh installs it)")
    })
}

fn scenario(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
        .display()
        .to_string()
}

/// Runs SIPp against `target` and returns how many calls succeeded and failed.
fn run(target: SocketAddr, scenario_file: &str, calls: u32, extra: &[&str]) -> (u32, u32, String) {
    let (port, media) = (free_port().to_string(), free_port().to_string());
    let out = Command::new(sipp())
        .args([
            "-sf",
            &scenario(scenario_file),
            "-s",
            "5000",
            &target.to_string(),
        ])
        .args(["-i", if target.is_ipv6() { "::1" } else { "127.0.0.1" }])
        .args(["-p", &port, "-mp", &media])
        .args(["-m", &calls.to_string(), "-r", "10", "-l", "20"])
        .args([
            "-nostdin",
            "-timeout",
            "90s",
            "-timeout_error",
            "-max_recv_loops",
            "1000",
        ])
        .args(extra)
        .output()
        .expect("sipp runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let count = |label: &str| -> u32 {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .and_then(|l| l.split('|').nth(2))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (count("Successful call"), count("Failed call"), stdout)
}

fn server(replacements: &[(&str, &str)]) -> (Server, String) {
    let url = store::testing::sqlite_url();
    (Server::start(&config_with(&url, replacements)), url)
}

#[test]
fn basic_calls_over_udp() {
    let (server, url) = server(&[]);
    let (ok, failed, out) = run(server.sip_udp.unwrap(), "uac_basic.xml", 20, &[]);
    assert_eq!((ok, failed), (20, 0), "{out}");
    drop(server);
    let _ = std::fs::remove_file(url.trim_start_matches("sqlite://"));
}

#[test]
fn basic_calls_over_tcp() {
    let (server, _) = server(&[]);
    let (ok, failed, out) = run(server.sip_tcp.unwrap(), "uac_basic.xml", 20, &["-t", "t1"]);
    assert_eq!((ok, failed), (20, 0), "{out}");
}

#[test]
fn every_call_completes_under_ten_percent_loss() {
    let (server, _) = server(&[]);
    let (ok, failed, out) = run(
        server.sip_udp.unwrap(),
        "uac_basic.xml",
        40,
        &["-lost", "10"],
    );
    assert_eq!((ok, failed), (40, 0), "{out}");
    // SIPp's message table ends each line with how many of those messages it dropped.
    let lost: u32 = out
        .lines()
        .filter(|l| l.contains("---------->") || l.contains("<----------"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<u32>().ok())
        .sum();
    assert!(lost > 0, "the run really lost packets: {out}");
}

#[test]
fn cancel_before_answer_gets_487() {
    let (server, _) = server(&[("ring_time = \"0s\"", "ring_time = \"10s\"")]);
    let (ok, failed, out) = run(server.sip_udp.unwrap(), "uac_cancel.xml", 5, &[]);
    assert_eq!((ok, failed), (5, 0), "{out}");
}

#[test]
fn callbackd_hangs_up_with_bye() {
    let (server, _) = server(&[("max_call_duration = \"2h\"", "max_call_duration = \"1s\"")]);
    let (ok, failed, out) = run(
        server.sip_udp.unwrap(),
        "uac_callbackd_hangs_up.xml",
        5,
        &[],
    );
    assert_eq!((ok, failed), (5, 0), "{out}");
}

#[test]
fn a_phone_registers_with_digest_authentication() {
    let (server, _) = server(&[(
        "# 1001 = \"a long phone password\"",
        "1001 = \"phone-secret\"",
    )]);
    let (ok, failed, out) = run(server.sip_udp.unwrap(), "uac_register.xml", 1, &[]);
    assert_eq!((ok, failed), (1, 0), "{out}");
}

#[test]
fn strangers_cannot_call_when_trusted_networks_are_set() {
    let (server, _) = server(&[("trusted = []", "trusted = [\"192.0.2.0/24\"]")]);
    let (ok, failed, _) = run(server.sip_udp.unwrap(), "uac_basic.xml", 1, &[]);
    assert_eq!((ok, failed), (0, 1));
    // And the refusal is a 403, not some other failure.
    let me = UdpSocket::bind("127.0.0.1:0").unwrap();
    let invite = format!(
        "INVITE sip:5000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK-stranger;rport\r\n\
         From: <sip:x@127.0.0.1>;tag=s1\r\nTo: <sip:5000@127.0.0.1>\r\nCall-ID: stranger\r\nCSeq: 1 INVITE\r\n\
         Content-Length: 0\r\n\r\n",
        me.local_addr().unwrap()
    );
    me.send_to(invite.as_bytes(), server.sip_udp.unwrap())
        .unwrap();
    me.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut buffer = [0; 2048];
    let n = me.recv(&mut buffer).unwrap();
    assert!(
        buffer[..n].starts_with(b"SIP/2.0 403"),
        "{}",
        String::from_utf8_lossy(&buffer[..n])
    );
}

#[test]
fn basic_calls_over_ipv6() {
    let (server, _) = server(&[("udp = [\"127.0.0.1:0\"]", "udp = [\"[::1]:0\"]")]);
    let target = server.sip_udp.unwrap();
    assert!(target.is_ipv6());
    let (ok, failed, out) = run(target, "uac_basic.xml", 5, &[]);
    assert_eq!((ok, failed), (5, 0), "{out}");
}

#[test]
fn registered_phones_stay_registered_across_a_restart() {
    let url = store::testing::sqlite_url();
    let edits = [
        (
            "# 1001 = \"a long phone password\"",
            "1001 = \"phone-secret\"",
        ),
        ("trusted = []", "trusted = [\"192.0.2.0/24\"]"),
    ];
    let first = Server::start(&config_with(&url, &edits));
    let (ok, _, out) = run(first.sip_udp.unwrap(), "uac_register.xml", 1, &[]);
    assert_eq!(ok, 1, "{out}");
    std::thread::sleep(std::time::Duration::from_millis(300)); // the binding is written after the 200
    drop(first);
    // Only a registered phone may call in from 127.0.0.1 here: the restored binding does.
    let second = Server::start(&config_with(&url, &edits));
    let (ok, failed, out) = run(second.sip_udp.unwrap(), "uac_basic.xml", 1, &[]);
    assert_eq!((ok, failed), (1, 0), "{out}");
}

#[test]
fn a_far_end_that_sends_no_rtp_is_hung_up() {
    // uac_callbackd_hangs_up.xml sends no RTP and waits for callbackd's BYE.
    let (server, _) = server(&[("rtp_timeout = \"30s\"", "rtp_timeout = \"1s\"")]);
    let (ok, failed, out) = run(
        server.sip_udp.unwrap(),
        "uac_callbackd_hangs_up.xml",
        3,
        &[],
    );
    assert_eq!((ok, failed), (3, 0), "{out}");
}

/// Runs a DTMF scenario against a fresh callbackd and returns the keys it logged.
/// `sipp_sends_rtp`: whether the scenario plays RTP (a capture) as well.
fn keys_heard(scenario_file: &str, sipp_sends_rtp: bool) -> Vec<common::KeyPressed> {
    let url = store::testing::sqlite_url();
    let log =
        std::env::temp_dir().join(format!("callbackd-dtmf-{:016x}.log", rand::random::<u64>()));
    let server = Server::start_logging(&config_with(&url, &[]), &log);
    let (ok, failed, out) = run(server.sip_udp.unwrap(), scenario_file, 1, &[]);
    assert_eq!((ok, failed), (1, 0), "{out}");
    std::thread::sleep(std::time::Duration::from_millis(200));
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    // callbackd sent its greeting to SIPp all along, and heard SIPp's RTP when it played some.
    let totals = text
        .lines()
        .find(|l| l.contains("RTP totals"))
        .unwrap_or_else(|| panic!("no RTP totals in the log: {text}"));
    let count = |name: &str| -> u64 {
        totals
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.parse().ok())
            .unwrap_or(0)
    };
    assert!(
        count("sent=") >= 25,
        "callbackd sent too little RTP: {totals}"
    );
    if sipp_sends_rtp {
        assert!(
            count("received=") >= 10,
            "callbackd heard too little RTP: {totals}"
        );
    }
    common::keys_logged(&text)
}

fn keys_only(heard: &[common::KeyPressed], source: &str) -> String {
    assert!(
        heard.iter().all(|k| k.source == source),
        "every key should come as {source}: {heard:?}"
    );
    heard.iter().map(|k| k.key).collect()
}

#[test]
fn telephone_events_from_sipp_arrive_as_keys_in_order() {
    let heard = keys_heard("uac_dtmf.xml", true);
    assert_eq!(keys_only(&heard, "TelephoneEvent"), "15#");
}

#[test]
fn sip_info_keys_arrive_as_keys_in_order() {
    let heard = keys_heard("uac_dtmf_info.xml", false);
    assert_eq!(keys_only(&heard, "Info"), "4#9");
}

#[test]
fn in_band_tones_arrive_as_keys_in_order() {
    let dir = std::env::temp_dir().join(format!("callbackd-inband-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let capture = dir.join("keys.pcap");
    std::fs::write(&capture, common::in_band_capture("369*0D", Law::Mu)).unwrap();
    let template = std::fs::read_to_string(scenario("uac_dtmf_inband.xml")).unwrap();
    let scenario_path = dir.join("uac_dtmf_inband.xml");
    std::fs::write(
        &scenario_path,
        template.replace("PCAP_FILE", &capture.display().to_string()),
    )
    .unwrap();
    let heard = keys_heard(&scenario_path.display().to_string(), true);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(keys_only(&heard, "InBand"), "369*0D");
}

/// The scenario of a caller from `from` pressing `keys` as telephone-events through the
/// self-service dialplan, written from `uac_self_service.xml`.
fn self_service_scenario(from: &str, keys: &str) -> PathBuf {
    let actions: String = keys
        .chars()
        .map(|k| {
            let name = match k {
                '#' => "pound".to_owned(),
                '*' => "star".to_owned(),
                d => d.to_string(),
            };
            format!(
                "  <nop>\n    <action>\n      <exec play_pcap_audio=\"/usr/share/sip-tester/dtmf_2833_{name}.pcap\"/>\n    </action>\n  </nop>\n  <pause milliseconds=\"600\"/>\n"
            )
        })
        .collect();
    let text = std::fs::read_to_string(scenario("uac_self_service.xml"))
        .unwrap()
        .replace("FROM_USER", from)
        .replace("KEYS_ACTIONS", &actions);
    let path =
        std::env::temp_dir().join(format!("callbackd-ivr-{:016x}.xml", rand::random::<u64>()));
    std::fs::write(&path, text).unwrap();
    path
}

/// A caller phones in, types the confirmation ID and # over the greeting, 5 to pause, * to
/// end; callbackd hangs up, and the store has the callback paused with an IVR receipt.
fn pause_by_phone(url: &str) {
    let config = config_with(url, &[]);
    let number = "+12125550100";
    let id = common::create_callback(&config, number);
    let log = phone_in(&config, number, &format!("{id}#5*"));
    let shown = common::show_callback(&config, &id);
    assert_eq!(shown["state"], "paused", "{shown}\n{log}");
    let last = shown["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["channel"], "ivr", "{last}");
    assert_eq!(last["actor"], number, "{last}");
    assert!(
        last["receipt"].as_str().is_some_and(|r| r.len() == 6),
        "{last}"
    );
}

#[test]
fn a_caller_pauses_a_callback_by_phone_on_sqlite() {
    pause_by_phone(&store::testing::sqlite_url());
}

#[tokio::test]
async fn a_caller_pauses_a_callback_by_phone_on_postgres() {
    let url = store::testing::postgres_url().await;
    tokio::task::spawn_blocking(move || pause_by_phone(&url))
        .await
        .unwrap();
}

#[test]
fn a_caller_in_the_queue_books_a_callback_by_phone() {
    let url = store::testing::sqlite_url();
    let config = config_with(
        &url,
        &[(
            "# \"5001\" = \"queue_support\"",
            "\"5000\" = \"queue_support\"",
        )],
    );
    let number = "+12125550100";
    // 1 for a callback instead of holding, 1 for the number calling.
    phone_in(&config, number, "11");
    let out = common::callbackd()
        .args(["callbacks", "list", "--queue", "support"])
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let callbacks = listed.as_array().expect("a list");
    assert_eq!(callbacks.len(), 1, "{listed}");
    assert_eq!(
        (
            callbacks[0]["address"].as_str(),
            callbacks[0]["source"].as_str()
        ),
        (Some(number), Some("ivr"))
    );
}

/// Runs the self-service scenario from `from` with `keys` against a fresh callbackd on
/// `config`; SIPp must see callbackd hang up. Returns callbackd's log.
fn phone_in(config: &std::path::Path, from: &str, keys: &str) -> String {
    let log =
        std::env::temp_dir().join(format!("callbackd-ivr-{:016x}.log", rand::random::<u64>()));
    let server = Server::start_logging(&config.to_path_buf(), &log);
    let scenario = self_service_scenario(from, keys);
    let (ok, failed, out) = run(
        server.sip_udp.unwrap(),
        &scenario.display().to_string(),
        1,
        &[],
    );
    std::fs::remove_file(&scenario).ok();
    assert_eq!((ok, failed), (1, 0), "{out}");
    drop(server);
    std::fs::read_to_string(&log).unwrap()
}

#[test]
fn several_changes_by_phone_in_one_call_each_with_its_receipt() {
    let config = config_with(&store::testing::sqlite_url(), &[]);
    let number = "+12125550100";
    let id = common::create_callback(&config, number);
    // 3 2: by text message; 4 3: the third department; 6 1: cancel; *: goodbye.
    phone_in(&config, number, &format!("{id}#32436 1*").replace(' ', ""));
    let shown = common::show_callback(&config, &id);
    assert_eq!(
        (
            shown["media"].as_str(),
            shown["skill"].as_str(),
            shown["state"].as_str()
        ),
        (Some("sms"), Some("sales"), Some("cancelled")),
        "{shown}"
    );
    let by_phone: Vec<&serde_json::Value> = shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["channel"] == "ivr")
        .collect();
    assert_eq!(by_phone.len(), 3, "{shown}");
    assert!(by_phone
        .iter()
        .all(|e| e["outcome"] == "success" && e["receipt"].as_str().is_some()));
}

#[test]
fn a_mistyped_id_three_times_by_phone_ends_the_call_without_a_look_up() {
    let config = config_with(&store::testing::sqlite_url(), &[]);
    let id = common::create_callback(&config, "+12125550100");
    // The check digit is wrong each time (the last digit off by one).
    let last = id.chars().last().unwrap().to_digit(10).unwrap();
    let wrong = format!("{}{}#", &id[..8], (last + 1) % 10);
    let log = phone_in(&config, "+12125550100", &wrong.repeat(3));
    assert!(log.contains("key pressed"), "{log}");
    assert!(!log.contains("dialplan operation"), "no look-up ran: {log}");
    let shown = common::show_callback(&config, &id);
    assert_eq!(
        shown["history"].as_array().unwrap().len(),
        1,
        "nothing but its creation"
    );
}
