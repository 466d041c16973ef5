//! The chat's runtime: conversations (the `chat` crate's `Session`) kept in the store for as
//! long as they are used, so any node answers any of them, each pumped with what it asks for: the wait from the queues, a callback
//! booked in the store, and callbacks looked up (through the IVR's verification, so the same
//! limits on failed look-ups apply) and changed (channel `chat` in the history).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::chat::bots::{Bots, Operation};
use ::chat::session::{Answer, Change, Proof, Reply, Request, Session, When};
use anyhow::{anyhow, Context};
use callbacks::{
    Actor, CallbackStore, Channel, ConfirmationId, Media, Modification, ModifyError, Queue,
    Rejection, RequestedTime,
};
use chrono::{DateTime, Days, NaiveTime, TimeZone, Utc};
use ivr::session::Value;
use rand::{rngs::StdRng, SeedableRng};
use uuid::Uuid;

use crate::ivr::{BookError, Caller, Operations};

/// Conversations kept at once, at most: past it a new one is refused until old ones expire.
pub const MAX_SESSIONS: usize = 10_000;
/// The longest message taken, in characters.
pub const MAX_MESSAGE: usize = 1000;
/// Messages one conversation takes, and characters in all: past them the customer starts a
/// new one, so no conversation grows without bound.
pub const MAX_TURNS: usize = 200;
pub const MAX_CONVERSATION_CHARS: usize = 64 * 1024;

/// `callbackd chat …`
#[derive(Debug, clap::Subcommand)]
pub enum ChatCommand {
    /// Check a chat bots file as start-up would (intents, bots, queues, skills); exit 1 with
    /// every problem and its line when it is wrong.
    Check { file: std::path::PathBuf },
}

pub fn command(config: &crate::config::Config, command: ChatCommand) -> anyhow::Result<()> {
    match command {
        ChatCommand::Check { file } => {
            let bots = load(&file, &config.queues)?;
            println!(
                "{}: ok; intents: {}; bots: {}",
                file.display(),
                bots.intents.keys().cloned().collect::<Vec<_>>().join(", "),
                bots.bots.keys().cloned().collect::<Vec<_>>().join(", ")
            );
            Ok(())
        }
    }
}

/// Loads and checks the bots file against the configured queues.
pub fn load(path: &Path, queues: &BTreeMap<String, Queue>) -> anyhow::Result<Bots> {
    let source =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let skills = queues
        .iter()
        .map(|(name, q)| (name.clone(), q.skills.clone()))
        .collect();
    Bots::load(&path.display().to_string(), &source, &skills).map_err(|problems| {
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        anyhow!("the chat bots are wrong:\n{}", lines.join("\n"))
    })
}

/// How long a node answering a message holds its conversation, at most: past it (a node that
/// died answering), another node may answer the next message.
const HOLD: chrono::Duration = chrono::Duration::seconds(30);
/// How long a message waits for the one before it in the same conversation to be answered.
const WAIT_FOR_TURN: Duration = Duration::from_secs(5);

/// The chat's conversations, kept in the store between messages, so that any node answers any
/// of them. The limits on conversations count them in the store, for all nodes; messages per
/// address are counted by each node.
pub struct Chats {
    /// Replaced by a reload; a conversation answers each message with the bots of then.
    bots: arc_swap::ArcSwap<Bots>,
    operations: Arc<Operations>,
    /// A conversation unused this long is forgotten.
    idle: chrono::Duration,
    /// Conversations one address may hold open.
    per_address: usize,
    /// Messages per address, over all its conversations.
    messages: governor::DefaultKeyedRateLimiter<String>,
}

/// Why a conversation could not start, or a message was not taken.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("as many conversations are open as there may be")]
    Full,
    #[error("too many conversations are open from this address")]
    TooManyFromAddress,
    #[error("too many messages from this address; wait a minute")]
    TooFast,
    #[error("this conversation is as long as one may be; start a new one")]
    TooLong,
    #[error("there is no such conversation (or it expired)")]
    Gone,
    #[error("the message before this one is still being answered; send this one again")]
    Busy,
    #[error("conversations cannot be kept now; try again later")]
    Store(#[from] callbacks::StoreError),
}

