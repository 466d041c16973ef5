//! Intents and bots, as written in `chatbots/*.toml` and checked when loaded.
//!
//! ```toml
//! threshold = 0.3                      # below this similarity a message is out of scope
//! answer_threshold = 0.5               # and below this one, beyond the bot's capabilities
//! fallback = { queue = "support", skill = "billing" }   # callbacks for out-of-scope messages
//!
//! [intents.billing]                    # what a message is about, learnt from its examples
//! bot = "billing"
//! queue = "support"                    # where its callbacks go
//! skill = "billing"
//! examples = ["I was charged twice", "my invoice is wrong"]
//!
//! [bots.billing]
//! name = "the billing assistant"
//! [[bots.billing.can]]                 # what the bot can do, learnt from its examples
//! examples = ["when is my bill due"]
//! answer = "Bills are due on the first of each month."
//! [[bots.billing.can]]
//! examples = ["I want a refund"]
//! person = true                        # the bot's own rule: this needs an agent
//! ```
//!
//! A capability does one thing: `answer` with a text, `person = true` (offer a callback), or
//! an `operation` on the caller's callback (`status`, `pause`, `resume`, `cancel`,
//! `reschedule`, `change_number`, `change_media`, `change_skill`), a small scripted dialogue. Each problem names the file, line and column.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::classifier::Classifier;

/// Where a callback goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub queue: String,
    pub skill: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Intent {
    pub bot: String,
    pub queue: String,
    pub skill: String,
    pub examples: Vec<String>,
}

