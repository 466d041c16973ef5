//! The operations every channel (API, IVR, chat, CLI) performs on callbacks, over any store.

use std::sync::Arc;

use arc_swap::ArcSwap;
use chrono::{DateTime, SubsecRound, Utc};
use chrono_tz::Tz;
use rand_core::RngCore;
use serde::Deserialize;

use crate::address::{Address, Media};
use crate::callback::{Callback, RequestedTime, Source, State};
use crate::ids::{ConfirmationId, ReceiptCode};
use crate::modification::{due_state, Actor, Channel, Modification, Outcome, Receipt, Rejection};
use crate::queue::{Policy, Queue};

use crate::store::{CallbackStore, Event, StoreError};

/// A request for a callback, as it arrives from a channel.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCallback {
    pub queue: String,
    /// Defaults to the queue's first skill.
    #[serde(default)]
    pub skill: Option<String>,
    #[serde(default = "default_media")]
    pub media: Media,
    pub address: String,
    #[serde(default)]
    pub customer_name: Option<String>,
    #[serde(default = "default_requested")]
    pub at: RequestedTime,
    /// Defaults to the number's country where it has one zone, else the queue's zone.
    #[serde(default)]
    pub time_zone: Option<Tz>,
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub context: serde_json::Value,
    /// The place in line, when the customer was already waiting (for example in a phone queue);
    /// defaults to now, and a time in the future counts as now.
    #[serde(default)]
    pub enqueued_at: Option<DateTime<Utc>>,
}

fn default_media() -> Media {
    Media::Voice
}
fn default_requested() -> RequestedTime {
    RequestedTime::Asap
}

/// Why a callback could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A refused modification: its receipt (already in the history), why, and the callback as it
/// stands when there is one.
#[derive(Debug)]
pub struct Refused {
    pub receipt: Receipt,
    pub rejection: Rejection,
    pub callback: Option<Callback>,
}

/// Why a modification did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ModifyError {
    #[error("{}", .0.rejection)]
    Refused(Box<Refused>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The callback operations, over a store and the configured policies.
pub struct Callbacks<S> {
    pub store: S,
    /// Replaced whole when the configuration is reloaded; each operation works with the one
    /// it started with.
    policy: ArcSwap<Policy>,
}

impl<S> Callbacks<S> {
    pub fn new(store: S, policy: Policy) -> Callbacks<S> {
        Callbacks {
            store,
            policy: ArcSwap::from_pointee(policy),
        }
    }

    /// The queues and the dialing policy now.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Puts `policy` in place for the operations that start from now on.
    pub fn set_policy(&self, policy: Policy) {
        self.policy.store(Arc::new(policy));
    }
}

/// Free text must be storable everywhere (PostgreSQL refuses NUL) and sensible to show.
fn check_text(new: &NewCallback) -> Result<(), Rejection> {
    fn has_nul(value: &serde_json::Value) -> bool {
        match value {
            serde_json::Value::String(s) => s.contains('\0'),
            serde_json::Value::Array(items) => items.iter().any(has_nul),
            serde_json::Value::Object(map) => {
                map.iter().any(|(k, v)| k.contains('\0') || has_nul(v))
            }
            _ => false,
        }
    }
    if let Some(name) = &new.customer_name {
        if name.chars().any(char::is_control) {
            return Err(Rejection::BadText {
                field: "customer_name",
                problem: "must not contain control characters",
            });
        }
        if name.chars().count() > 200 {
            return Err(Rejection::BadText {
                field: "customer_name",
                problem: "must be at most 200 characters",
            });
        }
    }
    if !matches!(
        new.context,
        serde_json::Value::Object(_) | serde_json::Value::Null
    ) {
        return Err(Rejection::BadText {
            field: "context",
            problem: "must be a JSON object",
        });
    }
    if has_nul(&new.context) {
        return Err(Rejection::BadText {
            field: "context",
            problem: "must not contain NUL characters",
        });
    }
    if new.context.to_string().len() > 64 * 1024 {
        return Err(Rejection::BadText {
            field: "context",
            problem: "must be at most 64 KiB",
        });
    }
    Ok(())
}

/// Times are kept to the microsecond, the precision both stores hold.
fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

/// The fields that differ between two versions of a callback.
pub(crate) fn changes(old: Option<&Callback>, new: &Callback) -> serde_json::Value {
    let new = serde_json::to_value(new).expect("callbacks serialize");
    let Some(old) = old else {
        return new;
    };
    let old = serde_json::to_value(old).expect("callbacks serialize");
    let mut diff = serde_json::Map::new();
    if let (Some(old), Some(new)) = (old.as_object(), new.as_object()) {
        for (key, value) in new {
            if key != "version" && key != "updated_at" && old.get(key) != Some(value) {
                diff.insert(
                    key.clone(),
                    serde_json::json!({"from": old.get(key), "to": value}),
                );
            }
        }
    }
    serde_json::Value::Object(diff)
}

/// Queue `name` of `policy`.
fn queue<'p>(policy: &'p Policy, name: &str) -> Result<&'p Queue, Rejection> {
    policy
        .queues
        .get(name)
        .ok_or_else(|| Rejection::UnknownQueue(name.to_owned()))
}

