// The store's SQL and row mapping, shared by both backends: `postgres.rs` and `sqlite.rs`
// include this file with `Db` naming their driver.

use callbacks::{
    Address, Agent, AgentEvent, AgentState, Attempt, AttemptOutcome, Callback, CallbackStore,
    Channel, ConfirmationId, Event, Filter, Media, Outcome, ReceiptCode, RequestedTime, Source,
    State,
};
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::Row;
use uuid::Uuid;

type DbRow = <Db as sqlx::Database>::Row;
type Query<'q> = sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments<'q>>;

/// The callback columns in the order `bind_callback` binds them.
macro_rules! columns {
    () => {
        "id, confirmation_id, queue, skill, media, address, customer_name, requested_at, \
         time_zone, state, priority, attempts, max_attempts, next_attempt_at, enqueued_at, \
         expires_at, source, context, version, created_at, updated_at"
    };
}

macro_rules! event_columns {
    () => {
        "callback_id, confirmation_id, at, channel, actor, action, outcome, receipt, \
         from_state, to_state, changes"
    };
}

/// The call record columns in the order `insert_calls` binds them.
macro_rules! call_columns {
    () => {
        "id, call_id, node, direction, from_user, to_user, entry, attempt_id, trunk, started_at, \
         answered_at, ended_at, end_reason, sip_status, keys_source, rtp_sent, rtp_received, rtp_lost"
    };
}

/// A call record as stored.
fn call_from_row(row: &DbRow) -> Result<crate::CallRecord, StoreError> {
    let count = |column: &str| -> Result<u64, StoreError> {
        Ok(row.try_get::<i64, _>(column).map_err(db_error)?.max(0) as u64)
    };
    Ok(crate::CallRecord {
        id: row.try_get("id").map_err(db_error)?,
        call_id: row.try_get("call_id").map_err(db_error)?,
        node: row.try_get("node").map_err(db_error)?,
        direction: row.try_get("direction").map_err(db_error)?,
        from: row.try_get("from_user").map_err(db_error)?,
        to: row.try_get("to_user").map_err(db_error)?,
        entry: row.try_get("entry").map_err(db_error)?,
        attempt_id: row.try_get("attempt_id").map_err(db_error)?,
        trunk: row.try_get("trunk").map_err(db_error)?,
        started_at: row.try_get("started_at").map_err(db_error)?,
        answered_at: row.try_get("answered_at").map_err(db_error)?,
        ended_at: row.try_get("ended_at").map_err(db_error)?,
        end_reason: row.try_get("end_reason").map_err(db_error)?,
        sip_status: row
            .try_get::<Option<i32>, _>("sip_status")
            .map_err(db_error)?
            .and_then(|s| u16::try_from(s).ok()),
        keys_source: row.try_get("keys_source").map_err(db_error)?,
        rtp_sent: count("rtp_sent")?,
        rtp_received: count("rtp_received")?,
        rtp_lost: count("rtp_lost")?,
    })
}

/// Open states first, then the newest: the callback a confirmation ID stands for.
pub(crate) const FIND: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM callbacks WHERE confirmation_id = $1 \
     ORDER BY CASE WHEN state IN ('completed', 'cancelled', 'failed', 'expired') THEN 1 ELSE 0 END, \
     created_at DESC LIMIT 1"
);

/// The open callback to an address (`$1`) in a queue (`$2`), the oldest when there are several.
const OPEN_TO: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM callbacks WHERE address = $1 AND queue = $2 \
     AND state NOT IN ('completed', 'cancelled', 'failed', 'expired') \
     ORDER BY created_at LIMIT 1"
);

const INSERT: &str = concat!(
    "INSERT INTO callbacks (",
    columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
     $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)"
);

/// Writes a whole callback over the version before it (`$22`).
macro_rules! update {
    () => {
        "UPDATE callbacks SET confirmation_id = $2, queue = $3, skill = $4, media = $5, \
         address = $6, customer_name = $7, requested_at = $8, time_zone = $9, state = $10, \
         priority = $11, attempts = $12, max_attempts = $13, next_attempt_at = $14, \
         enqueued_at = $15, expires_at = $16, source = $17, context = $18, version = $19, \
         created_at = $20, updated_at = $21 WHERE id = $1 AND version = $22"
    };
}

const UPDATE: &str = update!();

/// The same, by the holder of the callback's lease (`$23`, its generation) only.
const UPDATE_LEASED: &str = concat!(update!(), " AND lease_generation = $23");

macro_rules! agent_columns {
    () => {
        "id, name, skills, address, state, reason, attempt_id, since, version"
    };
}

macro_rules! attempt_columns {
    () => {
        "id, callback_id, number, generation, node, agent_id, started_at, ended_at, outcome, \
         sip_status"
    };
}

const INSERT_EVENT: &str = concat!(
    "INSERT INTO callback_events (",
    event_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
);

const HISTORY: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM callback_events WHERE callback_id = $1 ORDER BY seq"
);

const DUE: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM callbacks \
     WHERE (state = 'scheduled' AND next_attempt_at <= $1) \
        OR (state IN ('scheduled', 'queued') AND expires_at <= $1) \
     ORDER BY next_attempt_at LIMIT $2"
);

/// The listing query for `filter` in dialing order, with the values its placeholders take
/// (the limit comes last).
pub(crate) fn list_sql(filter: &Filter) -> (String, Vec<&str>) {
    let conditions: Vec<(&str, &str)> = [
        ("state", filter.state.map(State::as_str)),
        ("queue", filter.queue.as_deref()),
        ("skill", filter.skill.as_deref()),
    ]
    .into_iter()
    .filter_map(|(column, value)| value.map(|v| (column, v)))
    .collect();
    let mut sql = concat!("SELECT ", columns!(), " FROM callbacks").to_owned();
    for (i, (column, _)) in conditions.iter().enumerate() {
        sql += if i == 0 { " WHERE " } else { " AND " };
        sql += &format!("{column} = ${}", i + 1);
    }
    sql += &format!(
        " ORDER BY priority DESC, enqueued_at, id LIMIT ${}",
        conditions.len() + 1
    );
    (sql, conditions.into_iter().map(|(_, v)| v).collect())
}

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("unknown {what} `{value}`"))
}

