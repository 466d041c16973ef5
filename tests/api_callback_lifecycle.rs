//! The foundation's promise, over HTTP on a real socket, on both stores: create a callback,
//! look it up, pause, resume, reschedule and cancel it, each with a receipt, and see every
//! change in its history. Bad requests get a 4xx JSON error and change nothing.

mod common;

use common::{config, store_url, Server};
use serde_json::{json, Value};

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                let url = super::store_url("sqlite").await;
                super::$name(&url);
                store::testing::discard(&url).await;
            }

            #[tokio::test]
            async fn postgres() {
                let url = super::store_url("postgres").await;
                super::$name(&url);
                store::testing::discard(&url).await;
            }
        }
    )*};
}

on_both_stores!(
    full_lifecycle_with_receipts_and_history,
    bad_requests_get_json_errors_and_change_nothing
);

fn create(server: &Server, body: Value) -> Value {
    let r = server.post("/api/v1/callbacks", &body);
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.header("etag"), Some("\"1\""));
    r.body
}

fn modify(server: &Server, id: &str, body: Value) -> common::Response {
    server.post(&format!("/api/v1/callbacks/{id}/modifications"), &body)
}

fn full_lifecycle_with_receipts_and_history(url: &str) {
    let server = Server::start(&config(url, ""));
    let created = create(
        &server,
        json!({"queue": "support", "address": "+1 (212) 555-0100", "customer_name": "Ada", "skill": "technical"}),
    );
    let id = created["confirmation_id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 9);
    assert_eq!(created["state"], "queued");
    assert_eq!(created["address"], "+12125550100");

    let in_two_hours = (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
    let steps = [
        (json!({"action": "pause"}), "paused"),
        (json!({"action": "resume"}), "queued"),
        (
            json!({"action": "reschedule", "at": in_two_hours}),
            "scheduled",
        ),
        (json!({"action": "reschedule", "at": "asap"}), "queued"),
        (
            json!({"action": "change_address", "address": "+16465550199"}),
            "queued",
        ),
        (json!({"action": "change_media", "media": "sms"}), "queued"),
        (
            json!({"action": "change_skill", "skill": "billing"}),
            "queued",
        ),
        (json!({"action": "cancel"}), "cancelled"),
    ];
    let mut receipts = Vec::new();
    for (body, state) in &steps {
        let r = modify(&server, &id, body.clone());
        assert_eq!(r.status, 200, "{body}: {:?}", r.body);
        assert_eq!(r.body["callback"]["state"], *state, "{body}");
        assert_eq!(r.body["receipt"]["outcome"], "success");
        assert_eq!(r.body["receipt"]["action"], body["action"]);
        let code = r.body["receipt"]["code"].as_str().unwrap().to_owned();
        assert_eq!(code.len(), 6);
        receipts.push(code);
    }
    // A cancelled callback cannot be resumed: a failure receipt, and nothing changes.
    let r = modify(&server, &id, json!({"action": "resume"}));
    assert_eq!(r.status, 409);
    assert_eq!(r.body["error"]["code"], "illegal_in_state");
    assert_eq!(r.body["receipt"]["outcome"], "illegal_in_state");

    let shown = server.get(&format!("/api/v1/callbacks/{id}"));
    assert_eq!(shown.status, 200);
    assert_eq!(shown.body["state"], "cancelled");
    assert_eq!(shown.body["media"], "sms");
    assert_eq!(shown.body["skill"], "billing");
    assert_eq!(shown.body["address"], "+16465550199");
    assert_eq!(
        shown.body["enqueued_at"], created["enqueued_at"],
        "place in line kept throughout"
    );
    assert_eq!(shown.header("etag"), Some("\"9\""));
    let history = shown.body["history"].as_array().unwrap();
    let actions: Vec<&str> = history
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "created",
            "pause",
            "resume",
            "reschedule",
            "reschedule",
            "change_address",
            "change_media",
            "change_skill",
            "cancel",
            "resume"
        ]
    );
    let logged: Vec<&str> = history[1..9]
        .iter()
        .map(|e| e["receipt"].as_str().unwrap())
        .collect();
    assert_eq!(logged, receipts);
    assert!(history.iter().all(|e| e["channel"] == "api"));
    assert_eq!(history[9]["outcome"], "illegal_in_state");

    let listed = server.get("/api/v1/callbacks?state=cancelled&queue=support");
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body["callbacks"].as_array().unwrap().len(), 1);
    let queue = server.get("/api/v1/queues/support");
    assert_eq!(queue.body["counts"]["cancelled"], 1);
    assert_eq!(
        queue.body["skills"],
        json!(["billing", "technical", "sales"])
    );
    assert_eq!(queue.body["calling_window"]["mon"], "00:00-24:00");
    assert_eq!(
        server.get("/api/v1/queues").body["queues"][0]["name"],
        "support"
    );
    assert_eq!(server.get("/healthz").body["status"], "ok");
}

