//! callbackd where it will really run, in network namespaces joined by veth pairs on this
//! machine (nothing leaves it):
//!
//! ```text
//!  carrier 198.51.100.2 ── 198.51.100.1 nat 10.0.0.1 ── 10.0.0.2 vm 10.1.0.2 ── 10.1.0.3 pbx
//! ```
//!
//! `nat` maps its public address 198.51.100.1 one to one onto the VM's private 10.0.0.2
//! (DNAT in, SNAT out), as a cloud provider does. A caller on the carrier side completes the
//! keypad self-service flow through the NAT: signalling both ways, the keys heard (RTP in),
//! the prompts counted as they arrive (RTP out). First with callbackd bound to the private
//! address, the cloud VM case; then bound to every interface, where the PBX on the private
//! side must be told the private address and the carrier the public one.

mod common;

use std::path::Path;
use std::process::Command;

use common::{create_callback, keypad_scenario, run_sipp_from, show_callback, Server};

/// Runs `ip` or `iptables` (with `ip netns exec NS` in front when the first word is `@NS`).
fn run(words: &str) {
    let words: Vec<&str> = words.split_whitespace().collect();
    let (program, args): (&str, Vec<&str>) = match words[0].strip_prefix('@') {
        Some(ns) => ("ip", [&["netns", "exec", ns], &words[1..]].concat()),
        None => (words[0], words[1..].to_vec()),
    };
    let out = Command::new(program)
        .args(&args)
        .output()
        .unwrap_or_else(|e| panic!("{program} does not run ({e}): apt-get install iproute2 iptables (scripts/test.sh installs them)"));
    assert!(
        out.status.success(),
        "{}: {}",
        words.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The four namespaces, deleted (with their veth pairs) when dropped.
struct Network {
    prefix: String,
}

impl Network {
    fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn build() -> Network {
        // Interface names have 15 characters at most.
        let prefix = format!("cb{}", std::process::id() % 100_000);
        let net = Network { prefix };
        let p = &net.prefix;
        for ns in ["vm", "nat", "carrier", "pbx"] {
            run(&format!("ip netns add {p}{ns}"));
            run(&format!("ip -n {p}{ns} link set lo up"));
        }
        let link = |a: &str, ns_a: &str, ip_a: &str, b: &str, ns_b: &str, ip_b: &str| {
            run(&format!("ip link add {p}{a} type veth peer name {p}{b}"));
            for (dev, ns, ip) in [(a, ns_a, ip_a), (b, ns_b, ip_b)] {
                run(&format!("ip link set {p}{dev} netns {p}{ns}"));
                run(&format!("ip -n {p}{ns} addr add {ip} dev {p}{dev}"));
                run(&format!("ip -n {p}{ns} link set {p}{dev} up"));
            }
        };
        link("v0", "vm", "10.0.0.2/24", "n0", "nat", "10.0.0.1/24");
        link(
            "n1",
            "nat",
            "198.51.100.1/24",
            "c0",
            "carrier",
            "198.51.100.2/24",
        );
        link("v1", "vm", "10.1.0.2/24", "p0", "pbx", "10.1.0.3/24");
        run(&format!("ip -n {p}vm route add default via 10.0.0.1"));
        run(&format!("@{p}nat sysctl -qw net.ipv4.ip_forward=1"));
        run(&format!(
            "@{p}nat iptables -t nat -A PREROUTING -d 198.51.100.1 -j DNAT --to-destination 10.0.0.2"
        ));
        run(&format!(
            "@{p}nat iptables -t nat -A POSTROUTING -s 10.0.0.2 -o {p}n1 -j SNAT --to-source 198.51.100.1"
        ));
        // Counters of what callbackd sends besides SIP, as each caller receives it.
        run(&format!(
            "@{p}carrier iptables -A INPUT -p udp -s 198.51.100.1 ! --sport 5060 -j ACCEPT"
        ));
        run(&format!(
            "@{p}pbx iptables -A INPUT -p udp -s 10.1.0.2 ! --sport 5060 -j ACCEPT"
        ));
        net
    }

    /// UDP packets (not SIP) that reached the caller in `ns` so far.
    fn media_received(&self, ns: &str) -> u64 {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns(ns),
                "iptables",
                "-L",
                "INPUT",
                "-v",
                "-x",
                "-n",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.contains("udp"))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for ns in ["vm", "nat", "carrier", "pbx"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(ns)])
                .status();
        }
    }
}

