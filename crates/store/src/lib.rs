//! The callback store: [`callbacks::CallbackStore`] on PostgreSQL (production, many nodes) and
//! SQLite (the embedded default, one node).
//!
//! Both backends run the same SQL (SQLite accepts PostgreSQL's `$1` placeholders) from one
//! source file, `sql.rs`, compiled once per driver; only connecting, pragmas and the schema's
//! column types differ. Migrations are embedded and run when a store is opened.

use callbacks::{
    Agent, AgentEvent, Attempt, AttemptOutcome, Callback, CallbackStore, ConfirmationId, Event,
    Filter, State, StoreError,
};
use chrono::{DateTime, Utc};
use uuid::Uuid;

#[cfg(test)]
mod plans;
mod postgres;
mod sqlite;
pub mod testing;

/// Calls the same method on whichever backend the store is, and times it for the metrics.
macro_rules! dispatch {
    ($self:ident, $s:ident => $s2:ident.$operation:ident($($arg:expr),*)) => {{
        let started = std::time::Instant::now();
        let result = match $self {
            Store::Postgres($s) => $s2.$operation($($arg),*).await,
            Store::Sqlite($s) => $s2.$operation($($arg),*).await,
        };
        observe(stringify!($operation), started, result.is_ok());
        result
    }};
}

/// Counts one store operation for the metrics: how long it took, and whether it failed.
fn observe(operation: &'static str, started: std::time::Instant, ok: bool) {
    metrics::histogram!("callbackd_store_operation_seconds", "operation" => operation)
        .record(started.elapsed());
    // Counted at zero too, so the series is there before its first error.
    metrics::counter!("callbackd_store_errors_total", "operation" => operation)
        .increment(u64::from(!ok));
}

/// A pool of one database's connections, with the callback schema migrated.
#[derive(Debug)]
pub struct SqlStore<DB: sqlx::Database> {
    pool: sqlx::Pool<DB>,
    /// SQLite's one connection for writing: SQLite lets one writer in at a time, and writers
    /// that queue for this connection are served in turn the moment it is free, where writers
    /// on the pool's many would meet a locked database and retry after SQLite's growing
    /// sleeps (1, 2, 5, 10 ms and on). `None`: writes go through `pool` (PostgreSQL, whose
    /// writers lock rows, not the database; an in-memory SQLite, which is one connection).
    writer: Option<sqlx::Pool<DB>>,
}

impl<DB: sqlx::Database> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            writer: self.writer.clone(),
        }
    }
}

pub type PgStore = SqlStore<sqlx::Postgres>;
pub type SqliteStore = SqlStore<sqlx::Sqlite>;

impl<DB: sqlx::Database> SqlStore<DB> {
    pub fn pool(&self) -> &sqlx::Pool<DB> {
        &self.pool
    }

    /// The pool that writes go through.
    fn writer(&self) -> &sqlx::Pool<DB> {
        self.writer.as_ref().unwrap_or(&self.pool)
    }

    /// Connections open to the database, and how many of them are idle.
    pub fn connections(&self) -> (u32, usize) {
        let pools = std::iter::once(&self.pool).chain(&self.writer);
        pools.fold((0, 0), |(open, idle), p| {
            (open + p.size(), idle + p.num_idle())
        })
    }

    pub async fn close(&self) {
        self.pool.close().await;
        if let Some(writer) = &self.writer {
            writer.close().await;
        }
    }
}

/// Where an agent's phone registered with callbackd's registrar, kept across restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub user: String,
    pub contact: String,
    /// `ip:port` the REGISTER came from.
    pub source: String,
    /// `udp` or `tcp`.
    pub transport: String,
    pub expires_at: DateTime<Utc>,
}

/// What the limiter counts: a guess at a callback's confirmation ID (kept when it was wrong)
/// or a booking from a caller or the chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityEvent {
    pub at: DateTime<Utc>,
    /// `guess` or `booking`.
    pub kind: String,
    /// Who is counted: an address, or a trusted trunk and the identity it asserts.
    pub client: String,
    /// What was aimed at: the confirmation ID guessed, the number booked.
    pub subject: String,
    pub caller_id: String,
    /// `ip:port` the call or the request came from.
    pub source: String,
    /// The call (or chat conversation) it happened in.
    pub call_id: String,
}

/// Where the counts of [`Store::reserve`] start.
pub struct Since {
    pub client: DateTime<Utc>,
    pub subject: DateTime<Utc>,
    pub all: DateTime<Utc>,
}