fn bad_requests_get_json_errors_and_change_nothing(url: &str) {
    let server = Server::start(&config(url, ""));
    let created = create(
        &server,
        json!({"queue": "support", "address": "+12125550100"}),
    );
    let id = created["confirmation_id"].as_str().unwrap().to_owned();
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "/api/v1/callbacks",
            json!({"queue": "support"}),
            422,
            "bad_request_body",
        ),
        (
            "/api/v1/callbacks",
            json!({"queue": "support", "address": "+12125550100", "colour": "red"}),
            422,
            "bad_request_body",
        ),
        (
            "/api/v1/callbacks",
            json!({"queue": "support", "address": 2125550100u64}),
            422,
            "bad_request_body",
        ),
        (
            "/api/v1/callbacks",
            json!({"queue": "nowhere", "address": "+12125550100"}),
            422,
            "invalid_input",
        ),
        (
            "/api/v1/callbacks",
            json!({"queue": "support", "address": "+19005550100"}),
            422,
            "blocked_by_policy",
        ),
        (
            "/api/v1/callbacks",
            json!({"queue": "support", "address": "+12125550100", "at": "soon"}),
            422,
            "bad_request_body",
        ),
        (
            "/api/v1/callbacks",
            json!({"queue": "support", "address": "+12125550100", "skill": "astrology"}),
            422,
            "invalid_input",
        ),
        (
            "/api/v1/callbacks",
            json!({"queue": "support", "address": "+12125550100", "time_zone": "Mars/Base"}),
            422,
            "bad_request_body",
        ),
    ];
    for (path, body, status, code) in cases {
        let r = server.post(path, &body);
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {:?}",
            r.body
        );
        assert!(!r.body["error"]["message"].as_str().unwrap().is_empty());
    }
    let modification_path = format!("/api/v1/callbacks/{id}/modifications");
    let raw = server.request_raw(
        "POST",
        &modification_path,
        &[("Content-Type", "application/json")],
        "{not json",
    );
    assert_eq!(raw.status, 400);
    for (body, status, code) in [
        (json!({"action": "explode"}), 422, "bad_request_body"),
        (
            json!({"action": "change_skill", "skill": 5}),
            422,
            "bad_request_body",
        ),
        (
            json!({"action": "pause", "force": true}),
            422,
            "bad_request_body",
        ),
        (
            json!({"action": "change_address", "address": "+1 212 555 0100;ext=9"}),
            422,
            "invalid_input",
        ),
        (
            json!({"action": "change_address", "address": "+1 876 555 0100"}),
            422,
            "blocked_by_policy",
        ),
        (
            json!({"action": "reschedule", "at": "2001-01-01T00:00:00Z"}),
            422,
            "invalid_input",
        ),
        (json!({"action": "resume"}), 409, "illegal_in_state"),
    ] {
        let r = server.post(&modification_path, &body);
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {:?}",
            r.body
        );
    }
    // Optimistic concurrency: a stale ETag is a conflict with a receipt.
    let r = server.request(
        "POST",
        &modification_path,
        &[("If-Match", "\"7\"")],
        Some(&json!({"action": "pause"})),
    );
    assert_eq!(
        (r.status, r.body["receipt"]["outcome"].as_str()),
        (412, Some("conflict")),
        "a stale If-Match is a failed precondition"
    );
    let r = server.request(
        "POST",
        &modification_path,
        &[("If-Match", "yesterday")],
        Some(&json!({"action": "pause"})),
    );
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (400, Some("bad_if_match"))
    );
    let r = server.request(
        "POST",
        &modification_path,
        &[("If-Match", "\"1\"")],
        Some(&json!({"action": "pause"})),
    );
    assert_eq!(r.status, 200, "the current ETag is accepted");

    for (path, status, code) in [
        ("/api/v1/callbacks/12345", 400, "invalid_confirmation_id"),
        (
            "/api/v1/callbacks/123456789",
            400,
            "invalid_confirmation_id",
        ),
        ("/api/v1/callbacks?state=sleeping", 400, "bad_query"),
        ("/api/v1/callbacks?limit=0", 400, "bad_query"),
        ("/api/v1/callbacks?colour=red", 400, "bad_query"),
        ("/api/v1/queues/nowhere", 404, "not_found"),
        ("/api/v2/anything", 404, "not_found"),
    ] {
        let r = server.get(path);
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (status, Some(code)),
            "{path}: {:?}",
            r.body
        );
    }
    let r = server.request(
        "POST",
        &modification_path,
        &[("If-Match", "*")],
        Some(&json!({"action": "resume"})),
    );
    assert_eq!(r.status, 200, "If-Match: * means any version");
    let r = server.request(
        "POST",
        &modification_path,
        &[],
        Some(&json!({"action": "pause"})),
    );
    assert_eq!(r.status, 200);

    // Text PostgreSQL cannot store is refused up front, not a 500.
    for body in [
        json!({"queue": "support", "address": "+12125550100", "customer_name": "Ada\u{0}"}),
        json!({"queue": "support", "address": "+12125550100", "context": {"note": "a\u{0}b"}}),
        json!({"queue": "support", "address": "+12125550100", "context": [1, 2]}),
        json!({"queue": "support", "address": "+12125550100", "media": "sip", "address": "sip:ada@pbx.example.com"}),
    ] {
        let r = server.post("/api/v1/callbacks", &body);
        assert_eq!(r.status, 422, "{body}: {:?}", r.body);
    }
    let r = server.get("/api/v1/callbacks?queue=%00");
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (400, Some("bad_query"))
    );
    let r = server.get("/api/v1/callbacks?state=&queue=");
    assert_eq!(r.status, 200, "empty parameters are no filter");
    assert_eq!(r.body["callbacks"].as_array().unwrap().len(), 1);
    let r = server.get("/api/v1/callbacks/%FF");
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (400, Some("bad_path"))
    );

    let unknown = server.get("/api/v1/callbacks/000000000");
    assert_eq!(unknown.status, 404, "a well-formed ID that matches nothing");

    let shown = server.get(&format!("/api/v1/callbacks/{id}"));
    assert_eq!(
        shown.body["version"], 4,
        "only the accepted pause, resume and pause changed it"
    );
    assert_eq!(shown.body["state"], "paused");
    let counts = server.get("/api/v1/queues/support").body["counts"].clone();
    assert_eq!(
        counts
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum::<u64>(),
        1,
        "no refused create left a row"
    );
}

