//! One call running through a dialplan, sans-IO: keys, prompt ends, timeouts and operation
//! results go in (each with the current time), actions come out of [`Session::poll_action`],
//! and [`Session::poll_timeout`] says when to call [`Session::handle_timeout`].
//!
//! Keys typed while a prompt plays stop it when the prompt allows barge-in, and keys typed
//! ahead (during a prompt, while an operation runs) are kept for the next entry, as callers
//! who know the menu expect.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset, Timelike};

use crate::dialplan::{Check, Collect, Dialplan, Menu, Node, Say, Sound};

/// A variable's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Text(String),
    /// Keys, or a number in digits.
    Digits(String),
    /// A moment in the customer's time zone.
    Time(DateTime<FixedOffset>),
}

impl Value {
    /// The value as text, for branching and for operation arguments.
    pub fn text(&self) -> String {
        match self {
            Value::Text(t) | Value::Digits(t) => t.clone(),
            Value::Time(t) => t.to_rfc3339(),
        }
    }
}

/// Something to play, with every `say` turned into the prompts that say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Clip {
    Prompt(String),
    Silence(Duration),
}

/// What the runtime is to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Play `clips`, replacing what plays; report its end with [`Session::handle_played`].
    Play {
        id: u64,
        clips: Vec<Clip>,
        barge_in: bool,
    },
    /// Run the operation and report with [`Session::handle_result`].
    Run {
        operation: String,
        args: BTreeMap<String, String>,
    },
    /// Hand the call to a queue; the session waits there until [`Session::take_offer`] (the
    /// caller pressed 1, with `offer` set) or the call ends.
    Transfer { queue: String, offer: bool },
    /// Hang up; the session is over.
    HangUp,
}

/// Keys kept for the next entry, at most.
const TYPED_AHEAD: usize = 64;
/// Steps a session may take without input (set, branch): past it the dialplan loops, and the
/// call is hung up rather than spun for ever.
const MAX_STEPS: u32 = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// A `play` node's prompts.
    Playing {
        id: u64,
        barge_in: bool,
    },
    /// A collect or menu prompt; keys are taken as they come.
    Prompting {
        id: u64,
    },
    /// The prompt is over: waiting for keys until the deadline.
    Waiting {
        deadline: Instant,
    },
    /// An invalid or no-input message, after which the prompt comes again.
    Complaining {
        id: u64,
    },
    /// An operation is running.
    Running,
    /// A `hangup` node's prompts, then the end.
    Ending {
        id: u64,
    },
    /// Handed to a queue; with the node to go on at if the caller takes the offer.
    Holding {
        offer: Option<String>,
    },
    Done,
}

#[derive(Debug)]
pub struct Session {
    plan: Arc<Dialplan>,
    node: String,
    vars: BTreeMap<String, Value>,
    state: State,
    /// Keys typed and not yet taken.
    typed: VecDeque<char>,
    /// The keys of the entry in progress, and the tries used at this node.
    entered: String,
    tries: u32,
    /// An entry just filled up: the terminator, if typed next out of habit, belongs to it.
    spent_terminator: Option<char>,
    /// The clips of the play in progress, and the play a swallowed key cut short (the media
    /// stops a barge-in play at any key): that one starts again rather than counting as heard.
    clips: Vec<Clip>,
    cut: Option<u64>,
    next_play: u64,
    out: VecDeque<Action>,
}

impl Session {
    /// A call starting at `entry` with the variables every call has (caller ID, ...).
    /// `None` when the dialplan has no such entry.
    pub fn start(
        plan: Arc<Dialplan>,
        entry: &str,
        vars: BTreeMap<String, Value>,
        now: Instant,
    ) -> Option<Session> {
        let first = plan.entries.get(entry)?.get_ref().clone();
        let mut session = Session {
            plan,
            node: String::new(),
            vars,
            state: State::Done,
            typed: VecDeque::new(),
            entered: String::new(),
            tries: 0,
            spent_terminator: None,
            clips: Vec::new(),
            cut: None,
            next_play: 1,
            out: VecDeque::new(),
        };
        session.go(now, first);
        Some(session)
    }

