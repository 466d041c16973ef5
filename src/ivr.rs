//! The IVR runtime: the operations a dialplan may `run`, carried out on the callback service,
//! and `callbackd dialplan check|simulate`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use callbacks::{
    Actor, Address, Callback, CallbackStore, Callbacks, Channel, ConfirmationId, Media,
    Modification, ModifyError, RequestedTime, State,
};
use chrono::{DateTime, Utc};
use ivr::dialplan::{Catalogue, Dialplan, Kind, Operation};
use ivr::session::{Action, Clip, Session, Value};
use media::prompt::Library;
use rand::{rngs::StdRng, RngCore, SeedableRng};
use store::Store;

use crate::config::Config;

#[derive(Debug, clap::Subcommand)]
pub enum DialplanCommand {
    /// Check a dialplan as start-up would (prompts, operations, nodes, variables); exit 1 with
    /// every problem and its line when it is wrong.
    Check { file: PathBuf },
    /// Run a dialplan against the configured store with no SIP, pressing the keys given, and
    /// print what the caller hears and what is run.
    Simulate {
        file: PathBuf,
        /// The entry point to start at.
        #[arg(long, default_value = "self_service")]
        entry: String,
        /// The keys the caller presses, in order (e.g. "745805615#5").
        #[arg(long, default_value = "")]
        digits: String,
        /// The caller ID the call comes with.
        #[arg(long, default_value = "anonymous")]
        caller_id: String,
    },
}

pub async fn command(config: Config, command: DialplanCommand) -> anyhow::Result<()> {
    let prompts = crate::media::load_prompts(&config.media.prompts)?;
    match command {
        DialplanCommand::Check { file } => {
            let plan = load(&file, &prompts)?;
            println!(
                "{}: ok; entries: {}; {} nodes",
                file.display(),
                plan.entries.keys().cloned().collect::<Vec<_>>().join(", "),
                plan.nodes.len()
            );
            Ok(())
        }
        DialplanCommand::Simulate {
            file,
            entry,
            digits,
            caller_id,
        } => {
            let plan = load(&file, &prompts)?;
            let url = config.store.url.expose();
            let store = Store::open(url)
                .await
                .with_context(|| format!("opening the store at {}", store::redact(url)))?;
            let operations = Operations {
                callbacks: Arc::new(Callbacks::new(store.clone(), config.policy())),
                max_failures_per_call: config.ivr.max_failures_per_call,
                limiter: crate::limits::Limiter::new(store.clone(), config.limits.clone()),
                wrap_up: config.dialer.wrap_up,
                notifier: crate::notifier::Notifier::from_config(&config.notifier),
                hints: Default::default(),
            };
            let mut rng = StdRng::from_entropy();
            let transcript =
                simulate(plan, &entry, &digits, &caller_id, &operations, &mut rng).await;
            // Text messages queued by the flow go out before the command ends.
            if let Some(notifier) = operations.notifier {
                notifier.finish().await;
            }
            store.close().await;
            for line in transcript? {
                println!("{line}");
            }
            Ok(())
        }
    }
}

/// What every call starts with: `caller_id` (the From user, digits where it is a number).
pub const INITIAL: &[(&str, Kind)] = &[("caller_id", Kind::Text)];

/// The status a found callback tells: its state (`queued`: waiting in line now, `soon`:
/// being called or about to be, `scheduled`, `paused`, and for one finished `completed`,
/// `cancelled` or `closed` (failed or expired)), when it is due, its department, and for one
/// in line its place and the estimated wait (see [`LINE`]).
const STATUS: &[(&str, Kind)] = &[
    ("state", Kind::Text),
    ("scheduled_at", Kind::Time),
    ("skill", Kind::Text),
    ("position", Kind::Digits),
    ("wait", Kind::Text),
    ("wait_minutes", Kind::Digits),
];