/// A reserved event and the counts it was checked against: its client's and its subject's
/// events, itself and those reserved but not yet settled included (so racing attempts cannot
/// pass a limit together), and everyone's events settled as failures (see `Store::settle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    pub id: i64,
    pub client: u64,
    pub subject: u64,
    pub all: u64,
}

/// How an attempt ended, written with the callback's last step of it.
pub struct Finish {
    /// The attempt's row (none when the attempt left no open row to close).
    pub attempt: Option<Uuid>,
    pub outcome: AttemptOutcome,
    pub sip_status: Option<u16>,
    pub at: DateTime<Utc>,
}

/// A change another node (or this one) made, heard through PostgreSQL's LISTEN/NOTIFY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Callback(Uuid),
    Agent(String),
}

/// Hears the changes every node makes to callbacks and agents (PostgreSQL only).
pub struct Listener(sqlx::postgres::PgListener);

impl Listener {
    /// The next change. A lost connection is made again; what changed meanwhile is not
    /// heard, so listeners also look again now and then.
    pub async fn next(&mut self) -> Result<Change, StoreError> {
        loop {
            let notice = self.0.recv().await.map_err(db_error)?;
            match notice.channel() {
                "callbackd_callbacks" => {
                    if let Ok(id) = notice.payload().parse() {
                        return Ok(Change::Callback(id));
                    }
                }
                "callbackd_agents" => return Ok(Change::Agent(notice.payload().to_owned())),
                _ => {}
            }
        }
    }
}

/// A caller holding on the line for an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub id: Uuid,
    /// The node whose call it is: only that node can connect it.
    pub node: String,
    pub queue: String,
    pub skill: String,
    pub priority: i32,
    /// When the caller called: their place in line.
    pub enqueued_at: DateTime<Utc>,
    pub caller_id: String,
}

/// A place in a skill's line: callbacks and holding callers are served by priority, then by
/// the time each entered the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub priority: i32,
    pub enqueued_at: DateTime<Utc>,
    pub id: Uuid,
}

impl Place {
    pub fn of(cb: &Callback) -> Place {
        Place {
            priority: cb.priority,
            enqueued_at: cb.enqueued_at,
            id: cb.id,
        }
    }

    /// Sorts first what is served first.
    fn key(&self) -> (std::cmp::Reverse<i32>, DateTime<Utc>, Uuid) {
        (std::cmp::Reverse(self.priority), self.enqueued_at, self.id)
    }
}

impl Hold {
    pub fn place(&self) -> Place {
        Place {
            priority: self.priority,
            enqueued_at: self.enqueued_at,
            id: self.id,
        }
    }
}

/// A chat conversation, kept between its messages so that any node can answer the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    pub id: Uuid,
    /// Who opened it, as the limits count addresses.
    pub client: String,
    /// What it remembers (the chat's memory, as JSON).
    pub memory: String,
    /// Failed look-ups in it.
    pub failures: u32,
    /// Messages taken, and their characters.
    pub turns: u32,
    pub chars: u32,
    pub last_at: DateTime<Utc>,
}

/// What taking a conversation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// It is held for this message until it is put back.
    Yours(Conversation),
    /// Another message of it is being answered.
    Busy,
    /// There is no such conversation, or it has been idle too long.
    Gone,
}

/// One call's record, written once it has ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CallRecord {
    pub id: Uuid,
    /// The SIP Call-ID.
    pub call_id: String,
    /// The node that had the call.
    pub node: String,
    /// `inbound` or `outbound`.
    pub direction: String,
    /// The caller's user part, and the number dialled (inbound) or called (outbound).
    pub from: String,
    pub to: String,
    /// The dialplan entry an inbound call started at.
    pub entry: Option<String>,
    /// The dial attempt a placed call was part of.
    pub attempt_id: Option<Uuid>,
    pub trunk: Option<String>,
    pub started_at: DateTime<Utc>,
    pub answered_at: Option<DateTime<Utc>>,
    pub ended_at: DateTime<Utc>,
    /// How it ended (`remote_hangup`, `failed`, …), with the status of a refusal or failure.
    pub end_reason: String,
    pub sip_status: Option<u16>,
    /// How the first key came (`rfc4733`, `info`, `inband`); never the keys.
    pub keys_source: Option<String>,
    pub rtp_sent: u64,
    pub rtp_received: u64,
    pub rtp_lost: u64,
}

/// What a claim took.
#[derive(Debug)]
pub enum Claimed {
    /// A callback, leased, with its attempt recorded.
    Callback(Box<Callback>, Attempt),
    /// A caller holding on this node, now marked as being connected to the agent.
    Hold(Hold),
}

