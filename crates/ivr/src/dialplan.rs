//! The dialplan language: a TOML file of named entry points and named nodes.
//!
//! ```toml
//! [entries]
//! self_service = "greeting"          # entry name = the node a call starts at
//!
//! [nodes.greeting]
//! kind = "play"
//! prompts = ["welcome"]
//! next = "ask_id"
//!
//! [nodes.ask_id]
//! kind = "collect"                   # play_and_get_digits, as FreeSWITCH calls it
//! prompts = ["enter-confirmation"]
//! into = "id"
//! min = 9
//! max = 9
//! terminator = "#"
//! check = "confirmation_id"
//! tries = 3
//! invalid = ["invalid-confirmation"]
//! next = "lookup"
//! exhausted = "goodbye"
//! ```
//!
//! Node kinds: `play`, `collect`, `menu`, `branch`, `run` (an operation of the runtime's
//! catalogue), `set`, `transfer` and `hangup`. What is played is a list of prompt names,
//! `{ say = "digits" | "number" | "time" | "date" | "date_time", of = "VARIABLE" }` and
//! `{ silence = "500ms" }`. Arguments of `run` and values of `set` are text, or `$VARIABLE`.
//!
//! [`Dialplan::load`] checks everything a call could trip over before any call comes: unknown
//! prompts and operations, references to nodes that do not exist, nodes no entry reaches,
//! operation results left unhandled, bad key patterns, and variables that are never set or
//! are said as what they are not. Each problem names the file, the line and the column.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

use crate::pattern::Pattern;

/// A dialplan that passed every check.
#[derive(Debug, Clone)]
pub struct Dialplan {
    /// Where it came from, for messages.
    pub file: String,
    pub entries: BTreeMap<String, Spanned<String>>,
    pub nodes: BTreeMap<String, Spanned<Node>>,
}

/// One problem in a dialplan, where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct DialplanError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    entries: BTreeMap<String, Spanned<String>>,
    nodes: BTreeMap<String, Spanned<Node>>,
}

/// A node of a dialplan.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Node {
    /// Plays, then goes on.
    Play {
        prompts: Vec<Sound>,
        /// Whether a key stops it (the key is kept for what comes next).
        #[serde(default = "yes")]
        barge_in: bool,
        next: String,
    },
    /// Plays a prompt and gathers keys into a variable.
    Collect(Collect),
    /// Plays a prompt and takes one key, each key leading to its node.
    Menu(Menu),
    /// Goes on by the value of a variable.
    Branch {
        on: String,
        cases: BTreeMap<String, String>,
        default: String,
    },
    /// Runs an operation of the runtime (look up a callback, modify it, ...) and goes on by
    /// its result.
    Run {
        operation: String,
        #[serde(default)]
        args: BTreeMap<String, String>,
        on: BTreeMap<String, String>,
    },
    /// Sets variables.
    Set {
        vars: BTreeMap<String, String>,
        next: String,
    },
    /// Hands the call to a queue to hold for an agent; with `offer`, a caller pressing 1
    /// while holding leaves the queue and goes on at that node (to book a callback instead).
    Transfer {
        queue: String,
        #[serde(default)]
        offer: Option<String>,
    },
    /// Plays, then hangs up.
    Hangup {
        #[serde(default)]
        prompts: Vec<Sound>,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Collect {
    pub prompts: Vec<Sound>,
    /// The variable the keys go in.
    pub into: String,
    #[serde(default = "one")]
    pub min: usize,
    pub max: usize,
    /// A key that ends the entry early (`#`); not kept.
    #[serde(default)]
    pub terminator: Option<char>,
    /// How long to wait for the first key once the prompt is over.
    #[serde(default = "five_seconds", deserialize_with = "duration")]
    pub first_digit_timeout: Duration,
    /// How long to wait for each further key; past it, what was typed is taken if it is enough.
    #[serde(default = "three_seconds", deserialize_with = "duration")]
    pub inter_digit_timeout: Duration,
    /// How many times the caller may try.
    #[serde(default = "three")]
    pub tries: u32,
    /// Played after an entry that does not fit (then the prompt again).
    #[serde(default)]
    pub invalid: Vec<Sound>,
    /// Played when nothing was typed (then the prompt again).
    #[serde(default)]
    pub no_input: Vec<Sound>,
    /// The keys must match this pattern (see [`crate::pattern`]).
    #[serde(default)]
    pub pattern: Option<String>,
    /// A check the keys must pass.
    #[serde(default)]
    pub check: Option<Check>,
    pub next: String,
    /// Where to go when the tries run out.
    pub exhausted: String,
    #[serde(skip)]
    pub compiled: Option<Pattern>,
}

/// Checks an entry must pass beyond its pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// A confirmation ID with a good check digit: a mistyped ID is refused before any lookup.
    ConfirmationId,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Menu {
    pub prompts: Vec<Sound>,
    /// Key → node.
    pub options: BTreeMap<String, String>,
    /// How long to wait for a key once the prompt is over.
    #[serde(default = "five_seconds", deserialize_with = "duration")]
    pub timeout: Duration,
    #[serde(default = "three")]
    pub tries: u32,
    #[serde(default)]
    pub invalid: Vec<Sound>,
    #[serde(default)]
    pub no_input: Vec<Sound>,
    pub exhausted: String,
}

/// Something to play.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(
    untagged,
    expecting = "a prompt name, { say = \"digits\", of = \"VARIABLE\" } or { silence = \"500ms\" }"
)]
pub enum Sound {
    Prompt(String),
    Say {
        say: Say,
        of: String,
    },
    Silence {
        #[serde(deserialize_with = "duration")]
        silence: Duration,
    },
}

