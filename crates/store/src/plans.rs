//! The two hot reads use indexes: a lookup by confirmation ID is an index search, and the
//! queue in dialing order is read from an index without sorting.

use callbacks::{Filter, State};
use sqlx::Row;

use crate::{testing, PgStore, SqliteStore};

fn queued_support() -> Filter {
    Filter {
        state: Some(State::Queued),
        queue: Some("support".into()),
        skill: None,
        limit: 100,
    }
}

#[tokio::test]
async fn sqlite_reads_use_indexes() {
    let url = testing::sqlite_url();
    let store = SqliteStore::open(&url).await.unwrap();
    let plan = |sql: String, values: Vec<String>| {
        let pool = store.pool().clone();
        async move {
            let mut query = sqlx::query(&sql);
            for v in &values {
                query = query.bind(v);
            }
            let rows = query.fetch_all(&pool).await.unwrap();
            rows.iter()
                .map(|r| r.get::<String, _>("detail"))
                .collect::<Vec<_>>()
                .join("; ")
        }
    };
    let find = plan(
        format!("EXPLAIN QUERY PLAN {}", crate::sqlite::FIND),
        vec!["123456789".into()],
    )
    .await;
    assert!(
        find.contains("USING INDEX callbacks_confirmation_id")
            || find.contains("USING INDEX callbacks_open_confirmation_id"),
        "{find}"
    );
    for (filter, index) in [
        (queued_support(), "callbacks_dialing_order"),
        (
            Filter {
                limit: 100,
                ..Filter::default()
            },
            "callbacks_all_in_order",
        ),
    ] {
        let (sql, values) = crate::sqlite::list_sql(&filter);
        let mut values: Vec<String> = values.into_iter().map(String::from).collect();
        values.push("100".into());
        let listing = plan(format!("EXPLAIN QUERY PLAN {sql}"), values).await;
        assert!(listing.contains(index), "{listing}");
        assert!(!listing.contains("TEMP B-TREE"), "no sort: {listing}");
    }
    store.close().await;
    testing::discard(&url).await;
}

#[tokio::test]
async fn postgres_reads_use_indexes() {
    let url = testing::postgres_url().await;
    let store = PgStore::open(&url).await.unwrap();
    // Enough rows, mostly queued, for the planner to prefer indexes as it would in production.
    sqlx::raw_sql(
        "INSERT INTO callbacks SELECT gen_random_uuid(), lpad(i::text, 9, '0'), \
           CASE WHEN i % 4 = 0 THEN 'sales' ELSE 'support' END, 'billing', 'voice', '+12125550100', NULL, NULL, \
           'America/New_York', CASE WHEN i % 10 = 0 THEN 'paused' ELSE 'queued' END, 0, 0, 3, now(), \
           now() + i * interval '1 ms', now() + interval '2 days', 'api', '{}', 1, now(), now() \
         FROM generate_series(1, 20000) AS i; ANALYZE callbacks",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let plan = |sql: String, values: Vec<String>| {
        let pool = store.pool().clone();
        async move {
            let mut query = sqlx::query(&sql);
            for v in &values {
                query = query.bind(v);
            }
            let rows = query.fetch_all(&pool).await.unwrap();
            rows.iter()
                .map(|r| r.get::<String, _>(0))
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    let find = plan(
        format!("EXPLAIN {}", crate::postgres::FIND),
        vec!["000012345".into()],
    )
    .await;
    assert!(
        find.contains("Index Scan using callbacks_confirmation_id")
            || find.contains("Index Scan using callbacks_open_confirmation_id")
            || find.contains("Bitmap Index Scan on callbacks_"),
        "{find}"
    );
    let filter = queued_support();
    let (sql, values) = crate::postgres::list_sql(&filter);
    // The limit is a bigint parameter; EXPLAIN takes it as text and casts.
    let sql = sql.replace("LIMIT $3", "LIMIT $3::bigint");
    let mut values: Vec<String> = values.into_iter().map(String::from).collect();
    values.push("100".into());
    let listing = plan(format!("EXPLAIN {sql}"), values).await;
    // Either ordered index serves it; the planner picks by how selective the filter is.
    assert!(
        listing.contains("Index Scan using callbacks_dialing_order")
            || listing.contains("Index Scan using callbacks_all_in_order"),
        "{listing}"
    );
    assert!(!listing.contains("Sort"), "no sort: {listing}");
    store.close().await;
    testing::discard(&url).await;
}
