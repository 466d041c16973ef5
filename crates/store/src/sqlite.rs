//! SQLite: the embedded default for one node, durable against a crash at any instant.

use std::str::FromStr;
use std::time::Duration;

use callbacks::StoreError;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::{db_error, migrate_error, SqlStore};

type Db = sqlx::Sqlite;
/// Opens a transaction that writes.
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";
/// Rows a node reads to claim are locked, and rows another node has locked are passed over.
const LOCK_SKIP_LOCKED: &str = "";
include!("sql.rs");

impl SqlStore<Db> {
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(db_error)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Every commit reaches the disk before it is acknowledged.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let connect = |connections| {
            SqlitePoolOptions::new()
                .max_connections(connections)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(options.clone())
        };
        // An in-memory database lives as long as its one connection.
        let pool = connect(if in_memory { 1 } else { 8 })
            .await
            .map_err(db_error)?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(migrate_error)?;
        let writer = if in_memory {
            None
        } else {
            Some(connect(1).await.map_err(db_error)?)
        };
        Ok(Self { pool, writer })
    }
}