    /// A caller holding in a queue took its offer: the dialplan goes on at the transfer's
    /// `offer` node. `false` (and nothing happens) when there is no offer to take.
    pub fn take_offer(&mut self, now: Instant) -> bool {
        let State::Holding { offer: Some(node) } = &self.state else {
            return false;
        };
        let node = node.clone();
        self.go(now, node);
        true
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Waiting { deadline } => Some(deadline),
            _ => None,
        }
    }

    /// The node the call is at, for logs.
    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn vars(&self) -> &BTreeMap<String, Value> {
        &self.vars
    }

    /// Whether a key now goes into an entry or a menu choice (rather than being kept for later
    /// or stopping a prompt).
    pub fn wants_keys(&self) -> bool {
        matches!(self.state, State::Prompting { .. } | State::Waiting { .. })
    }

    pub fn is_over(&self) -> bool {
        self.state == State::Done
    }

    /// A key the caller pressed.
    pub fn handle_key(&mut self, now: Instant, key: char) {
        if self.spent_terminator.take() == Some(key) {
            self.cut = match self.state {
                State::Playing {
                    id, barge_in: true, ..
                }
                | State::Prompting { id } => Some(id),
                _ => None,
            };
            return;
        }
        match self.state.clone() {
            State::Playing { barge_in: true, .. } => {
                self.type_ahead(key);
                self.go_next(now);
            }
            State::Prompting { .. } | State::Waiting { .. } => self.take_key(now, key),
            State::Playing { .. } | State::Running => self.type_ahead(key),
            // A new try starts after the complaint: what is typed over it is not kept.
            // Holding in a queue, keys are the runtime's (a 1 takes the offer).
            State::Complaining { .. }
            | State::Ending { .. }
            | State::Holding { .. }
            | State::Done => {}
        }
    }

    /// Play `id` ended (played out, or stopped by a key).
    pub fn handle_played(&mut self, now: Instant, id: u64) {
        if self.cut.take() == Some(id) && self.restart(id) {
            return;
        }
        match self.state {
            State::Playing { id: playing, .. } if playing == id => self.go_next(now),
            State::Prompting { id: playing } if playing == id => self.wait(now),
            State::Complaining { id: playing } if playing == id => self.prompt(now),
            State::Ending { id: playing } if playing == id => self.finish(Action::HangUp),
            _ => {}
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let State::Waiting { deadline } = self.state else {
            return;
        };
        if now < deadline {
            return;
        }
        match self.current() {
            Some(Node::Collect(c)) if !self.entered.is_empty() => {
                if self.entered.len() >= c.min {
                    self.complete(now);
                } else {
                    self.retry(now, false);
                }
            }
            _ => self.retry(now, true),
        }
    }

    /// The running operation ended with `result`, setting `vars`.
    pub fn handle_result(&mut self, now: Instant, result: &str, vars: Vec<(String, Value)>) {
        if self.state != State::Running {
            return;
        }
        self.vars.extend(vars);
        let target = match self.current() {
            Some(Node::Run { on, .. }) => on.get(result).cloned(),
            _ => None,
        };
        match target {
            Some(t) => self.go(now, t),
            // The catalogue promised otherwise; end the call rather than strand it.
            None => self.finish(Action::HangUp),
        }
    }

    fn current(&self) -> Option<&Node> {
        self.plan.node(&self.node)
    }

    fn type_ahead(&mut self, key: char) {
        if self.typed.len() < TYPED_AHEAD {
            self.typed.push_back(key);
        }
    }

    fn finish(&mut self, action: Action) {
        self.out.push_back(action);
        self.state = State::Done;
    }

    fn play(&mut self, sounds: &[Sound], barge_in: bool) -> u64 {
        let clips = sounds.iter().flat_map(|s| self.clips(s)).collect();
        self.play_clips(clips, barge_in)
    }

    fn play_clips(&mut self, clips: Vec<Clip>, barge_in: bool) -> u64 {
        let id = self.next_play;
        self.next_play += 1;
        self.clips.clone_from(&clips);
        self.out.push_back(Action::Play {
            id,
            clips,
            barge_in,
        });
        id
    }

    /// Starts the play `id` over, when it is the one in progress.
    fn restart(&mut self, id: u64) -> bool {
        let clips = self.clips.clone();
        match self.state {
            State::Playing {
                id: playing,
                barge_in,
            } if playing == id => {
                let id = self.play_clips(clips, barge_in);
                self.state = State::Playing { id, barge_in };
                true
            }
            State::Prompting { id: playing } if playing == id => {
                let id = self.play_clips(clips, true);
                self.state = State::Prompting { id };
                true
            }
            _ => false,
        }
    }

    fn clips(&self, sound: &Sound) -> Vec<Clip> {
        let words = |w: Vec<&'static str>| w.into_iter().map(|w| Clip::Prompt(w.into())).collect();
        match sound {
            Sound::Prompt(name) => vec![Clip::Prompt(name.clone())],
            Sound::Silence { silence } => vec![Clip::Silence(*silence)],
            Sound::Say { say, of } => match (say, self.vars.get(of)) {
                (Say::Digits, Some(Value::Digits(d) | Value::Text(d))) => {
                    words(media::say::digits(d))
                }
                (Say::Number, Some(Value::Digits(d))) => match d.parse::<u32>() {
                    Ok(n) => words(media::say::number(n)),
                    Err(_) => words(media::say::digits(d)),
                },
                (Say::Time, Some(Value::Time(t))) => words(media::say::time(t.hour(), t.minute())),
                (Say::Date, Some(Value::Time(t))) => {
                    use chrono::Datelike;
                    words(media::say::date(
                        t.weekday().num_days_from_monday(),
                        t.month(),
                        t.day(),
                    ))
                }
                (Say::DateTime, Some(Value::Time(t))) => words(media::say::date_time(t)),
                _ => Vec::new(),
            },
        }
    }

    /// Goes to node `name` and runs it as far as it goes without input.
    fn go(&mut self, now: Instant, name: String) {
        let mut next = Some(name);
        let mut steps = 0;
        while let Some(name) = next.take() {
            steps += 1;
            if steps > MAX_STEPS {
                self.finish(Action::HangUp);
                return;
            }
            self.node = name;
            self.tries = 0;
            self.entered.clear();
            let plan = self.plan.clone();
            let Some(node) = plan.node(&self.node) else {
                self.finish(Action::HangUp);
                return;
            };
            match node {
                Node::Play {
                    prompts,
                    barge_in,
                    next: to,
                } => {
                    if *barge_in && !self.typed.is_empty() {
                        // The caller is typing ahead: no need to hear it.
                        next = Some(to.clone());
                    } else {
                        let id = self.play(prompts, *barge_in);
                        self.state = State::Playing {
                            id,
                            barge_in: *barge_in,
                        };
                    }
                }
                Node::Collect(_) | Node::Menu(_) => self.prompt(now),
                Node::Branch { on, cases, default } => {
                    let value = self.vars.get(on).map(Value::text).unwrap_or_default();
                    next = Some(cases.get(&value).unwrap_or(default).clone());
                }
                Node::Run {
                    operation, args, ..
                } => {
                    let args = args
                        .iter()
                        .map(|(k, v)| (k.clone(), self.resolve(v).text()))
                        .collect();
                    self.out.push_back(Action::Run {
                        operation: operation.clone(),
                        args,
                    });
                    self.state = State::Running;
                }
                Node::Set { vars, next: to } => {
                    for (k, v) in vars {
                        let value = self.resolve(v);
                        self.vars.insert(k.clone(), value);
                    }
                    next = Some(to.clone());
                }
                Node::Transfer { queue, offer } => {
                    self.out.push_back(Action::Transfer {
                        queue: queue.clone(),
                        offer: offer.is_some(),
                    });
                    self.state = State::Holding {
                        offer: offer.clone(),
                    };
                }
                Node::Hangup { prompts } if prompts.is_empty() => self.finish(Action::HangUp),
                Node::Hangup { prompts } => {
                    let id = self.play(prompts, false);
                    self.state = State::Ending { id };
                }
            }
        }
    }

    /// `$var` is the variable's value; anything else is text.
    fn resolve(&self, value: &str) -> Value {
        match value.strip_prefix('$') {
            Some(var) => self
                .vars
                .get(var)
                .cloned()
                .unwrap_or(Value::Text(String::new())),
            None => Value::Text(value.to_owned()),
        }
    }

    fn go_next(&mut self, now: Instant) {
        if let Some(Node::Play { next, .. }) = self.current() {
            let next = next.clone();
            self.go(now, next);
        }
    }

    /// Plays the collect or menu prompt, unless keys typed ahead answer it already.
    fn prompt(&mut self, now: Instant) {
        self.entered.clear();
        if !self.typed.is_empty() {
            self.state = State::Waiting { deadline: now };
            while let Some(key) = self.typed.pop_front() {
                if self.spent_terminator.take() == Some(key) {
                    continue;
                }
                self.take_key(now, key);
                if !matches!(self.state, State::Waiting { .. }) {
                    return;
                }
            }
            return;
        }
        let prompts = match self.current() {
            Some(Node::Collect(c)) => c.prompts.clone(),
            Some(Node::Menu(m)) => m.prompts.clone(),
            _ => return,
        };
        let id = self.play(&prompts, true);
        self.state = State::Prompting { id };
    }

    /// The prompt is over (or was cut short): wait for the first key, or the next one.
    fn wait(&mut self, now: Instant) {
        let timeout = match self.current() {
            Some(Node::Collect(c)) if self.entered.is_empty() => c.first_digit_timeout,
            Some(Node::Collect(c)) => c.inter_digit_timeout,
            Some(Node::Menu(m)) => m.timeout,
            _ => return,
        };
        self.state = State::Waiting {
            deadline: now + timeout,
        };
    }

    fn take_key(&mut self, now: Instant, key: char) {
        let plan = self.plan.clone();
        match plan.node(&self.node) {
            Some(Node::Menu(Menu { options, .. })) => match options.get(key.to_string().as_str()) {
                Some(to) => self.go(now, to.clone()),
                None => self.retry(now, false),
            },
            Some(Node::Collect(c)) => {
                if Some(key) == c.terminator {
                    if self.entered.len() >= c.min {
                        self.complete(now);
                    } else {
                        self.retry(now, self.entered.is_empty());
                    }
                    return;
                }
                self.entered.push(key);
                if self.entered.len() >= c.max {
                    self.spent_terminator = c.terminator;
                    self.complete(now);
                } else {
                    self.state = State::Waiting {
                        deadline: now + c.inter_digit_timeout,
                    };
                }
            }
            _ => {}
        }
    }

    /// The entry is complete: keep it and go on if it fits, else try again.
    fn complete(&mut self, now: Instant) {
        let plan = self.plan.clone();
        let Some(Node::Collect(c)) = plan.node(&self.node) else {
            return;
        };
        if fits(c, &self.entered) {
            let keys = std::mem::take(&mut self.entered);
            self.vars.insert(c.into.clone(), Value::Digits(keys));
            self.go(now, c.next.clone());
        } else {
            self.retry(now, false);
        }
    }

    /// A try failed (nothing typed, or what was typed does not fit): say so and prompt again,
    /// or give up when the tries run out.
    fn retry(&mut self, now: Instant, nothing: bool) {
        self.tries += 1;
        self.entered.clear();
        let plan = self.plan.clone();
        let (tries, complaint, exhausted) = match plan.node(&self.node) {
            Some(Node::Collect(c)) => (
                c.tries,
                if nothing { &c.no_input } else { &c.invalid },
                &c.exhausted,
            ),
            Some(Node::Menu(m)) => (
                m.tries,
                if nothing { &m.no_input } else { &m.invalid },
                &m.exhausted,
            ),
            _ => return,
        };
        if self.tries >= tries {
            self.go(now, exhausted.clone());
            return;
        }
        // Whatever else was typed belonged to the failed try.
        self.typed.clear();
        if complaint.is_empty() {
            self.prompt(now);
        } else {
            let id = self.play(complaint, false);
            self.state = State::Complaining { id };
        }
    }
}

/// Whether an entry fits the node's pattern and check.
fn fits(c: &Collect, keys: &str) -> bool {
    c.compiled.as_ref().map_or(true, |p| p.matches(keys))
        && match c.check {
            Some(Check::ConfirmationId) => callbacks::ConfirmationId::parse(keys).is_ok(),
            None => true,
        }
}
