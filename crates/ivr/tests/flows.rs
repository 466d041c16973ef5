//! Dialplans run by the interpreter with scripted keys, in virtual time: each test feeds
//! inputs and checks the actions that come out.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ivr::dialplan::{Catalogue, Dialplan, Kind, Operation};
use ivr::session::{Action, Clip, Session, Value};

const OPERATIONS: &[Operation] = &[
    Operation {
        name: "lookup",
        args: &["id"],
        results: &["found", "not_found"],
        sets: &[("state", Kind::Text), ("scheduled_at", Kind::Time)],
    },
    Operation {
        name: "pause",
        args: &["id"],
        results: &["success", "failure"],
        sets: &[("receipt", Kind::Digits)],
    },
];

fn catalogue_check(source: &str) -> Result<Dialplan, Vec<ivr::dialplan::DialplanError>> {
    let has_prompt = |name: &str| !name.starts_with("missing");
    let catalogue = Catalogue {
        has_prompt: &has_prompt,
        operations: OPERATIONS,
        initial: &[("caller_id", Kind::Text)],
    };
    Dialplan::load("test.toml", source, &catalogue)
}

const PLAN: &str = r##"
[entries]
self_service = "greeting"

[nodes.greeting]
kind = "play"
prompts = ["welcome"]
next = "ask_id"

[nodes.ask_id]
kind = "collect"
prompts = ["enter-confirmation"]
into = "id"
min = 9
max = 9
terminator = "#"
check = "confirmation_id"
tries = 3
invalid = ["invalid-confirmation"]
no_input = ["no-input"]
next = "lookup"
exhausted = "goodbye"

[nodes.lookup]
kind = "run"
operation = "lookup"
args = { id = "$id" }
on = { found = "status", not_found = "not_found" }

[nodes.not_found]
kind = "play"
prompts = ["not-found"]
barge_in = false
next = "ask_id"

[nodes.status]
kind = "branch"
on = "state"
cases = { paused = "say_paused" }
default = "say_scheduled"

[nodes.say_paused]
kind = "play"
prompts = ["status-paused"]
next = "menu"

[nodes.say_scheduled]
kind = "play"
prompts = ["status-scheduled", { say = "date_time", of = "scheduled_at" }]
next = "menu"

[nodes.menu]
kind = "menu"
prompts = ["main-menu"]
options = { "5" = "pause", "9" = "menu", "*" = "goodbye" }
timeout = "5s"
tries = 2
invalid = ["invalid-choice"]
exhausted = "goodbye"

[nodes.pause]
kind = "run"
operation = "pause"
args = { id = "$id" }
on = { success = "confirmed", failure = "menu" }

[nodes.confirmed]
kind = "play"
prompts = ["change-confirmed", { say = "digits", of = "receipt" }]
next = "menu"

[nodes.goodbye]
kind = "hangup"
prompts = ["goodbye"]
"##;

/// A call in virtual time: the test drives it and reads what it asks for.
struct Call {
    session: Session,
    now: Instant,
}

impl Call {
    fn start() -> Call {
        let plan = Arc::new(catalogue_check(PLAN).expect("the test dialplan is good"));
        let now = Instant::now();
        let vars = BTreeMap::from([("caller_id".to_owned(), Value::Text("+12125550100".into()))]);
        Call {
            session: Session::start(plan, "self_service", vars, now).expect("the entry exists"),
            now,
        }
    }

    /// A call past the greeting and the prompt for the ID, waiting for its keys.
    fn at_the_id_prompt() -> Call {
        let mut call = Call::start();
        let (greeting, _) = call.played();
        call.finish_play(greeting);
        let (ask, prompts) = call.played();
        assert_eq!(prompts, ["enter-confirmation"]);
        call.finish_play(ask);
        call
    }

    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.session.poll_action()).collect()
    }

    /// The prompts of the one play action that came out, and its id.
    fn played(&mut self) -> (u64, Vec<String>) {
        let actions = self.actions();
        match actions.as_slice() {
            [Action::Play { id, clips, .. }] => (
                *id,
                clips
                    .iter()
                    .map(|c| match c {
                        Clip::Prompt(p) => p.clone(),
                        Clip::Silence(d) => format!("silence {d:?}"),
                    })
                    .collect(),
            ),
            other => panic!("expected one play, got {other:?}"),
        }
    }

    fn keys(&mut self, keys: &str) {
        for key in keys.chars() {
            self.session.handle_key(self.now, key);
        }
    }

    fn finish_play(&mut self, id: u64) {
        self.session.handle_played(self.now, id);
    }

    fn wait(&mut self, seconds: u64) {
        self.now += Duration::from_secs(seconds);
        if self.session.poll_timeout().is_some_and(|t| t <= self.now) {
            self.session.handle_timeout(self.now);
        }
    }
}

const GOOD_ID: &str = "745805615";

