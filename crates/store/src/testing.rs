//! Fresh, empty databases for tests: a SQLite file, or a new database on the PostgreSQL server
//! named by `CALLBACKD_TEST_POSTGRES` (which `scripts/test.sh` starts and sets).

use sqlx::Connection;

/// The environment variable naming a PostgreSQL server tests may create databases on.
pub const POSTGRES_ENV: &str = "CALLBACKD_TEST_POSTGRES";

fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{:016x}", rand::random::<u64>())
}

/// A URL for a SQLite file in the temporary folder that does not exist yet.
pub fn sqlite_url() -> String {
    let path = std::env::temp_dir().join(format!("{}.db", unique_name("callbackd_test")));
    format!("sqlite://{}", path.display())
}

/// Creates an empty database on the test PostgreSQL server and returns its URL.
///
/// Panics with what to do when no server is configured: a test that needs PostgreSQL must
/// fail, never pass without it.
pub async fn postgres_url() -> String {
    let admin = std::env::var(POSTGRES_ENV).unwrap_or_else(|_| {
        panic!(
            "{POSTGRES_ENV} is not set: these tests need a PostgreSQL server. Run them with \
             scripts/test.sh, which starts one, or set {POSTGRES_ENV}=postgres://USER@HOST:PORT/postgres"
        )
    });
    let name = unique_name("cbtest");
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL at {admin}: {e}"));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("cannot create a test database: {e}"));
    conn.close().await.ok();
    let base = admin
        .rsplit_once('/')
        .map_or(admin.as_str(), |(base, _)| base);
    format!("{base}/{name}")
}

/// Drops a database made by [`postgres_url`] or removes a SQLite file made by [`sqlite_url`].
pub async fn discard(url: &str) {
    if let Some(path) = url.strip_prefix("sqlite://") {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
    } else if let (Ok(admin), Some((_, name))) = (std::env::var(POSTGRES_ENV), url.rsplit_once('/'))
    {
        if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await;
        }
    }
}
