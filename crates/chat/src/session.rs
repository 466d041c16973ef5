//! One chat, sans-IO. Each customer message goes in and a [`Turn`] comes out: the bot's
//! replies, and perhaps a [`Request`] for the runtime (estimate the wait, book a callback, run
//! an operation on one), whose result goes back in with [`Session::answer`].
//!
//! A message is classified; the bot for its intent answers when one of its capabilities
//! matches. When the message is beyond the bot (no intent reaches the threshold, no capability
//! does, or the capability is for a person), the bot asks for the wait and offers a callback
//! with it; on yes it asks for the number and the time, and books it with the transcript. The
//! callback booked here, or one the customer names with its confirmation number and the last
//! four digits of its number, can then be asked about or changed.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::bots::{Bots, Does, Operation, Route};

/// A reply of the bot, with any quick answers it offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub text: String,
    pub choices: Vec<String>,
}

/// When to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Asap,
    /// A time of day in the customer's time zone: today (or tomorrow if it has passed), or
    /// tomorrow.
    At {
        hour: u32,
        minute: u32,
        tomorrow: bool,
    },
}

/// What a change changes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    At(When),
    Number(String),
    Media(callbacks::Media),
    Skill(String),
}

/// How the customer showed a callback is theirs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Proof {
    /// It was booked in this chat.
    BookedHere,
    /// The last four digits of its number.
    LastFour(String),
}

/// What the conversation needs from the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The wait for a callback on this route, and whether agents are free: answer with
    /// [`Answer::Estimate`].
    Estimate(Route),
    /// Book a callback: answer with [`Answer::Booked`], [`Answer::Refused`] (the number is
    /// asked again) or [`Answer::TimeRefused`] (the time is).
    Book {
        route: Route,
        number: String,
        when: When,
        transcript: Vec<String>,
    },
    /// Ask about or change a callback: answer with [`Answer::Status`], [`Answer::Changed`] or
    /// [`Answer::Refused`].
    Run {
        operation: Operation,
        confirmation_id: String,
        proof: Proof,
        /// What it changes to, for a reschedule or a change of number, media or skill.
        change: Option<Change>,
    },
}

/// A request's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Estimate {
        /// Minutes until an agent would call, when it can be told.
        wait_minutes: Option<u32>,
        agents_ready: u32,
        /// When calling opens again, if it is closed now ("9:00 tomorrow").
        next_opening: Option<String>,
    },
    Booked {
        confirmation_id: String,
    },
    /// The callback's state in words ("number 3 in line, about 8 minutes").
    Status(String),
    Changed {
        receipt: String,
    },
    /// Why it could not be done, in words.
    Refused(String),
    /// Why a callback cannot be booked at the time asked for, in words.
    TimeRefused(String),
}

/// What a message (or an answer) led to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Turn {
    pub replies: Vec<Reply>,
    pub request: Option<Request>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Waiting {
    Nothing,
    Estimate(Route),
    Offer(Route),
    Number(Route),
    When(Route, String),
    /// The number it is booked to, kept in case the time is refused.
    Booking(Route, String),
    Id(Operation),
    LastFour(Operation, String),
    /// What the change is to.
    Detail(Operation),
    Running,
}

pub struct Session {
    bots: Arc<Bots>,
    memory: Memory,
}

/// What a conversation remembers between messages: kept anywhere (callbackd keeps it in its
/// store, as JSON), so that any node can take the conversation up with [`Session::resume`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    waiting: Waiting,
    /// The last intent understood, for where a callback goes.
    topic: Option<String>,
    /// The callback this chat may ask about, and how it was shown to be the customer's.
    callback: Option<(String, Proof)>,
    transcript: Vec<String>,
}

const GREETING: &str = "Hello! How can I help you today?";

impl Session {
    /// A new chat and its greeting.
    pub fn new(bots: Arc<Bots>) -> (Session, Turn) {
        let mut session = Session {
            bots,
            memory: Memory {
                waiting: Waiting::Nothing,
                topic: None,
                callback: None,
                transcript: Vec::new(),
            },
        };
        let turn = session.say(GREETING, &[]);
        (session, turn)
    }

