//! The default dialplan's self-service flows, run by `callbackd dialplan simulate` against a
//! real store (SQLite and PostgreSQL): what the caller hears, and what changed in the store.

mod common;

use std::path::PathBuf;

use common::{callbackd, config, config_with, store_url};
use serde_json::Value;

/// A store with the default configuration, and the commands to work on it.
struct Line {
    config: PathBuf,
}

impl Line {
    async fn new(backend: &str) -> Line {
        Line {
            config: config(&store_url(backend).await, ""),
        }
    }

    /// With these changes to the default configuration.
    async fn with(backend: &str, replacements: &[(&str, &str)]) -> Line {
        Line {
            config: config_with(&store_url(backend).await, replacements),
        }
    }

    fn run(&self, args: &[&str]) -> String {
        common::cli(&self.config, args)
    }

    /// A callback for `address`; its confirmation ID.
    fn create(&self, address: &str) -> String {
        common::create_callback(&self.config, address)
    }

    /// A call from `caller_id` pressing `keys`; what the caller heard and did.
    fn call(&self, caller_id: &str, keys: &str) -> String {
        self.call_at("self_service", caller_id, keys)
    }

    /// The same, starting at the dialplan entry `entry`.
    fn call_at(&self, entry: &str, caller_id: &str, keys: &str) -> String {
        self.run(&[
            "dialplan",
            "simulate",
            "dialplans/default.toml",
            "--entry",
            entry,
            "--caller-id",
            caller_id,
            "--digits",
            keys,
        ])
    }

    fn show(&self, id: &str) -> Value {
        common::show_callback(&self.config, id)
    }
}

const NUMBER: &str = "+12125550100";

/// The receipt code the caller heard after "change-confirmed".
fn spoken_receipt(transcript: &str) -> String {
    let line = transcript
        .lines()
        .find(|l| l.starts_with("hears: change-confirmed"))
        .unwrap_or_else(|| panic!("no confirmation heard:\n{transcript}"));
    line.split_whitespace().skip(2).collect()
}

async fn look_up_pause_and_resume_with_receipts_in_the_history(backend: &str) {
    let line = Line::new(backend).await;
    let id = line.create(NUMBER);
    let heard = line.call(NUMBER, &format!("{id}#5*"));
    assert!(
        heard.contains("hears: status-queued 1 in-line\nhears: main-menu"),
        "first in line, and with no agent logged in no wait to tell: {heard}"
    );
    let receipt = spoken_receipt(&heard);
    assert!(
        heard.contains("\nchanged: state queued -> paused\n"),
        "the simulator says what changed: {heard}"
    );
    assert!(
        heard.trim_end().ends_with("hears: goodbye\nhangs up"),
        "{heard}"
    );
    let shown = line.show(&id);
    assert_eq!(shown["state"], "paused", "{shown}");
    let last = shown["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (
            last["action"].as_str(),
            last["channel"].as_str(),
            last["receipt"].as_str()
        ),
        (Some("pause"), Some("ivr"), Some(receipt.as_str())),
        "{last}"
    );
    assert_eq!(last["actor"], NUMBER, "the caller ID is in the history");
    // The second call hears "paused" and 5 resumes.
    let heard = line.call(NUMBER, &format!("{id}#5*"));
    assert!(heard.contains("hears: status-paused"), "{heard}");
    assert_eq!(line.show(&id)["state"], "queued");
}

/// Each flow, on SQLite and on PostgreSQL: `FLOW::sqlite` and `FLOW::postgres`.
macro_rules! on_both_stores {
    ($($flow:ident),* $(,)?) => {$(
        mod $flow {
            #[tokio::test]
            async fn sqlite() {
                super::$flow("sqlite").await;
            }

            #[tokio::test]
            async fn postgres() {
                super::$flow("postgres").await;
            }
        }
    )*};
}