/// A place in line: `position`, and the estimated wait: `wait` is `unknown` (no agent logged
/// in), `one` or `more` minutes, `wait_minutes` how many.
const LINE: &[(&str, Kind)] = &[
    ("position", Kind::Digits),
    ("wait", Kind::Text),
    ("wait_minutes", Kind::Digits),
];

/// The outcome of a change: the receipt's code, on failure the reason (`illegal_in_state`,
/// ...), and on success the callback's new status.
const CHANGE: &[(&str, Kind)] = &[
    ("receipt", Kind::Digits),
    ("reason", Kind::Text),
    ("state", Kind::Text),
    ("scheduled_at", Kind::Time),
    ("skill", Kind::Text),
    ("position", Kind::Digits),
    ("wait", Kind::Text),
    ("wait_minutes", Kind::Digits),
];

/// The operations dialplans may run.
pub const OPERATIONS: &[Operation] = &[
    // Finds the callback; `found` only when the caller's number is the callback's, else
    // `verify` (also when there is no such callback, or the source or the ID is past its
    // limits: the caller cannot tell these apart).
    Operation {
        name: "lookup",
        args: &["id", "caller"],
        results: &["found", "verify", "unavailable"],
        sets: STATUS,
    },
    // The last four digits of the callback's number; `not_found` for a wrong answer, an
    // unknown ID and a source or ID past its limits alike, and `too_many` when that was the
    // call's last allowed failure.
    Operation {
        name: "verify",
        args: &["id", "last4"],
        results: &["found", "not_found", "too_many", "unavailable"],
        sets: STATUS,
    },
    // `action`: pause, resume, cancel, asap.
    Operation {
        name: "change",
        args: &["id", "action"],
        results: &["success", "failure"],
        sets: CHANGE,
    },
    // `hhmm` in 24-hour time, `day` 1 today or 2 tomorrow, in the customer's time zone.
    Operation {
        name: "reschedule",
        args: &["id", "hhmm", "day"],
        results: &["success", "failure"],
        sets: CHANGE,
    },
    // `number` with its country code, digits only.
    Operation {
        name: "change_number",
        args: &["id", "number"],
        results: &["success", "failure"],
        sets: CHANGE,
    },
    // `how`: 1 a phone call, 2 a text message.
    Operation {
        name: "change_media",
        args: &["id", "how"],
        results: &["success", "failure"],
        sets: CHANGE,
    },
    // A callback for a caller waiting in `queue`, to `number` (digits, with the country code;
    // a leading + may be there), keeping the time the call came in as its place in line.
    Operation {
        name: "book",
        args: &["queue", "number"],
        results: &["success", "failure"],
        sets: &[("confirmation_id", Kind::Digits), ("reason", Kind::Text)],
    },
    // Where a caller joining `queue` now would stand (in its first skill's line), and how
    // long they would wait.
    Operation {
        name: "line",
        args: &["queue"],
        results: &["ok", "failure"],
        sets: LINE,
    },
    // `choice`: the department's place (1…n) in the queue's list of skills.
    Operation {
        name: "change_skill",
        args: &["id", "choice"],
        results: &["success", "failure"],
        sets: CHANGE,
    },
];

/// Loads and checks a dialplan against the operations and the prompts there are.
pub fn load(path: &Path, prompts: &Library) -> anyhow::Result<Dialplan> {
    let source =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let has_prompt = |name: &str| prompts.get(name).is_ok();
    let catalogue = Catalogue {
        has_prompt: &has_prompt,
        operations: OPERATIONS,
        initial: INITIAL,
    };
    Dialplan::load(&path.display().to_string(), &source, &catalogue).map_err(|problems| {
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        anyhow!("the dialplan is wrong:\n{}", lines.join("\n"))
    })
}