    /// A conversation taken up where `memory` left it.
    pub fn resume(bots: Arc<Bots>, memory: Memory) -> Session {
        Session { bots, memory }
    }

    /// What the conversation remembers, to keep until its next message.
    pub fn memory(&self) -> &Memory {
        &self.memory
    }

    /// Everything said so far, a line each (`customer: …`, `bot: …`).
    pub fn transcript(&self) -> &[String] {
        &self.memory.transcript
    }

    /// A message from the customer.
    pub fn message(&mut self, text: &str) -> Turn {
        let text = text.trim();
        self.memory.transcript.push(format!("customer: {text}"));
        match std::mem::replace(&mut self.memory.waiting, Waiting::Nothing) {
            Waiting::Offer(route) => match yes_or_no(text) {
                Some(true) => {
                    self.memory.waiting = Waiting::Number(route);
                    self.say(ASK_NUMBER, &[])
                }
                Some(false) => self.say("All right. Is there anything else I can help with?", &[]),
                None => self.understand(text),
            },
            Waiting::Number(route) => match phone_number(text) {
                Some(number) => {
                    self.memory.waiting = Waiting::When(route, number);
                    self.say(ASK_WHEN, &["As soon as possible"])
                }
                None => {
                    self.memory.waiting = Waiting::Number(route);
                    self.say(
                        "That does not look like a phone number. Please write it with the country code, like +1 212 555 0100.",
                        &[],
                    )
                }
            },
            Waiting::When(route, number) => match when(text) {
                Some(when) => {
                    self.memory.waiting = Waiting::Booking(route.clone(), number.clone());
                    Turn {
                        replies: Vec::new(),
                        request: Some(Request::Book {
                            route,
                            number,
                            when,
                            transcript: self.memory.transcript.clone(),
                        }),
                    }
                }
                None => {
                    self.memory.waiting = Waiting::When(route, number);
                    self.say(
                        "Sorry, I did not get the time. Say \"now\", or a time such as 14:30 or 2:30 pm (add \"tomorrow\" for tomorrow).",
                        &["As soon as possible"],
                    )
                }
            },
            Waiting::Id(operation) => {
                let digits: String = text.chars().filter(char::is_ascii_digit).collect();
                if callbacks::ConfirmationId::parse(&digits).is_ok() {
                    self.memory.waiting = Waiting::LastFour(operation, digits);
                    self.say(
                        "And the last four digits of the number we are to call?",
                        &[],
                    )
                } else {
                    self.memory.waiting = Waiting::Id(operation);
                    self.say(
                        "That is not a confirmation number: it has 9 digits, as we gave it to you. Please check it and write it again.",
                        &[],
                    )
                }
            }
            Waiting::LastFour(operation, id) => {
                let digits: String = text.chars().filter(char::is_ascii_digit).collect();
                if digits.len() == 4 {
                    self.memory.callback = Some((id, Proof::LastFour(digits)));
                    self.operation(operation)
                } else {
                    self.memory.waiting = Waiting::LastFour(operation, id);
                    self.say("Please write just the last four digits of the number.", &[])
                }
            }
            Waiting::Detail(operation) => match self.detail(operation, text) {
                Some(change) => self.run(operation, Some(change)),
                None => {
                    self.memory.waiting = Waiting::Detail(operation);
                    let (question, choices) = self.question(operation);
                    self.say(&format!("Sorry, I did not get that. {question}"), &choices)
                }
            },
            waiting @ (Waiting::Estimate(_) | Waiting::Booking(..) | Waiting::Running) => {
                self.memory.waiting = waiting;
                self.say("One moment, please.", &[])
            }
            Waiting::Nothing => self.understand(text),
        }
    }