impl Chats {
    pub fn new(
        bots: Bots,
        operations: Arc<Operations>,
        config: &crate::config::ChatConfig,
    ) -> Chats {
        let per_minute = std::num::NonZeroU32::new(config.messages_per_minute)
            .unwrap_or(std::num::NonZeroU32::MIN);
        Chats {
            bots: arc_swap::ArcSwap::from_pointee(bots),
            operations,
            idle: config.session_idle,
            per_address: config.sessions_per_address,
            messages: governor::RateLimiter::keyed(governor::Quota::per_minute(per_minute)),
        }
    }

    /// Puts reloaded bots in place for the messages answered from now on.
    pub fn set_bots(&self, bots: Bots) {
        self.bots.store(Arc::new(bots));
    }

    /// How long a conversation lasts unused.
    pub fn idle(&self) -> chrono::Duration {
        self.idle
    }

    /// Conversations open, on every node (used within their idle time).
    pub async fn open(&self) -> Result<u64, Refused> {
        let (all, _) = self
            .operations
            .callbacks
            .store
            .conversations(Utc::now() - self.idle, "")
            .await?;
        Ok(all)
    }

    /// A new conversation for `client`: its ID and the greeting.
    pub async fn start(&self, client: SocketAddr) -> Result<(Uuid, Vec<Reply>), Refused> {
        let now = Utc::now();
        let key = crate::limits::client_of(client.ip());
        let store = &self.operations.callbacks.store;
        let (all, theirs) = store.conversations(now - self.idle, &key).await?;
        self.messages.retain_recent();
        if all >= MAX_SESSIONS as u64 {
            return Err(Refused::Full);
        }
        if theirs >= self.per_address as u64 {
            return Err(Refused::TooManyFromAddress);
        }
        let (session, turn) = Session::new(self.bots.load_full());
        let id = Uuid::from_u128(rand::random());
        store
            .insert_conversation(&store::Conversation {
                id,
                client: key,
                memory: memory_json(&session),
                failures: 0,
                turns: 0,
                chars: 0,
                last_at: now,
            })
            .await?;
        metrics::counter!("callbackd_chat_sessions_started_total").increment(1);
        Ok((id, turn.replies))
    }

