//! How the rest of the node tells the dialer that something changed, without knowing the
//! dialer: the SIP runtime when a caller starts holding, the API, the IVR and the chat when
//! they change a callback, the store's notices of what other nodes change. The dialer listens;
//! with no dialer on the node, nobody does.

use std::sync::Arc;

use tokio::sync::{broadcast, Notify};
use uuid::Uuid;

/// The dialer's wake-up call and the callbacks changed, shared by everyone who may tell.
#[derive(Clone)]
pub struct Hints {
    wake: Arc<Notify>,
    /// Callbacks changed, for the calls in progress to look at.
    changes: broadcast::Sender<Uuid>,
}

impl Default for Hints {
    fn default() -> Hints {
        Hints {
            wake: Arc::new(Notify::new()),
            changes: broadcast::channel(1024).0,
        }
    }
}

impl Hints {
    /// Something changed that may let the dialer place a call: look now.
    pub fn wake(&self) {
        self.wake.notify_one();
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