on_both_stores!(
    look_up_pause_and_resume_with_receipts_in_the_history,
    a_caller_from_another_number_is_asked_the_last_four_digits,
    an_unknown_id_and_a_wrong_last_four_sound_the_same,
    a_mistyped_id_three_times_is_refused_without_a_lookup_and_goodbye,
    reschedule_to_a_time_tomorrow_then_as_soon_as_possible,
    the_menus_repeat_keep_re_enter_and_end,
    change_the_number_and_a_blocked_number_is_refused_with_its_reason,
    change_how_we_reach_you_and_the_department,
    three_failed_look_ups_in_one_call_end_it,
    a_source_past_its_failures_is_told_only_what_a_wrong_answer_tells,
    past_the_hourly_budget_of_failures_even_the_callbacks_own_number_must_verify,
    a_caller_in_the_queue_books_a_callback_and_hears_its_number_twice,
);

#[tokio::test]
async fn the_place_in_line_and_the_estimated_wait_are_told() {
    let url = store::testing::sqlite_url();
    let line = Line {
        config: config(&url, ""),
    };
    let ids: Vec<String> = (0..3).map(|_| line.create(NUMBER)).collect();
    // Two agents with the skill, both on calls; no call measured yet, so the queue's
    // handle_time (5 minutes) stands: the third in line waits 3 x 5 / 2 = 7.5 minutes.
    let store = store::Store::open(&url).await.unwrap();
    let now = chrono::Utc::now();
    for id in ["ada", "bo"] {
        let queue: callbacks::Queue = serde_json::from_value(serde_json::json!({
            "skills": ["billing"], "time_zone": "America/New_York",
            "calling_window": {"all": "00:00-24:00"}
        }))
        .unwrap();
        let policy = callbacks::Policy {
            queues: [("support".to_owned(), queue)].into(),
            dialing: callbacks::DialingPolicy::home("US").unwrap(),
        };
        let mut agent = serde_json::from_value::<callbacks::NewAgent>(serde_json::json!({
            "id": id, "name": id, "skills": ["billing"], "address": format!("sip:{id}@callbackd")
        }))
        .unwrap()
        .build(&policy, now)
        .unwrap();
        store.insert_agent(&agent, "test").await.unwrap();
        for to in [
            callbacks::AgentState::Ready,
            callbacks::AgentState::Reserved,
            callbacks::AgentState::OnCall,
        ] {
            let next = agent.moved(to, None, now).unwrap();
            store.move_agent(&agent, &next, "test").await.unwrap();
            agent = next;
        }
    }
    store.close().await;
    let heard = line.call(NUMBER, &format!("{}#*", ids[2]));
    assert!(
        heard.contains(
            "hears: status-queued 3 in-line\nhears: estimated-wait about 8 minutes\nhears: main-menu"
        ),
        "{heard}"
    );
    let heard = line.call(NUMBER, &format!("{}#*", ids[0]));
    assert!(
        heard.contains("hears: status-queued 1 in-line\nhears: estimated-wait about 3 minutes"),
        "the first waits for one of two agents: {heard}"
    );
}

#[tokio::test]
async fn a_finished_callback_says_so_and_the_call_ends() {
    let line = Line::new("sqlite").await;
    let id = line.create(NUMBER);
    line.run(&["callbacks", "modify", &id, "cancel"]);
    let heard = line.call(NUMBER, &format!("{id}#"));
    assert!(heard.contains("-> found state=cancelled"), "{heard}");
    assert!(
        heard
            .trim_end()
            .ends_with("hears: cancelled goodbye\nhangs up"),
        "no menu for a callback that cannot change: {heard}"
    );
}

async fn a_caller_from_another_number_is_asked_the_last_four_digits(backend: &str) {
    let line = Line::new(backend).await;
    let id = line.create(NUMBER);
    let heard = line.call("+13125550199", &format!("{id}#0100 6 1 *"));
    assert!(heard.contains("hears: enter-last-four"), "{heard}");
    assert!(heard.contains("runs: verify"), "{heard}");
    assert_eq!(line.show(&id)["state"], "cancelled");
}