    /// A customer's message to conversation `id` from `client`: the bot's replies. The
    /// conversation is taken from the store (waiting for a message before it to be answered,
    /// on this node or another) and put back with what it now remembers.
    pub async fn message(
        &self,
        id: Uuid,
        text: &str,
        client: SocketAddr,
    ) -> Result<Vec<Reply>, Refused> {
        let store = &self.operations.callbacks.store;
        let waited = Instant::now();
        let (mut conversation, now) = loop {
            let now = Utc::now();
            match store
                .take_conversation(id, now - self.idle, now, now + HOLD)
                .await?
            {
                store::Taken::Yours(conversation) => break (conversation, now),
                store::Taken::Gone => return Err(Refused::Gone),
                store::Taken::Busy if waited.elapsed() < WAIT_FOR_TURN => {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                store::Taken::Busy => return Err(Refused::Busy),
            }
        };
        let answered = self.answer(&mut conversation, now, text, client).await;
        if answered.is_ok() {
            conversation.last_at = now;
        }
        // Put back even when refused, to let it go and to keep its counts.
        if let Err(e) = store.put_conversation(&conversation).await {
            // The replies still go to the customer (they may carry a confirmation number);
            // the next message finds the conversation as it was before this one.
            tracing::warn!(error = %e, conversation = %id, "cannot keep the chat conversation");
        }
        answered
    }

    async fn answer(
        &self,
        conversation: &mut store::Conversation,
        now: DateTime<Utc>,
        text: &str,
        client: SocketAddr,
    ) -> Result<Vec<Reply>, Refused> {
        // Counted only for a conversation that exists, so the limiter keeps no key for
        // addresses that never opened one.
        if self
            .messages
            .check_key(&crate::limits::client_of(client.ip()))
            .is_err()
        {
            return Err(Refused::TooFast);
        }
        conversation.turns = conversation.turns.saturating_add(1);
        conversation.chars = conversation
            .chars
            .saturating_add(u32::try_from(text.chars().count()).unwrap_or(u32::MAX));
        if conversation.turns as usize > MAX_TURNS
            || conversation.chars as usize > MAX_CONVERSATION_CHARS
        {
            return Err(Refused::TooLong);
        }
        let memory = match serde_json::from_str(&conversation.memory) {
            Ok(memory) => memory,
            Err(e) => {
                tracing::warn!(error = %e, conversation = %conversation.id, "a chat conversation kept in the store cannot be read; it is over");
                return Err(Refused::Gone);
            }
        };
        let mut session = Session::resume(self.bots.load_full(), memory);
        let mut turn = session.message(text);
        let mut replies = std::mem::take(&mut turn.replies);
        // Each request is answered before the next message: a conversation asks one thing
        // at a time, and nothing it asks loops.
        while let Some(request) = turn.request.take() {
            let answer = self
                .fulfil(
                    conversation.id,
                    &mut conversation.failures,
                    request,
                    client,
                    now,
                )
                .await;
            turn = session.answer(answer);
            replies.append(&mut turn.replies);
        }
        conversation.memory = memory_json(&session);
        Ok(replies)
    }

    async fn fulfil(
        &self,
        id: Uuid,
        failures: &mut u32,
        request: Request,
        client: SocketAddr,
        now: DateTime<Utc>,
    ) -> Answer {
        let ops = &self.operations;
        match request {
            Request::Estimate(route) => {
                let policy = ops.callbacks.policy();
                let Some(queue) = policy.queues.get(&route.queue) else {
                    return no_estimate();
                };
                let next_opening = (!queue.calling_window.contains(now, queue.time_zone))
                    .then(|| queue.calling_window.next_open(now, queue.time_zone))
                    .flatten()
                    .map(|at| when_words(at, queue.time_zone, now));
                match crate::queues::line(
                    &ops.callbacks.store,
                    queue,
                    &route.skill,
                    ops.wrap_up,
                    now,
                )
                .await
                {
                    Ok(line) => Answer::Estimate {
                        wait_minutes: line.new_arrival.wait.map(|w| {
                            u32::try_from((w.num_seconds() + 59) / 60).unwrap_or(u32::MAX)
                        }),
                        agents_ready: line.agents_ready,
                        next_opening,
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot estimate the wait for the chat");
                        Answer::Estimate {
                            wait_minutes: None,
                            agents_ready: 0,
                            next_opening,
                        }
                    }
                }
            }
            Request::Book {
                route,
                number,
                when,
                transcript,
            } => {
                let zone = ops
                    .callbacks
                    .policy()
                    .queues
                    .get(&route.queue)
                    .map_or(chrono_tz::UTC, |q| q.time_zone);
                let at = match when {
                    When::Asap => RequestedTime::Asap,
                    When::At { .. } => match local(when, zone, now) {
                        Some(at) => RequestedTime::At(at),
                        None => return Answer::TimeRefused("that time does not exist".into()),
                    },
                };
                let new = callbacks::NewCallback {
                    queue: route.queue,
                    skill: Some(route.skill),
                    media: Media::Voice,
                    address: number,
                    customer_name: None,
                    at,
                    // A time of day is read in the queue's zone, and kept in it; otherwise the
                    // number's country tells the zone.
                    time_zone: matches!(when, When::At { .. }).then_some(zone),
                    priority: 0,
                    context: serde_json::json!({"chat": {"session": id, "transcript": transcript}}),
                    enqueued_at: None,
                };
                let mut rng = StdRng::from_entropy();
                match ops
                    .book_for(&mut rng, now, &caller(id, *failures, client, now), new)
                    .await
                {
                    Ok(callback) => Answer::Booked {
                        confirmation_id: callback.confirmation_id.to_string(),
                    },
                    Err(BookError::Create(callbacks::CreateError::Rejected(
                        rejection @ (Rejection::OutsideCallingWindow
                        | Rejection::InThePast
                        | Rejection::BeyondHorizon { .. }),
                    ))) => Answer::TimeRefused(rejection.to_string()),
                    Err(BookError::Create(callbacks::CreateError::Rejected(rejection))) => {
                        Answer::Refused(reason_words(rejection.reason().as_str()).into())
                    }
                    Err(e @ (BookError::AlreadyBooked | BookError::Limited)) => Answer::Refused(
                        reason_words(match e {
                            BookError::AlreadyBooked => "already_booked",
                            _ => "limited",
                        })
                        .into(),
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "a callback could not be booked from the chat");
                        Answer::Refused(reason_words("store_error").into())
                    }
                }
            }
            Request::Run {
                operation,
                confirmation_id,
                proof,
                change,
            } => {
                let caller = caller(id, *failures, client, now);
                let mut rng = StdRng::from_entropy();
                let refused = |reason: &str| Answer::Refused(reason_words(reason).into());
                let Ok(cid) = ConfirmationId::parse(&confirmation_id) else {
                    return refused("not_found");
                };
                // Shown to be theirs: by the last four digits (a look-up like the IVR's, whose
                // failures count the same), or booked in this very conversation.
                if let Proof::LastFour(last4) = &proof {
                    let args = BTreeMap::from([
                        ("id".to_owned(), confirmation_id.clone()),
                        ("last4".to_owned(), last4.clone()),
                    ]);
                    let (result, _) = ops.run(&mut rng, now, &caller, "verify", &args).await;
                    if crate::ivr::failed(result) {
                        *failures += 1;
                    }
                    if result != "found" {
                        return refused("not_found");
                    }
                }
                let callback = match ops.callbacks.store.find(&cid).await {
                    Ok(Some(c)) => c,
                    Ok(None) => return refused("not_found"),
                    Err(e) => {
                        tracing::warn!(error = %e, "the chat cannot look a callback up");
                        return refused("store_error");
                    }
                };
                let modification = match (operation, change) {
                    (Operation::Status, _) => {
                        let vars = ops.status(&callback, now).await;
                        return Answer::Status(status_words(&confirmation_id, &vars));
                    }
                    (Operation::Pause, _) => Modification::Pause {},
                    (Operation::Resume, _) => Modification::Resume {},
                    (Operation::Cancel, _) => Modification::Cancel {},
                    (Operation::Reschedule, Some(Change::At(When::Asap))) => {
                        Modification::Reschedule {
                            at: RequestedTime::Asap,
                        }
                    }
                    (Operation::Reschedule, Some(Change::At(when))) => {
                        match local(when, callback.time_zone, now) {
                            Some(at) => Modification::Reschedule {
                                at: RequestedTime::At(at),
                            },
                            None => return refused("invalid_input"),
                        }
                    }
                    (Operation::ChangeNumber, Some(Change::Number(address))) => {
                        Modification::ChangeAddress { address }
                    }
                    (Operation::ChangeMedia, Some(Change::Media(media))) => {
                        Modification::ChangeMedia {
                            media,
                            address: None,
                        }
                    }
                    (Operation::ChangeSkill, Some(Change::Skill(skill))) => {
                        Modification::ChangeSkill { skill }
                    }
                    _ => return refused("invalid_input"),
                };
                let actor = Actor::new(Channel::Chat, caller.caller_id.clone());
                match ops.modify(&mut rng, now, &actor, &cid, &modification).await {
                    Ok((_, receipt)) => Answer::Changed {
                        receipt: receipt.code.to_string(),
                    },
                    Err(ModifyError::Refused(r)) => Answer::Refused(format!(
                        "{} (reference code {})",
                        reason_words(r.rejection.reason().as_str()),
                        r.receipt.code
                    )),
                    Err(e) => {
                        tracing::warn!(error = %e, "a change from the chat failed");
                        refused("store_error")
                    }
                }
            }
        }
    }
}