/// How to say a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Say {
    Digits,
    Number,
    Time,
    Date,
    DateTime,
}

/// What a variable holds, for checking what is said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Any text (a caller ID, a state).
    Text,
    /// Keys or a number written in digits (an ID, a receipt code, a position).
    Digits,
    /// A moment (a scheduled time), in the customer's time zone.
    Time,
}

/// What the runtime offers a dialplan: its prompts, its operations, and the variables every
/// call starts with.
pub struct Catalogue<'a> {
    pub has_prompt: &'a dyn Fn(&str) -> bool,
    pub operations: &'a [Operation],
    pub initial: &'a [(&'a str, Kind)],
}

/// An operation a `run` node may name.
#[derive(Debug, Clone)]
pub struct Operation {
    pub name: &'static str,
    /// The arguments it takes.
    pub args: &'static [&'static str],
    /// Every result it can end with; a `run` node must handle each.
    pub results: &'static [&'static str],
    /// The variables it sets.
    pub sets: &'static [(&'static str, Kind)],
}

fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}
fn three() -> u32 {
    3
}
fn three_seconds() -> Duration {
    Duration::from_secs(3)
}
fn five_seconds() -> Duration {
    Duration::from_secs(5)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    callbacks::parse_duration(&text)
        .and_then(|d| d.to_std().map_err(|_| format!("`{text}` is negative")))
        .map_err(serde::de::Error::custom)
}

const KEYS: &str = "0123456789*#ABCD";

