//! Reloading the configuration while calls go on (SIGHUP, or `POST /api/v1/reload`): a changed
//! dialplan and a changed trunk apply to what starts next; a broken prompt file or dialplan is
//! refused with its file (and line), and everything stays as it was; a setting that needs a
//! restart is named; and a call in progress all along is untouched.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{config_with, Server, SIP_TO_LOOPBACK};
use serde_json::json;

/// How a 1-second test call from callbackd to itself ended: `local_hangup` when the
/// answering side kept the call (the default dialplan waits for keys), `remote_hangup` when
/// its dialplan hung up first.
fn call_self(server: &Server) -> String {
    let me = server.sip_udp.unwrap();
    let r = server.post(
        "/api/v1/test-calls",
        &json!({"to": format!("sip:ivr@{me}"), "hold_seconds": 1}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["ended"].as_str().unwrap().to_owned()
}

/// The addresses of trunk `name`'s targets, as the API shows them.
fn targets(server: &Server, name: &str) -> Vec<String> {
    let trunks = server.get("/api/v1/trunks").body;
    trunks["trunks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .map(|t| {
            t["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["address"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn hang_up(server: &Server) {
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    std::thread::sleep(Duration::from_millis(500));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

#[test]
fn a_reload_applies_a_changed_dialplan_and_trunk_refuses_broken_files_and_leaves_calls_alone() {
    let dir = std::env::temp_dir().join(format!("callbackd-reload-{:016x}", rand::random::<u64>()));
    let (dialplan, prompts) = (dir.join("dialplan.toml"), dir.join("prompts"));
    copy_dir(Path::new("prompts"), &prompts);
    std::fs::copy("dialplans/default.toml", &dialplan).unwrap();
    let (first, second) = (common::free_port(), common::free_port());
    let trunk = |port: u16| {
        format!("\n[trunks.carrier]\nhost = \"127.0.0.1\"\nport = {port}\ncaller_id = \"+12125550000\"\n\n[[routes]]\nprefix = \"+1\"\ntrunks = [\"carrier\"]\n")
    };
    let dialplan_line = format!("dialplan = \"{}\"", dialplan.display());
    let prompts_line = format!("prompts = \"{}\"", prompts.display());
    let config = config_with(
        &store::testing::sqlite_url(),
        &[
            ("dialplan = \"dialplans/default.toml\"", &dialplan_line),
            ("prompts = \"prompts\"", &prompts_line),
            SIP_TO_LOOPBACK,
        ],
    );
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text + &trunk(first)).unwrap();
    let log = dir.join("callbackd.log");
    let server = Server::start_logging(&config, &log);
    assert_eq!(call_self(&server), "local_hangup");
    assert_eq!(targets(&server, "carrier"), [format!("127.0.0.1:{first}")]);

    // A caller is in the IVR (the default dialplan waits for keys) through all that follows.
    let held = common::sipp_caller(
        server.sip_udp.unwrap(),
        &common::held_call_scenario(&dir, 12_000),
    );
    std::thread::sleep(Duration::from_secs(1));

    // SIGHUP with a dialplan that hangs up at once, the trunk moved to another port, and a
    // setting that needs a restart.
    std::fs::write(
        &dialplan,
        "[entries]\nself_service = \"bye\"\nqueue_support = \"bye\"\n\n[nodes.bye]\nkind = \"hangup\"\n",
    )
    .unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(&trunk(first), &trunk(second))
            .replace("max_calls = 500", "max_calls = 400"),
    )
    .unwrap();
    hang_up(&server);
    assert_eq!(
        call_self(&server),
        "remote_hangup",
        "new calls take the new dialplan"
    );
    assert_eq!(targets(&server, "carrier"), [format!("127.0.0.1:{second}")]);
    let said = std::fs::read_to_string(&log).unwrap();
    let reloaded = said
        .lines()
        .find(|l| l.contains("configuration reloaded"))
        .expect("the reload is logged");
    assert!(
        reloaded.contains("sip.max_calls"),
        "named as needing a restart: {reloaded}"
    );

    // A broken prompt file and a dialplan with a mistake: refused, by the API and by SIGHUP,
    // with the file named; nothing changes.
    std::fs::write(prompts.join("welcome.wav"), b"not a wav file").unwrap();
    let r = server.post("/api/v1/reload", &json!({}));
    assert_eq!(r.status, 422, "{:?}", r.body);
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("welcome.wav"), "{message}");
    std::fs::copy("prompts/welcome.wav", prompts.join("welcome.wav")).unwrap();
    std::fs::write(
        &dialplan,
        "[entries]\nself_service = \"start\"\nqueue_support = \"start\"\n\n[nodes.start]\nkind = \"play\"\nprompts = [\"welcome\"]\nnext = \"nowhere\"\n",
    )
    .unwrap();
    hang_up(&server);
    let r = server.post("/api/v1/reload", &json!({}));
    assert_eq!(r.status, 422, "{:?}", r.body);
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "{}:5:1: there is no node `nowhere`",
            dialplan.display()
        )),
        "{message}"
    );
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("configuration not reloaded; the old one stays"));
    assert_eq!(
        call_self(&server),
        "remote_hangup",
        "the dialplan in use stays"
    );

    // Put right: the API reloads it, and says what it did.
    std::fs::copy("dialplans/default.toml", &dialplan).unwrap();
    let r = server.post("/api/v1/reload", &json!({}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(
        r.body["applied"][0].as_str().unwrap().contains("entries"),
        "{:?}",
        r.body
    );
    assert_eq!(
        r.body["needs_restart"],
        json!(["sip.max_calls"]),
        "still: {:?}",
        r.body
    );
    assert_eq!(call_self(&server), "local_hangup");

    let out = held.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the call in progress was untouched: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    std::fs::remove_dir_all(&dir).ok();
}
