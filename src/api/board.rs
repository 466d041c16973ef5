//! The board's data and its event stream. One feed per node computes the board when something
//! changes (a hint from this node, or the store's notice of another node's change) or, for the
//! calls and the waits, every second, and only while a board is open; every open board's
//! stream follows it. So a thousand open boards cost the store what one does.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use callbacks::{CallbackStore, Filter};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::{all_queues, AppResult, AppState};

/// How often the feed looks again when nothing was heard to change: the calls, the waits and
/// the trunks change without telling.
const EVERY: Duration = Duration::from_secs(1);
/// After a change is heard, how long the feed waits for those that come with it.
const GATHER: Duration = Duration::from_millis(100);
/// The least time between two snapshots, however often things change.
const AT_MOST_EVERY: Duration = Duration::from_millis(250);

/// What the feed last computed.
#[derive(Debug, Clone)]
pub enum Snapshot {
    /// Nothing yet.
    Pending,
    /// The board's JSON.
    Ready(Arc<str>),
    /// The node stops: streams end.
    Closed,
}

pub type Feed = watch::Sender<Snapshot>;

pub fn feed() -> Feed {
    watch::channel(Snapshot::Pending).0
}

/// What the board shows: queues with their lines, agents, callbacks in dialing order (the
/// first 500), and the calls.
async fn board(state: &AppState) -> AppResult<Value> {
    let filter = Filter {
        state: None,
        queue: None,
        skill: None,
        limit: 500,
    };
    Ok(json!({
        "queues": all_queues(state).await?,
        "agents": state.callbacks.store.agents().await?,
        "callbacks": state.callbacks.store.list(&filter).await?.iter().map(|c| state.callback_json(c)).collect::<Vec<_>>(),
        "status": {"sip": state.sip.gauges().await.ok()},
        "trunks": state.routes.load().status(),
    }))
}

/// The node's feed, until the node stops: then the streams are told to end.
pub async fn run(state: Arc<AppState>) {
    let mut hints = state.hints.watch();
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = hints.changed() => tokio::time::sleep(GATHER).await,
        }
        if state.stopped.load(Ordering::Relaxed) {
            state.board.send_replace(Snapshot::Closed);
            return;
        }
        hints.mark_unchanged();
        if state.board.receiver_count() == 0 {
            continue;
        }
        match board(&state).await {
            Ok(snapshot) => {
                let text: Arc<str> = snapshot.to_string().into();
                state.board.send_if_modified(|last| match last {
                    Snapshot::Ready(old) if *old == text => false,
                    _ => {
                        *last = Snapshot::Ready(text);
                        true
                    }
                });
            }
            Err(e) => tracing::debug!(error = ?e, "the board's snapshot failed; trying again"),
        }
        tokio::time::sleep(AT_MOST_EVERY).await;
    }
}

/// Server-sent events for the board: a `snapshot` event (the board's JSON) at once, then
/// whenever the node's feed finds it changed, until the node stops.
pub async fn events(
    State(state): State<Arc<AppState>>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>> {
    let feed = state.board.subscribe();
    let first: Arc<str> = match board(&state).await {
        Ok(snapshot) => Arc::from(snapshot.to_string()),
        Err(e) => {
            tracing::debug!(error = ?e, "the board's first snapshot failed; following the feed");
            Arc::from("")
        }
    };
    let event = |text: &str| Ok(Event::default().event("snapshot").data(text));
    let stream = futures_util::stream::unfold(
        (feed, first, true),
        move |(mut feed, last, first)| async move {
            if first && !last.is_empty() {
                return Some((event(&last), (feed, last, false)));
            }
            loop {
                if matches!(*feed.borrow(), Snapshot::Closed) || feed.changed().await.is_err() {
                    return None;
                }
                let text = match &*feed.borrow_and_update() {
                    Snapshot::Closed => return None,
                    Snapshot::Ready(text) if *text != last => text.clone(),
                    Snapshot::Ready(_) | Snapshot::Pending => continue,
                };
                return Some((event(&text), (feed, text, false)));
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}