/// What the dialer makes of a callback met in line while claiming.
pub enum Choice {
    /// Dial it: the callback as claimed, with its history line.
    Take(Callback, Event),
    /// Not now: the callback with a later time to fall due, with its history line.
    Defer(Callback, Event),
    /// Leave it as it is.
    Pass,
}

/// A ready agent's claim on the next callback it can take.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRequest<'a> {
    /// The ID the attempt gets.
    pub attempt_id: Uuid,
    /// The agent as read, ready.
    pub agent: &'a Agent,
    /// The same agent, reserved.
    pub reserved: &'a Agent,
    pub node: &'a str,
    pub now: DateTime<Utc>,
    /// When the lease ends unless renewed.
    pub until: DateTime<Utc>,
}

/// The store a URL names: `postgres://…` or `sqlite://…`.
#[derive(Debug, Clone)]
pub enum Store {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

impl Store {
    /// Connects and runs any pending migrations.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Store::Postgres(PgStore::open(url).await?))
        } else if url.starts_with("sqlite:") {
            Ok(Store::Sqlite(SqliteStore::open(url).await?))
        } else {
            Err(StoreError::Unavailable(format!(
                "store URL `{}` must start with postgres:// or sqlite://",
                redact(url)
            )))
        }
    }

    /// Connections open to the database, and how many of them are idle.
    pub fn connections(&self) -> (u32, usize) {
        match self {
            Store::Postgres(s) => s.connections(),
            Store::Sqlite(s) => s.connections(),
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Store::Postgres(_) => "postgres",
            Store::Sqlite(_) => "sqlite",
        }
    }

    pub async fn close(&self) {
        match self {
            Store::Postgres(s) => s.close().await,
            Store::Sqlite(s) => s.close().await,
        }
    }

    /// Replaces every registrar binding of `user`.
    pub async fn replace_bindings(
        &self,
        user: &str,
        bindings: &[Binding],
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.replace_bindings(user, bindings))
    }

    /// Every registrar binding still valid at `now`.
    pub async fn bindings(&self, now: DateTime<Utc>) -> Result<Vec<Binding>, StoreError> {
        dispatch!(self, s => s.bindings(now))
    }

    /// Records `event` (a guess or a booking) and then counts the events of its kind: from its
    /// client since `since.client`, on its subject since `since.subject`, and all of them since
    /// `since.all`, this one included. The event is committed before the count, so however
    /// many reservations race, the last to count sees every other: a limit checked on these
    /// counts cannot be overrun by sending many at once (reserve, then check).
    pub async fn reserve(
        &self,
        event: &SecurityEvent,
        since: &Since,
    ) -> Result<Reservation, StoreError> {
        dispatch!(self, s => s.reserve(event, since))
    }

    /// The open callback to `address` in `queue`, if there is one (the oldest).
    pub async fn open_callback_to(
        &self,
        queue: &str,
        address: &str,
    ) -> Result<Option<Callback>, StoreError> {
        dispatch!(self, s => s.open_callback_to(queue, address))
    }

    /// The setting `name`: the one stored, or else `value`, stored now. Nodes starting
    /// together all get the same one.
    pub async fn setting_or(&self, name: &str, value: &str) -> Result<String, StoreError> {
        dispatch!(self, s => s.setting_or(name, value))
    }

    /// Whether the store answers: one trivial query (`/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.ping())
    }

    /// The setting `name`, if one is stored.
    pub async fn setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        dispatch!(self, s => s.setting(name))
    }

    /// Settles a reserved event as a failure that happened: only settled ones count in
    /// everyone's (`Reservation::all`).
    pub async fn settle(&self, reservation: i64) -> Result<(), StoreError> {
        dispatch!(self, s => s.settle(reservation))
    }

    /// Takes back a reservation that turned out to count for nothing (refused before it was
    /// tried, or the store failed on the way).
    pub async fn withdraw(&self, reservation: i64) -> Result<(), StoreError> {
        dispatch!(self, s => s.withdraw(reservation))
    }

    /// Forgets one call's (or conversation's) events of `kind` on `subject`: the caller gave
    /// the right answer, so their misses on the way to it count for nothing. How many went.
    pub async fn forgive(
        &self,
        kind: &str,
        call_id: &str,
        subject: &str,
    ) -> Result<u64, StoreError> {
        dispatch!(self, s => s.forgive(kind, call_id, subject))
    }

    /// Forgets security events older than `before`; how many went.
    pub async fn prune_security_events(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        dispatch!(self, s => s.prune_security_events(before))
    }

    /// Listens for changes from every node: `None` on SQLite, where this node is the only one.
    pub async fn listen(&self) -> Result<Option<Listener>, StoreError> {
        let Store::Postgres(pg) = self else {
            return Ok(None);
        };
        let mut listener = sqlx::postgres::PgListener::connect_with(pg.pool())
            .await
            .map_err(db_error)?;
        listener
            .listen_all(["callbackd_callbacks", "callbackd_agents"])
            .await
            .map_err(db_error)?;
        Ok(Some(Listener(listener)))
    }

    /// Adds a logged-out agent; [`StoreError::DuplicateAgent`] when the ID is taken.
    pub async fn insert_agent(&self, agent: &Agent, actor: &str) -> Result<(), StoreError> {
        dispatch!(self, s => s.insert_agent(agent, actor))
    }

    /// Every agent, by ID.
    pub async fn agents(&self) -> Result<Vec<Agent>, StoreError> {
        dispatch!(self, s => s.agents())
    }

    pub async fn agent(&self, id: &str) -> Result<Option<Agent>, StoreError> {
        dispatch!(self, s => s.agent(id))
    }

    /// Moves an agent from `old` (the version read) to `new`, with a line in its history; a
    /// conflict when someone moved it first.
    pub async fn move_agent(
        &self,
        old: &Agent,
        new: &Agent,
        actor: &str,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.move_agent(old, new, actor))
    }

    pub async fn agent_history(&self, id: &str) -> Result<Vec<AgentEvent>, StoreError> {
        dispatch!(self, s => s.agent_history(id))
    }

    /// Reserves a ready agent for the first callback `choose` takes, leases it and records
    /// the attempt, all in one transaction (see `SqlStore::claim`). `None`: nothing waits
    /// for the agent's skills (that this node can take); [`StoreError::Conflict`]: the agent
    /// was moved since it was read, and nothing was taken.
    pub async fn claim(
        &self,
        request: &ClaimRequest<'_>,
        choose: impl FnMut(&Callback) -> Choice + Send,
    ) -> Result<Option<Claimed>, StoreError> {
        dispatch!(self, s => s.claim(request, choose))
    }

    /// A caller starts holding, until `expires_at` unless renewed.
    pub async fn insert_hold(
        &self,
        hold: &Hold,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.insert_hold(hold, expires_at))
    }

    /// Keeps every hold of `node` until `until`.
    pub async fn renew_holds(&self, node: &str, until: DateTime<Utc>) -> Result<(), StoreError> {
        dispatch!(self, s => s.renew_holds(node, until))
    }

    /// The caller stopped holding (connected, gone, or took the callback offer).
    pub async fn remove_hold(&self, id: Uuid) -> Result<(), StoreError> {
        dispatch!(self, s => s.remove_hold(id))
    }

    /// The agent offered a holding caller did not take them: back in line, in their place.
    pub async fn release_hold(&self, id: Uuid) -> Result<(), StoreError> {
        dispatch!(self, s => s.release_hold(id))
    }

    /// Forgets holds whose node stopped renewing them before `now`; how many.
    pub async fn purge_holds(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        dispatch!(self, s => s.purge_holds(now))
    }

    /// Extends a lease; `false` when it was lost to another node.
    pub async fn renew(
        &self,
        callback: Uuid,
        generation: i64,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.renew(callback, generation, until))
    }

    /// A step of an attempt, fenced by the lease's generation (see `SqlStore::step_attempt`).
    pub async fn step_attempt(
        &self,
        generation: i64,
        callback: &Callback,
        event: &Event,
        finish: Option<&Finish>,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.step_attempt(generation, callback, event, finish))
    }

    /// Stores ended calls' records (see `SqlStore::insert_calls`).
    pub async fn insert_calls(&self, calls: &[CallRecord]) -> Result<(), StoreError> {
        dispatch!(self, s => s.insert_calls(calls))
    }

    /// Call records after a cursor, oldest first (see `SqlStore::calls`).
    pub async fn calls(
        &self,
        after: (DateTime<Utc>, Uuid),
        limit: u32,
    ) -> Result<Vec<CallRecord>, StoreError> {
        dispatch!(self, s => s.calls(after, limit))
    }

    /// Forgets callbacks closed before `before`, with their histories and attempts.
    pub async fn purge_closed(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        dispatch!(self, s => s.purge_closed(before))
    }

    /// Forgets the records of calls that started before `before`.
    pub async fn purge_calls(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        dispatch!(self, s => s.purge_calls(before))
    }

    /// Chat conversations used since `since`: all, and `client`'s.
    pub async fn conversations(
        &self,
        since: DateTime<Utc>,
        client: &str,
    ) -> Result<(u64, u64), StoreError> {
        dispatch!(self, s => s.conversations(since, client))
    }

    /// Keeps a new chat conversation.
    pub async fn insert_conversation(&self, conversation: &Conversation) -> Result<(), StoreError> {
        dispatch!(self, s => s.insert_conversation(conversation))
    }

    /// Takes a conversation to answer a message (see `SqlStore::take_conversation`).
    pub async fn take_conversation(
        &self,
        id: Uuid,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Taken, StoreError> {
        dispatch!(self, s => s.take_conversation(id, since, now, until))
    }

    /// Keeps a conversation taken, as it is now, and lets it go.
    pub async fn put_conversation(&self, conversation: &Conversation) -> Result<(), StoreError> {
        dispatch!(self, s => s.put_conversation(conversation))
    }

    /// Forgets conversations unused since `before`.
    pub async fn purge_conversations(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        dispatch!(self, s => s.purge_conversations(before))
    }

    /// A callback by its internal ID.
    pub async fn callback(&self, callback: Uuid) -> Result<Option<Callback>, StoreError> {
        dispatch!(self, s => s.callback(callback))
    }

    /// Takes over expired leases for `node` (see `SqlStore::take_over_expired`).
    pub async fn take_over_expired(
        &self,
        node: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<(Callback, Option<Attempt>, i64)>, StoreError> {
        dispatch!(self, s => s.take_over_expired(node, now, until))
    }

    /// Agents reserved or on a call whose attempt ended before `before` (see
    /// `SqlStore::stranded_agents`).
    pub async fn stranded_agents(&self, before: DateTime<Utc>) -> Result<Vec<Agent>, StoreError> {
        dispatch!(self, s => s.stranded_agents(before))
    }

    /// Due queued callbacks and holding callers needing `skill` before `place` in line (all,
    /// for `None`).
    pub async fn ahead(
        &self,
        skill: &str,
        place: Option<Place>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        dispatch!(self, s => s.ahead(skill, place, now))
    }

    /// How long the latest `limit` connected calls with `skill` took, newest first.
    pub async fn handle_times(
        &self,
        skill: &str,
        limit: u32,
    ) -> Result<Vec<chrono::Duration>, StoreError> {
        dispatch!(self, s => s.handle_times(skill, limit))
    }

    /// A callback's attempts, oldest first.
    pub async fn attempts(&self, callback: Uuid) -> Result<Vec<Attempt>, StoreError> {
        dispatch!(self, s => s.attempts(callback))
    }
}

/// A URL with any password replaced, fit for logs and error messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:****{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl CallbackStore for Store {
    async fn insert(&self, callback: &Callback, event: &Event) -> Result<(), StoreError> {
        dispatch!(self, s => s.insert(callback, event))
    }
    async fn update(&self, callback: &Callback, event: &Event) -> Result<(), StoreError> {
        dispatch!(self, s => s.update(callback, event))
    }
    async fn record(&self, event: &Event) -> Result<(), StoreError> {
        dispatch!(self, s => s.record(event))
    }
    async fn find(&self, id: &ConfirmationId) -> Result<Option<Callback>, StoreError> {
        dispatch!(self, s => s.find(id))
    }
    async fn history(&self, id: Uuid) -> Result<Vec<Event>, StoreError> {
        dispatch!(self, s => s.history(id))
    }
    async fn list(&self, filter: &Filter) -> Result<Vec<Callback>, StoreError> {
        dispatch!(self, s => s.list(filter))
    }
    async fn counts(&self, queue: &str) -> Result<Vec<(State, u64)>, StoreError> {
        dispatch!(self, s => s.counts(queue))
    }
    async fn due(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Callback>, StoreError> {
        dispatch!(self, s => s.due(now, limit))
    }
}

/// Maps a driver error to the store's own.
fn db_error(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::Database(db)
            if db.is_unique_violation()
                && (db
                    .constraint()
                    .is_some_and(|c| c.contains("confirmation_id"))
                    || db.message().contains("confirmation_id")) =>
        {
            StoreError::DuplicateConfirmationId
        }
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
            StoreError::Corrupt(e.to_string())
        }
        other => StoreError::Database(other.to_string()),
    }
}

fn migrate_error(e: sqlx::migrate::MigrateError) -> StoreError {
    StoreError::Database(format!("migrating the schema failed: {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            super::redact("postgres://cb:s3cret@db:5432/cb"),
            "postgres://cb:****@db:5432/cb"
        );
        assert_eq!(super::redact("postgres://cb@db/cb"), "postgres://cb@db/cb");
        assert_eq!(
            super::redact("sqlite://callbackd.db"),
            "sqlite://callbackd.db"
        );
    }
}
