//! The intent classifier on messages it never saw (chatbots/held_out.toml), trained from
//! chatbots/default.toml as callbackd trains it at start-up: the share it gets right, in
//! scope (the right intent) and out of scope (no intent), printed and held to a floor.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chat::bots::Bots;

#[derive(serde::Deserialize)]
struct HeldOut {
    utterances: Vec<Utterance>,
}

#[derive(serde::Deserialize)]
struct Utterance {
    text: String,
    intent: String,
}

#[test]
fn the_intent_classifier_on_held_out_messages() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../chatbots");
    let source = std::fs::read_to_string(dir.join("default.toml")).unwrap();
    let queues = BTreeMap::from([(
        "support".to_owned(),
        vec!["billing".into(), "technical".into(), "sales".into()],
    )]);
    let bots = Bots::load("chatbots/default.toml", &source, &queues).unwrap();
    let held_out: HeldOut =
        toml::from_str(&std::fs::read_to_string(dir.join("held_out.toml")).unwrap()).unwrap();
    // (right, of) in scope and out of scope.
    let (mut in_scope, mut out_of_scope, mut wrong) = ((0, 0), (0, 0), Vec::new());
    for u in &held_out.utterances {
        let got = bots
            .intent(&u.text)
            .map(|(intent, _)| intent)
            .unwrap_or_default();
        let tally = if u.intent.is_empty() {
            &mut out_of_scope
        } else {
            &mut in_scope
        };
        tally.1 += 1;
        if got == u.intent {
            tally.0 += 1;
        } else {
            wrong.push(format!("{:?}: {:?}, not {:?}", u.text, got, u.intent));
        }
    }
    let (right, total) = (in_scope.0 + out_of_scope.0, in_scope.1 + out_of_scope.1);
    let accuracy = f64::from(right) / f64::from(total);
    println!(
        "intent accuracy on {total} held-out messages: {right} right ({:.1} %); in scope {} of {}, out of scope {} of {}\nwrong:\n  {}",
        accuracy * 100.0,
        in_scope.0,
        in_scope.1,
        out_of_scope.0,
        out_of_scope.1,
        wrong.join("\n  ")
    );
    assert!(
        accuracy >= 0.85,
        "accuracy {accuracy:.3}; wrong:\n{}",
        wrong.join("\n")
    );
}
