//! The keypad contract by phone: SIPp callers (tests/sipp/uac_self_service.xml, keys as RFC 4733
//! telephone-events from the captures Debian's sip-tester ships) run the default dialplan
//! against the built callbackd on loopback, all at once on one server, and the store is then
//! checked: look up and pause; resume; reschedule to a time and to as soon as possible; change
//! the number, and a number the dialing policy blocks; change how we reach them and the
//! department, then cancel; a mistyped ID three times; the limit on failed look-ups from one
//! caller behind a trusted trunk; a caller hanging up mid-flow; the queue entry booking a callback. Every caller
//! types over the prompts (barge-in). On SQLite and on PostgreSQL.

mod common;

use std::path::{Path, PathBuf};

use common::{config_with, create_callback, run_sipp, show_callback, Server};
use serde_json::Value;

/// One call: from whom, to which number, the keys (a `,` is 3 s without one), and whether
/// the caller hangs up right after the last of them rather than waiting for callbackd's
/// goodbye.
struct Call {
    from: &'static str,
    to: &'static str,
    keys: String,
    hangs_up: bool,
}

impl Call {
    fn new(from: &'static str, keys: String) -> Call {
        Call {
            from,
            to: "5000",
            keys,
            hangs_up: false,
        }
    }

    /// The scenario for this call, written from the template.
    fn scenario(&self, dir: &Path, index: usize) -> PathBuf {
        let path = dir.join(format!("call-{index}.xml"));
        common::keypad_scenario(self.from, self.to, &self.keys, self.hangs_up, &path);
        path
    }
}

/// Runs `calls` at once against `server`, each its own SIPp; every one must run its course.
fn phone_in(server: &Server, dir: &Path, calls: &[Call]) {
    std::thread::scope(|s| {
        for (index, call) in calls.iter().enumerate() {
            let path = call.scenario(dir, index);
            s.spawn(move || {
                let (ok, failed, out) =
                    run_sipp(server.sip_udp.unwrap(), &path.display().to_string(), 1, &[]);
                assert_eq!(
                    (ok, failed),
                    (1, 0),
                    "{} pressing {}: {out}",
                    call.from,
                    call.keys
                );
            });
        }
    });
}

fn modify(config: &Path, id: &str, action: &[&str]) {
    common::cli(config, &[&["callbacks", "modify", id], action].concat());
}

/// The changes made by phone, oldest first.
fn by_phone(shown: &Value) -> Vec<&Value> {
    shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["channel"] == "ivr")
        .collect()
}

/// What the log says of the call from `caller` (masked there to its first five characters,
/// so each such caller here has an area code of its own).
fn call_log<'a>(log: &'a str, caller: &str) -> Vec<&'a str> {
    let masked = callbacks::mask(caller);
    let call = log
        .lines()
        .find(|l| l.contains("incoming call") && l.contains(&format!("caller=\"{masked}\"")))
        .and_then(|l| l.split_whitespace().find(|w| w.starts_with("call=")))
        .unwrap_or_else(|| panic!("no call from {masked}: {log}"))
        .to_owned();
    log.lines()
        .filter(|l| l.split_whitespace().any(|w| w == call))
        .collect()
}

