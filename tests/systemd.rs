//! callbackd as a systemd service: dist/callbackd.service passes `systemd-analyze verify`, and
//! callbackd tells the service manager READY=1 once it serves and STOPPING=1 when it drains
//! (`Type=notify`), through the socket in NOTIFY_SOCKET.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{callbackd, config};

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    let dir = std::env::temp_dir().join(format!("callbackd-unit-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    // Verify checks that the binary exists: the one just built stands in for /usr/bin's.
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/dist/callbackd.service"
    ))
    .unwrap()
    .replace("/usr/bin/callbackd", env!("CARGO_BIN_EXE_callbackd"));
    let path = dir.join("callbackd.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| {
            panic!("systemd-analyze is missing ({e}): apt-get install systemd (scripts/test.sh installs it)")
        });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn callbackd_says_ready_once_it_serves_and_stopping_when_it_drains() {
    let dir = std::env::temp_dir().join(format!("callbackd-notify-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket_path = dir.join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let config = config(&store::testing::sqlite_url(), "");
    let mut child = callbackd()
        .args(["serve", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("CALLBACKD_API_TOKEN", common::TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0; 1024];
    let n = socket.recv(&mut buf).expect("a notification within 20 s");
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    // Ready means serving: the API answers.
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    // Read on to the end, so callbackd never writes to a closed pipe.
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(api) = line.strip_prefix("callbackd: HTTP API on http://") {
                let _ = tx.send(api.to_owned());
            }
        }
    });
    let api = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let health = common::request(api.parse().unwrap(), "GET", "/readyz", &[], None).unwrap();
    assert_eq!(health.status, 200);

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let n = socket.recv(&mut buf).expect("a notification when draining");
    let stopping = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping}");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "it stops");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