    /// The result of the request the last turn made.
    pub fn answer(&mut self, answer: Answer) -> Turn {
        match (
            std::mem::replace(&mut self.memory.waiting, Waiting::Nothing),
            answer,
        ) {
            (
                Waiting::Estimate(route),
                Answer::Estimate {
                    wait_minutes,
                    agents_ready,
                    next_opening,
                },
            ) => {
                let wait = match (next_opening, wait_minutes) {
                    (Some(opening), _) => {
                        format!("No agent is available now; the next opening is {opening}.")
                    }
                    (None, Some(0)) if agents_ready > 0 => {
                        "An agent is free now and can call you in a few minutes.".to_owned()
                    }
                    (None, Some(minutes)) => format!(
                        "An agent can call you in about {minutes} minute{}.",
                        if minutes == 1 { "" } else { "s" }
                    ),
                    (None, None) => {
                        "No agent is available right now; we would call you as soon as one is."
                            .to_owned()
                    }
                };
                self.memory.waiting = Waiting::Offer(route);
                self.say(
                    &format!("That is something an agent should help you with. {wait} Would you like us to call you back?"),
                    &["Yes, call me back", "No, thanks"],
                )
            }
            (Waiting::Booking(..), Answer::Booked { confirmation_id }) => {
                let text = format!(
                    "Your callback is booked. Your confirmation number is {confirmation_id}. You can ask me about it here, or call us and enter it."
                );
                self.memory.callback = Some((confirmation_id, Proof::BookedHere));
                self.say(&text, &[])
            }
            (Waiting::Booking(route, _), Answer::Refused(reason)) => {
                self.memory.waiting = Waiting::Number(route);
                self.say(&format!("We cannot book that: {reason}. {ASK_NUMBER}"), &[])
            }
            (Waiting::Booking(route, number), Answer::TimeRefused(reason)) => {
                self.memory.waiting = Waiting::When(route, number);
                self.say(
                    &format!("We cannot book that: {reason}. {ASK_WHEN}"),
                    &["As soon as possible"],
                )
            }
            (Waiting::Running, Answer::Status(text)) => self.say(&text, &[]),
            (Waiting::Running, Answer::Changed { receipt }) => self.say(
                &format!("Done: your change is confirmed. Your confirmation code is {receipt}."),
                &[],
            ),
            (Waiting::Running, Answer::Refused(reason)) => {
                // A callback that could not be found or verified is not this chat's.
                if matches!(self.memory.callback, Some((_, Proof::LastFour(_)))) {
                    self.memory.callback = None;
                }
                self.say(&format!("Sorry, that did not work: {reason}."), &[])
            }
            (waiting, _) => {
                // Not an answer to anything asked: nothing changes.
                self.memory.waiting = waiting;
                Turn::default()
            }
        }
    }

    /// A message not answering a question: its intent, and what the bot does with it.
    fn understand(&mut self, text: &str) -> Turn {
        let bots = self.bots.clone();
        let Some((intent, _)) = bots.intent(text) else {
            return self.beyond();
        };
        self.memory.topic = Some(intent.to_owned());
        let bot = &bots.intents[intent].bot;
        match bots.capability(bot, text) {
            Some(Does::Answer(answer)) => self.say(answer, &[]),
            Some(Does::Operation(operation)) => self.operation(operation),
            Some(Does::Person) | None => self.beyond(),
        }
    }

    /// Offers a callback for the topic: first, the wait.
    fn beyond(&mut self) -> Turn {
        let route = self
            .memory
            .topic
            .as_ref()
            .and_then(|t| self.bots.intents.get(t))
            .map_or_else(|| self.bots.fallback.clone(), |i| i.route());
        self.memory.waiting = Waiting::Estimate(route.clone());
        Turn {
            replies: Vec::new(),
            request: Some(Request::Estimate(route)),
        }
    }

    /// An operation on the chat's callback, asking which one it is first if need be.
    fn operation(&mut self, operation: Operation) -> Turn {
        if self.memory.callback.is_none() {
            self.memory.waiting = Waiting::Id(operation);
            return self.say("What is the confirmation number of your callback?", &[]);
        }
        if operation_needs_detail(operation) {
            self.memory.waiting = Waiting::Detail(operation);
            let (question, choices) = self.question(operation);
            return self.say(question, &choices);
        }
        self.run(operation, None)
    }

    /// What to ask for a change's detail, with the quick answers.
    fn question(&self, operation: Operation) -> (&'static str, Vec<&'static str>) {
        match operation {
            Operation::ChangeNumber => (ASK_NUMBER, Vec::new()),
            Operation::ChangeMedia => (
                "Should we call you, or send you a text message?",
                vec!["A phone call", "A text message"],
            ),
            Operation::ChangeSkill => ("Which department should call you?", Vec::new()),
            _ => (ASK_WHEN, vec!["As soon as possible"]),
        }
    }

