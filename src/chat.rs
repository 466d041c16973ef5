//! The chat's runtime: conversations (the `chat` crate's `Session`) kept in memory for as long as
//! they are used, each pumped with what it asks for: the wait from the queues, a callback
//! booked in the store, and callbacks looked up (through the IVR's verification, so the same
//! limits on failed look-ups apply) and changed (channel `chat` in the history).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
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

struct Entry {
    session: Session,
    last: Instant,
    /// Failed look-ups in this conversation.
    failures: u32,
    /// Messages taken, and their characters.
    turns: usize,
    chars: usize,
}

pub struct Chats {
    bots: Arc<Bots>,
    operations: Arc<Operations>,
    /// A conversation unused this long is forgotten.
    idle: Duration,
    /// Conversations one address may hold open.
    per_address: usize,
    /// Messages per address, over all its conversations.
    messages: governor::DefaultKeyedRateLimiter<String>,
    sessions: Mutex<HashMap<Uuid, Held>>,
}

/// A conversation kept, with who opened it (`limits::client_of`) for the quota per address,
/// readable while a message of it is being answered.
struct Held {
    client: String,
    entry: Arc<tokio::sync::Mutex<Entry>>,
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
            bots: Arc::new(bots),
            operations,
            idle: config.session_idle.to_std().unwrap_or_default(),
            per_address: config.sessions_per_address,
            messages: governor::RateLimiter::keyed(governor::Quota::per_minute(per_minute)),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// How long a conversation lasts unused.
    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// Conversations open (used within their idle time, or answering now).
    pub fn open(&self) -> usize {
        let now = Instant::now();
        self.sessions()
            .values()
            .filter(|held| {
                held.entry
                    .try_lock()
                    .map_or(true, |e| now - e.last < self.idle)
            })
            .count()
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Held>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new conversation for `client`: its ID and the greeting.
    pub fn start(&self, client: SocketAddr) -> Result<(Uuid, Vec<Reply>), Refused> {
        let now = Instant::now();
        let key = crate::limits::client_of(client.ip());
        let mut sessions = self.sessions();
        sessions.retain(|_, held| {
            held.entry
                .try_lock()
                .map_or(true, |e| now - e.last < self.idle)
        });
        self.messages.retain_recent();
        if sessions.len() >= MAX_SESSIONS {
            return Err(Refused::Full);
        }
        let theirs = sessions.values().filter(|held| held.client == key).count();
        if theirs >= self.per_address {
            return Err(Refused::TooManyFromAddress);
        }
        let (session, turn) = Session::new(self.bots.clone());
        let id = Uuid::from_u128(rand::random());
        let entry = Entry {
            session,
            last: now,
            failures: 0,
            turns: 0,
            chars: 0,
        };
        let entry = Arc::new(tokio::sync::Mutex::new(entry));
        sessions.insert(id, Held { client: key, entry });
        metrics::counter!("callbackd_chat_sessions_started_total").increment(1);
        Ok((id, turn.replies))
    }

    /// A customer's message to conversation `id` from `client`: the bot's replies.
    pub async fn message(
        &self,
        id: Uuid,
        text: &str,
        client: SocketAddr,
    ) -> Result<Vec<Reply>, Refused> {
        let entry = self
            .sessions()
            .get(&id)
            .map(|held| held.entry.clone())
            .ok_or(Refused::Gone)?;
        // Counted only for a conversation that exists, so the limiter keeps no key for
        // addresses that never opened one.
        if self
            .messages
            .check_key(&crate::limits::client_of(client.ip()))
            .is_err()
        {
            return Err(Refused::TooFast);
        }
        let mut entry = entry.lock().await;
        let now = Instant::now();
        if now - entry.last >= self.idle {
            self.sessions().remove(&id);
            return Err(Refused::Gone);
        }
        entry.turns += 1;
        entry.chars += text.chars().count();
        if entry.turns > MAX_TURNS || entry.chars > MAX_CONVERSATION_CHARS {
            return Err(Refused::TooLong);
        }
        entry.last = now;
        let mut turn = entry.session.message(text);
        let mut replies = std::mem::take(&mut turn.replies);
        // Each request is answered before the next message: a conversation asks one thing
        // at a time, and nothing it asks loops.
        while let Some(request) = turn.request.take() {
            let answer = self.fulfil(id, &mut entry, request, client).await;
            turn = entry.session.answer(answer);
            replies.append(&mut turn.replies);
        }
        Ok(replies)
    }

    async fn fulfil(
        &self,
        id: Uuid,
        entry: &mut Entry,
        request: Request,
        client: SocketAddr,
    ) -> Answer {
        let ops = &self.operations;
        let now = Utc::now();
        match request {
            Request::Estimate(route) => {
                let Some(queue) = ops.callbacks.policy.queues.get(&route.queue) else {
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
                    .policy
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
                    .book_for(&mut rng, now, &caller(id, entry, client, now), new)
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
                let caller = caller(id, entry, client, now);
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
                        entry.failures += 1;
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
fn caller(id: Uuid, entry: &Entry, client: SocketAddr, now: DateTime<Utc>) -> Caller {
    Caller {
        channel: Channel::Chat,
        caller_id: format!("chat:{}", client.ip()),
        client: crate::limits::client_of(client.ip()),
        source: client.to_string(),
        call_id: id.to_string(),
        failures: entry.failures,
        arrived: now,
    }
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