fn bind_callback<'q>(query: Query<'q>, cb: &'q Callback) -> Query<'q> {
    query
        .bind(cb.id)
        .bind(cb.confirmation_id.as_str())
        .bind(cb.queue.as_str())
        .bind(cb.skill.as_str())
        .bind(cb.media.as_str())
        .bind(cb.address.as_str())
        .bind(cb.customer_name.as_deref())
        .bind(match cb.requested {
            RequestedTime::Asap => None,
            RequestedTime::At(at) => Some(at),
        })
        .bind(cb.time_zone.name())
        .bind(cb.state.as_str())
        .bind(cb.priority)
        .bind(cb.attempts as i32)
        .bind(cb.max_attempts as i32)
        .bind(cb.next_attempt_at)
        .bind(cb.enqueued_at)
        .bind(cb.expires_at)
        .bind(cb.source.as_str())
        .bind(Json(&cb.context))
        .bind(cb.version)
        .bind(cb.created_at)
        .bind(cb.updated_at)
}

fn callback_from_row(row: &DbRow) -> Result<Callback, StoreError> {
    let text = |col: &str| row.try_get::<String, _>(col).map_err(db_error);
    let confirmation_id = text("confirmation_id")?;
    let media = text("media")?;
    let media = Media::parse(&media).ok_or_else(|| corrupt("media", &media))?;
    let address = text("address")?;
    let state = text("state")?;
    let source = text("source")?;
    let time_zone = text("time_zone")?;
    let requested_at: Option<DateTime<Utc>> = row.try_get("requested_at").map_err(db_error)?;
    let Json(context) = row.try_get("context").map_err(db_error)?;
    Ok(Callback {
        id: row.try_get("id").map_err(db_error)?,
        confirmation_id: ConfirmationId::parse(&confirmation_id)
            .map_err(|_| corrupt("confirmation ID", &confirmation_id))?,
        queue: text("queue")?,
        skill: text("skill")?,
        media,
        address: Address::stored(media, &address).map_err(|_| corrupt("address", &address))?,
        customer_name: row.try_get("customer_name").map_err(db_error)?,
        requested: requested_at.map_or(RequestedTime::Asap, RequestedTime::At),
        time_zone: time_zone
            .parse()
            .map_err(|_| corrupt("time zone", &time_zone))?,
        state: State::parse(&state).ok_or_else(|| corrupt("state", &state))?,
        priority: row.try_get("priority").map_err(db_error)?,
        attempts: row.try_get::<i32, _>("attempts").map_err(db_error)? as u32,
        max_attempts: row.try_get::<i32, _>("max_attempts").map_err(db_error)? as u32,
        next_attempt_at: row.try_get("next_attempt_at").map_err(db_error)?,
        enqueued_at: row.try_get("enqueued_at").map_err(db_error)?,
        expires_at: row.try_get("expires_at").map_err(db_error)?,
        source: Source::parse(&source).ok_or_else(|| corrupt("source", &source))?,
        context,
        version: row.try_get("version").map_err(db_error)?,
        created_at: row.try_get("created_at").map_err(db_error)?,
        updated_at: row.try_get("updated_at").map_err(db_error)?,
    })
}

fn event_from_row(row: &DbRow) -> Result<Event, StoreError> {
    let text = |col: &str| row.try_get::<String, _>(col).map_err(db_error);
    let state = |col: &str| -> Result<Option<State>, StoreError> {
        let value: Option<String> = row.try_get(col).map_err(db_error)?;
        value
            .map(|s| State::parse(&s).ok_or_else(|| corrupt("state", &s)))
            .transpose()
    };
    let channel = text("channel")?;
    let outcome = text("outcome")?;
    let receipt: Option<String> = row.try_get("receipt").map_err(db_error)?;
    let Json(changes) = row.try_get("changes").map_err(db_error)?;
    Ok(Event {
        callback_id: row.try_get("callback_id").map_err(db_error)?,
        confirmation_id: row.try_get("confirmation_id").map_err(db_error)?,
        at: row.try_get("at").map_err(db_error)?,
        channel: Channel::parse(&channel).ok_or_else(|| corrupt("channel", &channel))?,
        actor: text("actor")?,
        action: text("action")?,
        outcome: Outcome::parse(&outcome).ok_or_else(|| corrupt("outcome", &outcome))?,
        receipt: receipt
            .map(|r| ReceiptCode::parse(&r).ok_or_else(|| corrupt("receipt", &r)))
            .transpose()?,
        from_state: state("from_state")?,
        to_state: state("to_state")?,
        changes,
    })
}

async fn insert_event<'c, E>(executor: E, event: &Event) -> Result<(), StoreError>
where
    E: sqlx::Executor<'c, Database = Db>,
{
    sqlx::query(INSERT_EVENT)
        .bind(event.callback_id)
        .bind(event.confirmation_id.as_deref())
        .bind(event.at)
        .bind(event.channel.as_str())
        .bind(event.actor.as_str())
        .bind(event.action.as_str())
        .bind(event.outcome.as_str())
        .bind(event.receipt.as_ref().map(ReceiptCode::as_str))
        .bind(event.from_state.map(State::as_str))
        .bind(event.to_state.map(State::as_str))
        .bind(Json(&event.changes))
        .execute(executor)
        .await
        .map_err(db_error)?;
    Ok(())
}

impl SqlStore<Db> {
    /// Runs a write on the writer; how many rows it changed.
    async fn write(&self, query: Query<'_>) -> Result<u64, StoreError> {
        Ok(query
            .execute(self.writer())
            .await
            .map_err(db_error)?
            .rows_affected())
    }