#[tokio::test]
async fn a_configured_token_is_required() {
    let url = store_url("sqlite").await;
    let server = Server::start(&config(&url, "token = \"s3cret-token-0123456789\""));
    let r = common::request(server.addr, "GET", "/api/v1/queues", &[], None).unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(
        server
            .request(
                "GET",
                "/api/v1/queues",
                &[("Authorization", "Bearer wrong")],
                None
            )
            .status,
        401
    );
    assert_eq!(
        server
            .request(
                "GET",
                "/api/v1/queues",
                &[("Authorization", "Bearer s3cret-token-0123456789")],
                None
            )
            .status,
        200
    );
    assert_eq!(
        server
            .request(
                "GET",
                "/api/v1/queues",
                &[("Authorization", "bearer s3cret-token-0123456789")],
                None
            )
            .status,
        200,
        "the scheme is case-insensitive"
    );
    assert_eq!(
        server.get("/healthz").status,
        200,
        "health checks need no token"
    );
    assert_eq!(
        server.get("/api/v1/openapi.json").status,
        200,
        "the API description is public"
    );
    drop(server);
    store::testing::discard(&url).await;
}

#[tokio::test]
async fn the_openapi_description_covers_every_route() {
    let url = store_url("sqlite").await;
    let server = Server::start(&config(&url, ""));
    let spec = server.get("/api/v1/openapi.json").body;
    assert_eq!(
        spec["openapi"].as_str().map(|v| v.starts_with("3.")),
        Some(true)
    );
    let paths = spec["paths"].as_object().unwrap();
    for path in [
        "/api/v1/callbacks",
        "/api/v1/callbacks/{confirmation_id}",
        "/api/v1/callbacks/{confirmation_id}/modifications",
        "/api/v1/queues",
        "/api/v1/queues/{name}",
        "/api/v1/trunks",
        "/api/v1/test-calls",
        "/api/v1/agents",
        "/api/v1/agents/{id}",
        "/api/v1/agents/{id}/state",
        "/api/v1/status",
        "/api/v1/sip/trace",
        "/api/v1/calls",
        "/api/v1/events",
        "/api/v1/chat/sessions",
        "/api/v1/chat/sessions/{id}/messages",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(paths.contains_key(path), "{path} is described");
    }
    drop(server);
    store::testing::discard(&url).await;
}
