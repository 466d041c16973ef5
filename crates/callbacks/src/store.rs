//! The store trait, in domain types; `crates/store` implements it for PostgreSQL and SQLite.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::callback::{Callback, State};
use crate::ids::{ConfirmationId, ReceiptCode};
use crate::modification::{Channel, Outcome};

/// One line of a callback's history: a change, or a refused attempt to change it. Never
/// rewritten.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// `None` for an attempt on a confirmation ID that matched no callback.
    pub callback_id: Option<Uuid>,
    pub confirmation_id: Option<String>,
    pub at: DateTime<Utc>,
    pub channel: Channel,
    pub actor: String,
    /// `created`, a modification's action, or a lifecycle step such as `due` or `expired`.
    pub action: String,
    pub outcome: Outcome,
    pub receipt: Option<ReceiptCode>,
    pub from_state: Option<State>,
    pub to_state: Option<State>,
    /// The fields that changed: `{"field": {"from": old, "to": new}}`.
    pub changes: serde_json::Value,
}

/// Which callbacks to list; they come in dialing order (priority, then place in line).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub state: Option<State>,
    pub queue: Option<String>,
    pub skill: Option<String>,
    pub limit: u32,
}

/// What can go wrong in a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The callback's version moved on since it was read: someone else changed it first.
    #[error("the callback was changed concurrently (now at version {found})")]
    Conflict { found: i64 },
    /// An open callback already has this confirmation ID.
    #[error("confirmation ID already in use by an open callback")]
    DuplicateConfirmationId,
    /// An agent with this ID exists already.
    #[error("an agent with this ID exists already")]
    DuplicateAgent,
    /// The lease this node held on a callback was taken over by another node (it stalled or
    /// lost the database past the lease's expiry): its write was refused.
    #[error("the lease on callback {0} was lost to another node")]
    LeaseLost(Uuid),
    #[error("callback {0} does not exist")]
    Missing(Uuid),
    /// A stored row that does not map back to the domain (edited by hand, or a newer schema).
    #[error("stored data is not valid: {0}")]
    Corrupt(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(String),
}

/// Where callbacks and their histories live. Every write is one transaction: a callback and
/// the event describing the change land together or not at all.
pub trait CallbackStore: Send + Sync {
    /// Stores a new callback and its `created` event.
    fn insert(
        &self,
        callback: &Callback,
        event: &Event,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Replaces the callback whose version is `callback.version - 1` and appends `event`;
    /// `Conflict` when the stored version is another.
    fn update(
        &self,
        callback: &Callback,
        event: &Event,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Appends an event that changes no callback (a refused attempt).
    fn record(&self, event: &Event) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The callback with this confirmation ID: the open one, or else the latest closed one.
    fn find(
        &self,
        id: &ConfirmationId,
    ) -> impl Future<Output = Result<Option<Callback>, StoreError>> + Send;

    /// A callback's history, oldest first.
    fn history(&self, id: Uuid) -> impl Future<Output = Result<Vec<Event>, StoreError>> + Send;

    /// Callbacks matching `filter`, in dialing order.
    fn list(
        &self,
        filter: &Filter,
    ) -> impl Future<Output = Result<Vec<Callback>, StoreError>> + Send;

    /// How many callbacks of `queue` are in each state.
    fn counts(
        &self,
        queue: &str,
    ) -> impl Future<Output = Result<Vec<(State, u64)>, StoreError>> + Send;

    /// Up to `limit` callbacks with a lifecycle step due at `now`: scheduled ones whose time
    /// has come, and scheduled or queued ones past their expiry.
    fn due(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Callback>, StoreError>> + Send;
}
