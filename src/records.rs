//! Call records: each call's record goes to the store once the call has ended, written by a
//! task of its own in batches (one statement for what gathered in a quarter of a second), so
//! a busy node writes many records a commit and the signalling loop never waits for the
//! store.

use std::time::Duration;

use store::{CallRecord, Store};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::listeners::Throttle;

/// Records waiting for the store at most; past it (the store is down or far too slow) new
/// ones are dropped, counted and logged.
const WAITING: usize = 20_000;
/// Records a statement at most.
const BATCH: usize = 1000;
/// How long records gather before they are written: one commit for many calls costs far
/// less than one for each (SQLite syncs its log at each).
const GATHER: Duration = Duration::from_millis(250);

/// What the writer is sent: a record, or a request to write what waits and say when done.
// Nearly every message is a record: boxing it would cost an allocation a call.
#[allow(clippy::large_enum_variant)]
enum Message {
    Record(CallRecord),
    Flush(oneshot::Sender<()>),
}

/// The way records reach the writer; `None` with `log.call_records = false`.
#[derive(Clone)]
pub struct Recorder {
    tx: Option<mpsc::Sender<Message>>,
}

impl Recorder {
    /// Starts the writer on `store`, when records are kept.
    pub fn start(store: Store, enabled: bool) -> Recorder {
        let tx = enabled.then(|| {
            let (tx, rx) = mpsc::channel(WAITING);
            tokio::spawn(write(store, rx));
            tx
        });
        Recorder { tx }
    }

    /// Hands a record to the writer; never waits.
    pub fn record(&self, record: CallRecord) {
        if let Some(tx) = &self.tx {
            if tx.try_send(Message::Record(record)).is_err() {
                metrics::counter!("callbackd_call_records_dropped_total").increment(1);
            }
        }
    }

    /// Writes what waits now, and returns once it is written (the node is stopping).
    pub async fn flush(&self) {
        if let Some(tx) = &self.tx {
            let (done, written) = oneshot::channel();
            if tx.send(Message::Flush(done)).await.is_ok() {
                let _ = written.await;
            }
        }
    }
}

async fn write(store: Store, mut rx: mpsc::Receiver<Message>) {
    let mut failed_log = Throttle::new(Duration::from_secs(10));
    let (mut messages, mut batch) = (Vec::with_capacity(BATCH), Vec::with_capacity(BATCH));
    while rx.recv_many(&mut messages, BATCH).await > 0 {
        if !messages.iter().any(|m| matches!(m, Message::Flush(_))) {
            tokio::time::sleep(GATHER).await;
            while messages.len() < BATCH {
                match rx.try_recv() {
                    Ok(message) => messages.push(message),
                    Err(_) => break,
                }
            }
        }
        let mut flushed = Vec::new();
        for message in messages.drain(..) {
            match message {
                Message::Record(record) => batch.push(record),
                Message::Flush(done) => flushed.push(done),
            }
        }
        // A store that fails is given three tries a second apart, then the batch is dropped.
        for attempt in 1..=3 {
            match store.insert_calls(&batch).await {
                Ok(()) => break,
                Err(e) if attempt == 3 => {
                    metrics::counter!("callbackd_call_records_dropped_total")
                        .increment(batch.len() as u64);
                    if failed_log.ready(std::time::Instant::now()) {
                        warn!(error = %e, records = batch.len(), "call records could not be written; dropped");
                    }
                }
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
        batch.clear();
        for done in flushed {
            let _ = done.send(());
        }
    }
}
