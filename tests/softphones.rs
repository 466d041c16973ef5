//! The README's walkthrough without a carrier: two baresip softphones (Debian's baresip-core)
//! register with callbackd, one as the agent and one as the customer. A callback booked
//! through the API rings the agent, then the customer, and the two hear each other: each
//! phone sends a tone of its own (440 Hz the agent, 1,000 Hz the customer), and each records
//! what it hears (baresip's sndfile module).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{config_with, free_port, ports, Server};
use serde_json::json;

/// A baresip registered with callbackd as `user`, auto-answering, sending a `tone` (Hz) and
/// recording what it hears under `dir/heard`; stopped when dropped.
struct Softphone {
    child: Child,
    dir: PathBuf,
}

impl Softphone {
    fn start(dir: &Path, user: &str, password: &str, tone: u32, callbackd: u16) -> Softphone {
        if Command::new("baresip").arg("-h").output().is_err() {
            panic!("baresip is not installed: apt-get install baresip-core (scripts/test.sh installs it)");
        }
        std::fs::create_dir_all(dir.join("heard")).unwrap();
        let sent = dir.join("tone.wav");
        let made = Command::new("sox")
            .args(["-n", "-r", "8000", "-c", "1", "-b", "16"])
            .arg(&sent)
            .args(["synth", "60", "sine", &tone.to_string(), "vol", "0.3"])
            .status()
            .expect("sox runs (apt-get install sox)");
        assert!(made.success(), "sox made no tone");
        let rtp = ports(20);
        std::fs::write(
            dir.join("config"),
            format!(
                "poll_method epoll\n\
                 sip_listen 127.0.0.1:{sip}\n\
                 net_interface 127.0.0.1\n\
                 rtp_ports {rtp}-{last}\n\
                 audio_source aufile,{sent}\n\
                 audio_player aubridge,{user}\n\
                 audio_alert aubridge,{user}\n\
                 module_path /usr/lib/baresip/modules\n\
                 module g711.so\n\
                 module aufile.so\n\
                 module aubridge.so\n\
                 module sndfile.so\n\
                 snd_path {heard}\n\
                 module_tmp account.so\n\
                 module_app menu.so\n",
                sip = free_port(),
                last = rtp + 19,
                sent = sent.display(),
                heard = dir.join("heard").display(),
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("accounts"),
            format!(
                "<sip:{user}@callbackd>;auth_pass=\"{password}\";\
                 outbound=\"sip:127.0.0.1:{callbackd}\";answermode=auto;regint=600\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("baresip.log")).unwrap();
        let child = Command::new("baresip")
            .arg("-f")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("baresip runs");
        Softphone {
            child,
            dir: dir.to_owned(),
        }
    }

    /// The power (dB, relative) of `frequency` in the last second this phone heard.
    fn heard(&self, frequency: f64) -> f64 {
        let file = std::fs::read_dir(self.dir.join("heard"))
            .unwrap()
            .filter_map(|e| Some(e.ok()?.path()))
            .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
            .unwrap_or_else(|| panic!("{} recorded nothing", self.dir.display()));
        // 16-bit mono at 8 kHz after the 44-byte header, flushed as it is heard.
        let bytes = std::fs::read(&file).unwrap();
        let samples: Vec<f64> = bytes[44.min(bytes.len())..]
            .chunks_exact(2)
            .map(|b| f64::from(i16::from_le_bytes([b[0], b[1]])))
            .collect();
        let last = &samples[samples.len().saturating_sub(8000)..];
        assert!(
            last.len() == 8000,
            "under a second heard by {}",
            self.dir.display()
        );
        // Goertzel: the power of one frequency.
        let w = 2.0 * std::f64::consts::PI * frequency / 8000.0;
        let (mut s1, mut s2) = (0.0, 0.0);
        for x in last {
            let s0 = x + 2.0 * w.cos() * s1 - s2;
            (s2, s1) = (s1, s0);
        }
        let power = (s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2) / (last.len() as f64).powi(2);
        10.0 * (power + 1e-9).log10()
    }
}

impl Drop for Softphone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(what: &str, log: &Path, text: &str, within: Duration) {
    let start = Instant::now();
    while !std::fs::read_to_string(log).unwrap().contains(text) {
        assert!(
            start.elapsed() < within,
            "{what} did not happen within {within:?}: {}",
            std::fs::read_to_string(log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_booked_callback_rings_the_agents_softphone_then_the_customers_and_they_talk() {
    let dir = std::env::temp_dir().join(format!("callbackd-phones-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = store::testing::sqlite_url();
    // As in the README: two phones in [sip.phones], and the customer connected once greeted.
    let config = config_with(
        &url,
        &[
            (
                "# 1001 = \"a long phone password\"",
                "1001 = \"agent phone password\"\n1002 = \"customer phone password\"",
            ),
            ("confirm_timeout = \"10s\"", "confirm_timeout = \"0s\""),
        ],
    );
    let log = dir.join("callbackd.log");
    let server = Server::start_logging(&config, &log);
    let sip = server.sip_udp.unwrap().port();
    let r = server.post(
        "/api/v1/agents",
        &json!({"id": "ada", "name": "Ada", "skills": ["billing"], "address": "sip:1001@callbackd"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);

    let agent = Softphone::start(&dir.join("agent"), "1001", "agent phone password", 440, sip);
    let customer = Softphone::start(
        &dir.join("customer"),
        "1002",
        "customer phone password",
        1000,
        sip,
    );
    // Registering logs the agent in (dialer.login_on_register).
    wait_for(
        "the agent's login",
        &log,
        "the agent's phone registered",
        Duration::from_secs(10),
    );
    wait_for(
        "the customer's registration",
        &log,
        "phone registered user=\"1002\"",
        Duration::from_secs(10),
    );

    let booked = server.post(
        "/api/v1/callbacks",
        &json!({"queue": "support", "skill": "billing", "address": "sip:1002@callbackd", "media": "sip", "customer_name": "Bob"}),
    );
    assert_eq!(booked.status, 201, "{}", booked.body);
    // The agent hears the whisper, then the customer is called, greeted and connected.
    wait_for(
        "the bridge",
        &log,
        "connected; bridging",
        Duration::from_secs(40),
    );
    std::thread::sleep(Duration::from_secs(3));

    let (agent_hears, customer_hears) = (agent.heard(1000.0), customer.heard(440.0));
    let (agent_own, customer_own) = (agent.heard(440.0), customer.heard(1000.0));
    eprintln!(
        "the agent hears the customer's 1,000 Hz at {agent_hears:.0} dB (its own 440 Hz at \
         {agent_own:.0} dB); the customer hears the agent's 440 Hz at {customer_hears:.0} dB \
         (its own 1,000 Hz at {customer_own:.0} dB)"
    );
    assert!(
        agent_hears > agent_own + 30.0,
        "the agent hears the customer: {agent_hears:.0} dB against {agent_own:.0} dB"
    );
    assert!(
        customer_hears > customer_own + 30.0,
        "the customer hears the agent: {customer_hears:.0} dB against {customer_own:.0} dB"
    );
    let id = booked.body["confirmation_id"].as_str().unwrap();
    let callback = server.get(&format!("/api/v1/callbacks/{id}")).body;
    assert_eq!(callback["state"], "connected", "{callback}");
    drop((agent, customer, server));
    std::fs::remove_dir_all(&dir).unwrap();
}
