//! The metrics, as an operator's Prometheus sees them: the real Prometheus (Debian package
//! `prometheus`) scrapes a running node with the API token, `promtool check metrics` passes
//! on what it serves, and after a scripted set of calls and requests the counters are what
//! the test did.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{config_with, free_port, run_sipp, Server};
use serde_json::{json, Value};

/// What `/metrics` serves now.
fn scrape(server: &Server) -> String {
    let r = server.request("GET", "/metrics", &[], None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body.as_str().expect("text").to_owned()
}

/// The value of the sample `series` (a name and its labels in the order served), if served.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().expect("a number"))
}

/// Polls until the sample equals `want` (gauges read from the store lag by up to 10 s).
fn wait_for(server: &Server, series: &str, want: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = scrape(server);
        if sample(&text, series) == Some(want) || Instant::now() > deadline {
            assert_eq!(sample(&text, series), Some(want), "{series}:\n{text}");
            return text;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Prometheus on a free loopback port, scraping `target` every second with `token`.
struct Prometheus {
    child: Child,
    port: u16,
}

impl Prometheus {
    fn start(dir: &Path, target: SocketAddr, token: &str) -> Prometheus {
        let binary = Path::new("/usr/bin/prometheus");
        assert!(
            binary.exists(),
            "Prometheus is missing: install the Debian package `prometheus` (scripts/test.sh does)"
        );
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: callbackd\n    authorization:\n      credentials: {token}\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("prometheus.log")).unwrap(),
            ))
            .spawn()
            .expect("prometheus runs");
        Prometheus { child, port }
    }

    /// The value of an instant query, once it has one (`None` after 30 s without).
    fn query_until(&self, query: &str, want: f64) -> Option<f64> {
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        let path = format!("/api/v1/query?query={}", encode(query));
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = None;
        while Instant::now() < deadline {
            if let Ok(r) = common::request(addr, "GET", &path, &[], None) {
                last = r.body["data"]["result"][0]["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok());
                if last == Some(want) {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        last
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The metrics a file of expressions names: words that start `callbackd_` or `process_`, a
/// histogram's series by its own name.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("callbackd_") || w.starts_with("process_"))
        .map(|w| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| w.strip_suffix(s))
                .unwrap_or(w)
                .to_owned()
        })
        .collect()
}

/// Percent-encodes a query for a URL.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn prometheus_scrapes_a_node_and_the_counters_are_what_the_calls_did() {
    let dir =
        std::env::temp_dir().join(format!("callbackd-metrics-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    // A trunk nothing answers at, on loopback: its one target is down, or not yet checked.
    let trunk = format!("outbound_proxy = \"127.0.0.1:{}\"", free_port());
    let config = config_with(
        &store::testing::sqlite_url(),
        // SIPp calls from loopback as a trunk would, so its caller ID counts; no dialing.
        &[
            ("trusted = []", "trusted = [\"127.0.0.1\"]"),
            ("\nenabled = true", "\nenabled = false"),
            ("# outbound_proxy = \"192.0.2.20:5060\"", &trunk),
        ],
    );
    let server = Server::start(&config);
    let prometheus = Prometheus::start(&dir, server.addr, &server.token);

    // Requests: a booking, an agent, a callback that is not there, and no token.
    let r = server.post(
        "/api/v1/callbacks",
        &json!({"queue": "support", "address": "+12125550101"}),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = r.body["confirmation_id"].as_str().unwrap().to_owned();
    let r = server.post(
        "/api/v1/agents",
        &json!({"id": "ada", "name": "Ada", "skills": ["billing"], "address": "sip:ada@127.0.0.1:5999"}),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(server.get("/api/v1/callbacks/111111111").status, 404);
    let anonymous = common::request(server.addr, "GET", "/metrics", &[], None).unwrap();
    assert_eq!(anonymous.status, 401, "the metrics need the token");

    // Calls: two that hang up after half a second, and one that pauses the callback by
    // keypad (the ID, #, 5 pause, * goodbye) and hears callbackd hang up.
    let (ok, failed, out) = run_sipp(server.sip_udp.unwrap(), "uac_basic.xml", 2, &[]);
    assert_eq!((ok, failed), (2, 0), "{out}");
    let keys = format!("{id}#5*");
    let keypad = dir.join("keypad.xml");
    common::keypad_scenario("+12125550101", "5000", &keys, false, &keypad);
    let (ok, failed, out) = run_sipp(
        server.sip_udp.unwrap(),
        &keypad.display().to_string(),
        1,
        &[],
    );
    assert_eq!((ok, failed), (1, 0), "{out}");

    let text = wait_for(
        &server,
        "callbackd_callbacks{queue=\"support\",state=\"paused\"}",
        1.0,
    );
    let count = |series: &str| {
        sample(&text, series).unwrap_or_else(|| panic!("{series} is served:\n{text}"))
    };
    let expected = [
        ("callbackd_sip_requests_total{direction=\"received\",method=\"INVITE\"}", 3.0),
        ("callbackd_sip_requests_total{direction=\"received\",method=\"ACK\"}", 3.0),
        ("callbackd_sip_requests_total{direction=\"received\",method=\"BYE\"}", 2.0),
        ("callbackd_sip_requests_total{direction=\"sent\",method=\"BYE\"}", 1.0),
        // 200 to each INVITE and to each caller's BYE; the caller's 200 to ours.
        ("callbackd_sip_responses_total{direction=\"sent\",class=\"2xx\"}", 5.0),
        ("callbackd_sip_responses_total{direction=\"received\",class=\"2xx\"}", 1.0),
        ("callbackd_sip_responses_total{direction=\"sent\",class=\"4xx\"}", 0.0),
        ("callbackd_sip_invalid_messages_total", 0.0),
        ("callbackd_calls_total{direction=\"inbound\",outcome=\"remote_hangup\"}", 2.0),
        ("callbackd_calls_total{direction=\"inbound\",outcome=\"local_hangup\"}", 1.0),
        ("callbackd_calls_active", 0.0),
        ("callbackd_rtp_ports", 0.0),
        ("callbackd_ivr_flows_total{outcome=\"unchanged\"}", 2.0),
        ("callbackd_ivr_flows_total{outcome=\"changed\"}", 1.0),
        ("callbackd_ivr_operations_total{operation=\"lookup\",result=\"found\"}", 1.0),
        ("callbackd_ivr_operations_total{operation=\"change\",result=\"success\"}", 1.0),
        ("callbackd_keys_total{source=\"rfc4733\"}", keys.len() as f64),
        ("callbackd_callbacks{queue=\"support\",state=\"queued\"}", 0.0),
        ("callbackd_agents{state=\"logged_out\"}", 1.0),
        ("callbackd_http_requests_total{method=\"POST\",route=\"/api/v1/callbacks\",status=\"201\"}", 1.0),
        ("callbackd_http_requests_total{method=\"POST\",route=\"/api/v1/agents\",status=\"201\"}", 1.0),
        ("callbackd_http_requests_total{method=\"GET\",route=\"/api/v1/callbacks/{confirmation_id}\",status=\"404\"}", 1.0),
        ("callbackd_http_requests_total{method=\"GET\",route=\"/metrics\",status=\"401\"}", 1.0),
        ("callbackd_draining", 0.0),
        ("callbackd_trunk_targets{trunk=\"default\",state=\"up\"}", 0.0),
    ];
    for (series, want) in expected {
        assert_eq!(count(series), want, "{series}:\n{text}");
    }
    // The legs' RTP: callbackd played prompts to all three, and heard the keypad call's keys.
    assert!(
        count("callbackd_rtp_packets_total{direction=\"sent\"}") > 100.0,
        "{text}"
    );
    assert!(
        count("callbackd_rtp_packets_total{direction=\"received\"}") > 0.0,
        "{text}"
    );
    assert_eq!(
        count("callbackd_trunk_targets{trunk=\"default\",state=\"down\"}")
            + count("callbackd_trunk_targets{trunk=\"default\",state=\"unknown\"}"),
        1.0
    );
    assert!(
        count("callbackd_store_operation_seconds_count{operation=\"update\"}") >= 1.0,
        "the pause went through the store: {text}"
    );

    let promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian package prometheus)");
    use std::io::Write;
    promtool
        .stdin
        .as_ref()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // The alert rules load, and they and the dashboard name only metrics callbackd serves.
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations/callbackd-alerts.yml");
    let checked = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    for file in ["callbackd-alerts.yml", "grafana-dashboard.json"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("docs/operations")
            .join(file);
        let named = std::fs::read_to_string(path).unwrap();
        for name in metric_names(&named) {
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "{file} names {name}, which callbackd does not serve"
            );
        }
    }
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations/grafana-dashboard.json"),
        )
        .unwrap(),
    )
    .expect("the dashboard is JSON");
    assert!(dashboard["panels"].as_array().is_some_and(|p| p.len() > 10));

    // And Prometheus itself holds the same figures.
    assert_eq!(
        prometheus.query_until("up{job=\"callbackd\"}", 1.0),
        Some(1.0)
    );
    assert_eq!(
        prometheus.query_until("sum(callbackd_calls_total)", 3.0),
        Some(3.0),
        "{}",
        std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
    );
    drop(prometheus);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn with_metrics_off_nothing_is_served() {
    let config = config_with(
        &store::testing::sqlite_url(),
        &[("\nmetrics = true", "\nmetrics = false")],
    );
    let server = Server::start(&config);
    let r = server.get("/metrics");
    assert_eq!(r.status, 404, "{:?}", r.body);
    assert_eq!(
        r.body["error"]["message"],
        Value::from("metrics are off (api.metrics = false)")
    );
}
