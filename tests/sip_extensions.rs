//! The extensions carriers and SBCs require (RFC 3262 reliable provisional responses, RFC 4028
//! session timers), with SIPp on both sides of callbackd: callers that require both and
//! refresh (or stop refreshing) the session, and a callee that requires both and asks
//! callbackd to refresh. Before, `Require: 100rel` or `Require: timer` got 420, and a call
//! whose far end had vanished lasted until `sip.max_call_duration`.
//!
//! The shortest interval RFC 4028 allows is 90 s, and the side waiting for a refresh gives
//! up at 60 s: these tests take about 80 s, in parallel.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{config_with, far_end, finished_cleanly, run_sipp, Server, SIP_TO_LOOPBACK};
use serde_json::json;

/// SIPp sends no RTP here: without this callbackd would hang up for silence (30 s) before
/// the session timer (60 s) could.
const QUIET: (&str, &str) = ("rtp_timeout = \"30s\"", "rtp_timeout = \"2m\"");

/// The caller scenario with its refreshes filled in: an UPDATE `after_ms` after the answer,
/// or none.
fn caller_scenario(dir: &Path, name: &str, refresh_after_ms: Option<u32>) -> String {
    let refresh = match refresh_after_ms {
        None => String::new(),
        Some(ms) => format!(
            r#"  <pause milliseconds="{ms}"/>
  <send retrans="500">
    <![CDATA[

      UPDATE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      [routes]
      From: <sip:+12125550100@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:5000@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 3 UPDATE
      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
      Supported: timer
      Session-Expires: 90;refresher=uac
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200">
    <action>
      <ereg regexp="Session-Expires: *90;refresher=uac" search_in="msg" check_it="true" assign_to="dummy5"/>
    </action>
  </recv>
  <Reference variables="dummy5"/>
"#
        ),
    };
    // To the queue entry: the caller holds for an agent until the call ends, where the
    // self-service flow would say goodbye for want of keys.
    let text = std::fs::read_to_string(common::sipp_scenario("uac_timer_100rel.xml"))
        .unwrap()
        .replace("REFRESH_ACTIONS", &refresh)
        .replace("sip:5000@", "sip:5001@");
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn callers_requiring_100rel_and_timer_are_served_and_hung_up_when_refreshes_stop() {
    let dir = std::env::temp_dir().join(format!("callbackd-ext-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = store::testing::sqlite_url();
    // Ringing first, so a 180 goes out, reliably.
    let server = Server::start(&config_with(
        &url,
        &[
            ("ring_time = \"0s\"", "ring_time = \"1s\""),
            QUIET,
            (
                "# \"5001\" = \"queue_support\"",
                "\"5001\" = \"queue_support\"",
            ),
        ],
    ));
    let target = server.sip_udp.unwrap();
    let silent = caller_scenario(&dir, "silent.xml", None);
    let refreshing = caller_scenario(&dir, "refreshing.xml", Some(20_000));
    let start = Instant::now();
    let (silent_took, refreshing_took) = std::thread::scope(|s| {
        let run = |scenario: &str| {
            let (ok, failed, out) = run_sipp(target, scenario, 1, &[]);
            assert_eq!((ok, failed), (1, 0), "{scenario}: {out}");
            start.elapsed()
        };
        let (silent, refreshing) = (&silent, &refreshing);
        let silent = s.spawn(move || run(silent));
        let refreshing = s.spawn(move || run(refreshing));
        (silent.join().unwrap(), refreshing.join().unwrap())
    });
    // Hung up 60 s after the answer (90 s less 30), and the refreshed call 60 s after its
    // refresh, 20 s later.
    assert!(
        (Duration::from_secs(58)..Duration::from_secs(70)).contains(&silent_took),
        "the silent caller was hung up after {silent_took:?}"
    );
    assert!(
        refreshing_took >= silent_took + Duration::from_secs(15),
        "the refresh kept the call: {refreshing_took:?} against {silent_took:?}"
    );
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_callee_requiring_100rel_and_timer_is_pracked_refreshed_and_hung_up_on_481() {
    let (sipp, port) = far_end("uas_timer_100rel.xml");
    let url = store::testing::sqlite_url();
    let server = Server::start(&config_with(&url, &[SIP_TO_LOOPBACK, QUIET]));
    let r = server.post(
        "/api/v1/test-calls",
        &json!({"to": format!("sip:phone@127.0.0.1:{port}"), "hold_seconds": 60}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body,
        json!({"answered": true, "status": null, "ended": "session_expired"})
    );
    let (ok, out) = finished_cleanly(sipp);
    assert!(
        ok,
        "SIPp saw INVITE, PRACK, ACK, UPDATE and BYE in order: {out}"
    );
}

#[test]
fn garbage_in_session_expires_gets_400_and_too_short_an_interval_422() {
    let url = store::testing::sqlite_url();
    let server = Server::start(&config_with(&url, &[]));
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let me = socket.local_addr().unwrap();
    let ask = |branch: &str, session_expires: &str| {
        let invite = format!(
            "INVITE sip:5000@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{branch}\r\n\
             From: <sip:+12125550100@{me}>;tag=a\r\nTo: <sip:5000@{target}>\r\nCall-ID: {branch}@x\r\n\
             CSeq: 1 INVITE\r\nContact: <sip:c@{me}>\r\nMax-Forwards: 70\r\nSupported: timer\r\n\
             Session-Expires: {session_expires}\r\nContent-Length: 0\r\n\r\n",
            target = server.sip_udp.unwrap()
        );
        socket
            .send_to(invite.as_bytes(), server.sip_udp.unwrap())
            .unwrap();
        let mut buf = [0; 4096];
        let (n, _) = socket.recv_from(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let answer = ask("garbage", "tomorrow;refresher=uac");
    assert!(
        answer.starts_with("SIP/2.0 400 Bad Session-Expires"),
        "{answer}"
    );
    let answer = ask("short", "30");
    assert!(answer.starts_with("SIP/2.0 422 "), "{answer}");
    assert!(answer.contains("Min-SE: 90"), "{answer}");
    // The node still answers.
    let (ok, failed, out) = run_sipp(server.sip_udp.unwrap(), "uac_basic.xml", 1, &[]);
    assert_eq!((ok, failed), (1, 0), "{out}");
}
