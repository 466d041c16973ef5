//! PostgreSQL: many nodes share one database.

use std::time::Duration;

use callbacks::StoreError;
use sqlx::postgres::PgPoolOptions;

use crate::{db_error, migrate_error, SqlStore};

type Db = sqlx::Postgres;
/// Opens a transaction that writes.
const BEGIN_WRITE: &str = "BEGIN";
/// Rows a node reads to claim are locked, and rows another node has locked are passed over.
const LOCK_SKIP_LOCKED: &str = " FOR UPDATE SKIP LOCKED";
/// How long a transaction may wait for its node between statements before PostgreSQL ends
/// it. A node frozen in the middle of one (a stopped process, a paused VM) would otherwise
/// hold its rows locked, and every other node would pass its callbacks over, until its
/// connection died. callbackd's transactions never wait for anything but the database.
const IDLE_IN_TRANSACTION: &str = "15s";
include!("sql.rs");

impl SqlStore<Db> {
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            // A SET rather than a start-up option, which a pooler such as PgBouncer refuses.
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query(&format!(
                        "SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION}'"
                    ))
                    .execute(conn)
                    .await
                    .map(|_| ())
                })
            })
            .connect(url)
            .await
            .map_err(db_error)?;
        // sqlx takes an advisory lock, so nodes starting together migrate once.
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(migrate_error)?;
        Ok(Self { pool, writer: None })
    }
}
