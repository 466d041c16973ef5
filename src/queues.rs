//! Places in line and estimated waits, from the store's state (see `callbacks::wait`).

use callbacks::wait::{self, Estimate};
use callbacks::{Callback, Queue, StoreError};
use chrono::{DateTime, Utc};
use serde::Serialize;
use store::Store;

/// A skill's line: how many wait, who serves it, and what a newcomer would wait.
#[derive(Debug, Serialize)]
pub struct Line {
    pub waiting: u64,
    pub agents_ready: u32,
    pub agents_busy: u32,
    pub average_handle_seconds: i64,
    pub new_arrival: Estimate,
}

/// What goes into an estimate for `skill`: agents ready and busy, and the average handle time
/// (each measured call plus the wrap-up that follows it).
async fn staffing(
    store: &Store,
    queue: &Queue,
    skill: &str,
    wrap_up: chrono::Duration,
) -> Result<(u32, u32, chrono::Duration), StoreError> {
    let (ready, busy) = wait::staffing(&store.agents().await?, skill);
    let recent: Vec<chrono::Duration> = store
        .handle_times(skill, wait::SAMPLES as u32)
        .await?
        .into_iter()
        .map(|d| d + wrap_up)
        .collect();
    Ok((
        ready,
        busy,
        wait::average_handle_time(&recent, queue.handle_time),
    ))
}

/// Where a queued callback stands; `None` for one not waiting in line now (scheduled for
/// later, paused, being dialed, finished).
pub async fn of_callback(
    store: &Store,
    queue: &Queue,
    cb: &Callback,
    wrap_up: chrono::Duration,
    now: DateTime<Utc>,
) -> Result<Option<Estimate>, StoreError> {
    if cb.state != callbacks::State::Queued || cb.next_attempt_at > now {
        return Ok(None);
    }
    of_place(store, queue, &cb.skill, store::Place::of(cb), wrap_up, now)
        .await
        .map(Some)
}

/// Where the item at `place` in `skill`'s line stands.
pub async fn of_place(
    store: &Store,
    queue: &Queue,
    skill: &str,
    place: store::Place,
    wrap_up: chrono::Duration,
    now: DateTime<Utc>,
) -> Result<Estimate, StoreError> {
    let ahead = store.ahead(skill, Some(place), now).await?;
    let (ready, busy, handle) = staffing(store, queue, skill, wrap_up).await?;
    Ok(wait::estimate(ahead, ready, busy, handle))
}

/// The line for `skill`.
pub async fn line(
    store: &Store,
    queue: &Queue,
    skill: &str,
    wrap_up: chrono::Duration,
    now: DateTime<Utc>,
) -> Result<Line, StoreError> {
    let waiting = store.ahead(skill, None, now).await?;
    let (ready, busy, handle) = staffing(store, queue, skill, wrap_up).await?;
    Ok(Line {
        waiting,
        agents_ready: ready,
        agents_busy: busy,
        average_handle_seconds: handle.num_seconds(),
        new_arrival: wait::estimate(waiting, ready, busy, handle),
    })
}