    /// The detail of a change, read from the customer's answer.
    fn detail(&self, operation: Operation, text: &str) -> Option<Change> {
        let lower = text.to_lowercase();
        match operation {
            Operation::ChangeNumber => phone_number(text).map(Change::Number),
            Operation::ChangeMedia => {
                if ["text", "sms", "message"].iter().any(|w| lower.contains(w)) {
                    Some(Change::Media(callbacks::Media::Sms))
                } else if ["call", "phone", "voice"].iter().any(|w| lower.contains(w)) {
                    Some(Change::Media(callbacks::Media::Voice))
                } else {
                    None
                }
            }
            // A department the bots route to, or the word as written for the store to judge.
            Operation::ChangeSkill => {
                let known = self.bots.intents.values().map(|i| i.skill.as_str());
                let word = lower
                    .split(|c: char| !c.is_alphanumeric())
                    .find(|w| !w.is_empty())?;
                Some(Change::Skill(
                    known
                        .clone()
                        .find(|s| lower.contains(*s))
                        .unwrap_or(word)
                        .to_owned(),
                ))
            }
            _ => when(text).map(Change::At),
        }
    }

    fn run(&mut self, operation: Operation, change: Option<Change>) -> Turn {
        let Some((confirmation_id, proof)) = self.memory.callback.clone() else {
            return self.operation(operation);
        };
        self.memory.waiting = Waiting::Running;
        Turn {
            replies: Vec::new(),
            request: Some(Request::Run {
                operation,
                confirmation_id,
                proof,
                change,
            }),
        }
    }

    fn say(&mut self, text: &str, choices: &[&str]) -> Turn {
        self.memory.transcript.push(format!("bot: {text}"));
        Turn {
            replies: vec![Reply {
                text: text.to_owned(),
                choices: choices.iter().map(|c| (*c).to_owned()).collect(),
            }],
            request: None,
        }
    }
}

fn operation_needs_detail(operation: Operation) -> bool {
    matches!(
        operation,
        Operation::Reschedule
            | Operation::ChangeNumber
            | Operation::ChangeMedia
            | Operation::ChangeSkill
    )
}

const ASK_NUMBER: &str =
    "What number should we call? Please write it with the country code, like +1 212 555 0100.";
const ASK_WHEN: &str = "When should we call? Say \"now\" for as soon as possible, or a time such as 14:30 or 2:30 pm (add \"tomorrow\" for tomorrow).";

fn yes_or_no(text: &str) -> Option<bool> {
    let lower = text.to_lowercase();
    let first = lower
        .split(|c: char| !c.is_alphanumeric())
        .find(|w| !w.is_empty())?;
    match first {
        "yes" | "y" | "yeah" | "yep" | "sure" | "ok" | "okay" | "please" => Some(true),
        "no" | "n" | "nope" | "not" | "don't" | "dont" => Some(false),
        _ => None,
    }
}

/// A phone number as written (`+1 (212) 555-0100`, `0044 20 …`, `212 555 0100`): `+` and its
/// digits when it has its country code, else its digits (a national number; the dialing
/// policy reads it in the home country).
fn phone_number(text: &str) -> Option<String> {
    let text = text.trim();
    if text
        .chars()
        .any(|c| !(c.is_ascii_digit() || " +-().".contains(c)))
    {
        return None;
    }
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    let (plus, digits) = match digits.strip_prefix("00") {
        Some(rest) => (true, rest.to_owned()),
        None => (text.starts_with('+'), digits),
    };
    (7..=15)
        .contains(&digits.len())
        .then(|| format!("{}{digits}", if plus { "+" } else { "" }))
}

