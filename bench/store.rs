//! Store throughput with a million callbacks: modifications per second and lookup latency
//! (p50/p99), on SQLite and PostgreSQL. Run through `bench/store.sh`, which starts a
//! PostgreSQL with fsync on; see bench/README.md for the figures and how they were taken.
//!
//! Environment: CALLBACKD_BENCH_BACKENDS (default "sqlite,postgres"), CALLBACKD_BENCH_ROWS
//! (default 1000000), CALLBACKD_BENCH_SECONDS per measurement (default 10),
//! CALLBACKD_BENCH_CLIENTS concurrent modifiers (default 16), and CALLBACKD_TEST_POSTGRES.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use callbacks::{
    Actor, Callback, CallbackStore, Callbacks, CallingWindow, Channel, ConfirmationId,
    DialingPolicy, Modification, ModifyError, Policy, Queue,
};
use chrono::Utc;
use rand::{rngs::StdRng, Rng, SeedableRng};
use store::Store;

fn env(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_owned())
}

fn policy() -> Policy {
    Policy {
        queues: BTreeMap::from([(
            "support".to_string(),
            Queue {
                skills: vec!["billing".into(), "technical".into(), "sales".into()],
                time_zone: chrono_tz::America::New_York,
                calling_window: CallingWindow::always(),
                max_attempts: 3,
                retry_backoff: vec![chrono::Duration::minutes(5)],
                booking_horizon: chrono::Duration::days(14),
                expiry: chrono::Duration::days(30),
                handle_time: chrono::Duration::minutes(5),
                customer_first: false,
                caller_id: None,
            },
        )]),
        dialing: DialingPolicy::home("US").unwrap(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// One row's SQL literals, in the store's column order, as each backend stores them.
fn row(cb: &Callback, postgres: bool) -> String {
    let time = |t: chrono::DateTime<Utc>| {
        if postgres {
            format!("'{}'", t.to_rfc3339())
        } else {
            format!(
                "'{}'",
                t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
            )
        }
    };
    let id = if postgres {
        format!("'{}'", cb.id)
    } else {
        format!("X'{}'", cb.id.simple())
    };
    format!(
        "({id}, '{}', 'support', '{}', 'voice', '{}', NULL, NULL, 'America/New_York', '{}', 0, 0, 3, {}, {}, {}, 'api', '{{}}', 1, {}, {})",
        cb.confirmation_id, cb.skill, cb.address.as_str(), cb.state, time(cb.next_attempt_at),
        time(cb.enqueued_at), time(cb.expires_at), time(cb.created_at), time(cb.updated_at)
    )
}

/// Loads `rows` callbacks with their `created` events in multi-row inserts, and returns
/// their confirmation IDs.
async fn load(store: &Store, template: &Callback, rows: usize) -> Vec<ConfirmationId> {
    let postgres = matches!(store, Store::Postgres(_));
    let mut rng = StdRng::seed_from_u64(42);
    let mut ids = Vec::with_capacity(rows);
    // Confirmation IDs are unique among open callbacks: redraw the birthday clashes.
    let mut taken = std::collections::HashSet::from([template.confirmation_id.clone()]);
    let started = Instant::now();
    let batch = 2000;
    for start in (0..rows).step_by(batch) {
        let mut callbacks = String::new();
        let mut events = String::new();
        for i in start..(start + batch).min(rows) {
            let mut cb = template.clone();
            cb.id = uuid::Builder::from_random_bytes(rng.gen()).into_uuid();
            cb.confirmation_id = loop {
                let id = ConfirmationId::generate(&mut rng);
                if taken.insert(id.clone()) {
                    break id;
                }
            };
            cb.enqueued_at = template.enqueued_at + chrono::Duration::milliseconds(i as i64);
            cb.skill = ["billing", "technical", "sales"][i % 3].into();
            let sep = if callbacks.is_empty() { "" } else { "," };
            write!(callbacks, "{sep}{}", row(&cb, postgres)).unwrap();
            let id = if postgres {
                format!("'{}'", cb.id)
            } else {
                format!("X'{}'", cb.id.simple())
            };
            write!(events, "{sep}({id}, '{}', '{}', 'api', 'bench', 'created', 'success', NULL, NULL, 'queued', '{{}}')",
                cb.confirmation_id, cb.created_at.to_rfc3339()).unwrap();
            ids.push(cb.confirmation_id);
        }
        let sql = format!(
            "INSERT INTO callbacks (id, confirmation_id, queue, skill, media, address, customer_name, requested_at, \
             time_zone, state, priority, attempts, max_attempts, next_attempt_at, enqueued_at, expires_at, source, \
             context, version, created_at, updated_at) VALUES {callbacks}; \
             INSERT INTO callback_events (callback_id, confirmation_id, at, channel, actor, action, outcome, receipt, \
             from_state, to_state, changes) VALUES {events}"
        );
        match store {
            Store::Postgres(s) => sqlx::raw_sql(&sql).execute(s.pool()).await.map(drop),
            Store::Sqlite(s) => sqlx::raw_sql(&sql).execute(s.pool()).await.map(drop),
        }
        .expect("bulk load");
    }
    let analyze = "ANALYZE";
    match store {
        Store::Postgres(s) => sqlx::raw_sql(analyze).execute(s.pool()).await.map(drop),
        Store::Sqlite(s) => sqlx::raw_sql(analyze).execute(s.pool()).await.map(drop),
    }
    .unwrap();
    eprintln!(
        "  loaded {rows} callbacks in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    ids
}

async fn measure(name: &str, url: &str, report: &mut String) {
    let rows: usize = env("CALLBACKD_BENCH_ROWS", "1000000").parse().unwrap();
    let seconds: u64 = env("CALLBACKD_BENCH_SECONDS", "10").parse().unwrap();
    let clients: usize = env("CALLBACKD_BENCH_CLIENTS", "16").parse().unwrap();
    eprintln!("{name}:");
    let store = Store::open(url).await.expect("store opens");
    let cb = Arc::new(Callbacks::new(store, policy()));
    let actor = Actor::new(Channel::Api, "bench");
    let template = cb
        .create(
            &mut StdRng::seed_from_u64(1),
            Utc::now(),
            &actor,
            callbacks::Source::Api,
            serde_json::from_value(
                serde_json::json!({"queue": "support", "address": "+12125550100"}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let ids = Arc::new(load(&cb.store, &template, rows).await);

    // Lookups: one client, one after another, random IDs.
    let mut rng = StdRng::seed_from_u64(7);
    let mut lookups = Vec::new();
    let until = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < until {
        let id = &ids[rng.gen_range(0..ids.len())];
        let t = Instant::now();
        let found = cb.store.find(id).await.unwrap();
        lookups.push(t.elapsed());
        assert!(found.is_some());
    }
    lookups.sort();

    // Modifications: `clients` at once, each pausing and resuming callbacks of its own.
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (cb, ids, actor) = (cb.clone(), ids.clone(), actor.clone());
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(100 + c as u64);
                let mut latencies = Vec::new();
                let mut paused = std::collections::HashSet::new();
                while Instant::now() < until {
                    // Client c owns the IDs congruent to c, so clients never conflict.
                    let i = rng.gen_range(0..ids.len() / clients) * clients + c;
                    let m = if paused.insert(i) {
                        Modification::Pause {}
                    } else {
                        paused.remove(&i);
                        Modification::Resume {}
                    };
                    let t = Instant::now();
                    match cb
                        .modify(&mut rng, Utc::now(), &actor, &ids[i], None, &m)
                        .await
                    {
                        Ok(_) => latencies.push(t.elapsed()),
                        Err(ModifyError::Refused(r)) => panic!("refused: {}", r.rejection),
                        Err(e) => panic!("store error: {e}"),
                    }
                }
                latencies
            })
        })
        .collect();
    let mut modifications = Vec::new();
    for t in tasks {
        modifications.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    modifications.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    writeln!(
        report,
        "| {name} | {rows} | {:.0} | {:.3} | {:.3} | {:.0} | {:.2} | {:.2} |",
        lookups.len() as f64 / seconds as f64,
        ms(percentile(&lookups, 0.5)),
        ms(percentile(&lookups, 0.99)),
        modifications.len() as f64 / elapsed,
        ms(percentile(&modifications, 0.5)),
        ms(percentile(&modifications, 0.99)),
    )
    .unwrap();
    cb.store.close().await;
}

#[tokio::main]
async fn main() {
    let mut report = String::from(
        "| store | callbacks | lookups/s (1 client) | lookup p50 ms | lookup p99 ms | modifications/s | modification p50 ms | modification p99 ms |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for backend in env("CALLBACKD_BENCH_BACKENDS", "sqlite,postgres").split(',') {
        let url = match backend {
            "sqlite" => store::testing::sqlite_url(),
            "postgres" => store::testing::postgres_url().await,
            other => panic!("unknown backend {other}"),
        };
        measure(backend, &url, &mut report).await;
        store::testing::discard(&url).await;
    }
    println!("{report}");
}
