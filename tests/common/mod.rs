//! Shared by the end-to-end tests: run the real `callbackd` binary on loopback and talk HTTP
//! to it over a real socket.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// Where a test's callbacks live: a fresh SQLite file or a fresh PostgreSQL database.
pub async fn store_url(backend: &str) -> String {
    match backend {
        "sqlite" => store::testing::sqlite_url(),
        "postgres" => store::testing::postgres_url().await,
        other => panic!("unknown backend {other}"),
    }
}

/// The default configuration with the API on a free loopback port and the given store.
pub fn config(store_url: &str, extra: &str) -> PathBuf {
    config_with(store_url, &[("# token = \"a long random string\"", extra)])
}

/// The default configuration on free loopback ports and the given store, with each
/// `(from, to)` text replacement made (a missing `from` fails the test).
pub fn config_with(store_url: &str, replacements: &[(&str, &str)]) -> PathBuf {
    let mut text = include_str!("../../callbackd.toml")
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\"")
        .replace("udp = [\"127.0.0.1:5060\"]", "udp = [\"127.0.0.1:0\"]")
        .replace("tcp = [\"127.0.0.1:5060\"]", "tcp = [\"127.0.0.1:0\"]")
        .replace(
            "url = \"sqlite://callbackd.db\"",
            &format!("url = \"{store_url}\""),
        );
    for (from, to) in replacements {
        assert!(text.contains(from), "callbackd.toml has no `{from}`");
        text = text.replace(from, to);
    }
    // Relative paths are taken from the file's folder (a temporary one): make the
    // checkout's absolute.
    let root = env!("CARGO_MANIFEST_DIR");
    text = text
        .lines()
        .map(|line| {
            let relative = ["dialplan", "prompts", "bots"].iter().find_map(|key| {
                line.strip_prefix(&format!("{key} = \""))
                    .filter(|value| !value.starts_with('/'))
                    .map(|value| format!("{key} = \"{root}/{value}"))
            });
            relative.unwrap_or_else(|| line.to_owned()) + "\n"
        })
        .collect();
    let path = std::env::temp_dir().join(format!(
        "callbackd-test-{:016x}.toml",
        rand::random::<u64>()
    ));
    std::fs::write(&path, text).unwrap();
    path
}

/// The replacement that lets SIP calls (test calls, `sip` callbacks) go to loopback: the
/// dialing policy allows no SIP host by default.
pub const SIP_TO_LOOPBACK: (&str, &str) = (
    "# sip_domains = [\"pbx.example.com\"]",
    "sip_domains = [\"127.0.0.1\"]",
);

pub fn callbackd() -> Command {
    callbackd_in(None)
}

/// The same, run inside the network namespace `netns` if given.
fn callbackd_in(netns: Option<&str>) -> Command {
    let mut cmd = match netns {
        Some(netns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", netns, env!("CARGO_BIN_EXE_callbackd")]);
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_callbackd")),
    };
    cmd.env_remove("DATABASE_URL")
        .env_remove("CALLBACKD_STORE_URL")
        .env_remove("CALLBACKD_API_LISTEN")
        .env_remove("CALLBACKD_API_TOKEN");
    cmd
}

/// The API token test servers run with, unless their configuration sets one.
pub const TOKEN: &str = "test-token-0123456789abcdef";

/// A running `callbackd serve`, killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// The API token it runs with: the configured one, else the one it generated (read from
    /// what it printed, or from `callbackd token` when it made none this time).
    pub token: String,
    pub sip_udp: Option<SocketAddr>,
    pub sip_tcp: Option<SocketAddr>,
    /// Every UDP address SIP listens on, in configuration order.
    pub sip_udp_all: Vec<SocketAddr>,
}

impl Server {
    pub fn start(config: &PathBuf) -> Server {
        Server::spawn(config, "warn", Stdio::inherit(), Some(TOKEN), None)
    }

