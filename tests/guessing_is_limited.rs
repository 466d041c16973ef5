//! Guessing at callbacks through the chat, at the rates that broke it (issue 17, findings 1
//! and 2): many guesses from one address, and hundreds of simultaneous answers for one
//! confirmation ID. The limits count every look-up, by phone or chat, in the store, so
//! neither gets further than the limits allow, and the right answer then fails as a wrong one
//! does.

mod common;

use std::path::PathBuf;

use common::{chat_say, chat_start, config_with, Server};
use rand::{rngs::StdRng, SeedableRng};
use serde_json::json;

const NOT_FOUND: &str = "we could not find a callback matching those details";

/// A server with no dialer (callbacks stay where they are) and these extra settings, logging
/// to a file; the server and the log's path.
fn server(extra: &[(&str, &str)]) -> (Server, PathBuf) {
    let url = store::testing::sqlite_url();
    let mut replacements = vec![
        ("\nenabled = true", "\nenabled = false"),
        // Many conversations and messages from this one address: only the look-up limits
        // are in play.
        ("messages_per_minute = 30", "messages_per_minute = 100000"),
        ("sessions_per_address = 20", "sessions_per_address = 1000"),
    ];
    replacements.extend_from_slice(extra);
    let log = std::env::temp_dir().join(format!(
        "callbackd-guess-{:016x}.log",
        rand::random::<u64>()
    ));
    let server = Server::start_logging(&config_with(&url, &replacements), &log);
    (server, log)
}

/// A conversation asked to pause callback `id`, now waiting for the last four digits.
fn asking_last_four(server: &Server, id: &str) -> String {
    let chat = chat_start(server);
    chat_say(server, &chat, "please pause my callback");
    let asked = chat_say(server, &chat, id);
    assert!(asked.contains("last four digits"), "{asked}");
    chat
}

fn create(server: &Server, number: &str) -> String {
    let r = server.post(
        "/api/v1/callbacks",
        &json!({"queue": "support", "address": number}),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body["confirmation_id"].as_str().unwrap().to_owned()
}

fn state(server: &Server, id: &str) -> String {
    server.get(&format!("/api/v1/callbacks/{id}")).body["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Look-ups that were made and failed, as the log counts them.
fn failures_logged(log: &PathBuf) -> usize {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter(|l| l.contains("failed callback look-up"))
        .count()
}

// Regression: the chat checked no limit per client, so one conversation failed thousands of
// times, and after 15 failures the right answer still paused the callback (finding 1).
#[test]
fn guesses_from_one_address_stop_at_its_limit_across_conversations() {
    let (server, log) = server(&[]);
    let target = create(&server, "+12125550100");
    // Sixteen guesses at other callbacks' IDs (valid check digits, no such callbacks), four
    // conversations at once, all from this one address.
    let mut rng = StdRng::seed_from_u64(17);
    let ids: Vec<String> = (0..16)
        .map(|_| callbacks::ConfirmationId::generate(&mut rng).to_string())
        .collect();
    std::thread::scope(|s| {
        for chunk in ids.chunks(4) {
            let server = &server;
            s.spawn(move || {
                for id in chunk {
                    let chat = asking_last_four(server, id);
                    let answer = chat_say(server, &chat, "1234");
                    assert!(answer.contains(NOT_FOUND), "{answer}");
                }
            });
        }
    });
    // The right answer for the real callback now fails like a wrong one, and changes nothing.
    let chat = asking_last_four(&server, &target);
    let answer = chat_say(&server, &chat, "0100");
    assert!(answer.contains(NOT_FOUND), "{answer}");
    assert_eq!(state(&server, &target), "queued");
    // Up to limits.failures_per_source (10) look-ups made, the rest refused; fewer when
    // guesses in flight together count each other.
    let made = failures_logged(&log);
    assert!((1..=10).contains(&made), "{made} look-ups made");
    drop(server);
    std::fs::remove_file(&log).unwrap();
}

// Regression: failures for one ID were counted, then the callback looked up, then the failure
// recorded, so 300 simultaneous answers made 299 look-ups and the right one went through
// (finding 2).
#[test]
fn simultaneous_answers_for_one_id_make_no_more_look_ups_than_its_limit() {
    let (server, log) = server(&[
        // Only the limit per ID is in play here.
        ("failures_per_source = 10", "failures_per_source = 100000"),
        ("max_connections = 512", "max_connections = 1000"),
        (
            "max_connections_per_address = 64",
            "max_connections_per_address = 1000",
        ),
    ]);
    let target = create(&server, "+12125550100");
    let waiting: Vec<String> = (0..300)
        .map(|_| asking_last_four(&server, &target))
        .collect();
    let barrier = std::sync::Barrier::new(waiting.len());
    std::thread::scope(|s| {
        for (i, chat) in waiting.iter().enumerate() {
            let (server, barrier) = (&server, &barrier);
            s.spawn(move || {
                // Every last four but the right one, 0100.
                let guess = format!("{:04}", 1000 + i);
                barrier.wait();
                let answer = chat_say(server, chat, &guess);
                assert!(answer.contains(NOT_FOUND), "{answer}");
            });
        }
    });
    // Refused answers are taken back, so how many were looked up depends on how they met;
    // the right answer then makes one look-up more, and all of them stay within the limit.
    let made = failures_logged(&log);
    let chat = asking_last_four(&server, &target);
    let answer = chat_say(&server, &chat, "0100");
    let right = !answer.contains(NOT_FOUND);
    assert!(
        made + usize::from(right) <= 5,
        "{made} failed look-ups for one ID, and the right answer was looked up too ({answer}); \
         limits.failures_per_id is 5"
    );
    if made == 5 {
        assert_eq!(state(&server, &target), "queued");
    }
    drop(server);
    std::fs::remove_file(&log).unwrap();
}
