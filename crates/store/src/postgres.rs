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
include!("sql.rs");

impl SqlStore<Db> {
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
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