impl Dialplan {
    /// Parses and checks a dialplan; `file` names it in messages.
    pub fn load(
        file: &str,
        source: &str,
        catalogue: &Catalogue<'_>,
    ) -> Result<Dialplan, Vec<DialplanError>> {
        let at = |offset: usize, message: String| {
            let before = &source[..offset.min(source.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            DialplanError {
                file: file.to_owned(),
                line,
                column,
                message,
            }
        };
        let parsed: File = toml::from_str(source).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start).min(source.len());
            // Inside a node the parser knows only the node: name the line it points at.
            let line = source[offset..].lines().next().unwrap_or_default().trim();
            vec![at(offset, format!("{} (at `{line}`)", e.message().trim()))]
        })?;
        let mut plan = Dialplan {
            file: file.to_owned(),
            entries: parsed.entries,
            nodes: parsed.nodes,
        };
        let problems: Vec<DialplanError> = plan
            .check(catalogue)
            .into_iter()
            .map(|(offset, message)| at(offset, message))
            .collect();
        if problems.is_empty() {
            Ok(plan)
        } else {
            Err(problems)
        }
    }

    /// Every problem, as (byte offset, message); compiles patterns on the way.
    fn check(&mut self, catalogue: &Catalogue<'_>) -> Vec<(usize, String)> {
        let mut problems = Vec::new();
        if self.entries.is_empty() {
            problems.push((0, "the dialplan has no [entries]".to_owned()));
        }
        // Variables and their kinds, wherever set.
        let mut kinds: BTreeMap<String, BTreeSet<Kind>> = BTreeMap::new();
        let mut define = |name: &str, kind: Kind| {
            kinds.entry(name.to_owned()).or_default().insert(kind);
        };
        for (name, kind) in catalogue.initial {
            define(name, *kind);
        }
        for node in self.nodes.values() {
            match node.get_ref() {
                Node::Collect(c) => define(&c.into, Kind::Digits),
                Node::Set { vars, .. } => vars.keys().for_each(|v| define(v, Kind::Text)),
                Node::Run { operation, .. } => {
                    if let Some(op) = catalogue.operations.iter().find(|o| o.name == operation) {
                        op.sets.iter().for_each(|(v, k)| define(v, *k));
                    }
                }
                _ => {}
            }
        }
        let exists = |problems: &mut Vec<(usize, String)>, offset: usize, t: &str| {
            if !self.nodes.contains_key(t) {
                problems.push((offset, format!("there is no node `{t}`")));
            }
        };
        for t in self.entries.values() {
            exists(&mut problems, t.span().start, t.get_ref());
        }
        let mut says_anything = false;
        for (name, node) in &self.nodes {
            let offset = node.span().start;
            for t in node.get_ref().targets() {
                exists(&mut problems, offset, t);
            }
            let mut sounds = |problems: &mut Vec<(usize, String)>, list: &[Sound]| {
                for sound in list {
                    match sound {
                        Sound::Prompt(p) if !(catalogue.has_prompt)(p) => problems.push((
                            offset,
                            format!("node `{name}` plays `{p}`, which is not a prompt"),
                        )),
                        Sound::Say { say, of } => {
                            says_anything = true;
                            check_say(problems, offset, name, *say, of, &kinds);
                        }
                        _ => {}
                    }
                }
            };
            match node.get_ref() {
                Node::Play { prompts, .. } => {
                    sounds(&mut problems, prompts);
                }
                Node::Collect(c) => {
                    for list in [&c.prompts, &c.invalid, &c.no_input] {
                        sounds(&mut problems, list);
                    }
                    if c.min == 0 || c.max < c.min || c.max > 64 {
                        problems.push((
                            offset,
                            format!(
                                "node `{name}`: min {} and max {} must satisfy 1 ≤ min ≤ max ≤ 64",
                                c.min, c.max
                            ),
                        ));
                    }
                    if c.tries == 0 {
                        problems.push((offset, format!("node `{name}`: tries must be at least 1")));
                    }
                    if let Some(t) = c.terminator.filter(|t| !KEYS.contains(*t)) {
                        problems.push((
                            offset,
                            format!("node `{name}`: the terminator `{t}` is not a key"),
                        ));
                    }
                }
                Node::Menu(m) => {
                    for list in [&m.prompts, &m.invalid, &m.no_input] {
                        sounds(&mut problems, list);
                    }
                    for key in m.options.keys() {
                        if key.chars().count() != 1 || !KEYS.contains(key.as_str()) {
                            problems.push((
                                offset,
                                format!("node `{name}`: option `{key}` is not a single key"),
                            ));
                        }
                    }
                    if m.tries == 0 {
                        problems.push((offset, format!("node `{name}`: tries must be at least 1")));
                    }
                }
                Node::Branch { on, .. } => {
                    if !kinds.contains_key(on) {
                        problems.push((
                            offset,
                            format!("node `{name}` branches on `{on}`, which nothing sets"),
                        ));
                    }
                }
                Node::Run {
                    operation,
                    args,
                    on,
                } => {
                    match catalogue.operations.iter().find(|o| o.name == operation) {
                        None => problems.push((
                            offset,
                            format!(
                                "there is no operation `{operation}` (there are: {})",
                                catalogue
                                    .operations
                                    .iter()
                                    .map(|o| o.name)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        )),
                        Some(op) => {
                            for arg in args.keys().filter(|a| !op.args.contains(&a.as_str())) {
                                problems.push((
                                    offset,
                                    format!(
                                        "node `{name}`: `{}` takes no argument `{arg}`",
                                        op.name
                                    ),
                                ));
                            }
                            for missing in op.args.iter().filter(|a| !args.contains_key(**a)) {
                                problems.push((
                                    offset,
                                    format!(
                                        "node `{name}`: `{}` needs the argument `{missing}`",
                                        op.name
                                    ),
                                ));
                            }
                            for result in op.results.iter().filter(|r| !on.contains_key(**r)) {
                                problems.push((
                                    offset,
                                    format!(
                                        "node `{name}`: `{}` can end `{result}`, which `on` does not handle",
                                        op.name
                                    ),
                                ));
                            }
                            for result in on.keys() {
                                if !op.results.contains(&result.as_str()) {
                                    problems.push((
                                        offset,
                                        format!(
                                            "node `{name}`: `{}` never ends `{result}`",
                                            op.name
                                        ),
                                    ));
                                }
                            }
                        }
                    }
                    for value in args.values() {
                        check_value(&mut problems, offset, name, value, &kinds);
                    }
                }
                Node::Set { vars, .. } => {
                    for value in vars.values() {
                        check_value(&mut problems, offset, name, value, &kinds);
                    }
                }
                Node::Transfer { .. } => {}
                Node::Hangup { prompts } => sounds(&mut problems, prompts),
            }
        }
        if says_anything {
            for word in media::say::words().filter(|w| !(catalogue.has_prompt)(w)) {
                problems.push((
                    0,
                    format!("saying numbers and times needs the prompt `{word}`, which is missing"),
                ));
            }
        }
        // Patterns, compiled once here.
        for (name, node) in self.nodes.iter_mut() {
            let offset = node.span().start;
            if let Node::Collect(c) = node.get_mut() {
                if let Some(text) = &c.pattern {
                    match Pattern::parse(text) {
                        Ok(p) => c.compiled = Some(p),
                        Err(e) => problems
                            .push((offset, format!("node `{name}`: the pattern `{text}`: {e}"))),
                    }
                }
            }
        }
        // Every node some entry reaches.
        let mut reached: BTreeSet<&str> = BTreeSet::new();
        let mut queue: VecDeque<&str> = self
            .entries
            .values()
            .map(|t| t.get_ref().as_str())
            .collect();
        while let Some(name) = queue.pop_front() {
            if !reached.insert(name) {
                continue;
            }
            if let Some(node) = self.nodes.get(name) {
                queue.extend(node.get_ref().targets());
            }
        }
        for (name, node) in &self.nodes {
            if !reached.contains(name.as_str()) {
                problems.push((node.span().start, format!("no entry reaches node `{name}`")));
            }
        }
        problems.sort();
        problems
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.get(name).map(Spanned::get_ref)
    }
}

