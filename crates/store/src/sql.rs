// The store's SQL and row mapping, shared by both backends: `postgres.rs` and `sqlite.rs`
// include this file with `Db` naming their driver.

use callbacks::{
    Address, Callback, CallbackStore, Channel, ConfirmationId, Event, Filter, Media, Outcome,
    ReceiptCode, RequestedTime, Source, State,
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

/// Open states first, then the newest: the callback a confirmation ID stands for.
pub(crate) const FIND: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM callbacks WHERE confirmation_id = $1 \
     ORDER BY CASE WHEN state IN ('completed', 'cancelled', 'failed', 'expired') THEN 1 ELSE 0 END, \
     created_at DESC LIMIT 1"
);

const INSERT: &str = concat!(
    "INSERT INTO callbacks (",
    columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
     $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)"
);

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
        time_zone: time_zone.parse().map_err(|_| corrupt("time zone", &time_zone))?,
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
    /// Replaces every binding of `user` with `bindings`, in one transaction.
    pub async fn replace_bindings(&self, user: &str, bindings: &[crate::Binding]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
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

    pub async fn record_security_event(&self, e: &crate::SecurityEvent) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO security_events (at, kind, caller_id, source, call_id) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(e.at)
        .bind(e.kind.as_str())
        .bind(e.caller_id.as_str())
        .bind(e.source.as_str())
        .bind(e.call_id.as_str())
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    pub async fn count_security_events(
        &self,
        kind: &str,
        caller_id: Option<&str>,
        since: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let (count,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM security_events \
             WHERE kind = $1 AND at > $2 AND ($3 IS NULL OR caller_id = $3)",
        )
        .bind(kind)
        .bind(since)
        .bind(caller_id)
        .fetch_one(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(count.max(0) as u64)
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
            .map(|(user, contact, source, transport, expires_at)| crate::Binding { user, contact, source, transport, expires_at })
            .collect())
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
        let mut tx = self.pool.begin().await.map_err(db_error)?;
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
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let updated = bind_callback(
            sqlx::query(
                "UPDATE callbacks SET confirmation_id = $2, queue = $3, skill = $4, media = $5, \
                 address = $6, customer_name = $7, requested_at = $8, time_zone = $9, state = $10, \
                 priority = $11, attempts = $12, max_attempts = $13, next_attempt_at = $14, \
                 enqueued_at = $15, expires_at = $16, source = $17, context = $18, version = $19, \
                 created_at = $20, updated_at = $21 WHERE id = $1 AND version = $22",
            ),
            callback,
        )
        .bind(callback.version - 1)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        if updated.rows_affected() == 0 {
            let found: Option<i64> = sqlx::query_scalar("SELECT version FROM callbacks WHERE id = $1")
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
        insert_event(&self.pool, event).await
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
        self.fetch_callbacks(query.bind(i64::from(filter.limit))).await
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
