//! How the rest of the node tells the dialer and the board that something changed, without
//! knowing them: the SIP runtime when a caller starts holding, the API, the IVR and the chat
//! when they change a callback, the store's notices of what other nodes change. The dialer
//! and the board's feed listen.

use std::sync::Arc;
use std::time::Duration;

use store::{Change, Store};
use tokio::sync::{broadcast, watch, Notify};
use uuid::Uuid;

/// How long to wait before listening again to a store that failed.
const LISTEN_AGAIN: Duration = Duration::from_secs(1);

/// The dialer's wake-up call and the callbacks changed, shared by everyone who may tell.
#[derive(Clone)]
pub struct Hints {
    wake: Arc<Notify>,
    /// Callbacks changed, for the calls in progress to look at.
    changes: broadcast::Sender<Uuid>,
    /// Counts every hint, for the board's feed to look again.
    any: Arc<watch::Sender<u64>>,
}

impl Default for Hints {
    fn default() -> Hints {
        Hints {
            wake: Arc::new(Notify::new()),
            changes: broadcast::channel(1024).0,
            any: Arc::new(watch::channel(0).0),
        }
    }
}

impl Hints {
    /// Something changed that may let the dialer place a call: look now.
    pub fn wake(&self) {
        self.wake.notify_one();
        self.any.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// For the board's feed: marked changed at every hint.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.any.subscribe()
    }

    /// Hears what other nodes change, through the store (PostgreSQL), and tells; without a
    /// listener (SQLite, one node) there is nothing to hear.
    pub async fn listen(self, store: Store) {
        loop {
            match store.listen().await {
                Ok(None) => return,
                Ok(Some(mut listener)) => loop {
                    match listener.next().await {
                        Ok(Change::Callback(id)) => self.changed(id),
                        Ok(Change::Agent(_)) => self.wake(),
                        Err(e) => {
                            tracing::warn!(error = %e, "lost the store's change notices; listening again");
                            break;
                        }
                    }
                },
                Err(e) => tracing::warn!(error = %e, "cannot listen for changes; trying again"),
            }
            tokio::time::sleep(LISTEN_AGAIN).await;
        }
    }

    /// A callback changed: calls placing it look at it again, and the dialer looks for work.
    pub fn changed(&self, callback: Uuid) {
        let _ = self.changes.send(callback);
        self.wake();
    }

    /// For the dialer: returns once something may let it place a call.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// For the dialer's calls: the callbacks changed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Uuid> {
        self.changes.subscribe()
    }
}