impl Intent {
    /// Where its callbacks go.
    pub fn route(&self) -> Route {
        Route {
            queue: self.queue.clone(),
            skill: self.skill.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bot {
    /// How the bot names itself ("the billing assistant").
    pub name: String,
    #[serde(default)]
    pub can: Vec<Capability>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capability {
    pub examples: Vec<String>,
    pub answer: Option<String>,
    #[serde(default)]
    pub person: bool,
    pub operation: Option<Operation>,
}

/// A question about the customer's callback, or a change to it, as the IVR offers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Status,
    Pause,
    Resume,
    Cancel,
    Reschedule,
    ChangeNumber,
    ChangeMedia,
    ChangeSkill,
}

/// What a bot does with a message it can handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Does<'a> {
    Answer(&'a str),
    Person,
    Operation(Operation),
}

impl Capability {
    fn does(&self) -> Option<Does<'_>> {
        match (&self.answer, self.person, self.operation) {
            (Some(text), false, None) => Some(Does::Answer(text)),
            (None, true, None) => Some(Does::Person),
            (None, false, Some(op)) => Some(Does::Operation(op)),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    threshold: Spanned<f32>,
    answer_threshold: Spanned<f32>,
    fallback: Spanned<Route>,
    intents: BTreeMap<String, Spanned<Intent>>,
    bots: BTreeMap<String, Spanned<Bot>>,
}

/// One problem in a bots file, where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct BotsError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Checked intents and bots, with their classifiers trained.
#[derive(Debug, Clone)]
pub struct Bots {
    /// Similarity below which a message is out of scope (matches no intent).
    pub threshold: f32,
    /// Similarity below which a message is beyond its bot (matches none of its capabilities):
    /// higher, since a bot should answer only what it is sure it was asked.
    pub answer_threshold: f32,
    /// Where callbacks go when no intent is clear.
    pub fallback: Route,
    pub intents: BTreeMap<String, Intent>,
    pub bots: BTreeMap<String, Bot>,
    intent_classifier: Classifier,
    /// Each bot's capabilities, labelled by their index.
    capability_classifiers: BTreeMap<String, Classifier>,
}

impl Bots {
    /// Parses and checks a bots file; `file` names it in messages, and `queues` (each queue
    /// with its skills) is what routes may name.
    pub fn load(
        file: &str,
        source: &str,
        queues: &BTreeMap<String, Vec<String>>,
    ) -> Result<Bots, Vec<BotsError>> {
        let at = |offset: usize, message: String| {
            let before = &source[..offset.min(source.len())];
            BotsError {
                file: file.to_owned(),
                line: before.matches('\n').count() + 1,
                column: before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1,
                message,
            }
        };
        let parsed: File = toml::from_str(source).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start).min(source.len());
            let line = source[offset..].lines().next().unwrap_or_default().trim();
            vec![at(offset, format!("{} (at `{line}`)", e.message().trim()))]
        })?;
        let problems: Vec<BotsError> = check(&parsed, queues)
            .into_iter()
            .map(|(offset, message)| at(offset, message))
            .collect();
        if !problems.is_empty() {
            return Err(problems);
        }
        let intents: BTreeMap<String, Intent> = parsed
            .intents
            .into_iter()
            .map(|(name, i)| (name, i.into_inner()))
            .collect();
        let bots: BTreeMap<String, Bot> = parsed
            .bots
            .into_iter()
            .map(|(name, b)| (name, b.into_inner()))
            .collect();
        let intent_classifier = Classifier::train(intents.iter().flat_map(|(name, intent)| {
            intent
                .examples
                .iter()
                .map(move |e| (name.as_str(), e.as_str()))
        }));
        let labels: Vec<String> = (0..bots.values().map(|b| b.can.len()).max().unwrap_or(0))
            .map(|i| i.to_string())
            .collect();
        let capability_classifiers = bots
            .iter()
            .map(|(name, bot)| {
                let examples = bot.can.iter().zip(&labels).flat_map(|(can, label)| {
                    can.examples
                        .iter()
                        .map(move |e| (label.as_str(), e.as_str()))
                });
                (name.clone(), Classifier::train(examples))
            })
            .collect();
        Ok(Bots {
            threshold: *parsed.threshold.get_ref(),
            answer_threshold: *parsed.answer_threshold.get_ref(),
            fallback: parsed.fallback.into_inner(),
            intents,
            bots,
            intent_classifier,
            capability_classifiers,
        })
    }

    /// The intent of `text` and the similarity, when it reaches the threshold.
    pub fn intent(&self, text: &str) -> Option<(&str, f32)> {
        self.intent_classifier
            .classify(text)
            .filter(|v| v.score >= self.threshold)
            .map(|v| (v.label, v.score))
    }

    /// What `bot` does with `text`, when it can: its closest capability reaching the
    /// threshold.
    pub fn capability(&self, bot: &str, text: &str) -> Option<Does<'_>> {
        let verdict = self
            .capability_classifiers
            .get(bot)?
            .classify(text)
            .filter(|v| v.score >= self.answer_threshold)?;
        let index: usize = verdict.label.parse().ok()?;
        self.bots.get(bot)?.can.get(index)?.does()
    }
}