    /// Replaces every binding of `user` with `bindings`, in one transaction.
    pub async fn replace_bindings(
        &self,
        user: &str,
        bindings: &[crate::Binding],
    ) -> Result<(), StoreError> {
        let mut tx = self.writer().begin().await.map_err(db_error)?;
        sqlx::query("DELETE FROM sip_bindings WHERE username = $1")
            .bind(user)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        for b in bindings {
            sqlx::query(
                "INSERT INTO sip_bindings (username, contact, source, transport, expires_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(user)
            .bind(b.contact.as_str())
            .bind(b.source.as_str())
            .bind(b.transport.as_str())
            .bind(b.expires_at)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)
    }

    pub async fn reserve(
        &self,
        e: &crate::SecurityEvent,
        since: &crate::Since,
    ) -> Result<crate::Reservation, StoreError> {
        // Committed before the count, so of simultaneous reservations the last to count sees
        // every other one.
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO security_events (at, kind, client, subject, caller_id, source, call_id, settled) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, FALSE) RETURNING id",
        )
        .bind(e.at)
        .bind(e.kind.as_str())
        .bind(e.client.as_str())
        .bind(e.subject.as_str())
        .bind(e.caller_id.as_str())
        .bind(e.source.as_str())
        .bind(e.call_id.as_str())
        .fetch_one(self.writer())
        .await
        .map_err(db_error)?;
        let counted: Result<(i64, i64, i64), _> = sqlx::query_as(
            "SELECT \
             (SELECT COUNT(*) FROM security_events WHERE kind = $1 AND client = $2 AND at > $3), \
             (SELECT COUNT(*) FROM security_events WHERE kind = $1 AND subject = $4 AND at > $5), \
             (SELECT COUNT(*) FROM security_events WHERE kind = $1 AND settled AND at > $6)",
        )
        .bind(e.kind.as_str())
        .bind(e.client.as_str())
        .bind(since.client)
        .bind(e.subject.as_str())
        .bind(since.subject)
        .bind(since.all)
        .fetch_one(&self.pool)
        .await;
        let (client, subject, all) = match counted {
            Ok(counts) => counts,
            Err(e) => {
                // Not counted, so it must not count: take it back (best effort).
                let _ = self.withdraw(id).await;
                return Err(db_error(e));
            }
        };
        let count = |n: i64| n.max(0) as u64;
        Ok(crate::Reservation {
            id,
            client: count(client),
            subject: count(subject),
            all: count(all),
        })
    }

    pub async fn open_callback_to(
        &self,
        queue: &str,
        address: &str,
    ) -> Result<Option<Callback>, StoreError> {
        sqlx::query(OPEN_TO)
            .bind(address)
            .bind(queue)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?
            .as_ref()
            .map(callback_from_row)
            .transpose()
    }

    pub async fn setting_or(&self, name: &str, value: &str) -> Result<String, StoreError> {
        self.write(
            sqlx::query(
                "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(value),
        )
        .await?;
        self.setting(name)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("setting `{name}` vanished")))
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.write(sqlx::query("SELECT 1")).await?;
        Ok(())
    }

    pub async fn setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        let row: Option<(String,)> = sqlx::query_as("SELECT value FROM settings WHERE name = $1")
            .bind(name)
            .fetch_optional(self.writer())
            .await
            .map_err(db_error)?;
        Ok(row.map(|(value,)| value))
    }

    /// Marks a reservation as a failure that happened (see `Reservation::all`).
    pub async fn settle(&self, reservation: i64) -> Result<(), StoreError> {
        self.write(
            sqlx::query("UPDATE security_events SET settled = TRUE WHERE id = $1")
                .bind(reservation),
        )
        .await?;
        Ok(())
    }

    pub async fn withdraw(&self, reservation: i64) -> Result<(), StoreError> {
        self.write(sqlx::query("DELETE FROM security_events WHERE id = $1").bind(reservation))
            .await?;
        Ok(())
    }

    pub async fn forgive(
        &self,
        kind: &str,
        call_id: &str,
        subject: &str,
    ) -> Result<u64, StoreError> {
        let done = self
            .write(
                sqlx::query(
                    "DELETE FROM security_events WHERE kind = $1 AND subject = $2 AND call_id = $3",
                )
                .bind(kind)
                .bind(subject)
                .bind(call_id),
            )
            .await?;
        Ok(done)
    }

    pub async fn prune_security_events(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let done = self
            .write(sqlx::query("DELETE FROM security_events WHERE at < $1").bind(before))
            .await?;
        Ok(done)
    }

    /// Every binding still valid at `now`.
    pub async fn bindings(&self, now: DateTime<Utc>) -> Result<Vec<crate::Binding>, StoreError> {
        let rows: Vec<(String, String, String, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT username, contact, source, transport, expires_at FROM sip_bindings \
             WHERE expires_at > $1 ORDER BY username, contact",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(rows
            .into_iter()
            .map(
                |(user, contact, source, transport, expires_at)| crate::Binding {
                    user,
                    contact,
                    source,
                    transport,
                    expires_at,
                },
            )
            .collect())
    }

    /// Stores ended calls' records.
    pub async fn insert_calls(&self, calls: &[crate::CallRecord]) -> Result<(), StoreError> {
        // One statement for all (at most 1,000 rows, 18,000 parameters, within both
        // databases' limits): a statement a row cost more than the row.
        for chunk in calls.chunks(1000) {
            let mut insert = sqlx::QueryBuilder::<Db>::new(concat!(
                "INSERT INTO calls (",
                call_columns!(),
                ") "
            ));
            insert.push_values(chunk, |mut row, c| {
                row.push_bind(c.id)
                    .push_bind(c.call_id.as_str())
                    .push_bind(c.node.as_str())
                    .push_bind(c.direction.as_str())
                    .push_bind(c.from.as_str())
                    .push_bind(c.to.as_str())
                    .push_bind(c.entry.as_deref())
                    .push_bind(c.attempt_id)
                    .push_bind(c.trunk.as_deref())
                    .push_bind(c.started_at)
                    .push_bind(c.answered_at)
                    .push_bind(c.ended_at)
                    .push_bind(c.end_reason.as_str())
                    .push_bind(c.sip_status.map(i32::from))
                    .push_bind(c.keys_source.as_deref())
                    .push_bind(c.rtp_sent as i64)
                    .push_bind(c.rtp_received as i64)
                    .push_bind(c.rtp_lost as i64);
            });
            insert
                .build()
                .execute(self.writer())
                .await
                .map_err(db_error)?;
        }
        Ok(())
    }

    /// Up to `limit` call records, oldest first, that started after `after` (a time and,
    /// among calls that started then, an ID: the cursor of the page before).
    pub async fn calls(
        &self,
        after: (DateTime<Utc>, Uuid),
        limit: u32,
    ) -> Result<Vec<crate::CallRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            call_columns!(),
            " FROM calls WHERE started_at > $1 OR (started_at = $1 AND id > $2) \
             ORDER BY started_at, id LIMIT $3"
        ))
        .bind(after.0)
        .bind(after.1)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter().map(call_from_row).collect()
    }

    /// Forgets callbacks closed (completed, cancelled, failed or expired) before `before`,
    /// with their histories and attempts, in one transaction; how many.
    pub async fn purge_closed(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        const CLOSED: &str = "SELECT id FROM callbacks WHERE updated_at < $1 \
             AND state IN ('completed', 'cancelled', 'failed', 'expired')";
        let mut tx = self.writer().begin().await.map_err(db_error)?;
        for table in ["callback_events", "attempts"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE callback_id IN ({CLOSED})"
            ))
            .bind(before)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        let done = sqlx::query(&format!("DELETE FROM callbacks WHERE id IN ({CLOSED})"))
            .bind(before)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(done.rows_affected())
    }

    /// Forgets the records of calls that started before `before`.
    pub async fn purge_calls(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let done = self
            .write(sqlx::query("DELETE FROM calls WHERE started_at < $1").bind(before))
            .await?;
        Ok(done)
    }

    /// Chat conversations used since `since`: all of them, and those `client` opened.
    pub async fn conversations(
        &self,
        since: DateTime<Utc>,
        client: &str,
    ) -> Result<(u64, u64), StoreError> {
        let (all, theirs): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN client = $2 THEN 1 ELSE 0 END), 0) \
             FROM chats WHERE last_at >= $1",
        )
        .bind(since)
        .bind(client)
        .fetch_one(&self.pool)
        .await
        .map_err(db_error)?;
        Ok((all.max(0) as u64, theirs.max(0) as u64))
    }

    pub async fn insert_conversation(
        &self,
        conversation: &crate::Conversation,
    ) -> Result<(), StoreError> {
        self.write(
            sqlx::query(
                "INSERT INTO chats (id, client, memory, failures, turns, chars, last_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(conversation.id)
            .bind(conversation.client.as_str())
            .bind(conversation.memory.as_str())
            .bind(i64::from(conversation.failures))
            .bind(i64::from(conversation.turns))
            .bind(i64::from(conversation.chars))
            .bind(conversation.last_at),
        )
        .await?;
        Ok(())
    }

    /// Takes conversation `id`, used since `since`, to answer a message: it is held until
    /// `until` (or until `put_conversation`), unless another message holds it now.
    pub async fn take_conversation(
        &self,
        id: Uuid,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<crate::Taken, StoreError> {
        let row = sqlx::query(
            "UPDATE chats SET busy_until = $4 WHERE id = $1 AND last_at >= $2 \
             AND (busy_until IS NULL OR busy_until < $3) \
             RETURNING id, client, memory, failures, turns, chars, last_at",
        )
        .bind(id)
        .bind(since)
        .bind(now)
        .bind(until)
        .fetch_optional(self.writer())
        .await
        .map_err(db_error)?;
        if let Some(row) = row {
            let count = |column: &str| -> Result<u32, StoreError> {
                let n: i64 = row.try_get(column).map_err(db_error)?;
                Ok(u32::try_from(n).unwrap_or(u32::MAX))
            };
            return Ok(crate::Taken::Yours(crate::Conversation {
                id: row.try_get("id").map_err(db_error)?,
                client: row.try_get("client").map_err(db_error)?,
                memory: row.try_get("memory").map_err(db_error)?,
                failures: count("failures")?,
                turns: count("turns")?,
                chars: count("chars")?,
                last_at: row.try_get("last_at").map_err(db_error)?,
            }));
        }
        let there: Option<(Uuid,)> =
            sqlx::query_as("SELECT id FROM chats WHERE id = $1 AND last_at >= $2")
                .bind(id)
                .bind(since)
                .fetch_optional(self.writer())
                .await
                .map_err(db_error)?;
        Ok(match there {
            Some(_) => crate::Taken::Busy,
            None => crate::Taken::Gone,
        })
    }

    /// Keeps a conversation taken with `take_conversation` as it is now, and lets it go.
    pub async fn put_conversation(
        &self,
        conversation: &crate::Conversation,
    ) -> Result<(), StoreError> {
        self.write(sqlx::query(
            "UPDATE chats SET memory = $2, failures = $3, turns = $4, chars = $5, last_at = $6, \
             busy_until = NULL WHERE id = $1",
        )
        .bind(conversation.id)
        .bind(conversation.memory.as_str())
        .bind(i64::from(conversation.failures))
        .bind(i64::from(conversation.turns))
        .bind(i64::from(conversation.chars))
        .bind(conversation.last_at))
.await?;
        Ok(())
    }

    /// Forgets conversations unused since `before`, with their transcripts.
    pub async fn purge_conversations(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let done = self
            .write(sqlx::query("DELETE FROM chats WHERE last_at < $1").bind(before))
            .await?;
        Ok(done)
    }

    async fn fetch_callbacks(&self, query: Query<'_>) -> Result<Vec<Callback>, StoreError> {
        query
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?
            .iter()
            .map(callback_from_row)
            .collect()
    }
}

impl CallbackStore for SqlStore<Db> {
    async fn insert(&self, callback: &Callback, event: &Event) -> Result<(), StoreError> {
        let mut tx = self.writer().begin().await.map_err(db_error)?;
        bind_callback(sqlx::query(INSERT), callback)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        insert_event(&mut *tx, event).await?;
        tx.commit().await.map_err(db_error)
    }

    async fn update(&self, callback: &Callback, event: &Event) -> Result<(), StoreError> {
        // The write comes first, so on SQLite the transaction takes the write lock at once
        // (waiting for it if need be) instead of failing to upgrade a stale read.
        let mut tx = self.writer().begin().await.map_err(db_error)?;
        let updated = bind_callback(sqlx::query(UPDATE), callback)
            .bind(callback.version - 1)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        if updated.rows_affected() == 0 {
            let found: Option<i64> =
                sqlx::query_scalar("SELECT version FROM callbacks WHERE id = $1")
                    .bind(callback.id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_error)?;
            tx.rollback().await.map_err(db_error)?;
            return Err(match found {
                Some(found) => StoreError::Conflict { found },
                None => StoreError::Missing(callback.id),
            });
        }
        insert_event(&mut *tx, event).await?;
        tx.commit().await.map_err(db_error)
    }

    async fn record(&self, event: &Event) -> Result<(), StoreError> {
        insert_event(self.writer(), event).await
    }

    async fn find(&self, id: &ConfirmationId) -> Result<Option<Callback>, StoreError> {
        sqlx::query(FIND)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?
            .as_ref()
            .map(callback_from_row)
            .transpose()
    }

    async fn history(&self, id: Uuid) -> Result<Vec<Event>, StoreError> {
        sqlx::query(HISTORY)
            .bind(id)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?
            .iter()
            .map(event_from_row)
            .collect()
    }

    async fn list(&self, filter: &Filter) -> Result<Vec<Callback>, StoreError> {
        let (sql, values) = list_sql(filter);
        let mut query = sqlx::query(&sql);
        for value in values {
            query = query.bind(value);
        }
        self.fetch_callbacks(query.bind(i64::from(filter.limit)))
            .await
    }

    async fn counts(&self, queue: &str) -> Result<Vec<(State, u64)>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM callbacks WHERE queue = $1 GROUP BY state")
                .bind(queue)
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)?;
        rows.into_iter()
            .map(|(state, n)| {
                State::parse(&state)
                    .map(|s| (s, n as u64))
                    .ok_or_else(|| corrupt("state", &state))
            })
            .collect()
    }

    async fn due(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Callback>, StoreError> {
        self.fetch_callbacks(sqlx::query(DUE).bind(now).bind(i64::from(limit)))
            .await
    }
}

