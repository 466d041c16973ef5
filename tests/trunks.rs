//! Several trunks, each played by SIPp: numbers routed by prefix and by queue, each trunk's
//! number format and caller ID as seen in the INVITE it receives, and credentials kept from
//! a challenger in another realm.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{config_with, far_end, far_end_for, finished_cleanly, Server, SIP_TO_LOOPBACK};
use serde_json::{json, Value};

/// uas_unavailable.xml, checking the INVITE's Request-URI user and From user, and that it
/// carries each of `headers` (regular expressions; in XML, `<` as `&lt;`).
fn trunk_scenario(
    dir: &Path,
    name: &str,
    request_user: &str,
    from_user: &str,
    headers: &[&str],
) -> String {
    let extra: String = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            format!(
                "      <ereg regexp=\"{h}\" search_in=\"msg\" check_it=\"true\" assign_to=\"h{i}\"/>\n"
            )
        })
        .collect();
    let referenced: String = (0..headers.len()).map(|i| format!(",h{i}")).collect();
    let check = format!(
        "<recv request=\"INVITE\" crlf=\"true\">\n    <action>\n      \
         <ereg regexp=\"^INVITE sip:({request_user})@\" search_in=\"msg\" check_it=\"true\" assign_to=\"all,user\"/>\n      \
         <ereg regexp=\"From: &lt;sip:{from_user}@\" search_in=\"msg\" check_it=\"true\" assign_to=\"from\"/>\n\
         {extra}    </action>\n  </recv>\n  <Reference variables=\"all,user,from{referenced}\"/>"
    );
    let text = std::fs::read_to_string(common::sipp_scenario("uas_unavailable.xml"))
        .unwrap()
        .replace("<recv request=\"INVITE\" crlf=\"true\"/>", &check);
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn wait_for_attempt(server: &Server, id: &str) -> Value {
    let start = Instant::now();
    loop {
        let cb = server.get(&format!("/api/v1/callbacks/{id}")).body;
        let done = cb["dial_attempts"]
            .as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(|a| !a["outcome"].is_null()));
        if done {
            return cb;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{cb:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn numbers_go_to_the_trunk_their_prefix_and_queue_choose_written_its_way() {
    let dir = std::env::temp_dir().join(format!("callbackd-trunks-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    // Trunk "us": E.164 with +, its own caller ID. Trunk "uk": national numbers with a
    // technical prefix 99, international ones with 00, and a caller ID of its own.
    let (us, us_port) = far_end_for(
        &trunk_scenario(
            &dir,
            "us.xml",
            "\\+12125550100",
            "\\+12125550000",
            // It trusts callbackd's network: the caller ID asserted, and withheld.
            &[
                "P-Asserted-Identity: &lt;sip:\\+12125550000@127\\.0\\.0\\.1:",
                "Privacy: id",
            ],
        ),
        1,
    );
    let (uk, uk_port) = far_end_for(
        &trunk_scenario(
            &dir,
            "uk.xml",
            "9902071234567|990013125550100",
            "\\+442071230000",
            &[],
        ),
        2,
    );
    let (agent, agent_port) = far_end_for("uas_answer.xml", 3);
    let trunks = format!(
        r#"
[trunks.us]
host = "127.0.0.1"
port = {us_port}
caller_id = "+12125550000"
asserted_identity = true
privacy = "id"

[trunks.uk]
host = "127.0.0.1"
port = {uk_port}
numbers = "national"
country_code = "44"
national_prefix = "0"
prefix = "99"
caller_id = "+442071230000"

[[routes]]
prefix = "+1"
trunks = ["us"]

[[routes]]
prefix = "+44"
trunks = ["uk"]

# The support queue's Chicago numbers go through the UK trunk, before the rule for +1.
[[routes]]
queue = "support"
prefix = "+1312"
trunks = ["uk"]
"#
    );
    let url = store::testing::sqlite_url();
    let config = config_with(
        &url,
        &[
            (
                "# allowed_regions = [\"US\", \"CA\"]",
                "allowed_regions = [\"US\", \"GB\"]",
            ),
            ("wrap_up = \"10s\"", "wrap_up = \"1s\""),
            (
                "customer_ring_timeout = \"30s\"",
                "customer_ring_timeout = \"5s\"",
            ),
            ("[queues.support]", &format!("{trunks}\n[queues.support]")),
        ],
    );
    let server = Server::start(&config);
    let r = server.post(
        "/api/v1/agents",
        &json!({"id": "ann", "name": "Ann", "skills": ["billing"],
                "address": format!("sip:ann@127.0.0.1:{agent_port}")}),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let ids: Vec<String> = ["+12125550100", "+442071234567", "+13125550100"]
        .iter()
        .map(|number| {
            let r = server.post(
                "/api/v1/callbacks",
                &json!({"queue": "support", "skill": "billing", "media": "voice", "address": number}),
            );
            assert_eq!(r.status, 201, "{number}: {:?}", r.body);
            assert!(r.body.get("unroutable").is_none(), "{:?}", r.body);
            r.body["confirmation_id"].as_str().unwrap().to_owned()
        })
        .collect();
    server.request(
        "PUT",
        "/api/v1/agents/ann/state",
        &[],
        Some(&json!({"state": "ready"})),
    );
    for id in &ids {
        let cb = wait_for_attempt(&server, id);
        assert_eq!(
            cb["dial_attempts"][0]["sip_status"], 503,
            "the trunk was reached and refused: {cb:#}"
        );
    }
    for (name, sipp) in [("us", us), ("uk", uk)] {
        let (ok, out) = finished_cleanly(sipp);
        assert!(
            ok,
            "trunk {name} saw its numbers written its way, with its caller ID: {out}"
        );
    }
    let _ = finished_cleanly(agent);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_call_its_trunk_cannot_carry_goes_through_the_routes_next_trunk() {
    let dir = std::env::temp_dir().join(format!("callbackd-next-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    // The first trunk answers 503 (it is overloaded); the second carries the call, and the
    // customer talks a second and hangs up.
    let (refusing, refusing_port) = far_end_for(
        &trunk_scenario(
            &dir,
            "refusing.xml",
            "\\+12125550100",
            "\\+12125550000",
            &[],
        ),
        1,
    );
    let capture = dir.join("silence.pcap");
    std::fs::write(&capture, common::in_band_capture("", media::g711::Law::Mu)).unwrap();
    let customer = common::filled_scenario(
        &dir,
        "uas_customer.xml",
        &[
            ("PCAP_FILE", &capture.display().to_string()),
            ("TALK_MS", "1000"),
        ],
    );
    let (carrying, carrying_port) = far_end_for(&customer, 1);
    let (agent, agent_port) = far_end_for("uas_answer.xml", 1);
    let trunks = format!(
        "\n[trunks.first]\nhost = \"127.0.0.1\"\nport = {refusing_port}\ncaller_id = \"+12125550000\"\n\n\
         [trunks.second]\nhost = \"127.0.0.1\"\nport = {carrying_port}\n\
         caller_id = \"+12125550000\"\n\n\
         [[routes]]\ntrunks = [\"first\", \"second\"]\n\n[queues.support]"
    );
    let url = store::testing::sqlite_url();
    let config = config_with(
        &url,
        &[
            ("whisper = true", "whisper = false"),
            ("greeting = true", "greeting = false"),
            ("[queues.support]", &trunks),
        ],
    );
    let log = dir.join("callbackd.log");
    let server = Server::start_logging(&config, &log);
    let r = server.post(
        "/api/v1/agents",
        &json!({"id": "ann", "name": "Ann", "skills": ["billing"],
                "address": format!("sip:ann@127.0.0.1:{agent_port}")}),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = server.post(
        "/api/v1/callbacks",
        &json!({"queue": "support", "skill": "billing", "media": "voice", "address": "+12125550100"}),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = r.body["confirmation_id"].as_str().unwrap().to_owned();
    server.request(
        "PUT",
        "/api/v1/agents/ann/state",
        &[],
        Some(&json!({"state": "ready"})),
    );
    let cb = wait_for_attempt(&server, &id);
    assert_eq!(
        cb["dial_attempts"][0]["outcome"], "connected",
        "one attempt, connected through the second trunk: {cb:#}"
    );
    let (ok, out) = finished_cleanly(refusing);
    assert!(ok, "the first trunk was tried and refused: {out}");
    let (ok, out) = finished_cleanly(carrying);
    assert!(ok, "the second trunk carried the call: {out}");
    let _ = finished_cleanly(agent);
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("the trunk could not carry the call; trying the route's next trunk"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn credentials_are_not_given_to_a_challenge_in_another_realm() {
    let (sipp, port) = far_end("uas_foreign_challenge.xml");
    let url = store::testing::sqlite_url();
    let trunk = format!(
        "\n[trunks.carrier]\nhost = \"127.0.0.1\"\nport = {port}\ndomain = \"trunk.example\"\n\
         username = \"callbackd\"\npassword = \"s3cret-trunk\"\nrealm = \"trunk.example\"\n\
         caller_id = \"+12125550000\"\n\n[[routes]]\ntrunks = [\"carrier\"]\n\n[queues.support]"
    );
    let server = Server::start(&config_with(
        &url,
        &[
            SIP_TO_LOOPBACK,
            (
                "sip_domains = [\"127.0.0.1\"]",
                "sip_domains = [\"127.0.0.1\", \"trunk.example\"]",
            ),
            ("[queues.support]", &trunk),
        ],
    ));
    let r = server.post(
        "/api/v1/test-calls",
        &json!({"to": "sip:+12125550100@trunk.example"}),
    );
    assert_eq!(
        r.body,
        json!({"answered": false, "status": 401, "ended": "failed"}),
        "{:?}",
        r.body
    );
    let (ok, out) = finished_cleanly(sipp);
    assert!(ok, "no credentials went to the foreign realm: {out}");
}

// Regression: a carrier delivering calls to a registered contact names the number dialled in
// To, not in the Request-URI's user, so per-number entries (sip.entries) never matched.
#[test]
fn the_dialled_number_comes_from_the_header_the_trunk_uses() {
    let dir = std::env::temp_dir().join(format!("callbackd-did-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    // Calls to the registered contact "callbackd", for the number 5001 in To.
    let scenario = dir.join("carrier.xml");
    let text = std::fs::read_to_string(common::sipp_scenario("uac_basic.xml"))
        .unwrap()
        .replace(
            "INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0",
            "INVITE sip:callbackd@[remote_ip]:[remote_port] SIP/2.0",
        )
        .replace(
            "To: <sip:[service]@[remote_ip]:[remote_port]>",
            "To: <sip:5001@[remote_ip]:[remote_port]>",
        );
    std::fs::write(&scenario, text).unwrap();
    let url = store::testing::sqlite_url();
    let trunk = "\n[trunks.carrier]\nhost = \"127.0.0.1\"\ncaller_id = \"+12125550000\"\n\
                 called_number = \"to\"\n\n[queues.support]";
    let config = config_with(
        &url,
        &[
            (
                "# \"5001\" = \"queue_support\"",
                "\"5001\" = \"queue_support\"",
            ),
            ("[queues.support]", trunk),
        ],
    );
    let log = dir.join("callbackd.log");
    let server = Server::start_logging(&config, &log);
    let (ok, failed, out) = common::run_sipp(
        server.sip_udp.unwrap(),
        &scenario.display().to_string(),
        1,
        &[],
    );
    assert_eq!((ok, failed), (1, 0), "{out}");
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    let incoming = text
        .lines()
        .find(|l| l.contains("incoming call"))
        .unwrap_or_else(|| panic!("no call logged: {text}"));
    assert!(
        incoming.contains("dialled=\"5001\"") && incoming.contains("entry=\"queue_support\""),
        "{incoming}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// dnsmasq serving a trunk domain's records on a loopback port; stopped when dropped.
struct Dns(std::process::Child);

impl Dns {
    fn start(port: u16, records: &[String]) -> Dns {
        let binary = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or_else(|| {
                panic!("dnsmasq is not installed: apt-get install dnsmasq-base (scripts/test.sh installs it)")
            });
        let child = std::process::Command::new(binary)
            .args([
                "--no-daemon",
                "--conf-file=/dev/null",
                "--listen-address=127.0.0.1",
            ])
            .args([
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--local-ttl=5",
            ])
            .arg(format!("--port={port}"))
            .args(records)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("dnsmasq runs");
        std::thread::sleep(Duration::from_millis(300));
        Dns(child)
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The default configuration with one trunk, `carrier`, given by the name `host` (looked up
/// at the DNS server on `dns_port`), that carries every number, and SIP calls allowed to
/// `host`.
fn by_name(host: &str, dns_port: u16) -> std::path::PathBuf {
    let trunk = format!(
        "\n[trunks.carrier]\nhost = \"{host}\"\ncaller_id = \"+12125550000\"\n\n\
         [[routes]]\ntrunks = [\"carrier\"]\n\n[dns]\nservers = [\"127.0.0.1:{dns_port}\"]\n\n\
         [queues.support]"
    );
    config_with(
        &store::testing::sqlite_url(),
        &[
            (
                "# sip_domains = [\"pbx.example.com\"]",
                &format!("sip_domains = [\"{host}\"]"),
            ),
            ("[queues.support]", &trunk),
        ],
    )
}

/// A test call through the trunk of the default route, held a second; how it went and how
/// long it took.
fn test_call(server: &Server, to: &str) -> (Value, Duration) {
    let start = Instant::now();
    let r = server.post("/api/v1/test-calls", &json!({"to": to, "hold_seconds": 1}));
    (r.body, start.elapsed())
}

#[test]
fn a_trunk_by_name_goes_to_its_first_srv_target_and_to_the_second_while_the_first_is_down() {
    let dir = std::env::temp_dir().join(format!("callbackd-srv-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let (primary, primary_port) = far_end_for("uas_answer.xml", 1);
    let (secondary, secondary_port) = far_end_for("uas_answer.xml", 1);
    let dns_port = common::free_port();
    let _dns = Dns::start(
        dns_port,
        &[
            format!("--srv-host=_sip._udp.trunk.test,primary.trunk.test,{primary_port},10,0"),
            format!("--srv-host=_sip._udp.trunk.test,secondary.trunk.test,{secondary_port},20,0"),
            "--host-record=primary.trunk.test,127.0.0.1".into(),
            "--host-record=secondary.trunk.test,127.0.0.1".into(),
        ],
    );
    let config = by_name("trunk.test", dns_port);
    let log = dir.join("callbackd.log");
    let server = Server::start_logging(&config, &log);
    let start = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("trunk targets")
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the trunk's name was not resolved"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let to = "sip:+12125550100@trunk.test";
    let (outcome, _) = test_call(&server, to);
    assert_eq!(outcome["answered"], true, "{outcome}");
    let (ok, out) = finished_cleanly(primary);
    assert!(ok, "the first call went to the priority-10 target: {out}");

    // The primary is down (its port closed): the call goes to the secondary once the primary
    // has said nothing for 4·T1.
    let (outcome, took) = test_call(&server, to);
    assert_eq!(outcome["answered"], true, "{outcome}");
    let (ok, out) = finished_cleanly(secondary);
    assert!(ok, "the second call went to the priority-20 target: {out}");
    eprintln!("fail-over to the second SRV target: the test call took {took:?} (1 s of it held)");
    // 4·T1 of silence, not the INVITE transaction's 32 s.
    assert!(took < Duration::from_secs(6), "the fail-over took {took:?}");

    // Back up: calls go to it again.
    let primary = common::far_end_at("uas_answer.xml", primary_port, 1);
    let (outcome, _) = test_call(&server, to);
    assert_eq!(outcome["answered"], true, "{outcome}");
    let (ok, out) = finished_cleanly(primary);
    assert!(ok, "the primary, back, took the next call: {out}");
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("trying the next"),
        "the fail-over is logged: {text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_trunk_domains_naptr_record_for_its_transport_names_the_srv_records_to_use() {
    // NAPTR says UDP is at _sip._udp.sbc.carrier.test and TCP elsewhere; the conventional
    // _sip._udp.carrier.test points at a far end that must not be called.
    let (chosen, chosen_port) = far_end_for("uas_answer.xml", 1);
    let conventional = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let conventional_port = conventional.local_addr().unwrap().port();
    let dns_port = common::free_port();
    let _dns = Dns::start(
        dns_port,
        &[
            "--naptr-record=carrier.test,10,50,s,SIP+D2T,,_sip._tcp.sbc.carrier.test".into(),
            "--naptr-record=carrier.test,20,50,s,SIP+D2U,,_sip._udp.sbc.carrier.test".into(),
            format!("--srv-host=_sip._udp.sbc.carrier.test,sbc.carrier.test,{chosen_port},10,0"),
            format!("--srv-host=_sip._udp.carrier.test,sbc.carrier.test,{conventional_port},10,0"),
            "--host-record=sbc.carrier.test,127.0.0.1".into(),
        ],
    );
    let config = by_name("carrier.test", dns_port);
    let server = Server::start(&config);
    let start = Instant::now();
    loop {
        let trunks = server.get("/api/v1/trunks").body;
        let targets = trunks["trunks"][0]["targets"].to_string();
        if targets.contains(&chosen_port.to_string()) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the trunk's targets never came from its NAPTR record: {trunks}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (outcome, _) = test_call(&server, "sip:+12125550100@carrier.test");
    assert_eq!(outcome["answered"], true, "{outcome}");
    let (ok, out) = finished_cleanly(chosen);
    assert!(
        ok,
        "the call went to the target the NAPTR record led to: {out}"
    );
    conventional.set_nonblocking(true).unwrap();
    assert!(
        conventional.recv(&mut [0; 2048]).is_err(),
        "nothing went to the SRV name the NAPTR record overrides"
    );
}

#[test]
fn callbackd_registers_with_two_trunks_one_of_them_by_name() {
    // Each SIPp registrar challenges, checks the credentials and expects the refresh.
    let (by_address, address_port) = far_end("uas_trunk_registrar.xml");
    let (by_name, name_port) = far_end("uas_trunk_registrar.xml");
    let dns_port = common::free_port();
    let _dns = Dns::start(
        dns_port,
        &[
            format!("--srv-host=_sip._udp.registrar.test,sbc.registrar.test,{name_port},10,0"),
            "--host-record=sbc.registrar.test,127.0.0.1".into(),
        ],
    );
    let trunks = format!(
        "\n[trunks.first]\nhost = \"127.0.0.1\"\nport = {address_port}\nregister = true\n\
         domain = \"trunk.example\"\nusername = \"callbackd\"\npassword = \"s3cret-trunk\"\n\
         caller_id = \"+12125550000\"\n\n\
         [trunks.second]\nhost = \"registrar.test\"\nregister = true\n\
         domain = \"trunk.example\"\nusername = \"callbackd\"\npassword = \"s3cret-trunk\"\n\
         caller_id = \"+12125550000\"\n\n\
         [[routes]]\ntrunks = [\"first\", \"second\"]\n\n[dns]\nservers = [\"127.0.0.1:{dns_port}\"]\n\n\
         [queues.support]"
    );
    let url = store::testing::sqlite_url();
    let dir = std::env::temp_dir().join(format!("callbackd-reg-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("callbackd.log");
    let server = Server::start_logging(&config_with(&url, &[("[queues.support]", &trunks)]), &log);
    let (ok, out) = finished_cleanly(by_address);
    assert!(
        ok,
        "the trunk given by address: challenged, answered, refreshed: {out}"
    );
    let (ok, out) = finished_cleanly(by_name);
    assert!(
        ok,
        "the trunk given by name, found by SRV: challenged, answered, refreshed: {out}"
    );
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    for trunk in ["first", "second"] {
        assert!(
            text.contains(&format!("trunk=\"{trunk}\" expires=")),
            "each registration is logged with its trunk: {text}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_trunk_name_that_resolves_to_nothing_is_said_so_and_nothing_is_sent() {
    let dns_port = common::free_port();
    let _dns = Dns::start(dns_port, &[]);
    let trunk = format!(
        "\n[trunks.ghost]\nhost = \"nowhere.test\"\ncaller_id = \"+12125550000\"\n\n\
         [[routes]]\ntrunks = [\"ghost\"]\n\n[dns]\nservers = [\"127.0.0.1:{dns_port}\"]\n\n\
         [queues.support]"
    );
    let dir = std::env::temp_dir().join(format!("callbackd-ghost-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("callbackd.log");
    let url = store::testing::sqlite_url();
    let config = config_with(
        &url,
        &[
            (
                "# sip_domains = [\"pbx.example.com\"]",
                "sip_domains = [\"nowhere.test\"]",
            ),
            ("[queues.support]", &trunk),
        ],
    );
    let server = Server::start_logging(&config, &log);
    let r = server.post(
        "/api/v1/test-calls",
        &json!({"to": "sip:+12125550100@nowhere.test"}),
    );
    assert_eq!(r.status, 503, "{:?}", r.body);
    let message = r.body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("`ghost` has no address yet"), "{message}");
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("trunk host name not resolved") && text.contains("nowhere.test"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn keep_alives_show_a_trunk_target_up_and_then_down() {
    // Another callbackd is the trunk: it answers OPTIONS.
    let pbx = Server::start(&config_with(&store::testing::sqlite_url(), &[]));
    let port = pbx.sip_udp.unwrap().port();
    let trunk = format!(
        "\n[trunks.pbx]\nhost = \"127.0.0.1\"\nport = {port}\ncaller_id = \"+12125550000\"\n\
         qualify = \"1s\"\n\n[[routes]]\ntrunks = [\"pbx\"]\n\n[queues.support]"
    );
    let dir =
        std::env::temp_dir().join(format!("callbackd-qualify-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("callbackd.log");
    let server = Server::start_logging(
        &config_with(
            &store::testing::sqlite_url(),
            &[("[queues.support]", &trunk)],
        ),
        &log,
    );
    let state = |server: &Server| {
        server.get("/api/v1/trunks").body["trunks"][0]["targets"][0]["state"].clone()
    };
    let until = |want: &str| {
        let start = Instant::now();
        while state(&server) != want {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "never {want}: {}",
                state(&server)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        start.elapsed()
    };
    until("up");
    drop(pbx);
    let took = until("down");
    eprintln!("a stopped target was marked down after {took:?} (keep-alives every 1 s)");
    let board = server.get("/api/v1/trunks").body;
    assert_eq!(board["trunks"][0]["name"], "pbx", "{board}");
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("trunk target down"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_route_skips_a_trunk_its_keep_alives_found_down() {
    // Two other callbackds are the route's trunks, in order.
    let first = Server::start(&config_with(&store::testing::sqlite_url(), &[]));
    let second = Server::start(&config_with(&store::testing::sqlite_url(), &[]));
    let trunk = |name: &str, server: &Server| {
        format!(
            "[trunks.{name}]\nhost = \"127.0.0.1\"\nport = {}\ncaller_id = \"+12125550000\"\nqualify = \"1s\"\n",
            server.sip_udp.unwrap().port()
        )
    };
    let trunks = format!(
        "\n{}\n{}\n[[routes]]\ntrunks = [\"first\", \"second\"]\n\n[queues.support]",
        trunk("first", &first),
        trunk("second", &second)
    );
    let server = Server::start(&config_with(
        &store::testing::sqlite_url(),
        &[
            (
                "# sip_domains = [\"pbx.example.com\"]",
                "sip_domains = [\"pbx.example.com\"]",
            ),
            ("[queues.support]", &trunks),
        ],
    ));
    let state =
        |i: usize| server.get("/api/v1/trunks").body["trunks"][i]["targets"][0]["state"].clone();
    let until = |i: usize, want: &str| {
        let start = Instant::now();
        while state(i) != want {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "trunk {i} never {want}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    until(0, "up");
    until(1, "up");
    drop(first);
    until(0, "down");
    // Through the route's second trunk: answered at once. The first would not have answered
    // at all.
    let (outcome, took) = test_call(&server, "sip:+12125550100@pbx.example.com");
    assert_eq!(outcome["answered"], true, "{outcome}");
    assert!(
        took < Duration::from_secs(2),
        "no wait for the trunk found down: {took:?}"
    );
    drop(second);
}
