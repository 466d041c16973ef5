//! Real calls from SIPp (Debian's sip-tester) to the built callbackd on loopback, with the
//! scenarios in tests/sipp/: a basic call over UDP and TCP, retransmissions under 10% loss,
//! CANCEL before answer, and callbackd hanging up.

mod common;

use std::net::UdpSocket;

use common::{config_with, run_sipp, sipp_scenario, Server};
use media::g711::Law;

fn server(replacements: &[(&str, &str)]) -> (Server, String) {
    let url = store::testing::sqlite_url();
    (Server::start(&config_with(&url, replacements)), url)
}

#[test]
fn basic_calls_over_udp() {
    let (server, url) = server(&[]);
    let (ok, failed, out) = run_sipp(server.sip_udp.unwrap(), "uac_basic.xml", 20, &[]);
    assert_eq!((ok, failed), (20, 0), "{out}");
    drop(server);
    let _ = std::fs::remove_file(url.trim_start_matches("sqlite://"));
}

#[test]
fn basic_calls_over_tcp() {
    let (server, _) = server(&[]);
    let (ok, failed, out) = run_sipp(server.sip_tcp.unwrap(), "uac_basic.xml", 20, &["-t", "t1"]);
    assert_eq!((ok, failed), (20, 0), "{out}");
}

#[test]
fn every_call_completes_under_ten_percent_loss() {
    let (server, _) = server(&[]);
    let (ok, failed, out) = run_sipp(
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
    let (ok, failed, out) = run_sipp(server.sip_udp.unwrap(), "uac_cancel.xml", 5, &[]);
    assert_eq!((ok, failed), (5, 0), "{out}");
}

#[test]
fn callbackd_hangs_up_with_bye() {
    let (server, _) = server(&[("max_call_duration = \"2h\"", "max_call_duration = \"1s\"")]);
    let (ok, failed, out) = run_sipp(
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
    let (ok, failed, out) = run_sipp(server.sip_udp.unwrap(), "uac_register.xml", 1, &[]);
    assert_eq!((ok, failed), (1, 0), "{out}");
}

#[test]
fn strangers_cannot_call_when_trusted_networks_are_set() {
    let (server, _) = server(&[("trusted = []", "trusted = [\"192.0.2.0/24\"]")]);
    let (ok, failed, _) = run_sipp(server.sip_udp.unwrap(), "uac_basic.xml", 1, &[]);
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
    let (ok, failed, out) = run_sipp(target, "uac_basic.xml", 5, &[]);
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
    let (ok, _, out) = run_sipp(first.sip_udp.unwrap(), "uac_register.xml", 1, &[]);
    assert_eq!(ok, 1, "{out}");
    std::thread::sleep(std::time::Duration::from_millis(300)); // the binding is written after the 200
    drop(first);
    // Only a registered phone may call in from 127.0.0.1 here: the restored binding does.
    let second = Server::start(&config_with(&url, &edits));
    let (ok, failed, out) = run_sipp(second.sip_udp.unwrap(), "uac_basic.xml", 1, &[]);
    assert_eq!((ok, failed), (1, 0), "{out}");
}

#[test]
fn a_far_end_that_sends_no_rtp_is_hung_up() {
    // uac_callbackd_hangs_up.xml sends no RTP and waits for callbackd's BYE.
    let (server, _) = server(&[("rtp_timeout = \"30s\"", "rtp_timeout = \"1s\"")]);
    let (ok, failed, out) = run_sipp(
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
    let (ok, failed, out) = run_sipp(server.sip_udp.unwrap(), scenario_file, 1, &[]);
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
    let template = std::fs::read_to_string(sipp_scenario("uac_dtmf_inband.xml")).unwrap();
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