fn agent_from_row(row: &DbRow) -> Result<Agent, StoreError> {
    let state: String = row.try_get("state").map_err(db_error)?;
    let Json(skills) = row.try_get("skills").map_err(db_error)?;
    Ok(Agent {
        id: row.try_get("id").map_err(db_error)?,
        name: row.try_get("name").map_err(db_error)?,
        skills,
        address: row.try_get("address").map_err(db_error)?,
        state: AgentState::parse(&state).ok_or_else(|| corrupt("agent state", &state))?,
        reason: row.try_get("reason").map_err(db_error)?,
        attempt: row.try_get("attempt_id").map_err(db_error)?,
        since: row.try_get("since").map_err(db_error)?,
        version: row.try_get("version").map_err(db_error)?,
    })
}

fn attempt_from_row(row: &DbRow) -> Result<Attempt, StoreError> {
    let outcome: Option<String> = row.try_get("outcome").map_err(db_error)?;
    Ok(Attempt {
        id: row.try_get("id").map_err(db_error)?,
        callback_id: row.try_get("callback_id").map_err(db_error)?,
        number: row.try_get::<i32, _>("number").map_err(db_error)? as u32,
        generation: row.try_get("generation").map_err(db_error)?,
        node: row.try_get("node").map_err(db_error)?,
        agent_id: row.try_get("agent_id").map_err(db_error)?,
        started_at: row.try_get("started_at").map_err(db_error)?,
        ended_at: row.try_get("ended_at").map_err(db_error)?,
        outcome: outcome
            .map(|o| AttemptOutcome::parse(&o).ok_or_else(|| corrupt("attempt outcome", &o)))
            .transpose()?,
        sip_status: row
            .try_get::<Option<i32>, _>("sip_status")
            .map_err(db_error)?
            .map(|s| s as u16),
    })
}

