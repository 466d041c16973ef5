//! Call records: each call's record goes to the store once the call has ended, written by a
//! task of its own in batches (one transaction for whatever waits), so a busy node writes
//! many records a transaction and the signalling loop never waits for the store.

use std::time::Duration;

use store::{CallRecord, Store};
use tokio::sync::mpsc;
use tracing::warn;

use crate::listeners::Throttle;

/// Records waiting for the store at most; past it (the store is down or far too slow) new
/// ones are dropped, counted and logged.
const WAITING: usize = 20_000;
/// Records a transaction at most.
const BATCH: usize = 500;

/// The way records reach the writer; `None` with `log.call_records = false`.
#[derive(Clone)]
pub struct Recorder {
    tx: Option<mpsc::Sender<CallRecord>>,
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
            if tx.try_send(record).is_err() {
                metrics::counter!("callbackd_call_records_dropped_total").increment(1);
            }
        }
    }
}

async fn write(store: Store, mut rx: mpsc::Receiver<CallRecord>) {
    let mut failed_log = Throttle::new(Duration::from_secs(10));
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
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
    }
}