impl<S: CallbackStore> Callbacks<S> {
    /// Creates a callback with a fresh confirmation ID, unique among open callbacks.
    pub async fn create<R: RngCore + Send + ?Sized>(
        &self,
        rng: &mut R,
        now: DateTime<Utc>,
        actor: &Actor,
        source: Source,
        new: NewCallback,
    ) -> Result<Callback, CreateError> {
        let now = micros(now);
        let policy = self.policy();
        let queue = queue(&policy, &new.queue)?;
        check_text(&new)?;
        let skill = new.skill.unwrap_or_else(|| queue.skills[0].clone());
        if !queue.offers_skill(&skill) {
            return Err(Rejection::UnknownSkill {
                skill,
                offered: queue.skills.clone(),
            }
            .into());
        }
        let address =
            Address::parse(new.media, &new.address, &policy.dialing).map_err(Rejection::from)?;
        let time_zone = new
            .time_zone
            .unwrap_or_else(|| address.time_zone(queue.time_zone));
        let requested = match new.at {
            RequestedTime::At(t) => RequestedTime::At(micros(t)),
            asap => asap,
        };
        queue.check_time(requested, time_zone, now)?;
        let due = requested.due(now);
        let mut callback = Callback {
            id: uuid::Builder::from_random_bytes(random_bytes(rng)).into_uuid(),
            confirmation_id: ConfirmationId::generate(rng),
            queue: new.queue,
            skill,
            media: new.media,
            address,
            customer_name: new.customer_name.filter(|n| !n.trim().is_empty()),
            requested,
            time_zone,
            state: due_state(due, now),
            priority: new.priority,
            attempts: 0,
            max_attempts: queue.max_attempts,
            next_attempt_at: due,
            enqueued_at: new.enqueued_at.map_or(now, |t| micros(t).min(now)),
            expires_at: due + queue.expiry,
            source,
            context: match new.context {
                serde_json::Value::Null => serde_json::json!({}),
                context => context,
            },
            version: 1,
            created_at: now,
            updated_at: now,
        };
        // Open callbacks use a tiny part of the 10^8 IDs, so a clash is rare and a few fresh
        // draws always find a free one.
        for _ in 0..32 {
            let event = Event {
                callback_id: Some(callback.id),
                confirmation_id: Some(callback.confirmation_id.to_string()),
                at: now,
                channel: actor.channel,
                actor: actor.name.clone(),
                action: "created".into(),
                outcome: Outcome::Success,
                receipt: None,
                from_state: None,
                to_state: Some(callback.state),
                changes: changes(None, &callback),
            };
            match self.store.insert(&callback, &event).await {
                Err(StoreError::DuplicateConfirmationId) => {
                    callback.confirmation_id = ConfirmationId::generate(rng);
                }
                other => return other.map(|()| callback).map_err(CreateError::from),
            }
        }
        Err(StoreError::DuplicateConfirmationId.into())
    }

