//! Any text as a dialplan: loaded and checked, and when it passes, run from every entry with
//! keys, prompt ends, timeouts and operation results taken from the same bytes; nothing may
//! panic and no session may spin.
#![no_main]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ivr::dialplan::{Catalogue, Dialplan, Kind, Operation};
use ivr::session::{Action, Session, Value};
use libfuzzer_sys::fuzz_target;

const OPERATIONS: &[Operation] = &[Operation {
    name: "lookup",
    args: &["id"],
    results: &["found", "verify"],
    sets: &[("state", Kind::Text), ("when", Kind::Time), ("code", Kind::Digits)],
}];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let has_prompt = |_: &str| true;
    let catalogue = Catalogue {
        has_prompt: &has_prompt,
        operations: OPERATIONS,
        initial: &[("caller_id", Kind::Text)],
    };
    let Ok(plan) = Dialplan::load("fuzz.toml", text, &catalogue) else { return };
    let plan = Arc::new(plan);
    for entry in plan.entries.keys() {
        let mut now = Instant::now();
        let vars = BTreeMap::from([("caller_id".to_owned(), Value::Text("+12125550100".into()))]);
        let Some(mut session) = Session::start(plan.clone(), entry, vars, now) else { continue };
        for &byte in data.iter().take(256) {
            while let Some(action) = session.poll_action() {
                match action {
                    Action::Play { id, .. } => session.handle_played(now, id),
                    Action::Run { .. } => {
                        let result = if byte % 2 == 0 { "found" } else { "verify" };
                        session.handle_result(now, result, vec![]);
                    }
                    Action::Transfer { .. } | Action::HangUp => {}
                }
            }
            if session.is_over() {
                break;
            }
            match byte % 4 {
                0 => {
                    now += Duration::from_secs(10);
                    session.handle_timeout(now);
                }
                _ => session.handle_key(now, "0123456789*#ABCD".as_bytes()[usize::from(byte % 16)] as char),
            }
        }
    }
});