/// Writes an agent over the version before it and appends the step to its history.
async fn move_agent_in(
    tx: &mut sqlx::Transaction<'_, Db>,
    old: &Agent,
    new: &Agent,
    actor: &str,
) -> Result<(), StoreError> {
    let moved = sqlx::query(
        "UPDATE agents SET state = $2, reason = $3, since = $4, version = $5, attempt_id = $7 \
         WHERE id = $1 AND version = $6",
    )
    .bind(new.id.as_str())
    .bind(new.state.as_str())
    .bind(new.reason.as_deref())
    .bind(new.since)
    .bind(new.version)
    .bind(old.version)
    .bind(new.attempt)
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    if moved.rows_affected() == 0 {
        return Err(StoreError::Conflict { found: -1 });
    }
    insert_agent_event(tx, new, Some(old.state), actor).await
}

async fn insert_agent_event(
    tx: &mut sqlx::Transaction<'_, Db>,
    agent: &Agent,
    from: Option<AgentState>,
    actor: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO agent_events (agent_id, at, actor, from_state, to_state, reason) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(agent.id.as_str())
    .bind(agent.since)
    .bind(actor)
    .bind(from.map(AgentState::as_str))
    .bind(agent.state.as_str())
    .bind(agent.reason.as_deref())
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(())
}