    /// Applies one modification and returns the callback as changed with its receipt; a
    /// refusal also has a receipt, and both are in the history before this returns.
    pub async fn modify<R: RngCore + Send + ?Sized>(
        &self,
        rng: &mut R,
        now: DateTime<Utc>,
        actor: &Actor,
        id: &ConfirmationId,
        expected_version: Option<i64>,
        modification: &Modification,
    ) -> Result<(Callback, Receipt), ModifyError> {
        let now = micros(now);
        let code = ReceiptCode::generate(rng);
        let receipt = |outcome| Receipt {
            code: code.clone(),
            action: modification.action(),
            outcome,
        };
        let old = self.store.find(id).await?;
        let result = match &old {
            None => Err(Rejection::NotFound),
            Some(old) => match expected_version {
                Some(expected) if expected != old.version => Err(Rejection::Conflict {
                    expected,
                    found: old.version,
                }),
                _ => {
                    let policy = self.policy();
                    queue(&policy, &old.queue)
                        .and_then(|queue| modification.apply(old, queue, &policy.dialing, now))
                }
            },
        };
        let event = |outcome, receipt: &Receipt, new: Option<&Callback>| Event {
            callback_id: old.as_ref().map(|c| c.id),
            confirmation_id: Some(id.to_string()),
            at: now,
            channel: actor.channel,
            actor: actor.name.clone(),
            action: modification.action().into(),
            outcome,
            receipt: Some(receipt.code.clone()),
            from_state: old.as_ref().map(|c| c.state),
            to_state: new.or(old.as_ref()).map(|c| c.state),
            changes: match (&old, new) {
                (Some(old), Some(new)) => changes(Some(old), new),
                _ => serde_json::json!({}),
            },
        };
        let rejection = match result {
            Ok(new) => {
                let ok = receipt(Outcome::Success);
                match self
                    .store
                    .update(&new, &event(Outcome::Success, &ok, Some(&new)))
                    .await
                {
                    Ok(()) => return Ok((new, ok)),
                    Err(StoreError::Conflict { found }) => Rejection::Conflict {
                        expected: new.version - 1,
                        found,
                    },
                    Err(e) => return Err(e.into()),
                }
            }
            Err(rejection) => rejection,
        };
        let outcome = Outcome::Failure(rejection.reason());
        let refused = receipt(outcome);
        self.store.record(&event(outcome, &refused, None)).await?;
        Err(ModifyError::Refused(Box::new(Refused {
            receipt: refused,
            rejection,
            callback: old,
        })))
    }

    /// Takes the lifecycle steps due at `now`: scheduled callbacks whose time has come join the
    /// queue, and callbacks past their expiry expire. Returns how many changed.
    pub async fn advance(&self, now: DateTime<Utc>, limit: u32) -> Result<usize, StoreError> {
        let now = micros(now);
        let mut changed = 0;
        for old in self.store.due(now, limit).await? {
            let (to, action) = if old.expires_at <= now {
                (State::Expired, "expired")
            } else {
                (State::Queued, "due")
            };
            let mut new = old.clone();
            if new.set_state(to).is_err() {
                continue;
            }
            new.version += 1;
            new.updated_at = now;
            let event = Event {
                callback_id: Some(old.id),
                confirmation_id: Some(old.confirmation_id.to_string()),
                at: now,
                channel: Channel::System,
                actor: "callbackd".into(),
                action: action.into(),
                outcome: Outcome::Success,
                receipt: None,
                from_state: Some(old.state),
                to_state: Some(to),
                changes: changes(Some(&old), &new),
            };
            match self.store.update(&new, &event).await {
                Ok(()) => changed += 1,
                // Someone changed it meanwhile; the next round looks again.
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(changed)
    }

    /// The callback with this confirmation ID and its history.
    pub async fn show(
        &self,
        id: &ConfirmationId,
    ) -> Result<Option<(Callback, Vec<Event>)>, StoreError> {
        let Some(callback) = self.store.find(id).await? else {
            return Ok(None);
        };
        let history = self.store.history(callback.id).await?;
        Ok(Some((callback, history)))
    }
}

fn random_bytes<R: RngCore + ?Sized>(rng: &mut R) -> [u8; 16] {
    let mut bytes = [0; 16];
    rng.fill_bytes(&mut bytes);
    bytes
}