/// When to call, as written: "now", "asap", "14:30", "2:30 pm", "9am tomorrow".
fn when(text: &str) -> Option<When> {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !(c.is_alphanumeric() || c == ':'))
        .filter(|w| !w.is_empty())
        .collect();
    if ["now", "asap", "soon", "anytime", "whenever"]
        .iter()
        .any(|w| words.contains(w))
    {
        return Some(When::Asap);
    }
    let tomorrow = words.contains(&"tomorrow");
    for (i, word) in words.iter().enumerate() {
        let (clock, suffix) = match word.find(|c: char| c.is_alphabetic()) {
            Some(at) => word.split_at(at),
            None => (*word, words.get(i + 1).copied().unwrap_or_default()),
        };
        let number = |s: &str| s.parse::<u32>().ok().filter(|_| !s.is_empty());
        let (hour, minute) = match clock.split_once(':') {
            Some((h, m)) if m.len() == 2 => match (number(h), number(m)) {
                (Some(h), Some(m)) => (h, m),
                _ => return None,
            },
            Some(_) => return None,
            None => match number(clock) {
                Some(h) => (h, 0),
                None => continue,
            },
        };
        let hour = match suffix {
            "am" | "a" if (1..=12).contains(&hour) => hour % 12,
            "pm" | "p" if (1..=12).contains(&hour) => hour % 12 + 12,
            "am" | "a" | "pm" | "p" => return None,
            _ => hour,
        };
        if hour < 24 && minute < 60 {
            return Some(When::At {
                hour,
                minute,
                tomorrow,
            });
        }
        return None;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const BOTS: &str = r#"
threshold = 0.3
answer_threshold = 0.5
fallback = { queue = "support", skill = "billing" }

[intents.billing]
bot = "billing"
queue = "support"
skill = "billing"
examples = ["I was charged twice", "my invoice is wrong", "question about my bill", "when is my bill due"]

[intents.callback]
bot = "callbacks"
queue = "support"
skill = "billing"
examples = ["status of my callback", "pause my callback", "cancel my callback", "call me at another time", "change my number", "text me instead"]

[bots.billing]
name = "the billing assistant"
[[bots.billing.can]]
examples = ["when is my bill due", "due date of the invoice"]
answer = "Bills are due on the first of each month."
[[bots.billing.can]]
examples = ["I was charged twice", "a charge I do not recognise"]
person = true

[bots.callbacks]
name = "the callback assistant"
[[bots.callbacks.can]]
examples = ["status of my callback", "when will you call me"]
operation = "status"
[[bots.callbacks.can]]
examples = ["pause my callback", "hold my callback"]
operation = "pause"
[[bots.callbacks.can]]
examples = ["call me at another time", "reschedule my callback"]
operation = "reschedule"
[[bots.callbacks.can]]
examples = ["change my number", "call me on another number"]
operation = "change_number"
[[bots.callbacks.can]]
examples = ["text me instead", "send a text message instead of calling"]
operation = "change_media"
"#;

    fn chat() -> Session {
        let queues = BTreeMap::from([("support".to_owned(), vec!["billing".to_owned()])]);
        let bots = Arc::new(Bots::load("bots.toml", BOTS, &queues).unwrap());
        let (session, turn) = Session::new(bots);
        assert_eq!(turn.replies[0].text, GREETING);
        session
    }

    /// A chat that was offered a callback and said yes: next, the number.
    fn booking() -> Session {
        let mut chat = chat();
        chat.message("I was charged twice");
        chat.answer(Answer::Estimate {
            wait_minutes: Some(1),
            agents_ready: 1,
            next_opening: None,
        });
        chat.message("yes");
        chat
    }

    fn said(turn: &Turn) -> &str {
        &turn.replies[0].text
    }

    fn support() -> Route {
        Route {
            queue: "support".into(),
            skill: "billing".into(),
        }
    }

    #[test]
    fn a_conversation_kept_as_json_goes_on_where_it_left_off() {
        let chat = booking();
        let kept = serde_json::to_string(chat.memory()).unwrap();
        let memory: Memory = serde_json::from_str(&kept).unwrap();
        let mut resumed = Session::resume(chat.bots.clone(), memory);
        assert_eq!(resumed.transcript(), chat.transcript());
        resumed.message("+1 (212) 555-0100");
        let turn = resumed.message("now");
        let Some(Request::Book { route, number, .. }) = turn.request else {
            panic!("{turn:?}")
        };
        assert_eq!((route, number.as_str()), (support(), "+12125550100"));
    }

    #[test]
    fn a_question_the_bot_can_answer_is_answered() {
        let mut chat = chat();
        let turn = chat.message("When is my bill due?");
        assert_eq!(said(&turn), "Bills are due on the first of each month.");
        assert_eq!(turn.request, None);
    }

    #[test]
    fn beyond_the_bot_a_callback_is_offered_with_the_wait_and_booked_with_the_transcript() {
        let mut chat = chat();
        let turn = chat.message("I was charged twice for the same invoice");
        assert_eq!(turn.request, Some(Request::Estimate(support())));
        let turn = chat.answer(Answer::Estimate {
            wait_minutes: Some(6),
            agents_ready: 0,
            next_opening: None,
        });
        assert!(
            said(&turn).contains("An agent can call you in about 6 minutes."),
            "{turn:?}"
        );
        assert_eq!(turn.replies[0].choices, ["Yes, call me back", "No, thanks"]);
        let turn = chat.message("Yes, call me back");
        assert_eq!(said(&turn), ASK_NUMBER);
        let turn = chat.message("call me on my cell");
        assert!(said(&turn).starts_with("That does not look like a phone number"));
        chat.message("+1 (212) 555-0100");
        let turn = chat.message("2:30 pm tomorrow");
        let Some(Request::Book {
            route,
            number,
            when,
            transcript,
        }) = turn.request
        else {
            panic!("{turn:?}")
        };
        assert_eq!((route, number.as_str()), (support(), "+12125550100"));
        assert_eq!(
            when,
            When::At {
                hour: 14,
                minute: 30,
                tomorrow: true
            }
        );
        assert_eq!(
            transcript[1],
            "customer: I was charged twice for the same invoice"
        );
        assert_eq!(transcript.last().unwrap(), "customer: 2:30 pm tomorrow");
        let turn = chat.answer(Answer::Booked {
            confirmation_id: "123456789".into(),
        });
        assert!(said(&turn).contains("Your confirmation number is 123456789."));
        // The callback booked here can be asked about without proving it again.
        let turn = chat.message("what is the status of my callback?");
        assert_eq!(
            turn.request,
            Some(Request::Run {
                operation: Operation::Status,
                confirmation_id: "123456789".into(),
                proof: Proof::BookedHere,
                change: None
            })
        );
        let turn = chat.answer(Answer::Status("number 2 in line".into()));
        assert_eq!(said(&turn), "number 2 in line");
    }

    #[test]
    fn out_of_scope_goes_to_the_fallback_and_a_closed_queue_says_when_it_opens() {
        let mut chat = chat();
        let turn = chat.message("my dog ate the router cable");
        assert_eq!(turn.request, Some(Request::Estimate(support())));
        let turn = chat.answer(Answer::Estimate {
            wait_minutes: None,
            agents_ready: 0,
            next_opening: Some("9:00 tomorrow".into()),
        });
        assert!(
            said(&turn).contains("No agent is available now; the next opening is 9:00 tomorrow.")
        );
        let turn = chat.message("no");
        assert!(said(&turn).starts_with("All right."));
    }

    #[test]
    fn a_refused_number_is_asked_again() {
        let mut chat = booking();
        chat.message("+1 900 555 0123");
        chat.message("now");
        let turn = chat.answer(Answer::Refused(
            "the dialing policy blocks that number".into(),
        ));
        assert!(
            said(&turn).starts_with("We cannot book that: the dialing policy blocks that number.")
        );
        chat.message("+12125550100");
        let turn = chat.message("as soon as possible");
        assert!(matches!(
            turn.request,
            Some(Request::Book {
                when: When::Asap,
                ..
            })
        ));
    }

    // Regression: a refused time (outside the calling hours, past) asked for the number again.
    #[test]
    fn a_refused_time_asks_for_the_time_again_and_keeps_the_number() {
        let mut chat = booking();
        chat.message("+1 212 555 0100");
        chat.message("3 am");
        let turn = chat.answer(Answer::TimeRefused(
            "that time is outside the hours we call".into(),
        ));
        assert_eq!(
            said(&turn),
            format!("We cannot book that: that time is outside the hours we call. {ASK_WHEN}")
        );
        let turn = chat.message("as soon as possible");
        assert!(
            matches!(
                &turn.request,
                Some(Request::Book { number, when: When::Asap, .. }) if number == "+12125550100"
            ),
            "{turn:?}"
        );
    }

    #[test]
    fn another_callback_is_named_by_its_number_and_last_four_digits() {
        let mut chat = chat();
        let turn = chat.message("please pause my callback");
        assert_eq!(
            said(&turn),
            "What is the confirmation number of your callback?"
        );
        // The one check digit that makes 12345678_ a confirmation number, and one that does not.
        let (valid, invalid): (Vec<String>, Vec<String>) = (0..10)
            .map(|d| format!("12345678{d}"))
            .partition(|id| callbacks::ConfirmationId::parse(id).is_ok());
        let id = valid[0].as_str();
        let turn = chat.message(&invalid[0]);
        assert!(
            said(&turn).starts_with("That is not a confirmation number"),
            "{turn:?}"
        );
        chat.message(&format!("{} {} {}", &id[..3], &id[3..6], &id[6..]));
        let turn = chat.message("0100");
        assert_eq!(
            turn.request,
            Some(Request::Run {
                operation: Operation::Pause,
                confirmation_id: id.into(),
                proof: Proof::LastFour("0100".into()),
                change: None
            })
        );
        let turn = chat.answer(Answer::Refused(
            "we could not find a callback matching those details".into(),
        ));
        assert!(said(&turn).contains("we could not find"));
        // Not theirs: the next question asks again.
        let turn = chat.message("reschedule my callback");
        assert_eq!(
            said(&turn),
            "What is the confirmation number of your callback?"
        );
    }

    #[test]
    fn the_number_and_the_way_we_reach_them_are_asked_then_changed() {
        let mut chat = chat();
        chat.memory.callback = Some(("123456789".into(), Proof::BookedHere));
        let run = |change| {
            Some(Request::Run {
                operation: match change {
                    Change::Number(_) => Operation::ChangeNumber,
                    _ => Operation::ChangeMedia,
                },
                confirmation_id: "123456789".into(),
                proof: Proof::BookedHere,
                change: Some(change),
            })
        };
        assert_eq!(said(&chat.message("please change my number")), ASK_NUMBER);
        let turn = chat.message("+44 20 7946 0958");
        assert_eq!(turn.request, run(Change::Number("+442079460958".into())));
        chat.answer(Answer::Changed {
            receipt: "123456".into(),
        });
        let turn = chat.message("can you text me instead");
        assert_eq!(turn.replies[0].choices, ["A phone call", "A text message"]);
        let turn = chat.message("maybe");
        assert!(said(&turn).starts_with("Sorry, I did not get that."));
        let turn = chat.message("A text message");
        assert_eq!(turn.request, run(Change::Media(callbacks::Media::Sms)));
    }

    #[test]
    fn times_are_read_as_people_write_them() {
        let at = |h, m, t| {
            Some(When::At {
                hour: h,
                minute: m,
                tomorrow: t,
            })
        };
        assert_eq!(when("14:30"), at(14, 30, false));
        assert_eq!(when("at 9am tomorrow"), at(9, 0, true));
        assert_eq!(when("12 pm"), at(12, 0, false));
        assert_eq!(when("12am"), at(0, 0, false));
        assert_eq!(when("right now please"), Some(When::Asap));
        assert_eq!(when("25:00"), None);
        assert_eq!(when("13pm"), None);
        assert_eq!(when("later"), None);
    }

    #[test]
    fn numbers_are_read_as_people_write_them() {
        assert_eq!(
            phone_number("+44 20 7946 0958").as_deref(),
            Some("+442079460958")
        );
        assert_eq!(
            phone_number("0044 20 7946 0958").as_deref(),
            Some("+442079460958")
        );
        assert_eq!(
            phone_number("(212) 555-0100").as_deref(),
            Some("2125550100")
        );
        assert_eq!(phone_number("call 555"), None);
        assert_eq!(phone_number("123"), None);
    }
}