/// Every problem, as (byte offset, message).
fn check(file: &File, queues: &BTreeMap<String, Vec<String>>) -> Vec<(usize, String)> {
    let mut problems = Vec::new();
    for (name, threshold) in [
        ("threshold", &file.threshold),
        ("answer_threshold", &file.answer_threshold),
    ] {
        let value = *threshold.get_ref();
        if !(value > 0.0 && value < 1.0) {
            problems.push((
                threshold.span().start,
                format!("{name} is a similarity between 0 and 1, not {value}"),
            ));
        }
    }
    let route = |route: &Route| match queues.get(&route.queue) {
        None => Some(format!("there is no queue `{}`", route.queue)),
        Some(skills) if !skills.contains(&route.skill) => Some(format!(
            "queue `{}` has no skill `{}` (it has {})",
            route.queue,
            route.skill,
            skills.join(", ")
        )),
        Some(_) => None,
    };
    problems.extend(route(file.fallback.get_ref()).map(|p| (file.fallback.span().start, p)));
    if file.intents.is_empty() {
        problems.push((0, "there are no [intents]".to_owned()));
    }
    for (name, intent) in &file.intents {
        let offset = intent.span().start;
        let intent = intent.get_ref();
        problems.extend(route(&intent.route()).map(|p| (offset, p)));
        if !file.bots.contains_key(&intent.bot) {
            problems.push((
                offset,
                format!(
                    "intent `{name}` goes to bot `{}`, which is not in [bots]",
                    intent.bot
                ),
            ));
        }
        if intent.examples.iter().all(|e| e.trim().is_empty()) {
            problems.push((
                offset,
                format!("intent `{name}` has no examples to learn from"),
            ));
        }
    }
    for (name, bot) in &file.bots {
        let offset = bot.span().start;
        if !file.intents.values().any(|i| &i.get_ref().bot == name) {
            problems.push((offset, format!("no intent goes to bot `{name}`")));
        }
        for (index, can) in bot.get_ref().can.iter().enumerate() {
            let which = format!("bot `{name}`, capability {}", index + 1);
            if can.does().is_none() {
                problems.push((
                    offset,
                    format!("{which} must do one thing: `answer`, `person = true` or `operation`"),
                ));
            }
            if can.examples.iter().all(|e| e.trim().is_empty()) {
                problems.push((offset, format!("{which} has no examples to learn from")));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queues() -> BTreeMap<String, Vec<String>> {
        BTreeMap::from([(
            "support".to_owned(),
            vec!["billing".to_owned(), "tech".to_owned()],
        )])
    }

    const GOOD: &str = r#"
threshold = 0.3
answer_threshold = 0.5
fallback = { queue = "support", skill = "billing" }

[intents.billing]
bot = "billing"
queue = "support"
skill = "billing"
examples = ["I was charged twice", "my invoice is wrong", "question about my bill"]

[bots.billing]
name = "the billing assistant"
[[bots.billing.can]]
examples = ["when is my bill due", "due date of the invoice"]
answer = "Bills are due on the first of each month."
[[bots.billing.can]]
examples = ["I want a refund", "give me my money back"]
person = true
"#;

    #[test]
    fn a_good_file_loads_and_classifies() {
        let bots = Bots::load("good.toml", GOOD, &queues()).unwrap();
        assert_eq!(
            bots.intent("I think my invoice is wrong").unwrap().0,
            "billing"
        );
        assert_eq!(
            bots.capability("billing", "when is the bill due?"),
            Some(Does::Answer("Bills are due on the first of each month."))
        );
        assert_eq!(
            bots.capability("billing", "refund please"),
            Some(Does::Person)
        );
        assert_eq!(bots.capability("billing", "my router is broken"), None);
    }

    #[test]
    fn every_problem_is_named_with_its_line() {
        let bad = GOOD
            .replace("threshold = 0.3", "threshold = 3")
            .replace("bot = \"billing\"", "bot = \"bill\"")
            .replace(
                "skill = \"billing\"\nexamples",
                "skill = \"sales\"\nexamples",
            )
            .replace("person = true", "person = true\nanswer = \"no\"");
        let problems: Vec<String> = Bots::load("bad.toml", &bad, &queues())
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        let all = problems.join("\n");
        for expected in [
            "bad.toml:2:13: threshold is a similarity between 0 and 1, not 3",
            "bad.toml:6:1: queue `support` has no skill `sales` (it has billing, tech)",
            "bad.toml:6:1: intent `billing` goes to bot `bill`, which is not in [bots]",
            "bad.toml:12:1: no intent goes to bot `billing`",
            "bad.toml:12:1: bot `billing`, capability 2 must do one thing",
        ] {
            assert!(all.contains(expected), "missing `{expected}` in:\n{all}");
        }
    }

    #[test]
    fn a_syntax_error_names_its_line() {
        let problems = Bots::load("x.toml", "threshold = \n", &queues()).unwrap_err();
        assert_eq!(problems[0].line, 1, "{problems:?}");
    }
}
