//! The chat widget and the operator board in Debian's headless Chromium, driven by
//! tests/browser/pages.mjs (playwright-core): a chat that ends in a booked callback, and the
//! board showing it, following it as it is paused through the API, and an operator resuming,
//! rescheduling, pausing and cancelling it with its buttons. The
//! screenshots go to docs/screenshots/ for the README.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{config_with, Server};
use serde_json::json;

#[test]
fn a_chat_books_a_callback_and_the_board_follows_it() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("tests/browser");
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "Chromium is not installed: apt-get install chromium (scripts/test.sh installs it)"
    );
    assert!(
        script.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: npm ci --prefix tests/browser (scripts/test.sh does it)"
    );
    let url = store::testing::sqlite_url();
    let config = config_with(&url, &[("\nenabled = true", "\nenabled = false")]);
    let server = Server::start(&config);
    // Something for the board to show besides: an agent ready, and other callbacks.
    let r = server.post(
        "/api/v1/agents",
        &json!({"id": "ada", "name": "Ada", "skills": ["billing", {"name": "sales", "level": 7}], "address": "sip:ada@127.0.0.1:5999"}),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = server.request(
        "PUT",
        "/api/v1/agents/ada/state",
        &[],
        Some(&json!({"state": "ready"})),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    for (address, skill) in [("+12125550142", "technical"), ("+13125550177", "sales")] {
        let r = server.post(
            "/api/v1/callbacks",
            &json!({"queue": "support", "skill": skill, "address": address, "customer_name": "Grace"}),
        );
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    let shots = root.join("docs/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new("node")
        .arg(script.join("pages.mjs"))
        .arg(format!("http://{}", server.addr))
        .arg(&shots)
        .arg(&server.token)
        .output()
        .expect("node runs (apt-get install nodejs)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = stdout.trim();
    let shown = common::show_callback(&config, id);
    assert_eq!(
        (shown["source"].as_str(), shown["state"].as_str()),
        (Some("chat"), Some("cancelled")),
        "{shown}"
    );
    let steps: Vec<(&str, &str)> = shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["channel"].as_str()?, e["action"].as_str()?)))
        .collect();
    assert_eq!(
        steps,
        [
            ("chat", "created"),
            ("api", "pause"),
            ("api", "resume"),
            ("api", "reschedule"),
            ("api", "pause"),
            ("api", "cancel")
        ],
        "booked by chat; paused through the API; resumed, rescheduled, paused and cancelled on the board: {shown}"
    );
    for page in ["chat.png", "board.png"] {
        assert!(
            shots.join(page).metadata().is_ok_and(|m| m.len() > 10_000),
            "{page}"
        );
    }
}