impl SqlStore<Db> {
    /// A write transaction; on SQLite it takes the write lock at once, so a read inside it
    /// can never go stale.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Db>, StoreError> {
        self.writer()
            .begin_with(BEGIN_WRITE)
            .await
            .map_err(db_error)
    }

    pub async fn insert_agent(&self, agent: &Agent, actor: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(concat!(
            "INSERT INTO agents (",
            agent_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING"
        ))
        .bind(agent.id.as_str())
        .bind(agent.name.as_str())
        .bind(Json(&agent.skills))
        .bind(agent.address.as_str())
        .bind(agent.state.as_str())
        .bind(agent.reason.as_deref())
        .bind(agent.attempt)
        .bind(agent.since)
        .bind(agent.version)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::DuplicateAgent);
        }
        insert_agent_event(&mut tx, agent, None, actor).await?;
        tx.commit().await.map_err(db_error)
    }

    /// Every agent, by ID.
    pub async fn agents(&self) -> Result<Vec<Agent>, StoreError> {
        sqlx::query(concat!(
            "SELECT ",
            agent_columns!(),
            " FROM agents ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?
        .iter()
        .map(agent_from_row)
        .collect()
    }

    pub async fn agent(&self, id: &str) -> Result<Option<Agent>, StoreError> {
        sqlx::query(concat!(
            "SELECT ",
            agent_columns!(),
            " FROM agents WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?
        .as_ref()
        .map(agent_from_row)
        .transpose()
    }

    /// Moves an agent from `old` (the version read) to `new`; a conflict when someone moved
    /// it first.
    pub async fn move_agent(
        &self,
        old: &Agent,
        new: &Agent,
        actor: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        move_agent_in(&mut tx, old, new, actor).await?;
        tx.commit().await.map_err(db_error)
    }

    pub async fn agent_history(&self, id: &str) -> Result<Vec<AgentEvent>, StoreError> {
        type Row = (
            DateTime<Utc>,
            String,
            Option<String>,
            String,
            Option<String>,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT at, actor, from_state, to_state, reason FROM agent_events \
                 WHERE agent_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let state = |s: &str| AgentState::parse(s).ok_or_else(|| corrupt("agent state", s));
        rows.into_iter()
            .map(|(at, actor, from, to, reason)| {
                Ok(AgentEvent {
                    at,
                    actor,
                    from: from.as_deref().map(state).transpose()?,
                    to: state(&to)?,
                    reason,
                })
            })
            .collect()
    }

    /// Reserves the ready agent `agent` (as `reserved`) for the first due queued callback,
    /// in dialing order, with one of its skills that `choose` takes (returning it as claimed,
    /// with the history line); callbacks `choose` defers (outside their calling window) are
    /// written as it returns them and passed over, and those it passes are left alone. In one
    /// transaction: the agent is reserved, the callback leased to `node` until `until` under
    /// a new generation, and the attempt recorded, so the attempt is in the store before any
    /// INVITE goes out. `None` when nothing fits; [`StoreError::Conflict`] when the agent was
    /// moved meanwhile.
    pub async fn claim(
        &self,
        request: &crate::ClaimRequest<'_>,
        mut choose: impl FnMut(&Callback) -> crate::Choice + Send,
    ) -> Result<Option<crate::Claimed>, StoreError> {
        let crate::ClaimRequest {
            attempt_id,
            agent: old,
            reserved,
            node,
            now,
            until,
        } = *request;
        let mut tx = self.begin_write().await?;
        let skills: Vec<&str> = old.skills.iter().map(|s| s.name.as_str()).collect();
        let placeholders: Vec<String> = (0..skills.len()).map(|i| format!("${}", i + 2)).collect();
        // Text messages are not the dialer's; a callback still leased (paused and resumed
        // while its attempt ends) is not free yet; one past its expiry is never called, even
        // before the sweep marks it expired.
        let sql = format!(
            concat!(
                "SELECT ",
                columns!(),
                " FROM callbacks WHERE state = 'queued' AND next_attempt_at <= $1 \
                 AND expires_at > $1 AND skill IN ({}) AND media <> 'sms' \
                 AND lease_owner IS NULL \
                 ORDER BY priority DESC, enqueued_at, id LIMIT 64{}"
            ),
            placeholders.join(", "),
            LOCK_SKIP_LOCKED
        );
        let mut query = sqlx::query(&sql).bind(now);
        for skill in &skills {
            query = query.bind(*skill);
        }
        let callbacks: Vec<Callback> = query
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?
            .iter()
            .map(callback_from_row)
            .collect::<Result<_, _>>()?;
        let holds_sql = format!(
            "SELECT id, node, queue, skill, priority, enqueued_at, caller_id FROM holds \
             WHERE agent_id IS NULL AND expires_at > $1 AND skill IN ({}) \
             ORDER BY priority DESC, enqueued_at, id LIMIT 64{}",
            placeholders.join(", "),
            LOCK_SKIP_LOCKED
        );
        type HoldRow = (Uuid, String, String, String, i32, DateTime<Utc>, String);
        let mut query = sqlx::query_as::<_, HoldRow>(&holds_sql).bind(now);
        for skill in &skills {
            query = query.bind(*skill);
        }
        let holds = query
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?
            .into_iter()
            .map(
                |(id, node, queue, skill, priority, enqueued_at, caller_id)| crate::Hold {
                    id,
                    node,
                    queue,
                    skill,
                    priority,
                    enqueued_at,
                    caller_id,
                },
            );
        // One line: callbacks and holding callers by priority, then by when they came.
        let mut line: Vec<(crate::Place, Result<Callback, crate::Hold>)> = callbacks
            .into_iter()
            .map(|cb| (crate::Place::of(&cb), Ok(cb)))
            .chain(holds.map(|h| (h.place(), Err(h))))
            .collect();
        line.sort_by_key(|(place, _)| place.key());
        let mut taken = None;
        for (_, item) in line {
            let old_cb = match item {
                Ok(cb) => cb,
                // A caller holding on another node comes first: that node serves them, and
                // nobody behind them is taken out of turn.
                Err(hold) if hold.node != node => break,
                Err(hold) => {
                    let mut reserved = reserved.clone();
                    reserved.attempt = Some(hold.id);
                    move_agent_in(&mut tx, old, &reserved, node).await?;
                    sqlx::query("UPDATE holds SET agent_id = $2 WHERE id = $1")
                        .bind(hold.id)
                        .bind(old.id.as_str())
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error)?;
                    tx.commit().await.map_err(db_error)?;
                    return Ok(Some(crate::Claimed::Hold(hold)));
                }
            };
            match choose(&old_cb) {
                crate::Choice::Pass => {}
                crate::Choice::Defer(cb, event) => {
                    bind_callback(sqlx::query(UPDATE), &cb)
                        .bind(old_cb.version)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error)?;
                    insert_event(&mut *tx, &event).await?;
                }
                crate::Choice::Take(cb, event) => {
                    taken = Some((old_cb.version, cb, event));
                    break;
                }
            }
        }
        let Some((old_version, cb, event)) = taken else {
            tx.commit().await.map_err(db_error)?;
            return Ok(None);
        };
        move_agent_in(&mut tx, old, reserved, node).await?;
        bind_callback(sqlx::query(UPDATE), &cb)
            .bind(old_version)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let (generation,): (i64,) = sqlx::query_as(
            "UPDATE callbacks SET lease_owner = $2, lease_expires_at = $3, \
             lease_generation = lease_generation + 1 WHERE id = $1 RETURNING lease_generation",
        )
        .bind(cb.id)
        .bind(node)
        .bind(until)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        let attempt = Attempt {
            id: attempt_id,
            callback_id: cb.id,
            number: cb.attempts,
            generation,
            node: node.to_owned(),
            agent_id: Some(old.id.clone()),
            started_at: now,
            ended_at: None,
            outcome: None,
            sip_status: None,
        };
        sqlx::query(concat!(
            "INSERT INTO attempts (",
            attempt_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .bind(attempt.id)
        .bind(attempt.callback_id)
        .bind(attempt.number as i32)
        .bind(attempt.generation)
        .bind(attempt.node.as_str())
        .bind(attempt.agent_id.as_deref())
        .bind(attempt.started_at)
        .bind(attempt.ended_at)
        .bind(None::<String>)
        .bind(None::<i32>)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        insert_event(&mut *tx, &event).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(Some(crate::Claimed::Callback(Box::new(cb), attempt)))
    }

    /// Extends the lease of generation `generation` to `until`; `false` when it was lost.
    pub async fn renew(
        &self,
        callback: Uuid,
        generation: i64,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let renewed = sqlx::query(
            "UPDATE callbacks SET lease_expires_at = $3 \
             WHERE id = $1 AND lease_generation = $2 AND lease_owner IS NOT NULL",
        )
        .bind(callback)
        .bind(generation)
        .bind(until)
        .execute(self.writer())
        .await
        .map_err(db_error)?;
        Ok(renewed.rows_affected() == 1)
    }

    /// A step of an attempt by the holder of lease `generation`: the callback written over
    /// the version before it, with its history line; with `finish`, the attempt's outcome is
    /// written and the lease released. [`StoreError::LeaseLost`] when another node holds the
    /// callback now, a conflict when someone changed it since it was read.
    pub async fn step_attempt(
        &self,
        generation: i64,
        callback: &Callback,
        event: &Event,
        finish: Option<&crate::Finish>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let updated = bind_callback(sqlx::query(UPDATE_LEASED), callback)
            .bind(callback.version - 1)
            .bind(generation)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        if updated.rows_affected() == 0 {
            let found: Option<(i64, i64)> =
                sqlx::query_as("SELECT version, lease_generation FROM callbacks WHERE id = $1")
                    .bind(callback.id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_error)?;
            tx.rollback().await.map_err(db_error)?;
            return Err(match found {
                None => StoreError::Missing(callback.id),
                Some((_, g)) if g != generation => StoreError::LeaseLost(callback.id),
                Some((found, _)) => StoreError::Conflict { found },
            });
        }
        if let Some(finish) = finish {
            sqlx::query(
                "UPDATE callbacks SET lease_owner = NULL, lease_expires_at = NULL WHERE id = $1",
            )
            .bind(callback.id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            sqlx::query(
                "UPDATE attempts SET ended_at = $2, outcome = $3, sip_status = $4 \
                 WHERE id = $1 AND ended_at IS NULL",
            )
            .bind(finish.attempt)
            .bind(finish.at)
            .bind(finish.outcome.as_str())
            .bind(finish.sip_status.map(i32::from))
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        insert_event(&mut *tx, event).await?;
        tx.commit().await.map_err(db_error)
    }

    /// The callback a lease is on, as it stands.
    pub async fn callback(&self, callback: Uuid) -> Result<Option<Callback>, StoreError> {
        sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM callbacks WHERE id = $1"
        ))
        .bind(callback)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?
        .as_ref()
        .map(callback_from_row)
        .transpose()
    }

    /// Takes over the leases that expired before `now` (their nodes stopped or lost the
    /// database), for `node` until `until` under new generations; returns each callback with
    /// the attempt still open on it (none when a node that took it over before stopped too)
    /// and the new generation.
    pub async fn take_over_expired(
        &self,
        node: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<(Callback, Option<Attempt>, i64)>, StoreError> {
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(&format!(
            "SELECT id, lease_generation FROM callbacks \
             WHERE lease_owner IS NOT NULL AND lease_expires_at < $1 LIMIT 100{LOCK_SKIP_LOCKED}"
        ))
        .bind(now)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        let mut taken = Vec::new();
        for row in rows {
            let id: Uuid = row.try_get("id").map_err(db_error)?;
            let old: i64 = row.try_get("lease_generation").map_err(db_error)?;
            sqlx::query(
                "UPDATE callbacks SET lease_owner = $2, lease_expires_at = $3, \
                 lease_generation = lease_generation + 1 WHERE id = $1 AND lease_generation = $4",
            )
            .bind(id)
            .bind(node)
            .bind(until)
            .bind(old)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            let cb = sqlx::query(concat!(
                "SELECT ",
                columns!(),
                " FROM callbacks WHERE id = $1"
            ))
            .bind(id)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
            let attempt = sqlx::query(concat!(
                "SELECT ",
                attempt_columns!(),
                " FROM attempts WHERE callback_id = $1 AND ended_at IS NULL \
                 ORDER BY generation DESC LIMIT 1"
            ))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
            taken.push((
                callback_from_row(&cb)?,
                attempt.as_ref().map(attempt_from_row).transpose()?,
                old + 1,
            ));
        }
        tx.commit().await.map_err(db_error)?;
        Ok(taken)
    }

    /// A callback's attempts, oldest first.
    pub async fn attempts(&self, callback: Uuid) -> Result<Vec<Attempt>, StoreError> {
        sqlx::query(concat!(
            "SELECT ",
            attempt_columns!(),
            " FROM attempts WHERE callback_id = $1 ORDER BY number, generation"
        ))
        .bind(callback)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?
        .iter()
        .map(attempt_from_row)
        .collect()
    }
}

impl SqlStore<Db> {
    /// How many due queued callbacks and holding callers needing `skill` come before `place`
    /// in line (across queues: agents serve a skill, not a queue); all of them for `None`.
    pub async fn ahead(
        &self,
        skill: &str,
        place: Option<crate::Place>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let before = "($3 IS NULL OR priority > $3 \
             OR (priority = $3 AND (enqueued_at < $4 OR (enqueued_at = $4 AND id < $5))))";
        let sql = format!(
            "SELECT (SELECT COUNT(*) FROM callbacks WHERE skill = $1 AND state = 'queued' \
             AND media <> 'sms' AND next_attempt_at <= $2 AND {before}) + \
             (SELECT COUNT(*) FROM holds WHERE skill = $1 AND agent_id IS NULL \
             AND expires_at > $2 AND {before})"
        );
        let (count,): (i64,) = sqlx::query_as(&sql)
            .bind(skill)
            .bind(now)
            .bind(place.map(|p| p.priority))
            .bind(place.map(|p| p.enqueued_at))
            .bind(place.map(|p| p.id))
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(count.max(0) as u64)
    }

    /// How long the latest `limit` connected calls with `skill` took, from the claim to the
    /// hang-up, newest first.
    pub async fn handle_times(
        &self,
        skill: &str,
        limit: u32,
    ) -> Result<Vec<chrono::Duration>, StoreError> {
        let rows: Vec<(DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
            "SELECT a.started_at, a.ended_at FROM attempts a JOIN callbacks c ON c.id = a.callback_id \
             WHERE a.outcome = 'connected' AND c.skill = $1 ORDER BY a.ended_at DESC LIMIT $2",
        )
        .bind(skill)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(rows.into_iter().map(|(start, end)| end - start).collect())
    }
}

impl SqlStore<Db> {
    /// Agents reserved or on a call whose attempt ended before `before` (or that have none):
    /// left behind by a node that stopped between recording an attempt and freeing its agent.
    pub async fn stranded_agents(&self, before: DateTime<Utc>) -> Result<Vec<Agent>, StoreError> {
        sqlx::query(concat!(
            "SELECT ",
            agent_columns!(),
            " FROM agents WHERE state IN ('reserved', 'on_call') AND since < $1 \
             AND NOT EXISTS (SELECT 1 FROM attempts WHERE attempts.id = agents.attempt_id \
             AND (attempts.ended_at IS NULL OR attempts.ended_at >= $1)) \
             AND NOT EXISTS (SELECT 1 FROM holds WHERE holds.id = agents.attempt_id)"
        ))
        .bind(before)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?
        .iter()
        .map(agent_from_row)
        .collect()
    }
}

impl SqlStore<Db> {
    pub async fn insert_hold(
        &self,
        h: &crate::Hold,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.write(sqlx::query(
            "INSERT INTO holds (id, node, queue, skill, priority, enqueued_at, caller_id, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(h.id)
        .bind(h.node.as_str())
        .bind(h.queue.as_str())
        .bind(h.skill.as_str())
        .bind(h.priority)
        .bind(h.enqueued_at)
        .bind(h.caller_id.as_str())
        .bind(expires_at))
.await?;
        Ok(())
    }

    pub async fn renew_holds(&self, node: &str, until: DateTime<Utc>) -> Result<(), StoreError> {
        self.write(
            sqlx::query("UPDATE holds SET expires_at = $2 WHERE node = $1")
                .bind(node)
                .bind(until),
        )
        .await?;
        Ok(())
    }

    pub async fn remove_hold(&self, id: Uuid) -> Result<(), StoreError> {
        self.write(sqlx::query("DELETE FROM holds WHERE id = $1").bind(id))
            .await?;
        Ok(())
    }

    pub async fn release_hold(&self, id: Uuid) -> Result<(), StoreError> {
        self.write(sqlx::query("UPDATE holds SET agent_id = NULL WHERE id = $1").bind(id))
            .await?;
        Ok(())
    }

    pub async fn purge_holds(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let done = self
            .write(sqlx::query("DELETE FROM holds WHERE expires_at < $1").bind(now))
            .await?;
        Ok(done)
    }
}