#[test]
fn the_whole_flow_look_up_hear_the_status_pause_hear_the_receipt() {
    let mut call = Call::start();
    let (greeting, prompts) = call.played();
    assert_eq!(prompts, ["welcome"]);
    call.finish_play(greeting);
    let (ask, prompts) = call.played();
    assert_eq!(prompts, ["enter-confirmation"]);
    call.finish_play(ask);
    call.keys(GOOD_ID);
    call.keys("#");
    assert_eq!(
        call.actions(),
        [Action::Run {
            operation: "lookup".into(),
            args: BTreeMap::from([("id".into(), GOOD_ID.into())]),
        }]
    );
    let at = chrono::DateTime::parse_from_rfc3339("2026-03-21T22:05:00-04:00").unwrap();
    call.session.handle_result(
        call.now,
        "found",
        vec![
            ("state".into(), Value::Text("scheduled".into())),
            ("scheduled_at".into(), Value::Time(at)),
        ],
    );
    let (status, prompts) = call.played();
    assert_eq!(
        prompts,
        [
            "status-scheduled",
            "saturday",
            "march",
            "20",
            "first",
            "at",
            "10",
            "oh",
            "5",
            "pm"
        ]
    );
    call.finish_play(status);
    let (_, prompts) = call.played();
    assert_eq!(prompts, ["main-menu"]);
    call.keys("5");
    assert!(
        matches!(call.actions().as_slice(), [Action::Run { operation, .. }] if operation == "pause")
    );
    call.session.handle_result(
        call.now,
        "success",
        vec![("receipt".into(), Value::Digits("190727".into()))],
    );
    let (confirmed, prompts) = call.played();
    assert_eq!(prompts, ["change-confirmed", "1", "9", "0", "7", "2", "7"]);
    call.finish_play(confirmed);
    let (_, prompts) = call.played();
    assert_eq!(prompts, ["main-menu"], "back to the menu after a change");
    call.keys("*");
    let (bye, prompts) = call.played();
    assert_eq!(prompts, ["goodbye"]);
    call.finish_play(bye);
    assert_eq!(call.actions(), [Action::HangUp]);
    assert!(call.session.is_over());
}

#[test]
fn keys_typed_during_the_greeting_stop_it_and_count_for_the_entry() {
    let mut call = Call::start();
    let (_greeting, _) = call.played();
    // The caller knows the drill: types the ID and # over the greeting.
    call.keys(GOOD_ID);
    call.keys("#");
    let actions = call.actions();
    assert!(
        matches!(actions.as_slice(), [Action::Run { operation, args }] if operation == "lookup" && args["id"] == GOOD_ID),
        "{actions:?}"
    );
}

#[test]
fn a_mistyped_id_is_refused_without_a_lookup_and_three_tries_end_the_call() {
    let mut call = Call::start();
    let (greeting, _) = call.played();
    call.finish_play(greeting);
    for attempt in 1..=3 {
        let (ask, prompts) = call.played();
        assert_eq!(prompts, ["enter-confirmation"], "attempt {attempt}");
        call.finish_play(ask);
        // The last digit is off by one: the check digit fails.
        call.keys("745805616#");
        let (complaint, prompts) = call.played();
        if attempt < 3 {
            assert_eq!(prompts, ["invalid-confirmation"]);
            call.finish_play(complaint);
        } else {
            assert_eq!(prompts, ["goodbye"]);
        }
    }
}

#[test]
fn silence_after_the_prompt_gets_the_no_input_message_then_the_prompt_again() {
    let mut call = Call::at_the_id_prompt();
    call.wait(4);
    assert!(call.actions().is_empty(), "the first-digit timeout is 5 s");
    call.wait(1);
    let (complaint, prompts) = call.played();
    assert_eq!(prompts, ["no-input"]);
    call.finish_play(complaint);
    let (_, prompts) = call.played();
    assert_eq!(prompts, ["enter-confirmation"]);
}

#[test]
fn an_entry_left_short_times_out_as_invalid_and_a_full_one_needs_no_terminator() {
    let mut call = Call::at_the_id_prompt();
    call.keys("7458");
    call.wait(3);
    let (complaint, prompts) = call.played();
    assert_eq!(prompts, ["invalid-confirmation"]);
    call.finish_play(complaint);
    let (ask, _) = call.played();
    call.finish_play(ask);
    call.keys(GOOD_ID);
    assert!(matches!(call.actions().as_slice(), [Action::Run { .. }]));
}

#[test]
fn an_unknown_id_is_said_then_asked_again_and_keys_typed_meanwhile_wait() {
    let mut call = Call::start();
    let (greeting, _) = call.played();
    call.finish_play(greeting);
    call.keys(GOOD_ID);
    call.keys("#");
    call.actions();
    call.session.handle_result(call.now, "not_found", vec![]);
    let (sorry, prompts) = call.played();
    assert_eq!(prompts, ["not-found"]);
    // Not barge-in: keys typed now are kept for the entry that follows.
    call.keys(&GOOD_ID[..5]);
    assert!(call.actions().is_empty());
    call.finish_play(sorry);
    call.keys(&GOOD_ID[5..]);
    let actions = call.actions();
    assert!(
        matches!(actions.as_slice(), [Action::Run { args, .. }] if args["id"] == GOOD_ID),
        "{actions:?}"
    );
}