#[tokio::test]
async fn guessing_one_callbacks_last_four_from_many_phones_gets_nowhere() {
    let line = Line::new("sqlite").await;
    let id = line.create(NUMBER);
    // Wrong answers, each from another phone (so no source reaches its limit); each call's
    // caller ID that is not the callback's counts as a miss too...
    for (i, guess) in ["1111", "2222", "3333"].iter().enumerate() {
        let heard = line.call(&format!("+1312555010{i}"), &format!("{id}#{guess}"));
        assert!(heard.contains("-> not_found"), "{heard}");
    }
    // ...and past limits.failures_per_id the right one fails as a wrong one does...
    let heard = line.call("+13125550109", &format!("{id}#0100"));
    assert!(
        heard.contains("runs: verify") && heard.contains("-> not_found"),
        "{heard}"
    );
    // ...and so does the owner's own phone: a caller ID is a guess at the number too.
    let heard = line.call(NUMBER, &format!("{id}#0100"));
    assert!(
        heard.contains("-> verify") && heard.contains("-> not_found"),
        "{heard}"
    );
    assert_eq!(line.show(&id)["history"].as_array().unwrap().len(), 1);
}

// Regression: a caller ID that did not match recorded no failure, so it told without limit
// whether an ID belongs to a number (issue 17, finding 3).
#[tokio::test]
async fn a_caller_id_that_does_not_match_counts_as_a_miss() {
    let line = Line::with("sqlite", &[("failures_per_id = 5", "failures_per_id = 3")]).await;
    let id = line.create(NUMBER);
    for i in 0..3 {
        let heard = line.call(&format!("+1312555019{i}"), &format!("{id}#"));
        assert!(heard.contains("-> verify"), "{heard}");
    }
    // The three misses used up the ID's failures: the owner is asked and refused like anyone.
    let heard = line.call(NUMBER, &format!("{id}#"));
    assert!(
        heard.contains("-> verify") && !heard.contains("-> found"),
        "{heard}"
    );
}

#[tokio::test]
async fn a_right_answer_forgives_its_own_calls_misses() {
    let line = Line::with("sqlite", &[("failures_per_id = 5", "failures_per_id = 2")]).await;
    let id = line.create(NUMBER);
    // From another phone, the owner gives the last four digits: the caller-ID miss on the way
    // is forgiven, so doing it again and again never closes the ID.
    for _ in 0..4 {
        let heard = line.call("+13125550199", &format!("{id}#0100*"));
        assert!(
            heard.contains("runs: verify") && heard.contains("-> found"),
            "{heard}"
        );
    }
}

#[tokio::test]
async fn a_store_that_fails_is_not_the_callers_fault() {
    let url = store::testing::sqlite_url();
    let line = Line {
        config: config(&url, ""),
    };
    let id = line.create(NUMBER);
    // Break the store under callbackd's feet.
    let store = store::Store::open(&url).await.unwrap();
    let store::Store::Sqlite(sqlite) = &store else {
        unreachable!()
    };
    sqlx::query("ALTER TABLE callbacks RENAME TO callbacks_gone")
        .execute(sqlite.pool())
        .await
        .unwrap();
    let heard = line.call("+13125550199", &format!("{id}#"));
    assert!(
        heard.contains("-> unavailable")
            && heard
                .trim_end()
                .ends_with("hears: try-later goodbye\nhangs up"),
        "{heard}"
    );
    let (counted,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM security_events")
        .fetch_one(sqlite.pool())
        .await
        .unwrap();
    assert_eq!(counted, 0, "nothing counted against the caller");
}

/// An SMS gateway's webhook taking one POST: its address, and the body it got.
fn gateway() -> (u16, std::thread::JoinHandle<String>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let taken = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream);
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        reader
            .get_mut()
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        String::from_utf8(body).unwrap()
    });
    (port, taken)
}

