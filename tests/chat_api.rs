//! The chat over HTTP against the built callbackd: a conversation that the bot answers, then
//! one beyond it that ends in a callback booked with the transcript, asked about and paused in
//! the same conversation; another conversation naming a callback by its confirmation number
//! and last four digits; a queue closed now, which says when it opens, with a blocked number
//! and a refused time each asked again; an idle conversation forgotten; and bad requests.

mod common;

use common::{chat_say, chat_start, config_with, Server};
use serde_json::{json, Value};

fn server() -> Server {
    // No dialer: the callbacks booked here stay in line to be looked at.
    let url = store::testing::sqlite_url();
    Server::start(&config_with(
        &url,
        &[("\nenabled = true", "\nenabled = false")],
    ))
}

fn booked_id(reply: &str) -> String {
    reply
        .split("confirmation number is ")
        .nth(1)
        .and_then(|rest| rest.get(..9))
        .unwrap_or_else(|| panic!("no confirmation number in {reply:?}"))
        .to_owned()
}

#[test]
fn a_request_beyond_the_bot_ends_in_a_callback_that_the_chat_can_then_ask_about_and_change() {
    let server = server();
    let chat = chat_start(&server);
    assert!(chat_say(&server, &chat, "When is my bill due?")
        .starts_with("Bills are due on the first day"));

    // One agent with the skill is ready: the wait is told.
    let r = server.post(
        "/api/v1/agents",
        &json!({"id": "ada", "name": "Ada", "skills": ["billing"], "address": "sip:ada@127.0.0.1:5999"}),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = server.request(
        "PUT",
        "/api/v1/agents/ada/state",
        &[],
        Some(&json!({"state": "ready"})),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let offer = chat_say(&server, &chat, "I was charged twice for the same month");
    assert!(
        offer.contains("An agent is free now and can call you in a few minutes.")
            && offer.ends_with("Would you like us to call you back?"),
        "{offer}"
    );
    assert!(chat_say(&server, &chat, "yes please").starts_with("What number should we call?"));
    assert!(chat_say(&server, &chat, "+1 212 555 0100").starts_with("When should we call?"));
    let booked = chat_say(&server, &chat, "as soon as possible");
    let id = booked_id(&booked);

    let shown = server.get(&format!("/api/v1/callbacks/{id}")).body;
    assert_eq!(
        (
            shown["source"].as_str(),
            shown["skill"].as_str(),
            shown["address"].as_str(),
            shown["state"].as_str()
        ),
        (
            Some("chat"),
            Some("billing"),
            Some("+12125550100"),
            Some("queued")
        ),
        "{shown}"
    );
    let transcript = shown["context"]["chat"]["transcript"]
        .as_array()
        .expect("the transcript");
    assert!(
        transcript.contains(&json!("customer: I was charged twice for the same month")),
        "{shown}"
    );

    let status = chat_say(&server, &chat, "what is the status of my callback?");
    assert!(
        status.starts_with(&format!("Your callback {id} is number 1 in line")),
        "{status}"
    );
    // The same changes as by phone: the number, the way we reach them, the department.
    for (ask, answer) in [
        ("can you call me on a different number", "+1 646 555 0199"),
        ("I would rather get a text message", "A text message"),
        ("transfer my callback to another department", "technical"),
    ] {
        chat_say(&server, &chat, ask);
        let done = chat_say(&server, &chat, answer);
        assert!(
            done.starts_with("Done: your change is confirmed."),
            "{ask}: {done}"
        );
    }
    let shown = server.get(&format!("/api/v1/callbacks/{id}")).body;
    assert_eq!(
        (
            shown["address"].as_str(),
            shown["media"].as_str(),
            shown["skill"].as_str()
        ),
        (Some("+16465550199"), Some("sms"), Some("technical")),
        "{shown}"
    );
    let done = chat_say(&server, &chat, "please pause my callback");
    assert!(
        done.starts_with("Done: your change is confirmed."),
        "{done}"
    );
    let shown = server.get(&format!("/api/v1/callbacks/{id}")).body;
    assert_eq!(shown["state"], "paused");
    let last = shown["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["channel"].as_str(), last["action"].as_str()),
        (Some("chat"), Some("pause")),
        "{last}"
    );
    assert!(
        done.contains(last["receipt"].as_str().unwrap()),
        "{done} {last}"
    );

    // Another conversation names it by its number and the last four digits of its (new)
    // number.
    let other = chat_start(&server);
    assert_eq!(
        chat_say(&server, &other, "cancel my callback"),
        "What is the confirmation number of your callback?"
    );
    chat_say(&server, &other, &id);
    let wrong = chat_say(&server, &other, "9999");
    assert!(
        wrong.contains("we could not find a callback matching those details"),
        "{wrong}"
    );
    assert_eq!(
        server.get(&format!("/api/v1/callbacks/{id}")).body["state"],
        "paused"
    );
    chat_say(&server, &other, "cancel my callback");
    chat_say(&server, &other, &id);
    let done = chat_say(&server, &other, "0199");
    assert!(
        done.starts_with("Done: your change is confirmed."),
        "{done}"
    );
    assert_eq!(
        server.get(&format!("/api/v1/callbacks/{id}")).body["state"],
        "cancelled"
    );
}

#[test]
fn bad_requests_get_a_clear_error_and_change_nothing() {
    let server = server();
    let chat = chat_start(&server);
    let post = |path: &str, body: &str| {
        common::request(
            server.addr,
            "POST",
            path,
            &[("Content-Type", "application/json")],
            Some(body),
        )
        .unwrap()
    };
    let messages = format!("/api/v1/chat/sessions/{chat}/messages");
    for (path, body, status, code) in [
        (
            messages.as_str(),
            r#"{"text": "   "}"#,
            400,
            "invalid_message",
        ),
        (
            messages.as_str(),
            &format!(r#"{{"text": "{}"}}"#, "a".repeat(1001)),
            400,
            "invalid_message",
        ),
        (
            messages.as_str(),
            r#"{"txt": "hello"}"#,
            422,
            "bad_request_body",
        ),
        (messages.as_str(), "not json", 400, "bad_request_body"),
        (
            "/api/v1/chat/sessions/00000000-0000-0000-0000-000000000000/messages",
            r#"{"text": "hi"}"#,
            404,
            "not_found",
        ),
        (
            "/api/v1/chat/sessions/nonsense/messages",
            r#"{"text": "hi"}"#,
            404,
            "not_found",
        ),
    ] {
        let r = post(path, body);
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {:?}",
            r.body
        );
        assert!(r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    // The conversation is still there, where it was.
    assert!(
        chat_say(&server, &chat, "what are your opening hours").starts_with("Our agents are there")
    );
    let listed: Value = server.get("/api/v1/callbacks").body;
    assert_eq!(
        listed["callbacks"].as_array().map(Vec::len),
        Some(0),
        "{listed}"
    );
}

#[test]
fn a_bad_bots_file_is_refused_with_its_line() {
    let url = store::testing::sqlite_url();
    let config = config_with(&url, &[]);
    let bad = std::env::temp_dir().join(format!("bots-{:016x}.toml", rand::random::<u64>()));
    let source = std::fs::read_to_string("chatbots/default.toml")
        .unwrap()
        .replace("skill = \"technical\"", "skill = \"plumbing\"");
    std::fs::write(&bad, source).unwrap();
    let out = common::callbackd()
        .args(["chat", "check"])
        .arg(&bad)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr
            .contains("queue `support` has no skill `plumbing` (it has billing, technical, sales)"),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("{}:", bad.display())), "{stderr}");
    common::cli(&config, &["chat", "check", "chatbots/default.toml"]);
}

#[test]
fn a_closed_queue_tells_when_it_opens_and_a_refused_number_or_time_is_asked_again() {
    use chrono::{Datelike, Days, Utc};
    // Calling is open only on the day after tomorrow, 9:00 to 10:00 in the queue's zone, and
    // no agent is logged in.
    let opens = Utc::now()
        .with_timezone(&chrono_tz::America::New_York)
        .date_naive()
        + Days::new(2);
    let day = opens.weekday().to_string().to_lowercase();
    let url = store::testing::sqlite_url();
    let server = Server::start(&config_with(
        &url,
        &[
            ("\nenabled = true", "\nenabled = false"),
            (
                "calling_window = { all = \"00:00-24:00\" }",
                &format!("calling_window = {{ {day} = \"09:00-10:00\" }}"),
            ),
        ],
    ));
    let chat = chat_start(&server);
    let offer = chat_say(&server, &chat, "I was charged twice for the same month");
    assert!(
        offer.contains(&format!(
            "No agent is available now; the next opening is {} at 9:00.",
            opens.format("%A %-d %B")
        )) && offer.ends_with("Would you like us to call you back?"),
        "{offer}"
    );
    chat_say(&server, &chat, "yes");
    // A premium-rate number: the dialing policy refuses it, and the number is asked again.
    assert!(chat_say(&server, &chat, "+1 900 555 0123").starts_with("When should we call?"));
    let refused = chat_say(&server, &chat, "as soon as possible");
    assert_eq!(
        refused,
        "We cannot book that: we are not allowed to call that number. What number should we call? Please write it with the country code, like +1 212 555 0100."
    );
    chat_say(&server, &chat, "+1 212 555 0100");
    // 3 am today has passed or is outside the hours: the time is asked again, the number kept.
    let refused = chat_say(&server, &chat, "3 am");
    assert!(
        refused.starts_with("We cannot book that: that time ")
            && refused.contains("When should we call?"),
        "{refused}"
    );
    let id = booked_id(&chat_say(&server, &chat, "as soon as possible"));
    let shown = server.get(&format!("/api/v1/callbacks/{id}")).body;
    assert_eq!(
        (shown["address"].as_str(), shown["requested"].as_str()),
        (Some("+12125550100"), Some("asap")),
        "{shown}"
    );
    let listed = server.get("/api/v1/callbacks").body;
    assert_eq!(
        listed["callbacks"].as_array().map(Vec::len),
        Some(1),
        "nothing booked to the refused number: {listed}"
    );
}

#[test]
fn an_idle_conversation_is_forgotten() {
    let url = store::testing::sqlite_url();
    let server = Server::start(&config_with(
        &url,
        &[
            ("\nenabled = true", "\nenabled = false"),
            ("session_idle = \"30m\"", "session_idle = \"1s\""),
        ],
    ));
    let chat = chat_start(&server);
    assert!(
        chat_say(&server, &chat, "what are your opening hours").starts_with("Our agents are there")
    );
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let r = server.post(
        &format!("/api/v1/chat/sessions/{chat}/messages"),
        &json!({ "text": "hello again" }),
    );
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{:?}",
        r.body
    );
}