    /// Starts with neither a configured token nor one in the environment: callbackd makes
    /// one at its first start (and prints it), or uses the one it keeps in the store.
    pub fn start_without_token(config: &PathBuf) -> Server {
        Server::spawn(config, "warn", Stdio::inherit(), None, None)
    }

    /// Starts with the log going to `log`, for tests that read what it says: `info`, and
    /// `debug` for the calls (the keys pressed).
    pub fn start_logging(config: &PathBuf, log: &Path) -> Server {
        Server::start_logging_in(None, config, log)
    }

    /// The same inside the network namespace `netns`, if given (its API is then on that
    /// namespace's loopback, out of this process's reach: use the command line).
    pub fn start_logging_in(netns: Option<&str>, config: &PathBuf, log: &Path) -> Server {
        let file = std::fs::File::create(log).unwrap();
        Server::spawn(
            config,
            "info,sqlx=warn,callbackd::signalling=debug",
            Stdio::from(file),
            Some(TOKEN),
            netns,
        )
    }

    /// Starts `callbackd serve`; with `token`, as its API token unless the configuration
    /// sets one.
    fn spawn(
        config: &PathBuf,
        level: &str,
        stderr: Stdio,
        token: Option<&str>,
        netns: Option<&str>,
    ) -> Server {
        let configured = std::fs::read_to_string(config)
            .unwrap()
            .lines()
            .find_map(|l| {
                l.strip_prefix("token = \"")
                    .and_then(|t| t.strip_suffix('"'))
                    .map(str::to_owned)
            })
            .or(token.map(str::to_owned));
        let mut command = callbackd_in(netns);
        if let Some(token) = &configured {
            command.env("CALLBACKD_API_TOKEN", token);
        }
        command
            .args(["serve", "--config"])
            .arg(config)
            .env("CALLBACKD_LOG", level)
            .stderr(stderr);
        Server::run(command, configured, config)
    }

    /// Runs `command`, a `callbackd serve`, and waits until it listens. Its API token is
    /// `token`, else the one it prints, else the one `callbackd token` tells for `config`.
    pub fn run(mut command: Command, token: Option<String>, config: &Path) -> Server {
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .expect("the callbackd binary runs");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let (mut sip_udp, mut sip_tcp, mut sip_udp_all) = (None, None, Vec::new());
        let mut printed_token = None;
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("callbackd: HTTP API on http://") {
                        break url.parse().unwrap();
                    } else if let Some((_, token)) = line
                        .strip_prefix("callbackd: API token ")
                        .and_then(|l| l.rsplit_once(": "))
                    {
                        printed_token = Some(token.to_owned());
                    } else if let Some(a) = line.strip_prefix("callbackd: SIP on udp://") {
                        sip_udp = sip_udp.or(a.parse().ok());
                        sip_udp_all.extend(a.parse::<SocketAddr>().ok());
                    } else if let Some(a) = line.strip_prefix("callbackd: SIP on tcp://") {
                        sip_tcp = sip_tcp.or(a.parse().ok());
                    }
                }
                _ => panic!("callbackd exited before listening: {:?}", child.wait()),
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let token = token
            .or(printed_token)
            .unwrap_or_else(|| cli(config, &["token"]).trim().to_owned());
        Server {
            child,
            addr,
            token,
            sip_udp,
            sip_tcp,
            sip_udp_all,
        }
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Response {
        let body = body.map(Value::to_string);
        let bearer = format!("Bearer {}", self.token);
        let mut with_token = headers.to_vec();
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        {
            with_token.push(("Authorization", &bearer));
        }
        request(self.addr, method, path, &with_token, body.as_deref()).expect("callbackd answers")
    }