/// The chat's customer as the IVR's operations and the limiter see them: counted by their
/// address (an IPv6 /64), the conversation standing for the call.
fn caller(id: Uuid, failures: u32, client: SocketAddr, now: DateTime<Utc>) -> Caller {
    Caller {
        channel: Channel::Chat,
        caller_id: format!("chat:{}", client.ip()),
        client: crate::limits::client_of(client.ip()),
        source: client.to_string(),
        call_id: id.to_string(),
        failures,
        arrived: now,
    }
}

/// What a conversation remembers, as the store keeps it.
fn memory_json(session: &Session) -> String {
    serde_json::to_string(session.memory()).expect("a chat's memory serializes")
}

fn no_estimate() -> Answer {
    Answer::Estimate {
        wait_minutes: None,
        agents_ready: 0,
        next_opening: None,
    }
}

/// HH:MM today, or tomorrow when asked or when today's has passed, in `zone`.
fn local(when: When, zone: chrono_tz::Tz, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let When::At {
        hour,
        minute,
        tomorrow,
    } = when
    else {
        return Some(now);
    };
    let time = NaiveTime::from_hms_opt(hour, minute, 0)?;
    let today = now.with_timezone(&zone).date_naive();
    let on = |date: chrono::NaiveDate| {
        zone.from_local_datetime(&date.and_time(time))
            .earliest()
            .map(|t| t.with_timezone(&Utc))
    };
    let tomorrow_at = || on(today.checked_add_days(Days::new(1))?);
    if tomorrow {
        return tomorrow_at();
    }
    match on(today) {
        Some(at) if at > now => Some(at),
        _ => tomorrow_at(),
    }
}