/// Runs dialplan operations for calls.
pub struct Operations {
    pub callbacks: Arc<Callbacks<Store>>,
    /// Failed look-ups one call may make (`ivr.max_failures_per_call`).
    pub max_failures_per_call: u64,
    /// Counts look-ups and bookings against the limits.
    pub limiter: crate::limits::Limiter,
    /// `dialer.wrap_up`, part of the handle time in estimated waits.
    pub wrap_up: chrono::Duration,
    /// Text-message confirmations, when a gateway is configured.
    pub notifier: Option<crate::notifier::Notifier>,
    /// Tells this node's dialer of each change made, so a call placing the callback hears
    /// of it at once.
    pub hints: crate::hints::Hints,
}

/// Why a caller's booking was not made.
#[derive(Debug, thiserror::Error)]
pub enum BookError {
    /// The number has an open callback in the queue already; it keeps its place.
    #[error("this number has a callback booked already")]
    AlreadyBooked,
    /// Past the booking limits of the source or of the number.
    #[error("too many bookings")]
    Limited,
    #[error(transparent)]
    Create(#[from] callbacks::CreateError),
}

/// Who is calling (for the history and security events), and how many look-ups of the call
/// failed so far.
pub struct Caller {
    /// The IVR, or the chat.
    pub channel: Channel,
    pub caller_id: String,
    /// Who the limiter counts: the address the call came from (an IPv6 /64), or a trusted
    /// trunk's address and the identity it asserts (see `limits::client_of`).
    pub client: String,
    /// `ip:port` the call came from.
    pub source: String,
    pub call_id: String,
    pub failures: u32,
    /// When the call came in: a callback booked from a queue keeps it as its place in line.
    pub arrived: DateTime<Utc>,
}

/// How long an operation may take before the caller is told it failed.
pub const OPERATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl Operations {
    /// Makes a change for a caller (the IVR's or the chat's), and tells this node's dialer of
    /// it once it is committed.
    pub async fn modify(
        &self,
        rng: &mut (impl RngCore + Send + ?Sized),
        now: DateTime<Utc>,
        actor: &Actor,
        id: &ConfirmationId,
        modification: &Modification,
    ) -> Result<(Callback, callbacks::Receipt), ModifyError> {
        let done = self
            .callbacks
            .modify(rng, now, actor, id, None, modification)
            .await?;
        let (callback, receipt) = &done;
        tracing::info!(callback = %callback.confirmation_id, channel = %actor.channel, action = receipt.action, receipt = %receipt.code, state = %callback.state, "callback modified");
        self.hints.changed(callback.id);
        Ok(done)
    }

    /// What a found callback says about itself (see [`STATUS`]).
    pub async fn status(&self, c: &Callback, now: DateTime<Utc>) -> Vec<(String, Value)> {
        let estimate = match self.callbacks.policy().queues.get(&c.queue) {
            Some(queue) => {
                crate::queues::of_callback(&self.callbacks.store, queue, c, self.wrap_up, now)
                    .await
                    .unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "cannot estimate the wait; not telling it");
                        None
                    })
            }
            None => None,
        };
        let state = match (c.state, &estimate) {
            (State::Paused, _) => "paused",
            (State::Queued, Some(_)) => "queued",
            (State::Queued | State::Dialing | State::Connected, _) => "soon",
            (State::Scheduled, _) => "scheduled",
            (State::Completed, _) => "completed",
            (State::Cancelled, _) => "cancelled",
            (State::Failed | State::Expired, _) => "closed",
        };
        let due = c.next_attempt_at.with_timezone(&c.time_zone).fixed_offset();
        let mut vars = vec![
            ("state".into(), Value::Text(state.into())),
            ("scheduled_at".into(), Value::Time(due)),
            ("skill".into(), Value::Text(c.skill.clone())),
        ];
        vars.extend(estimate.iter().flat_map(line_vars));
        vars
    }

    /// Where a caller joining `queue` now would stand.
    async fn line(
        &self,
        queue_name: &str,
        now: DateTime<Utc>,
    ) -> (&'static str, Vec<(String, Value)>) {
        let policy = self.callbacks.policy();
        let Some((queue, skill)) = policy
            .queues
            .get(queue_name)
            .and_then(|q| Some((q, q.skills.first()?)))
        else {
            tracing::warn!(
                queue = queue_name,
                "the dialplan names a queue that is not configured"
            );
            return ("failure", Vec::new());
        };
        match crate::queues::line(&self.callbacks.store, queue, skill, self.wrap_up, now).await {
            Ok(line) => ("ok", line_vars(&line.new_arrival)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot estimate the wait; not telling it");
                ("failure", Vec::new())
            }
        }
    }

    /// Runs `operation` at `now`; returns its result and the variables it sets.
    pub async fn run(
        &self,
        rng: &mut (dyn RngCore + Send),
        now: DateTime<Utc>,
        caller: &Caller,
        operation: &str,
        args: &BTreeMap<String, String>,
    ) -> (&'static str, Vec<(String, Value)>) {
        let arg = |name: &str| arg(args, name);
        match operation {
            "book" => return self.book(rng, now, caller, args).await,
            "line" => return self.line(arg("queue"), now).await,
            _ => {}
        }
        // Failed look-ups (an unknown ID or a wrong last four digits) a call may make; the
        // last one ends the call.
        let not_found = if u64::from(caller.failures) + 1 >= self.max_failures_per_call {
            "too_many"
        } else {
            "not_found"
        };
        // A look-up that finds nothing: `lookup` asks for the last four digits (the caller
        // cannot tell whether the ID exists), `verify` says it was not found.
        let miss = || match operation {
            "lookup" => ("verify", Vec::new()),
            _ => (not_found, Vec::new()),
        };
        let Ok(id) = ConfirmationId::parse(arg("id")) else {
            return match operation {
                "lookup" | "verify" => miss(),
                _ => failure("not_found", None),
            };
        };
        match operation {
            "lookup" | "verify" => {
                // Counted before it is made, per source, per ID and in all (see limits.rs).
                let guess = self.limiter.guess(caller, &id, now).await;
                // One query whether or not the ID exists or the guess may be made, so the time
                // taken tells nothing.
                let found = self.callbacks.store.find(&id).await;
                let guess = match guess {
                    Ok(guess) => guess,
                    // Limited: told no more than a wrong answer tells.
                    Err(crate::limits::Refusal::Limited(_)) => return miss(),
                    Err(crate::limits::Refusal::Store(e)) => {
                        tracing::warn!(error = %e, "lookup failed: the store is unavailable");
                        return unavailable(operation);
                    }
                };
                let found = match found {
                    Ok(found) => found,
                    Err(e) => {
                        // Not the caller's failure: nothing is counted against them.
                        tracing::warn!(error = %e, "lookup failed: the store is unavailable");
                        self.limiter.cancel(guess).await;
                        return unavailable(operation);
                    }
                };
                let matches = |c: &Callback| match (&c.address, operation) {
                    // Under attack (many failures from anyone), a matching caller ID is not
                    // enough.
                    (Address::Phone(n), "lookup") => {
                        !guess.strict && same_number(n.e164(), arg("caller"))
                    }
                    (Address::Phone(n), _) => {
                        arg("last4").len() == 4 && n.last_digits(4) == arg("last4")
                    }
                    // A SIP address has no number to check a caller against.
                    (Address::Sip(_), _) => false,
                };
                match found.filter(matches) {
                    Some(c) => {
                        self.limiter.right(caller, &id).await;
                        ("found", self.status(&c, now).await)
                    }
                    None => {
                        // A caller ID that does not match counts as a miss too, or it would
                        // tell, without limit, whether an ID belongs to a number.
                        self.limiter.wrong(caller, &guess).await;
                        miss()
                    }
                }
            }
            _ => {
                let modification = match self.modification(&id, operation, args, now).await {
                    Ok(m) => m,
                    Err(reason) => return failure(reason, None),
                };
                let actor = Actor::new(caller.channel, caller.caller_id.clone());
                match self.modify(rng, now, &actor, &id, &modification).await {
                    Ok((callback, receipt)) => {
                        // Committed: a customer reached by text message gets one.
                        if let (Some(notifier), Address::Phone(number), Media::Sms) =
                            (&self.notifier, &callback.address, callback.media)
                        {
                            notifier.send(crate::notifier::Message {
                                to: number.e164().to_owned(),
                                text: crate::notifier::text(&callback, receipt.code.as_str()),
                                confirmation_id: callback.confirmation_id.to_string(),
                                receipt: receipt.code.to_string(),
                            });
                        }
                        let mut vars = self.status(&callback, now).await;
                        vars.push(("receipt".into(), Value::Digits(receipt.code.to_string())));
                        ("success", vars)
                    }
                    Err(ModifyError::Refused(refused)) => failure(
                        refused.rejection.reason().as_str(),
                        Some(refused.receipt.code.to_string()),
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "a change from the IVR failed");
                        unavailable(operation)
                    }
                }
            }
        }
    }

    async fn book(
        &self,
        rng: &mut (dyn RngCore + Send),
        now: DateTime<Utc>,
        caller: &Caller,
        args: &BTreeMap<String, String>,
    ) -> (&'static str, Vec<(String, Value)>) {
        let number = arg(args, "number");
        let new = callbacks::NewCallback {
            queue: arg(args, "queue").to_owned(),
            skill: None,
            media: Media::Voice,
            address: format!("+{}", number.trim_start_matches('+')),
            customer_name: None,
            at: RequestedTime::Asap,
            time_zone: None,
            priority: 0,
            context: serde_json::json!({"ivr": {"call_id": caller.call_id}}),
            enqueued_at: Some(caller.arrived),
        };
        match self.book_for(rng, now, caller, new).await {
            Ok(callback) => {
                tracing::info!(callback = %callback.confirmation_id, channel = %caller.channel, queue = %callback.queue, address = %callback.address.masked(), call_id = %caller.call_id, "callback created");
                (
                    "success",
                    vec![(
                        "confirmation_id".into(),
                        Value::Digits(callback.confirmation_id.to_string()),
                    )],
                )
            }
            Err(BookError::AlreadyBooked) => failure("already_booked", None),
            Err(BookError::Limited) => failure("limited", None),
            Err(BookError::Create(callbacks::CreateError::Rejected(rejection))) => {
                failure(rejection.reason().as_str(), None)
            }
            Err(BookError::Create(e)) => {
                tracing::warn!(error = %e, "a callback could not be booked from the IVR");
                failure("store_error", None)
            }
        }
    }

    /// Books a callback for a caller (by phone or chat) within the booking limits. A number
    /// that has an open callback in the queue already keeps that one, in its place; its
    /// confirmation ID is not told, since the booker has not shown the number is theirs.
    pub async fn book_for(
        &self,
        rng: &mut (dyn RngCore + Send),
        now: DateTime<Utc>,
        caller: &Caller,
        new: callbacks::NewCallback,
    ) -> Result<Callback, BookError> {
        let address = Address::parse(new.media, &new.address, &self.callbacks.policy().dialing)
            .map_err(|e| BookError::Create(callbacks::Rejection::from(e).into()))?;
        let booking = match self.limiter.booking(caller, &address, now).await {
            Ok(booking) => booking,
            Err(crate::limits::Refusal::Limited(_)) => return Err(BookError::Limited),
            Err(crate::limits::Refusal::Store(e)) => return Err(BookError::Create(e.into())),
        };
        // A booking answered "already booked" stays counted: that answer tells whether a
        // number has a callback, so it is no cheaper to get than a booking.
        match self
            .callbacks
            .store
            .open_callback_to(&new.queue, address.as_str())
            .await
        {
            Ok(None) => {}
            Ok(Some(_)) => return Err(BookError::AlreadyBooked),
            Err(e) => {
                self.limiter.unbook(booking).await;
                return Err(BookError::Create(e.into()));
            }
        }
        let actor = Actor::new(caller.channel, caller.caller_id.clone());
        let source = match caller.channel {
            Channel::Chat => callbacks::Source::Chat,
            _ => callbacks::Source::Ivr,
        };
        let created = self.callbacks.create(rng, now, &actor, source, new).await;
        if created.is_err() {
            self.limiter.unbook(booking).await;
        }
        created.map_err(BookError::Create)
    }

    /// The modification an operation asks for; a reason when the keys make no sense.
    async fn modification(
        &self,
        id: &ConfirmationId,
        operation: &str,
        args: &BTreeMap<String, String>,
        now: DateTime<Utc>,
    ) -> Result<Modification, &'static str> {
        let arg = |name: &str| arg(args, name);
        Ok(match (operation, arg("action")) {
            ("change", "pause") => Modification::Pause {},
            ("change", "resume") => Modification::Resume {},
            ("change", "cancel") => Modification::Cancel {},
            ("change", "asap") => Modification::Reschedule {
                at: RequestedTime::Asap,
            },
            ("reschedule", _) => {
                let callback = self
                    .callbacks
                    .store
                    .find(id)
                    .await
                    .ok()
                    .flatten()
                    .ok_or("not_found")?;
                let at = local_time(arg("hhmm"), arg("day"), callback.time_zone, now)
                    .ok_or("invalid_input")?;
                Modification::Reschedule {
                    at: RequestedTime::At(at),
                }
            }
            ("change_number", _) => Modification::ChangeAddress {
                address: format!("+{}", arg("number")),
            },
            ("change_media", _) => Modification::ChangeMedia {
                media: match arg("how") {
                    "1" => Media::Voice,
                    "2" => Media::Sms,
                    _ => return Err("invalid_input"),
                },
                address: None,
            },
            ("change_skill", _) => {
                let callback = self
                    .callbacks
                    .store
                    .find(id)
                    .await
                    .ok()
                    .flatten()
                    .ok_or("not_found")?;
                let skills = self
                    .callbacks
                    .policy()
                    .queues
                    .get(&callback.queue)
                    .map(|q| q.skills.clone())
                    .unwrap_or_default();
                let choice: usize = arg("choice").parse().map_err(|_| "invalid_input")?;
                let skill = choice
                    .checked_sub(1)
                    .and_then(|i| skills.get(i))
                    .ok_or("invalid_input")?
                    .clone();
                Modification::ChangeSkill { skill }
            }
            _ => return Err("invalid_input"),
        })
    }
}

