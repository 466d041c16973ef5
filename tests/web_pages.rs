//! The web pages and the board's live feed over real HTTP: the chat widget and the board are
//! served; the board's event stream sends a snapshot at once and another when a callback
//! changes; with a token, the stream wants it (as `?access_token=`, which an EventSource can
//! send). The pages in a browser are tested in browser_pages.rs.

mod common;

use common::{config_with, state_of, Events, Server};
use serde_json::json;

fn server(extra: &[(&str, &str)]) -> Server {
    let url = store::testing::sqlite_url();
    let mut replacements = vec![("\nenabled = true", "\nenabled = false")];
    replacements.extend_from_slice(extra);
    Server::start(&config_with(&url, &replacements))
}

#[test]
fn the_chat_widget_and_the_board_are_served_with_their_scripts_and_a_strict_policy() {
    let server = server(&[]);
    for (path, script, uses) in [
        ("/chat", "/chat.js", "/api/v1/chat/sessions"),
        ("/board", "/board.js", "/api/v1/events"),
    ] {
        let r = common::request(server.addr, "GET", path, &[], None).unwrap();
        assert_eq!(r.status, 200, "{path}");
        assert!(
            r.header("content-type")
                .is_some_and(|t| t.starts_with("text/html")),
            "{path}"
        );
        let page = r.body.as_str().unwrap();
        assert!(
            page.contains(&format!("<script src=\"{script}\">")) && !page.contains("<script>"),
            "{path} has no inline script"
        );
        let policy = r.header("content-security-policy").unwrap_or_default();
        assert!(
            policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"),
            "{path}: {policy}"
        );
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        let r = common::request(server.addr, "GET", script, &[], None).unwrap();
        assert!(
            r.header("content-type")
                .is_some_and(|t| t.starts_with("text/javascript")),
            "{script}"
        );
        assert!(
            r.body.as_str().is_some_and(|code| code.contains(uses)),
            "{script} talks to {uses}"
        );
    }
}

#[test]
fn the_board_hears_of_a_change_without_asking() {
    let server = server(&[]);
    let r = server.post(
        "/api/v1/callbacks",
        &json!({"queue": "support", "address": "+12125550100"}),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = r.body["confirmation_id"].as_str().unwrap().to_owned();
    let mut events = Events::open(&server, "", true).unwrap();
    let first = events.next_snapshot();
    assert_eq!(state_of(&first, &id).as_deref(), Some("queued"), "{first}");
    assert_eq!(first["queues"][0]["name"], "support");
    assert!(
        first["agents"].is_array() && first["status"]["sip"]["calls"] == 0,
        "{first}"
    );

    let r = server.post(
        &format!("/api/v1/callbacks/{id}/modifications"),
        &json!({"action": "pause"}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    // A snapshot read while the change commits may show it in part; the next one is whole.
    let settled = (0..3).map(|_| events.next_snapshot()).find(|s| {
        state_of(s, &id).as_deref() == Some("paused") && s["queues"][0]["counts"]["paused"] == 1
    });
    assert!(settled.is_some(), "the board saw the callback paused");
}

#[test]
fn with_a_token_the_board_needs_it_and_may_send_it_in_the_url() {
    let token = "a-long-board-token-0123";
    let server = server(&[(
        "# token = \"a long random string\"",
        "token = \"a-long-board-token-0123\"",
    )]);
    assert_eq!(Events::open(&server, "", false).err(), Some(401));
    assert_eq!(
        Events::open(&server, "?access_token=wrong-token-0000000", false).err(),
        Some(401)
    );
    let mut events = Events::open(&server, &format!("?access_token={token}"), false).unwrap();
    assert!(events.next_snapshot()["queues"].is_array());
    // The pages themselves are open: they ask for the token.
    let r = common::request(server.addr, "GET", "/board", &[], None).unwrap();
    assert_eq!(r.status, 200);
    // Regression: `?access_token=` worked on every route, so the token went into URLs (and
    // logs) anywhere (issue 17, finding 14). It is for the event stream alone.
    let r = common::request(
        server.addr,
        "GET",
        &format!("/api/v1/queues?access_token={token}"),
        &[],
        None,
    )
    .unwrap();
    assert_eq!(r.status, 401);
}