/// "9:00 today", "9:00 tomorrow" or "Monday 24 November at 9:00", in `zone`.
fn when_words(at: DateTime<Utc>, zone: chrono_tz::Tz, now: DateTime<Utc>) -> String {
    let local = at.with_timezone(&zone);
    let today = now.with_timezone(&zone).date_naive();
    let days = (local.date_naive() - today).num_days();
    match days {
        0 => format!("{} today", local.format("%-H:%M")),
        1 => format!("{} tomorrow", local.format("%-H:%M")),
        _ => local.format("%A %-d %B at %-H:%M").to_string(),
    }
}

/// A failure reason (the IVR's) in words for the chat.
fn reason_words(reason: &str) -> &'static str {
    match reason {
        "not_found" | "too_many" | "verification_failed" => {
            "we could not find a callback matching those details"
        }
        "illegal_in_state" => "the callback cannot be changed that way in its current state",
        "outside_calling_window" => "that time is outside the hours we call",
        "blocked_by_policy" => "we are not allowed to call that number",
        "invalid_input" => "that is not a number, time or department we can use",
        "conflict" => "it was being changed at the same moment; please try again",
        "already_booked" => {
            "a callback to this number is booked already; it keeps its place in line"
        }
        _ => "we cannot do that right now; please try again later",
    }
}

/// What a callback's status variables (the IVR's `status`) say, in words.
fn status_words(id: &str, vars: &[(String, Value)]) -> String {
    let get = |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let text = |name: &str| get(name).map(Value::text).unwrap_or_default();
    match text("state").as_str() {
        "paused" => format!("Your callback {id} is paused: we will not call until you resume it."),
        "queued" => {
            let wait = match get("wait_minutes") {
                Some(m) => format!(
                    ", and an agent should call you in about {} minutes",
                    m.text()
                ),
                None => String::new(),
            };
            format!(
                "Your callback {id} is number {} in line{wait}.",
                text("position")
            )
        }
        "soon" => format!("Your callback {id} is due now: an agent will call you shortly."),
        "scheduled" => match get("scheduled_at") {
            Some(Value::Time(at)) => format!(
                "Your callback {id} is scheduled for {}.",
                at.format("%A %-d %B at %-H:%M")
            ),
            _ => format!("Your callback {id} is scheduled."),
        },
        "completed" => format!("Your callback {id} has been made."),
        "cancelled" => format!("Your callback {id} was cancelled."),
        _ => format!("Your callback {id} is closed: we could not reach you."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_today_that_has_passed_is_tomorrow() {
        let zone = chrono_tz::America::New_York;
        // 15:00 in New York.
        let now = Utc.with_ymd_and_hms(2026, 11, 23, 20, 0, 0).unwrap();
        let at = |hour, tomorrow| {
            local(
                When::At {
                    hour,
                    minute: 30,
                    tomorrow,
                },
                zone,
                now,
            )
            .unwrap()
            .with_timezone(&zone)
            .format("%d %H:%M")
            .to_string()
        };
        assert_eq!(at(16, false), "23 16:30");
        assert_eq!(at(9, false), "24 09:30");
        assert_eq!(at(16, true), "24 16:30");
        assert_eq!(
            when_words(now + chrono::Duration::hours(18), zone, now),
            "9:00 tomorrow"
        );
    }
}