    /// A request with a body as it is (not JSON, perhaps), with the token.
    pub fn request_raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Response {
        let bearer = format!("Bearer {}", self.token);
        let mut with_token = headers.to_vec();
        with_token.push(("Authorization", &bearer));
        request(self.addr, method, path, &with_token, Some(body)).expect("callbackd answers")
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], None)
    }

    pub fn post(&self, path: &str, body: &Value) -> Response {
        self.request("POST", path, &[], Some(body))
    }
}

/// The server's resident memory, in KiB.
pub fn rss_kib(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A TCP connection to `target` from the loopback address `ip` (another "machine").
pub fn connect_from(ip: &str, target: SocketAddr) -> std::io::Result<TcpStream> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(ip.parse().unwrap(), 0))?;
        socket.connect(target).await
    })?;
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// Starts a chat conversation (no token needed); its ID.
pub fn chat_start(server: &Server) -> String {
    let r = server.post("/api/v1/chat/sessions", &serde_json::json!({}));
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(
        r.body["replies"][0]["text"],
        "Hello! How can I help you today?"
    );
    r.body["id"].as_str().unwrap().to_owned()
}

/// Says `text` in conversation `id`; the bot's replies, joined.
pub fn chat_say(server: &Server, id: &str, text: &str) -> String {
    let r = server.post(
        &format!("/api/v1/chat/sessions/{id}/messages"),
        &serde_json::json!({ "text": text }),
    );
    assert_eq!(r.status, 200, "{text}: {:?}", r.body);
    r.body["replies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["text"].as_str().unwrap())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs the command line with `args` on `config`; it must succeed. What it printed.
pub fn cli(config: &std::path::Path, args: &[&str]) -> String {
    let out = callbackd()
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "callbackd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Creates a callback for `number` with the CLI; its confirmation ID.
pub fn create_callback(config: &std::path::Path, number: &str) -> String {
    let out = cli(
        config,
        &[
            "callbacks",
            "create",
            "--queue",
            "support",
            "--address",
            number,
        ],
    );
    let body: Value = serde_json::from_str(&out).unwrap();
    body["confirmation_id"].as_str().unwrap().to_owned()
}

pub fn show_callback(config: &std::path::Path, id: &str) -> Value {
    serde_json::from_str(&cli(config, &["callbacks", "show", id])).unwrap()
}

/// A key a callbackd log says was pressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPressed {
    /// The call that heard it (`call-3`).
    pub call: String,
    pub key: char,
    /// How it came: `TelephoneEvent`, `Info` or `InBand`.
    pub source: String,
}

/// The keys a callbackd log (at `info`) says were pressed, in order.
pub fn keys_logged(log: &str) -> Vec<KeyPressed> {
    let field = |line: &str, name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .map(str::to_owned)
    };
    log.lines()
        .filter(|l| l.contains("key pressed"))
        .filter_map(|l| {
            Some(KeyPressed {
                call: field(l, "call=")?,
                key: field(l, "key=")?.chars().next()?,
                source: field(l, "source=")?,
            })
        })
        .collect()
}

/// The handle of the first call a callbackd log says came in.
pub fn first_incoming_call(log: &str) -> Option<String> {
    log.lines()
        .find(|l| l.contains("incoming call"))?
        .split_whitespace()
        .find_map(|w| w.strip_prefix("call="))
        .map(str::to_owned)
}

/// A capture (pcap) of G.711 RTP in `law` (Ethernet, IPv4, UDP) from 127.0.0.1, 20 ms a
/// packet, for SIPp's `play_pcap_audio`: 200 ms of silence, then each key as 80 ms of tones
/// (−10 dBm0 each) and 80 ms of silence; a `,` is a second of silence.
pub fn in_band_capture(keys: &str, law: media::g711::Law) -> Vec<u8> {
    let mut samples: Vec<i16> = vec![0; 1600];
    for key in keys.chars() {
        if key == ',' {
            samples.extend(std::iter::repeat(0).take(8000));
            continue;
        }
        samples.extend(media::dtmf::tone(key, -10.0).expect("a DTMF key").take(640));
        samples.extend(std::iter::repeat(0).take(640));
    }
    let mut pcap = Vec::new();
    pcap.extend(0xa1b2_c3d4u32.to_le_bytes());
    pcap.extend(2u16.to_le_bytes());
    pcap.extend(4u16.to_le_bytes());
    pcap.extend([0u8; 8]);
    pcap.extend(65_535u32.to_le_bytes());
    pcap.extend(1u32.to_le_bytes()); // Ethernet
    for (index, chunk) in samples.chunks(160).enumerate() {
        let payload_type = match law {
            media::g711::Law::Mu => 0,
            media::g711::Law::A => 8,
        };
        let mut rtp = vec![0x80, payload_type];
        rtp.extend((index as u16).to_be_bytes());
        rtp.extend((index as u32 * 160).to_be_bytes());
        rtp.extend(0x1234_5678u32.to_be_bytes());
        rtp.extend(chunk.iter().map(|&x| law.encode(x)));
        let udp_length = 8 + rtp.len() as u16;
        let mut frame = vec![0u8; 12];
        frame.extend([0x08, 0x00]);
        frame.extend([0x45, 0x00]);
        frame.extend((20 + udp_length).to_be_bytes());
        frame.extend([0, 0, 0, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1]);
        frame.extend(6000u16.to_be_bytes());
        frame.extend(6000u16.to_be_bytes());
        frame.extend(udp_length.to_be_bytes());
        frame.extend([0, 0]);
        frame.extend(rtp);
        let micros = index as u32 * 20_000;
        pcap.extend((micros / 1_000_000).to_le_bytes());
        pcap.extend((micros % 1_000_000).to_le_bytes());
        pcap.extend((frame.len() as u32).to_le_bytes());
        pcap.extend((frame.len() as u32).to_le_bytes());
        pcap.extend(frame);
    }
    pcap
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a fresh connection; `Err` when the server is not there.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(90)))?;
    let body = body.unwrap_or_default();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if !body.is_empty() {
        head += &format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
    }
    for (k, v) in headers {
        head += &format!("{k}: {v}\r\n");
    }
    stream.write_all(format!("{head}\r\n{body}").as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no complete response")
    })?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no status line"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).unwrap_or(Value::String(body.to_owned()))
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// A free UDP port on loopback, never one this test process was given before (the system may
/// hand a released port out again before whoever got it has bound it).
pub fn free_port() -> u16 {
    ports(1)
}