fn flows(url: &str) {
    let config = config_with(
        url,
        &[
            (
                "# \"5001\" = \"queue_support\"",
                "\"5001\" = \"queue_support\"",
            ),
            ("failures_per_source = 10", "failures_per_source = 3"),
            // SIPp calls from loopback as a trunk would: each caller ID it asserts is a
            // source of its own for the limits.
            ("trusted = []", "trusted = [\"127.0.0.1\"]"),
        ],
    );
    let dir = std::env::temp_dir().join(format!("callbackd-ivr-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();

    let pause = ("+12125550101", create_callback(&config, "+12125550101"));
    let resume = ("+12125550102", create_callback(&config, "+12125550102"));
    modify(&config, &resume.1, &["pause"]);
    let at_a_time = ("+12125550103", create_callback(&config, "+12125550103"));
    let asap = ("+12125550104", create_callback(&config, "+12125550104"));
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    modify(&config, &asap.1, &["reschedule", &tomorrow]);
    let number = ("+12125550105", create_callback(&config, "+12125550105"));
    let blocked = ("+12125550106", create_callback(&config, "+12125550106"));
    let several = ("+12125550107", create_callback(&config, "+12125550107"));
    let mistyped = create_callback(&config, "+12125550108");
    let guessed = create_callback(&config, "+12125550109");
    let hung_up = ("+12125550110", create_callback(&config, "+12125550110"));
    let hung_up_before = show_callback(&config, &hung_up.1);
    let hung_up_confirming = ("+12125550112", create_callback(&config, "+12125550112"));

    // The check digit wrong each time (the last digit off by one), then a pause for the
    // complaint (keys typed over it are not kept).
    let last = mistyped.chars().last().unwrap().to_digit(10).unwrap();
    let wrong = format!("{}{}#", &mistyped[..8], (last + 1) % 10);
    let mistyped_keys = [wrong.as_str(); 3].join(",");
    let stranger = "+13125550199";
    let log = dir.join("callbackd.log");
    let server = Server::start_logging(&config, &log);
    phone_in(
        &server,
        &dir,
        &[
            Call::new(pause.0, format!("{}#5*", pause.1)),
            Call::new(resume.0, format!("{}#5*", resume.1)),
            // 1 the time, 2 a time, 14:30, 2 tomorrow, 1 confirm.
            Call::new(at_a_time.0, format!("{}#12143021*", at_a_time.1)),
            Call::new(asap.0, format!("{}#11*", asap.1)),
            Call::new(number.0, format!("{}#212125550199#1*", number.1)),
            // A premium-rate number: refused with its reason, nothing changed.
            Call::new(blocked.0, format!("{}#219005550123#1*", blocked.1)),
            // 3 2 by text message; 4 3 the third department; 6 1 cancel.
            Call::new(several.0, format!("{}#324361*", several.1)),
            Call::new("+14155550108", mistyped_keys),
            // The right ID, the wrong last four digits, three times: the call ends.
            Call::new(stranger, format!("{guessed}#9999").repeat(3)),
            Call {
                hangs_up: true,
                ..Call::new(hung_up.0, format!("{}#121430", hung_up.1))
            },
            // 6 cancel, 1 confirm, and gone while the cancel is being made.
            Call {
                hangs_up: true,
                ..Call::new(hung_up_confirming.0, format!("{}#61", hung_up_confirming.1))
            },
            // 1 a callback instead of holding, 1 to the number calling.
            Call {
                to: "5001",
                ..Call::new("+15105550111", "11".to_owned())
            },
        ],
    );
    // The stranger again, now with the right last four digits: past the limit, told what
    // a wrong answer tells.
    phone_in(
        &server,
        &dir,
        &[Call::new(stranger, format!("{guessed}#0109"))],
    );
    drop(server);
    let log = std::fs::read_to_string(&log).unwrap();
    let show = |id: &str| show_callback(&config, id);

    let shown = show(&pause.1);
    assert_eq!(shown["state"], "paused", "{shown}");
    let change = by_phone(&shown)[0];
    assert_eq!(
        (change["actor"].as_str(), change["outcome"].as_str()),
        (Some(pause.0), Some("success")),
        "{change}"
    );
    assert!(
        change["receipt"].as_str().is_some_and(|r| r.len() == 6),
        "{change}"
    );

    let shown = show(&resume.1);
    assert_eq!(shown["state"], "queued", "resumed: {shown}");

    let shown = show(&at_a_time.1);
    assert_eq!(shown["state"], "scheduled", "{shown}");
    let at = chrono::DateTime::parse_from_rfc3339(shown["requested"].as_str().unwrap())
        .expect("a time was requested")
        .with_timezone(&chrono_tz::America::New_York);
    let tomorrow = chrono::Utc::now()
        .with_timezone(&chrono_tz::America::New_York)
        .date_naive()
        + chrono::Duration::days(1);
    assert_eq!(
        (at.date_naive(), at.format("%H:%M").to_string()),
        (tomorrow, "14:30".into())
    );

    let shown = show(&asap.1);
    assert_eq!(
        (shown["state"].as_str(), shown["requested"].as_str()),
        (Some("queued"), Some("asap")),
        "as soon as possible: {shown}"
    );

    assert_eq!(show(&number.1)["address"], "+12125550199");

    let shown = show(&blocked.1);
    assert_eq!(shown["address"], blocked.0, "nothing changed: {shown}");
    let refused = by_phone(&shown)[0];
    assert_eq!(refused["outcome"], "blocked_by_policy", "{refused}");
    assert!(
        refused["receipt"].as_str().is_some(),
        "a reference code: {refused}"
    );

    let shown = show(&several.1);
    assert_eq!(
        (
            shown["media"].as_str(),
            shown["skill"].as_str(),
            shown["state"].as_str()
        ),
        (Some("sms"), Some("sales"), Some("cancelled")),
        "{shown}"
    );
    let changes = by_phone(&shown);
    assert_eq!(changes.len(), 3, "{shown}");
    assert!(changes
        .iter()
        .all(|e| e["outcome"] == "success" && e["receipt"].is_string()));

    let heard = call_log(&log, "+14155550108");
    assert_eq!(
        heard.iter().filter(|l| l.contains("key pressed")).count(),
        30
    );
    assert!(
        !heard.iter().any(|l| l.contains("dialplan operation")),
        "a mistyped ID is refused without a look-up: {heard:#?}"
    );
    assert_eq!(
        show(&mistyped)["history"].as_array().unwrap().len(),
        1,
        "nothing but its creation"
    );

    assert!(
        log.lines()
            .any(|l| l.contains("callback look-up refused: limit reached")
                && l.contains(&callbacks::mask(stranger))),
        "the stranger's second call is refused: {log}"
    );
    assert_eq!(
        log.lines()
            .filter(
                |l| l.contains("failed callback look-up") && l.contains(&callbacks::mask(stranger))
            )
            .count(),
        3,
        "each failure up to the limit logged, with the source for fail2ban: {log}"
    );
    assert_eq!(
        show(&guessed)["history"].as_array().unwrap().len(),
        1,
        "nothing changed"
    );

    let shown = show(&hung_up.1);
    assert_eq!(
        (
            &shown["state"],
            &shown["requested"],
            shown["history"].as_array().unwrap().len()
        ),
        (&hung_up_before["state"], &hung_up_before["requested"], 1),
        "a caller who hangs up mid-flow changes nothing: {shown}"
    );

    // Hanging up as the cancel is confirmed: it is made whole (state, history, receipt), or
    // not at all.
    let shown = show(&hung_up_confirming.1);
    let changes = by_phone(&shown);
    match shown["state"].as_str() {
        Some("cancelled") => assert!(
            changes.len() == 1
                && changes[0]["action"] == "cancel"
                && changes[0]["outcome"] == "success"
                && changes[0]["receipt"].is_string(),
            "{shown}"
        ),
        _ => assert!(
            changes.is_empty() && shown["history"].as_array().unwrap().len() == 1,
            "{shown}"
        ),
    }

    let listed: Value = serde_json::from_str(&common::cli(
        &config,
        &["callbacks", "list", "--queue", "support"],
    ))
    .unwrap();
    let booked: Vec<&Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["address"] == "+15105550111")
        .collect();
    assert_eq!(booked.len(), 1, "{listed}");
    assert_eq!(booked[0]["source"], "ivr", "{listed}");
    // Its place in line is the time the caller came into the queue, before they chose.
    let time = |field: &str| {
        chrono::DateTime::parse_from_rfc3339(booked[0][field].as_str().unwrap()).unwrap()
    };
    assert!(
        time("created_at") - time("enqueued_at") >= chrono::Duration::seconds(1),
        "keeps the time of the call: {listed}"
    );

    assert!(
        call_log(&log, pause.0)
            .iter()
            .any(|l| l.contains("prompt ended") && l.contains("how=Digit")),
        "the pausing caller's keys stopped a prompt (barge-in): {log}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_keypad_contract_by_phone_on_sqlite() {
    flows(&store::testing::sqlite_url());
}

#[tokio::test]
async fn the_keypad_contract_by_phone_on_postgres() {
    let url = store::testing::postgres_url().await;
    tokio::task::spawn_blocking(move || flows(&url))
        .await
        .unwrap();
}