/// An operation's argument; empty when absent.
fn arg<'a>(args: &'a BTreeMap<String, String>, name: &str) -> &'a str {
    args.get(name).map(String::as_str).unwrap_or_default()
}

/// A refused change: its reason, and its receipt (none when the keys never made a change to
/// try, so an earlier receipt is not read out again).
fn failure(reason: &str, receipt: Option<String>) -> (&'static str, Vec<(String, Value)>) {
    let vars = vec![
        ("reason".into(), Value::Text(reason.into())),
        ("receipt".into(), Value::Digits(receipt.unwrap_or_default())),
    ];
    ("failure", vars)
}

/// Whether an operation's result is a failed look-up.
pub fn failed(result: &str) -> bool {
    matches!(result, "not_found" | "too_many")
}

fn digits(text: &str) -> String {
    text.chars().filter(char::is_ascii_digit).collect()
}

/// Whether a caller ID is the callback's number: the same digits, allowing for a missing
/// country code (both have at least 7 digits, and one ends with the other).
fn same_number(number: &str, caller: &str) -> bool {
    let (a, c) = (digits(number), digits(caller));
    a.len() >= 7 && c.len() >= 7 && (a.ends_with(&c) || c.ends_with(&a))
}

/// HHMM today (`1`) or tomorrow (`2`) in `zone`.
fn local_time(
    hhmm: &str,
    day: &str,
    zone: chrono_tz::Tz,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    use chrono::{Days, NaiveTime, TimeZone};
    if hhmm.len() != 4 || !hhmm.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let time = NaiveTime::from_hms_opt(hhmm[..2].parse().ok()?, hhmm[2..].parse().ok()?, 0)?;
    let today = now.with_timezone(&zone).date_naive();
    let date = match day {
        "1" => today,
        "2" => today.checked_add_days(Days::new(1))?,
        _ => return None,
    };
    zone.from_local_datetime(&date.and_time(time))
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

/// What an operation answers when the store cannot be reached (or takes too long): look-ups
/// are `unavailable`, changes fail with the reason `store_error`.
pub fn unavailable(operation: &str) -> (&'static str, Vec<(String, Value)>) {
    match operation {
        "lookup" | "verify" => ("unavailable", Vec::new()),
        _ => failure("store_error", None),
    }
}

/// A place in line as the dialplan says it (see [`LINE`]).
pub fn line_vars(estimate: &callbacks::wait::Estimate) -> Vec<(String, Value)> {
    // Whole minutes, rounded up: "about one minute" rather than "about zero".
    let minutes = estimate.wait.map(|w| ((w.num_seconds() + 59) / 60).max(1));
    let mut vars = vec![
        (
            "position".into(),
            Value::Digits(estimate.position.to_string()),
        ),
        (
            "wait".into(),
            Value::Text(match minutes {
                None => "unknown".into(),
                Some(1) => "one".into(),
                Some(_) => "more".into(),
            }),
        ),
    ];
    if let Some(minutes) = minutes {
        vars.push(("wait_minutes".into(), Value::Digits(minutes.to_string())));
    }
    vars
}

/// What a caller can change of the callback an operation names (its `id`), to show what a
/// simulated change did; `None` when it names none.
async fn changeable(
    operations: &Operations,
    args: &BTreeMap<String, String>,
) -> Option<Vec<(&'static str, String)>> {
    let id = ConfirmationId::parse(arg(args, "id")).ok()?;
    let c = operations.callbacks.store.find(&id).await.ok()??;
    Some(vec![
        ("state", c.state.to_string()),
        ("due", c.next_attempt_at.to_rfc3339()),
        ("address", c.address.as_str().to_owned()),
        ("media", c.media.as_str().to_owned()),
        ("skill", c.skill.clone()),
    ])
}

/// `callbackd dialplan simulate`: runs `entry` of the dialplan against the real store with no
/// SIP, as a caller pressing `keys`, and prints what the caller hears, what is run, and what
/// each change changed.
/// The caller presses the next key whenever an entry or a menu takes keys (cutting a prompt
/// short) and otherwise listens to the end; when the keys run out, the caller stays silent,
/// so every timeout comes in turn until the dialplan hangs up.
pub async fn simulate(
    plan: Dialplan,
    entry: &str,
    keys: &str,
    caller_id: &str,
    operations: &Operations,
    rng: &mut (dyn RngCore + Send),
) -> anyhow::Result<Vec<String>> {
    let mut now = Instant::now();
    let vars = BTreeMap::from([("caller_id".to_owned(), Value::Text(caller_id.to_owned()))]);
    let mut session = Session::start(Arc::new(plan), entry, vars, now)
        .ok_or_else(|| anyhow!("the dialplan has no entry `{entry}`"))?;
    let mut caller = Caller {
        channel: Channel::Ivr,
        caller_id: caller_id.to_owned(),
        // As from a trusted trunk: each caller ID a source of its own.
        client: format!("simulator/{caller_id}"),
        source: "simulator".into(),
        call_id: format!("simulate-{:016x}", rng.next_u64()),
        failures: 0,
        arrived: Utc::now(),
    };
    let mut keys = keys.chars().filter(|c| !c.is_whitespace()).peekable();
    let mut transcript = Vec::new();
    let mut playing = None;
    for _ in 0..10_000 {
        while let Some(action) = session.poll_action() {
            match action {
                Action::Play { id, clips, .. } => {
                    let words: Vec<String> = clips
                        .iter()
                        .map(|c| match c {
                            Clip::Prompt(p) => p.clone(),
                            Clip::Silence(d) => format!("({} ms silence)", d.as_millis()),
                        })
                        .collect();
                    transcript.push(format!("hears: {}", words.join(" ")));
                    playing = Some(id);
                }
                Action::Run { operation, args } => {
                    let before = changeable(operations, &args).await;
                    let (result, vars) = operations
                        .run(rng, Utc::now(), &caller, &operation, &args)
                        .await;
                    caller.failures += u32::from(failed(result));
                    let shown: Vec<String> = vars
                        .iter()
                        .map(|(k, v)| format!("{k}={}", v.text()))
                        .collect();
                    transcript.push(format!(
                        "runs: {operation} {} -> {result} {}",
                        args.iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(" "),
                        shown.join(" ")
                    ));
                    if let (Some(before), "success") = (before, result) {
                        let after = changeable(operations, &args).await.unwrap_or_default();
                        let changed: Vec<String> = before
                            .iter()
                            .zip(&after)
                            .filter(|(b, a)| b != a)
                            .map(|((field, b), (_, a))| format!("{field} {b} -> {a}"))
                            .collect();
                        let changed = if changed.is_empty() {
                            "nothing".to_owned()
                        } else {
                            changed.join(", ")
                        };
                        transcript.push(format!("changed: {changed}"));
                    }
                    session.handle_result(now, result, vars);
                }
                Action::Transfer { queue, offer } => {
                    // Holding for an agent: a 1 next takes the offer, else the caller holds on.
                    transcript.push(format!("holds in {queue}"));
                    if offer && keys.next_if_eq(&'1').is_some() {
                        transcript.push("presses: 1".into());
                        session.take_offer(now);
                    } else {
                        return Ok(transcript);
                    }
                }
                Action::HangUp => transcript.push("hangs up".into()),
            }
        }
        if session.is_over() {
            return Ok(transcript);
        }
        if session.wants_keys() {
            if let Some(key) = keys.next() {
                match transcript.last_mut() {
                    Some(line) if line.starts_with("presses: ") => line.push(key),
                    _ => transcript.push(format!("presses: {key}")),
                }
                session.handle_key(now, key);
                continue;
            }
        }
        if let Some(id) = playing.take() {
            session.handle_played(now, id);
            continue;
        }
        match session.poll_timeout() {
            Some(at) => {
                now = at.max(now) + Duration::from_millis(1);
                transcript.push("(silence)".into());
                session.handle_timeout(now);
            }
            None => return Ok(transcript),
        }
    }
    Err(anyhow!("the simulation did not end after 10,000 steps"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_id_matches_only_a_number_of_seven_digits_or_more() {
        assert!(same_number("+12125550100", "+12125550100"));
        assert!(
            same_number("+12125550100", "2125550100"),
            "without the country code"
        );
        assert!(
            !same_number("+12125550100", "0100"),
            "the last digits are the secret"
        );
        assert!(!same_number("+12125550100", "+13125550100"));
        assert!(!same_number("+4930", "+4930"), "too short to say");
        assert!(!same_number("+12125550100", "anonymous"));
    }

    #[test]
    fn a_time_of_day_is_four_digits_today_or_tomorrow_in_the_zone() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-03-07T23:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let ny = chrono_tz::America::New_York;
        let today = local_time("1430", "1", ny, now).unwrap();
        assert_eq!(today.to_rfc3339(), "2026-03-07T19:30:00+00:00");
        // Tomorrow is the day the clocks go forward: 14:30 is EDT there.
        let tomorrow = local_time("1430", "2", ny, now).unwrap();
        assert_eq!(tomorrow.to_rfc3339(), "2026-03-08T18:30:00+00:00");
        assert!(local_time("2460", "1", ny, now).is_none());
        assert!(local_time("1430", "3", ny, now).is_none());
        assert!(
            local_time("\u{ff11}\u{ff12}\u{ff13}", "1", ny, now).is_none(),
            "non-ASCII digits"
        );
    }
}