/// The first of `n` free UDP ports in a row on loopback, none given before in this process.
pub fn ports(n: u16) -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let first = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let all: Vec<u16> = (0..n).filter_map(|i| first.checked_add(i)).collect();
        let free = all.len() == usize::from(n)
            && all.iter().all(|p| !given.contains(p))
            && all[1..]
                .iter()
                .all(|p| std::net::UdpSocket::bind(("127.0.0.1", *p)).is_ok());
        if free {
            given.extend(all);
            return first;
        }
    }
}

/// A port for SIPp's media (`-mp`): SIPp binds it and the three above it (RTCP, and video
/// with its RTCP), so all four must be free.
pub fn media_port() -> u16 {
    ports(4)
}

/// A scenario file from tests/sipp with its placeholders filled, in `dir`.
pub fn filled_scenario(dir: &Path, name: &str, fill: &[(&str, &str)]) -> String {
    let mut text = std::fs::read_to_string(sipp_scenario(name)).unwrap();
    for (from, to) in fill {
        text = text.replace(from, to);
    }
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// SIPp calling `target` once with `scenario` (a path), in the background.
pub fn sipp_caller(target: SocketAddr, scenario: &str) -> Child {
    Command::new(sipp())
        .args(["-sf", scenario, "-s", "5000", &target.to_string()])
        .args(["-i", "127.0.0.1", "-p", &free_port().to_string()])
        .args(["-mp", &media_port().to_string()])
        .args(["-m", "1", "-nostdin", "-timeout", "60s", "-timeout_error"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp runs")
}

/// tests/sipp/uac_basic.xml with the caller holding the call `ms` before hanging up, in `dir`.
pub fn held_call_scenario(dir: &Path, ms: u32) -> String {
    filled_scenario(
        dir,
        "uac_basic.xml",
        &[(
            "<pause milliseconds=\"500\"/>",
            &format!("<pause milliseconds=\"{ms}\"/>"),
        )],
    )
}

/// How `child` exited, if it did within `within`.
pub fn exited(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if start.elapsed() >= within {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The SIPp binary (Debian's sip-tester).
pub fn sipp() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("sipp"))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("sipp is not installed: apt-get install sip-tester (scripts/test.sh installs it)")
    })
}

/// A scenario in tests/sipp/ (or a path, kept as it is).
pub fn sipp_scenario(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
        .display()
        .to_string()
}

/// Writes a SIPp caller from `from` to `to` pressing `keys` (RFC 4733 events from the captures
/// Debian's sip-tester ships; a `,` is 3 s without one) to `path`, from
/// tests/sipp/uac_self_service.xml. With `hangs_up`, the caller hangs up right after the last
/// key rather than waiting for callbackd's goodbye.
pub fn keypad_scenario(from: &str, to: &str, keys: &str, hangs_up: bool, path: &Path) {
    let mut actions: String = keys
        .chars()
        .map(|k| match k {
            ',' => "  <pause milliseconds=\"3000\"/>\n".to_owned(),
            key => {
                let name = match key {
                    '#' => "pound".to_owned(),
                    '*' => "star".to_owned(),
                    d => d.to_string(),
                };
                format!(
                    "  <nop>\n    <action>\n      <exec play_pcap_audio=\"/usr/share/sip-tester/dtmf_2833_{name}.pcap\"/>\n    </action>\n  </nop>\n  <pause milliseconds=\"600\"/>\n"
                )
            }
        })
        .collect();
    if hangs_up {
        // At once after the last key: the call may end while that key's work goes on.
        if let Some(at) = actions.rfind("  <pause ") {
            actions.truncate(at);
        }
        actions.push_str("  <nop next=\"caller_hangs_up\"/>\n");
    }
    let text = std::fs::read_to_string(sipp_scenario("uac_self_service.xml"))
        .unwrap()
        .replace("FROM_USER", from)
        .replace("TO_USER", to)
        .replace("KEYS_ACTIONS", &actions);
    std::fs::write(path, text).unwrap();
}

/// Runs SIPp as the caller (dialling 5000) against `target` with `scenario_file` (in tests/sipp/,
/// or a path) and returns how many calls succeeded and failed, and what SIPp printed.
pub fn run_sipp(
    target: SocketAddr,
    scenario_file: &str,
    calls: u32,
    extra: &[&str],
) -> (u32, u32, String) {
    let local = if target.is_ipv6() { "::1" } else { "127.0.0.1" };
    run_sipp_from(None, local, target, scenario_file, calls, extra)
}

/// The same from `local`, inside the network namespace `netns` if given.
pub fn run_sipp_from(
    netns: Option<&str>,
    local: &str,
    target: SocketAddr,
    scenario_file: &str,
    calls: u32,
    extra: &[&str],
) -> (u32, u32, String) {
    let (port, media) = (free_port().to_string(), media_port().to_string());
    let mut command = match netns {
        Some(netns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", netns]).arg(sipp());
            c
        }
        None => Command::new(sipp()),
    };
    let out = command
        .args([
            "-sf",
            &sipp_scenario(scenario_file),
            "-s",
            "5000",
            &target.to_string(),
        ])
        .args(["-i", local])
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
    let printed = stdout.clone() + &String::from_utf8_lossy(&out.stderr);
    (count("Successful call"), count("Failed call"), printed)
}

/// SIPp answering one call with `scenario` (a file in tests/sipp/, or a path) on a free port.
pub fn far_end(scenario: &str) -> (Child, u16) {
    far_end_for(scenario, 1)
}

/// The same, answering `calls` calls.
pub fn far_end_for(scenario: &str, calls: u32) -> (Child, u16) {
    let port = free_port();
    (far_end_at(scenario, port, calls), port)
}

/// The same on `port` (a trunk's target named in DNS, started again after a stop).
pub fn far_end_at(scenario: &str, port: u16, calls: u32) -> Child {
    let child = Command::new(sipp())
        .args(["-sf", &sipp_scenario(scenario)])
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-mp",
            &media_port().to_string(),
        ])
        .args(["-m", &calls.to_string()])
        .args(["-nostdin", "-timeout", "90s", "-timeout_error"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("sipp runs");
    std::thread::sleep(std::time::Duration::from_millis(300));
    child
}

/// Whether SIPp's scenario ran to its end, and what it printed.
pub fn finished_cleanly(child: Child) -> (bool, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Kamailio (Debian's) running `config` (a file of the checkout) on `port`, with LISTEN and
/// MODULES filled in and each `(from, to)` of `fill` replaced; stopped, with its children,
/// when dropped.
pub struct Kamailio(Child);

impl Kamailio {
    pub fn start(dir: &Path, config: &str, port: u16, fill: &[(&str, String)]) -> Kamailio {
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
        let mut text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(config))
            .unwrap()
            .replace("listen=LISTEN", &format!("listen=udp:127.0.0.1:{port}"))
            .replace("\"MODULES\"", &format!("\"{}\"", modules.display()));
        for (from, to) in fill {
            assert!(text.contains(from), "{config} has no {from}");
            text = text.replace(from, to);
        }
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

/// An open `GET /api/v1/events`, read event by event.
pub struct Events {
    reader: BufReader<TcpStream>,
    /// Decoded body not yet taken as events.
    pending: String,
}

impl Events {
    /// The stream with `query`, sending the server's token as a header too when `bearer`.
    pub fn open(server: &Server, query: &str, bearer: bool) -> Result<Events, u16> {
        let mut stream = TcpStream::connect(server.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let auth = if bearer {
            format!("Authorization: Bearer {}\r\n", server.token)
        } else {
            String::new()
        };
        write!(
            stream,
            "GET /api/v1/events{query} HTTP/1.1\r\nHost: {}\r\n{auth}Accept: text/event-stream\r\n\r\n",
            server.addr
        )
        .unwrap();
        let mut reader = BufReader::new(stream);
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        let code: u16 = status.split_whitespace().nth(1).unwrap().parse().unwrap();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
        }
        if code != 200 {
            return Err(code);
        }
        Ok(Events {
            reader,
            pending: String::new(),
        })
    }

    /// The next `snapshot` event's data (the body is chunked: each chunk is undone).
    pub fn next_snapshot(&mut self) -> Value {
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let event: String = self.pending.drain(..end + 2).collect();
                if event.lines().any(|l| l == "event: snapshot") {
                    let data: String = event
                        .lines()
                        .filter_map(|l| l.strip_prefix("data: "))
                        .collect();
                    return serde_json::from_str(&data).unwrap();
                }
                continue;
            }
            let mut size = String::new();
            self.reader
                .read_line(&mut size)
                .expect("the stream goes on");
            let size = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
            let mut chunk = vec![0; size + 2];
            self.reader.read_exact(&mut chunk).unwrap();
            self.pending
                .push_str(&String::from_utf8_lossy(&chunk[..size]));
        }
    }
}

/// A callback's state on a board's snapshot.
pub fn state_of(snapshot: &Value, id: &str) -> Option<String> {
    snapshot["callbacks"]
        .as_array()?
        .iter()
        .find(|c| c["confirmation_id"] == id)
        .and_then(|c| c["state"].as_str().map(str::to_owned))
}