#[tokio::test]
async fn a_change_to_a_callback_reached_by_text_is_confirmed_by_text() {
    let (port, taken) = gateway();
    let url = format!("url = \"http://127.0.0.1:{port}/sms\"");
    let line = Line::with("sqlite", &[("# url = \"http://127.0.0.1:9000/sms\"", &url)]).await;
    let created: Value = serde_json::from_str(&line.run(&[
        "callbacks",
        "create",
        "--queue",
        "support",
        "--address",
        NUMBER,
        "--media",
        "sms",
    ]))
    .unwrap();
    let id = created["confirmation_id"].as_str().unwrap();
    let heard = line.call(NUMBER, &format!("{id}#5*"));
    let receipt = spoken_receipt(&heard);
    let sent: Value = serde_json::from_str(&taken.join().unwrap()).unwrap();
    assert_eq!(
        sent,
        serde_json::json!({
            "to": NUMBER,
            "text": format!("Your callback {id} is paused until you resume it. Reference code {receipt}."),
            "confirmation_id": id,
            "receipt": receipt,
        })
    );
}

async fn an_unknown_id_and_a_wrong_last_four_sound_the_same(backend: &str) {
    let line = Line::new(backend).await;
    let id = line.create(NUMBER);
    let stranger = "+13125550199";
    let wrong_four = line.call(stranger, &format!("{id}#9999"));
    let unknown = line.call(stranger, "745805615#0100");
    let heard = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with("hears:"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(heard(&wrong_four), heard(&unknown));
    assert!(wrong_four.contains("hears: not-found"), "{wrong_four}");
    assert_eq!(line.show(&id)["state"], "queued", "nothing changed");
}

async fn a_mistyped_id_three_times_is_refused_without_a_lookup_and_goodbye(backend: &str) {
    let line = Line::new(backend).await;
    let heard = line.call(NUMBER, "745805616#745805617#745805618#");
    assert_eq!(
        heard.matches("hears: invalid-confirmation").count(),
        2,
        "{heard}"
    );
    assert!(
        heard.contains("hears: too-many-attempts goodbye"),
        "{heard}"
    );
    assert!(
        !heard.contains("runs:"),
        "no lookup for a bad check digit: {heard}"
    );
}

async fn the_menus_repeat_keep_re_enter_and_end(backend: &str) {
    let line = Line::new(backend).await;
    let id = line.create(NUMBER);
    // Ten minutes from now in the queue's zone, today (1) unless that is past midnight.
    let zone = chrono_tz::America::New_York;
    let now = chrono::Utc::now().with_timezone(&zone);
    let at = now + chrono::Duration::minutes(10);
    let day = if at.date_naive() == now.date_naive() {
        "1"
    } else {
        "2"
    };
    let hhmm = at.format("%H%M").to_string();
    // 9 repeat; 6 cancel, 2 keep it; 2 a number, 2 re-enter, another, 1 confirm; 1 the time,
    // 2 a time, HHMM, the day, 1 confirm; 0 end.
    let heard = line.call(
        NUMBER,
        &format!("{id}#9 6 2 2 12125550123# 2 12125550177# 1 1 2 {hhmm} {day} 1 0"),
    );
    assert_eq!(heard.matches("hears: cancel-confirm").count(), 1, "{heard}");
    assert!(
        heard.contains("hears: you-entered 1 2 1 2 5 5 5 0 1 2 3 confirm-menu")
            && heard.contains("hears: you-entered 1 2 1 2 5 5 5 0 1 7 7 confirm-menu"),
        "{heard}"
    );
    assert_eq!(
        heard.matches("hears: change-confirmed").count(),
        2,
        "{heard}"
    );
    assert!(
        heard.matches("hears: main-menu").count() >= 5,
        "after the greeting, 9, the kept cancel and each change: {heard}"
    );
    assert!(
        heard.trim_end().ends_with("hears: goodbye\nhangs up"),
        "{heard}"
    );
    let shown = line.show(&id);
    assert_eq!(
        (shown["address"].as_str(), shown["state"].as_str()),
        (Some("+12125550177"), Some("scheduled")),
        "not cancelled; the second number: {shown}"
    );
    let requested = chrono::DateTime::parse_from_rfc3339(shown["requested"].as_str().unwrap())
        .unwrap()
        .with_timezone(&zone);
    assert_eq!(
        (requested.date_naive(), requested.format("%H%M").to_string()),
        (at.date_naive(), hhmm)
    );
}

async fn reschedule_to_a_time_tomorrow_then_as_soon_as_possible(backend: &str) {
    let line = Line::new(backend).await;
    let id = line.create(NUMBER);
    // 1 time, 2 a time, 14:30, 2 tomorrow, 1 confirm.
    let heard = line.call(NUMBER, &format!("{id}#1 2 1430 2 1 *"));
    assert!(
        heard.contains("hears: you-entered 1 4 3 0 confirm-menu"),
        "{heard}"
    );
    spoken_receipt(&heard);
    let shown = line.show(&id);
    assert_eq!(shown["state"], "scheduled", "{shown}");
    let at = chrono::DateTime::parse_from_rfc3339(shown["requested"].as_str().unwrap())
        .expect("a time was requested")
        .with_timezone(&chrono_tz::America::New_York);
    assert_eq!(at.format("%H:%M").to_string(), "14:30");
    let heard = line.call(NUMBER, &format!("{id}#1 1 *"));
    spoken_receipt(&heard);
    assert_eq!(line.show(&id)["state"], "queued");
}

async fn change_the_number_and_a_blocked_number_is_refused_with_its_reason(backend: &str) {
    let line = Line::new(backend).await;
    let id = line.create(NUMBER);
    let heard = line.call(NUMBER, &format!("{id}#2 12125550123# 1 *"));
    spoken_receipt(&heard);
    assert!(
        heard.contains("\nchanged: address +12125550100 -> +12125550123\n"),
        "{heard}"
    );
    assert_eq!(line.show(&id)["address"], "+12125550123");
    // A premium-rate number: refused, the reason said, nothing changed.
    let heard = line.call("+12125550123", &format!("{id}#2 19005550123# 1 *"));
    assert!(
        heard.contains("hears: change-failed reason-blocked-by-policy reference-code")
            && !heard.contains("changed:"),
        "{heard}"
    );
    assert_eq!(line.show(&id)["address"], "+12125550123");
}

async fn change_how_we_reach_you_and_the_department(backend: &str) {
    let line = Line::new(backend).await;
    let id = line.create(NUMBER);
    let heard = line.call(NUMBER, &format!("{id}#3 2 4 3 *"));
    assert_eq!(
        heard.matches("hears: change-confirmed").count(),
        2,
        "{heard}"
    );
    let shown = line.show(&id);
    assert_eq!(
        (shown["media"].as_str(), shown["skill"].as_str()),
        (Some("sms"), Some("sales"))
    );
}

#[test]
fn check_names_every_problem_with_its_line() {
    let url = store::testing::sqlite_url();
    let config = config(&url, "");
    let bad =
        std::env::temp_dir().join(format!("bad-dialplan-{:016x}.toml", rand::random::<u64>()));
    std::fs::write(
        &bad,
        "[entries]\nself_service = \"start\"\n\n[nodes.start]\nkind = \"play\"\nprompts = [\"no-such-prompt\"]\nnext = \"nowhere\"\n",
    )
    .unwrap();
    let out = callbackd()
        .args(["dialplan", "check"])
        .arg(&bad)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let file = bad.display().to_string();
    assert!(
        stderr.contains(&format!("{file}:4:1: there is no node `nowhere`")),
        "{stderr}"
    );
    assert!(
        stderr.contains("plays `no-such-prompt`, which is not a prompt"),
        "{stderr}"
    );
    let out = callbackd()
        .args(["dialplan", "check", "dialplans/default.toml", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn three_failed_look_ups_in_one_call_end_it(backend: &str) {
    let line = Line::new(backend).await;
    let id = line.create(NUMBER);
    let wrong = format!("{id}#9999");
    let heard = line.call("+13125550199", &[wrong.as_str(); 4].concat());
    assert_eq!(heard.matches("runs: verify").count(), 3, "{heard}");
    assert!(
        heard
            .trim_end()
            .ends_with("hears: not-found too-many-attempts goodbye\nhangs up"),
        "{heard}"
    );
    assert_eq!(line.show(&id)["state"], "queued", "nothing changed");
}

#[tokio::test]
async fn the_failed_look_ups_a_call_may_make_are_configured() {
    let line = Line::with(
        "sqlite",
        &[("max_failures_per_call = 3", "max_failures_per_call = 2")],
    )
    .await;
    let id = line.create(NUMBER);
    let heard = line.call("+13125550199", &format!("{id}#9999").repeat(3));
    assert_eq!(heard.matches("runs: verify").count(), 2, "{heard}");
    assert!(
        heard
            .trim_end()
            .ends_with("too-many-attempts goodbye\nhangs up"),
        "{heard}"
    );
}

async fn a_source_past_its_failures_is_told_only_what_a_wrong_answer_tells(backend: &str) {
    let line = Line::with(
        backend,
        &[("failures_per_source = 10", "failures_per_source = 2")],
    )
    .await;
    let id = line.create(NUMBER);
    let stranger = "+13125550199";
    line.call(stranger, &format!("{id}#9999"));
    // The right last four digits now: asked for them and refused, as for a wrong answer.
    let heard = line.call(stranger, &format!("{id}#0100"));
    assert!(heard.contains("-> verify"), "{heard}");
    assert!(heard.contains("hears: enter-last-four"), "{heard}");
    assert!(heard.contains("-> not_found"), "{heard}");
    assert!(!heard.contains("-> found"), "{heard}");
    // Another caller is not affected.
    let heard = line.call(NUMBER, &format!("{id}#*"));
    assert!(heard.contains("-> found"), "{heard}");
}

async fn past_the_hourly_budget_of_failures_even_the_callbacks_own_number_must_verify(
    backend: &str,
) {
    let line = Line::with(
        backend,
        &[(
            "failed_lookups_per_hour = 100",
            "failed_lookups_per_hour = 2",
        )],
    )
    .await;
    let id = line.create(NUMBER);
    // Failures at another callback, so this one's own stay clear.
    let other = line.create("+12125550188");
    line.call("+13125550199", &format!("{other}#9999{other}#9999"));
    let heard = line.call(NUMBER, &format!("{id}#0100*"));
    assert!(heard.contains("hears: enter-last-four"), "{heard}");
    assert!(
        heard.contains("runs: verify id=") && heard.contains("-> found"),
        "{heard}"
    );
}

async fn a_caller_in_the_queue_books_a_callback_and_hears_its_number_twice(backend: &str) {
    let line = Line::new(backend).await;
    let heard = line.call_at("queue_support", NUMBER, "11");
    assert!(
        heard.contains("hears: you-are-number 1 in-line\nhears: queue-offer"),
        "first in line, and no agent to estimate a wait from: {heard}"
    );
    let booked = heard
        .lines()
        .find(|l| l.starts_with("runs: book"))
        .unwrap_or_else(|| panic!("{heard}"));
    let id = booked
        .split_whitespace()
        .find_map(|w| w.strip_prefix("confirmation_id="))
        .unwrap_or_else(|| panic!("{booked}"));
    let spoken: String = id.chars().map(|d| format!(" {d}")).collect();
    assert!(
        heard.contains(&format!(
            "hears: callback-booked{spoken} (700 ms silence) your-number-is{spoken} goodbye"
        )),
        "{heard}"
    );
    let shown = line.show(id);
    assert_eq!(
        (
            shown["address"].as_str(),
            shown["source"].as_str(),
            shown["state"].as_str()
        ),
        (Some(NUMBER), Some("ivr"), Some("queued")),
        "{shown}"
    );
    assert_eq!(shown["history"][0]["channel"], "ivr");

    // Silence after the offer: the caller holds for an agent.
    let heard = line.call_at("queue_support", NUMBER, "");
    assert!(
        heard
            .trim_end()
            .ends_with("hears: queue-offer\n(silence)\nholds in support"),
        "{heard}"
    );

    // Another number, entered and confirmed.
    let heard = line.call_at("queue_support", NUMBER, "1 2 13125550199# 1");
    assert!(
        heard.contains("runs: book number=13125550199 queue=support -> success"),
        "{heard}"
    );
}
