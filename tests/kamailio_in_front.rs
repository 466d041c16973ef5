//! Kamailio (Debian's 5.6) as the proxy in front of callbackd, with the configuration from
//! docs/integrations/kamailio.cfg: a SIPp caller whose Contact names a private address calls
//! Kamailio, which record-routes, rewrites the Contact and relays to callbackd. The caller
//! completes the keypad flow (a pause), its keys heard over RTP that goes straight between
//! the two, and callbackd's goodbye (BYE) comes back through Kamailio by the Route set.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{create_callback, free_port, keypad_scenario, run_sipp, show_callback, Server};

/// Kamailio running `docs/integrations/kamailio.cfg` on `port`, relaying to `callbackd`;
/// stopped, with its children, when dropped.
struct Kamailio(Child);

impl Kamailio {
    fn start(dir: &Path, port: u16, callbackd: std::net::SocketAddr) -> Kamailio {
        let binary = ["/usr/sbin/kamailio", "/usr/bin/kamailio"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or_else(|| {
                panic!("kamailio is not installed: apt-get install kamailio (scripts/test.sh installs it)")
            });
        let modules = std::fs::read_dir("/usr/lib")
            .unwrap()
            .filter_map(|e| Some(e.ok()?.path().join("kamailio/modules")))
            .find(|p| p.join("tm.so").exists())
            .expect("Kamailio's modules are under /usr/lib/*/kamailio/modules");
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/integrations/kamailio.cfg"),
        )
        .unwrap()
        .replace("listen=LISTEN", &format!("listen=udp:127.0.0.1:{port}"))
        .replace("\"CALLBACKD\"", &format!("\"sip:{callbackd}\""))
        .replace("\"MODULES\"", &format!("\"{}\"", modules.display()));
        let config = dir.join("kamailio.cfg");
        std::fs::write(&config, text).unwrap();
        let check = Command::new(binary)
            .arg("-c")
            .arg("-f")
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "Kamailio refuses the configuration: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let log = std::fs::File::create(dir.join("kamailio.log")).unwrap();
        // Held at once, so that a failure below stops it too.
        let kamailio = Kamailio(
            Command::new(binary)
                .arg("-f")
                .arg(&config)
                .args(["-DD", "-E", "-Y"])
                .arg(dir)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("kamailio runs"),
        );
        // Its UDP socket is bound before it answers: wait for an answer to OPTIONS.
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let me = socket.local_addr().unwrap();
        let options = format!(
            "OPTIONS sip:ping@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKping\r\n\
             From: <sip:t@{me}>;tag=1\r\nTo: <sip:ping@127.0.0.1:{port}>\r\nCall-ID: ping@t\r\n\
             CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        let mut buf = [0; 2048];
        for _ in 0..50 {
            let _ = socket.send_to(options.as_bytes(), ("127.0.0.1", port));
            if socket.recv_from(&mut buf).is_ok() {
                return kamailio;
            }
        }
        panic!(
            "Kamailio did not answer on port {port}: {}",
            std::fs::read_to_string(dir.join("kamailio.log")).unwrap_or_default()
        );
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        // Its workers are its children: stop them all.
        let _ = Command::new("pkill")
            .args(["-P", &self.0.id().to_string()])
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_keypad_flow_works_through_kamailio_and_the_bye_follows_the_route_set() {
    let dir =
        std::env::temp_dir().join(format!("callbackd-kamailio-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = store::testing::sqlite_url();
    let config = common::config_with(&url, &[]);
    let server = Server::start(&config);
    let port = free_port();
    let _kamailio = Kamailio::start(&dir, port, server.sip_udp.unwrap());

    let number = "+12125550101";
    let id = create_callback(&config, number);
    let scenario = dir.join("caller.xml");
    keypad_scenario(number, "5000", &format!("{id}#5*"), false, &scenario);
    // A caller whose Contact names a private address: Kamailio puts in its real one.
    let text = std::fs::read_to_string(&scenario).unwrap().replace(
        "Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>",
        "Contact: <sip:sipp@10.255.255.1:5999>",
    );
    assert!(
        text.contains("10.255.255.1"),
        "the template's Contact changed"
    );
    std::fs::write(&scenario, text).unwrap();
    let trace = dir.join("messages.log");
    let target = format!("127.0.0.1:{port}").parse().unwrap();
    let (ok, failed, out) = run_sipp(
        target,
        &scenario.display().to_string(),
        1,
        &["-trace_msg", "-message_file", &trace.display().to_string()],
    );
    assert_eq!((ok, failed), (1, 0), "{out}");
    assert_eq!(show_callback(&config, &id)["state"], "paused");

    let messages = std::fs::read_to_string(&trace).unwrap();
    let received: Vec<&str> = messages
        .split("-----------------------------------------------")
        .filter(|m| m.contains("message received"))
        .collect();
    let ok = received
        .iter()
        .find(|m| m.contains("SIP/2.0 200 OK") && m.contains("INVITE"))
        .expect("the 200 for the INVITE");
    assert!(
        ok.contains(&format!("Record-Route: <sip:127.0.0.1:{port};lr")),
        "Kamailio record-routed: {ok}"
    );
    let bye = received
        .iter()
        .find(|m| m.contains("BYE sip:"))
        .expect("callbackd's BYE");
    let top_via = bye
        .lines()
        .find(|l| l.starts_with("Via:"))
        .unwrap_or_default();
    assert!(
        top_via.contains(&format!("127.0.0.1:{port}")),
        "the BYE came through Kamailio: {bye}"
    );
    assert!(
        bye.contains("BYE sip:sipp@127.0.0.1:"),
        "to the Contact Kamailio rewrote, not the private one: {bye}"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