/// A caller in `ns` at `local` pauses the callback for `number` through `target`; returns
/// what SIPp saw of callbackd's 200 OK.
fn pause_by_phone(
    net: &Network,
    ns: &str,
    local: &str,
    target: &str,
    config: &Path,
    number: &str,
    dir: &Path,
) -> String {
    let id = create_callback(config, number);
    let scenario = dir.join(format!("{ns}.xml"));
    keypad_scenario(number, "5000", &format!("{id}#5*"), false, &scenario);
    let trace = dir.join(format!("{ns}-messages.log"));
    let before = net.media_received(ns);
    let (ok, failed, out) = run_sipp_from(
        Some(&net.ns(ns)),
        local,
        target.parse().unwrap(),
        &scenario.display().to_string(),
        1,
        &["-trace_msg", "-message_file", &trace.display().to_string()],
    );
    assert_eq!((ok, failed), (1, 0), "the call from {ns}: {out}");
    assert_eq!(
        show_callback(config, &id)["state"],
        "paused",
        "the keys from {ns} were heard"
    );
    let media = net.media_received(ns) - before;
    assert!(
        media > 100,
        "the prompts reached the caller in {ns}: {media} packets"
    );
    let messages = std::fs::read_to_string(&trace).unwrap();
    let ok = messages
        .split("-----------------------------------------------")
        .find(|m| m.contains("SIP/2.0 200 OK") && m.contains("INVITE"))
        .unwrap_or_else(|| panic!("no 200 for the INVITE in {messages}"));
    ok.to_owned()
}

#[test]
fn the_keypad_flow_works_through_nat_and_each_side_sees_its_own_address() {
    let net = Network::build();
    let dir = std::env::temp_dir().join(format!("callbackd-nat-{}", net.prefix));
    std::fs::create_dir_all(&dir).unwrap();
    let url = store::testing::sqlite_url();

    // A cloud VM: callbackd binds the private address and tells peers the public one. Before,
    // it bound its RTP to the advertised address, which is on no interface, and every call
    // got 503.
    let config = common::config_with(
        &url,
        &[
            ("udp = [\"127.0.0.1:0\"]", "udp = [\"10.0.0.2:5060\"]"),
            ("tcp = [\"127.0.0.1:0\"]", "tcp = []"),
            (
                "# advertised = \"203.0.113.10\"",
                "advertised = \"198.51.100.1\"",
            ),
        ],
    );
    let log = dir.join("vm.log");
    let server = Server::start_logging_in(Some(&net.ns("vm")), &config, &log);
    let ok = pause_by_phone(
        &net,
        "carrier",
        "198.51.100.2",
        "198.51.100.1:5060",
        &config,
        "+12125550101",
        &dir,
    );
    assert!(ok.contains("Contact: <sip:198.51.100.1:5060>"), "{ok}");
    assert!(ok.contains("c=IN IP4 198.51.100.1"), "{ok}");
    drop(server);

    // Bound to every interface: the PBX on the private side is told the private address.
    let config = common::config_with(
        &url,
        &[
            ("udp = [\"127.0.0.1:0\"]", "udp = [\"0.0.0.0:5060\"]"),
            ("tcp = [\"127.0.0.1:0\"]", "tcp = []"),
            (
                "# advertised = \"203.0.113.10\"",
                "advertised = \"198.51.100.1\"",
            ),
            (
                "# \"10.0.0.0/8\" = \"10.0.0.5\"",
                "\"10.1.0.0/24\" = \"10.1.0.2\"",
            ),
        ],
    );
    let server = Server::start_logging_in(Some(&net.ns("vm")), &config, &log);
    let ok = pause_by_phone(
        &net,
        "carrier",
        "198.51.100.2",
        "198.51.100.1:5060",
        &config,
        "+12125550102",
        &dir,
    );
    assert!(ok.contains("Contact: <sip:198.51.100.1:5060>"), "{ok}");
    assert!(ok.contains("c=IN IP4 198.51.100.1"), "{ok}");
    let ok = pause_by_phone(
        &net,
        "pbx",
        "10.1.0.3",
        "10.1.0.2:5060",
        &config,
        "+12125550103",
        &dir,
    );
    assert!(ok.contains("Contact: <sip:10.1.0.2:5060>"), "{ok}");
    assert!(ok.contains("c=IN IP4 10.1.0.2"), "{ok}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