#[test]
fn a_wrong_menu_key_and_then_silence_use_up_the_tries() {
    let mut call = Call::start();
    let (greeting, _) = call.played();
    call.finish_play(greeting);
    call.keys(GOOD_ID);
    call.keys("#");
    call.actions();
    call.session.handle_result(
        call.now,
        "found",
        vec![("state".into(), Value::Text("paused".into()))],
    );
    let (status, prompts) = call.played();
    assert_eq!(prompts, ["status-paused"]);
    call.finish_play(status);
    let (menu, _) = call.played();
    call.finish_play(menu);
    call.keys("7");
    let (complaint, prompts) = call.played();
    assert_eq!(prompts, ["invalid-choice"]);
    call.finish_play(complaint);
    let (menu, _) = call.played();
    call.finish_play(menu);
    call.wait(5);
    let (_, prompts) = call.played();
    assert_eq!(prompts, ["goodbye"], "two tries, then goodbye");
}

#[test]
fn a_dialplan_that_loops_without_input_is_hung_up_not_spun() {
    let plan = r#"
[entries]
loop = "a"
[nodes.a]
kind = "set"
vars = { x = "1" }
next = "b"
[nodes.b]
kind = "branch"
on = "x"
cases = {}
default = "a"
"#;
    let plan = Arc::new(catalogue_check(plan).unwrap());
    let mut session = Session::start(plan, "loop", BTreeMap::new(), Instant::now()).unwrap();
    assert_eq!(session.poll_action(), Some(Action::HangUp));
}

#[test]
fn every_problem_is_named_with_its_line() {
    let bad = r#"
[entries]
main = "start"
other = "nowhere"

[nodes.start]
kind = "play"
prompts = ["missing-prompt", { say = "date", of = "id" }]
next = "ask"

[nodes.ask]
kind = "collect"
prompts = ["enter"]
into = "id"
max = 4
pattern = "XX[9-1]X"
next = "run"
exhausted = "start"

[nodes.run]
kind = "run"
operation = "pause"
args = { id = "$nobody" }
on = { success = "start", maybe = "start" }

[nodes.orphan]
kind = "hangup"
"#;
    let errors = catalogue_check(bad).unwrap_err();
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let has = |line: usize, words: &str| {
        assert!(
            text.iter()
                .any(|e| e.starts_with(&format!("test.toml:{line}:")) && e.contains(words)),
            "no error at line {line} with `{words}` in {text:#?}"
        )
    };
    has(4, "there is no node `nowhere`");
    has(6, "plays `missing-prompt`, which is not a prompt");
    has(6, "says `id` as a time, but it can hold digits");
    has(11, "the pattern `XX[9-1]X`");
    has(20, "can end `failure`, which `on` does not handle");
    has(20, "`$nobody`, which nothing sets");
    has(20, "never ends `maybe`");
    has(26, "no entry reaches node `orphan`");
}

#[test]
fn syntax_and_type_errors_name_the_line() {
    let errors =
        catalogue_check("[entries]\nmain = \"a\"\n[nodes.a]\nkind = \"plya\"\n").unwrap_err();
    assert_eq!(errors.len(), 1);
    let message = errors[0].to_string();
    assert!(message.starts_with("test.toml:"), "{message}");
    assert!(message.contains("plya"), "{message}");

    let errors = catalogue_check(
        "[entries]\nmain = \"a\"\n[nodes.a]\nkind = \"collect\"\nprompts = []\ninto = \"x\"\nmax = \"four\"\nnext = \"a\"\nexhausted = \"a\"\n",
    )
    .unwrap_err();
    let message = errors[0].to_string();
    assert!(
        message.starts_with("test.toml:3:")
            && message.contains("\"four\", expected usize")
            && message.contains("[nodes.a]"),
        "{message}"
    );
}

#[test]
fn the_pound_after_a_full_entry_does_not_cut_the_next_prompt() {
    // The caller follows "then press the pound key" after 9 digits, which were enough: the #
    // lands on the status prompt, which the media stops at any key. It starts again.
    let mut call = Call::at_the_id_prompt();
    call.keys(GOOD_ID);
    call.actions();
    call.session.handle_result(
        call.now,
        "found",
        vec![("state".into(), Value::Text("paused".into()))],
    );
    let (status, prompts) = call.played();
    assert_eq!(prompts, ["status-paused"]);
    call.keys("#");
    call.finish_play(status);
    let (again, prompts) = call.played();
    assert_ne!(again, status);
    assert_eq!(prompts, ["status-paused"], "heard again, from the start");
    call.finish_play(again);
    let (_, prompts) = call.played();
    assert_eq!(prompts, ["main-menu"], "and the # was no menu choice");
}
