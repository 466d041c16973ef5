//! The Debian package (target/debian/callbackd_*.deb, which scripts/test.sh builds with
//! `scripts/deb.sh --dev`): it installs with dpkg; its unit passes `systemd-analyze verify`
//! where it is installed; the unit's command line, run as the unit's user in its working
//! folder without systemd, answers `/readyz` and a call from SIPp, stops on SIGTERM; and
//! `callbackd calls export` then lists the call. This test installs the package on the
//! machine it runs on, so it needs root (as CI has).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{run_sipp, Server};

const UNIT: &str = "/usr/lib/systemd/system/callbackd.service";

/// The package scripts/deb.sh built.
fn package() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/debian");
    std::fs::read_dir(&dir)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| Some(e.ok()?.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("callbackd_") && n.ends_with(".deb"))
        })
        .unwrap_or_else(|| {
            panic!(
                "no package in {}: build it with scripts/deb.sh --dev (scripts/test.sh does)",
                dir.display()
            )
        })
}

/// `key=` in the installed unit's [Service] section.
fn unit_setting(unit: &str, key: &str) -> String {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{UNIT} has no {key}="))
        .to_owned()
}

/// `program args…` as the unit runs it: as its user and group, in its working folder.
fn as_the_unit(unit: &str, program: &str) -> Command {
    let user = unit_setting(unit, "User");
    let group = unit_setting(unit, "Group");
    let mut command = Command::new("setpriv");
    command
        .args([
            &format!("--reuid={user}"),
            &format!("--regid={group}"),
            "--init-groups",
            "--",
            program,
        ])
        .current_dir(unit_setting(unit, "WorkingDirectory"));
    command
}

#[test]
fn the_package_installs_and_its_service_answers_a_call() {
    let root = Command::new("id").arg("-u").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&root.stdout).trim(),
        "0",
        "installing the package needs root"
    );
    let out = Command::new("dpkg")
        .arg("-i")
        .arg(package())
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dpkg -i: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for installed in [
        "/usr/bin/callbackd",
        "/etc/callbackd/callbackd.toml",
        "/usr/share/callbackd/dialplans/default.toml",
        "/usr/share/callbackd/prompts/welcome.wav",
        "/usr/share/callbackd/chatbots/default.toml",
        "/usr/share/doc/callbackd/operations.md",
        UNIT,
    ] {
        assert!(Path::new(installed).exists(), "{installed} is installed");
    }
    let verify = Command::new("systemd-analyze")
        .args(["verify", UNIT])
        .output()
        .expect("systemd-analyze runs (apt-get install systemd; scripts/test.sh installs it)");
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );

    // The unit's own command line, with the addresses moved to free loopback ports through
    // the environment, as an operator's drop-in `Environment=` would.
    let unit = std::fs::read_to_string(UNIT).unwrap();
    let exec = unit_setting(&unit, "ExecStart");
    let mut words = exec.split_whitespace();
    let program = words.next().unwrap();
    let started = chrono::Utc::now();
    let token = format!("{:032x}", rand::random::<u128>());
    let log =
        std::env::temp_dir().join(format!("callbackd-deb-{:016x}.log", rand::random::<u64>()));
    let mut command = as_the_unit(&unit, program);
    command
        .args(words)
        .env_remove("DATABASE_URL")
        .env("CALLBACKD_SIP__UDP", "[\"127.0.0.1:0\"]")
        .env("CALLBACKD_SIP__TCP", "[\"127.0.0.1:0\"]")
        .env("CALLBACKD_API__LISTEN", "127.0.0.1:0")
        .env("CALLBACKD_API_TOKEN", &token)
        .env("CALLBACKD_LOG", "info")
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
    let mut server = Server::run(
        command,
        Some(token),
        Path::new("/etc/callbackd/callbackd.toml"),
    );

    let ready = server.get("/readyz");
    assert_eq!(ready.status, 200, "{:?}", ready.body);
    let (ok, failed, out) = run_sipp(server.sip_udp.unwrap(), "uac_basic.xml", 1, &[]);
    assert_eq!((ok, failed), (1, 0), "{out}");
    let stopped = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let status = common::exited(&mut server.child, Duration::from_secs(15)).unwrap_or_else(|| {
        panic!(
            "it stops on SIGTERM: {}",
            std::fs::read_to_string(&log).unwrap()
        )
    });
    assert!(status.success(), "{status:?}");

    let export = as_the_unit(&unit, program)
        .env_remove("DATABASE_URL")
        .args(["calls", "export", "--format", "jsonl", "--since"])
        .arg(started.to_rfc3339())
        .args(["--config", "/etc/callbackd/callbackd.toml"])
        .output()
        .unwrap();
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let records: Vec<serde_json::Value> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 1, "the test's call: {records:?}");
    assert_eq!(records[0]["direction"], "inbound", "{}", records[0]);
    assert_eq!(records[0]["end_reason"], "remote_hangup", "{}", records[0]);
    std::fs::remove_file(&log).unwrap();
}