impl Node {
    /// The nodes this one may go on to.
    fn targets(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        match self {
            Node::Play { next, .. } | Node::Set { next, .. } => {
                Box::new(std::iter::once(next.as_str()))
            }
            Node::Collect(c) => Box::new([c.next.as_str(), c.exhausted.as_str()].into_iter()),
            Node::Menu(m) => Box::new(
                m.options
                    .values()
                    .chain(std::iter::once(&m.exhausted))
                    .map(String::as_str),
            ),
            Node::Branch { cases, default, .. } => Box::new(
                cases
                    .values()
                    .chain(std::iter::once(default))
                    .map(String::as_str),
            ),
            Node::Run { on, .. } => Box::new(on.values().map(String::as_str)),
            Node::Transfer { offer, .. } => Box::new(offer.iter().map(String::as_str)),
            Node::Hangup { .. } => Box::new(std::iter::empty()),
        }
    }
}

fn check_say(
    problems: &mut Vec<(usize, String)>,
    offset: usize,
    node: &str,
    say: Say,
    of: &str,
    kinds: &BTreeMap<String, BTreeSet<Kind>>,
) {
    let Some(set) = kinds.get(of) else {
        problems.push((
            offset,
            format!("node `{node}` says `{of}`, which nothing sets"),
        ));
        return;
    };
    let wanted = match say {
        Say::Digits | Say::Number => Kind::Digits,
        Say::Time | Say::Date | Say::DateTime => Kind::Time,
    };
    if let Some(other) = set.iter().find(|k| **k != wanted) {
        problems.push((
            offset,
            format!(
                "node `{node}` says `{of}` as {}, but it can hold {}",
                describe(wanted),
                describe(*other)
            ),
        ));
    }
}

fn check_value(
    problems: &mut Vec<(usize, String)>,
    offset: usize,
    node: &str,
    value: &str,
    kinds: &BTreeMap<String, BTreeSet<Kind>>,
) {
    if let Some(var) = value.strip_prefix('$') {
        if !kinds.contains_key(var) {
            problems.push((
                offset,
                format!("node `{node}` uses `${var}`, which nothing sets"),
            ));
        }
    }
}

fn describe(kind: Kind) -> &'static str {
    match kind {
        Kind::Text => "text",
        Kind::Digits => "digits",
        Kind::Time => "a time",
    }
}
