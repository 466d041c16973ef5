//! Callers holding in a queue for an agent: hold music, where they stand now and then, the
//! callback offer (a 1 goes on in the dialplan), and their place in the store's line, where
//! the dialer finds them among the callbacks and connects them (see `connect.rs`).

use rand::RngCore;
use std::time::{Duration, Instant};

use ivr::session::Value;
use media::playout::Item;
use sip::ua::CallHandle;
use store::Hold;
use tracing::{debug, info, warn};
use uuid::Uuid;

use super::{Inbound, Loop};

/// The prompts holding plays (besides numbers), checked at start-up.
pub const PROMPTS: [&str; 8] = [
    "please-hold",
    "hold-music",
    "you-are-number",
    "in-line",
    "estimated-wait",
    "about",
    "minute",
    "minutes",
];

/// Play request id of the hold music and announcements.
const MUSIC: u64 = 10;
/// A hold stays in the store this long unless renewed (every third of it).
const HOLD_LEASE: Duration = Duration::from_secs(30);

/// What holding needs from the rest of callbackd.
pub struct HoldSettings {
    /// This node's name, written on its holds: only this node can connect them.
    pub node: String,
    /// How often a holding caller hears where they stand.
    pub every: Duration,
    /// Wakes the dialer when a caller starts holding.
    pub hints: crate::hints::Hints,
}

/// A call holding in a queue.
pub(super) struct Holding {
    pub id: Uuid,
    queue: String,
    skill: String,
    /// Whether a 1 takes the dialplan's offer.
    offer: bool,
    /// Still waiting for an agent (not yet being connected).
    pub waiting: bool,
    next_announcement: Instant,
}

impl Loop {
    /// The dialplan handed `call` to `queue`: music, a place in the line, and the dialer told.
    pub(super) fn hold(&mut self, now: Instant, call: CallHandle, queue: &str, offer: bool) {
        let skill = self
            .operations
            .callbacks
            .policy()
            .queues
            .get(queue)
            .and_then(|q| q.skills.first().cloned());
        let (Some(skill), Some(active)) = (skill, self.calls.get_mut(&call)) else {
            warn!(%call, queue, "the dialplan names a queue that is not configured; hanging up");
            self.end_call(now, call);
            return;
        };
        let hold = Hold {
            id: Uuid::from_u128(
                u128::from(self.rng.next_u64()) << 64 | u128::from(self.rng.next_u64()),
            ),
            node: self.hold_settings.node.clone(),
            queue: queue.to_owned(),
            skill: skill.clone(),
            priority: 0,
            enqueued_at: active.record.started_at,
            caller_id: active
                .ivr
                .as_ref()
                .map(|(_, c)| c.clone())
                .unwrap_or_default(),
        };
        info!(%call, queue, hold = %hold.id, "caller holding for an agent");
        active.holding = Some(Holding {
            id: hold.id,
            queue: queue.to_owned(),
            skill,
            offer,
            waiting: true,
            next_announcement: now + self.hold_settings.every,
        });
        self.holding.insert(hold.id, call);
        self.play_music(call, &["please-hold"]);
        let (store, hints) = (self.store.clone(), self.hold_settings.hints.clone());
        let expires =
            chrono::Utc::now() + chrono::Duration::from_std(HOLD_LEASE).unwrap_or_default();
        tokio::spawn(async move {
            match store.insert_hold(&hold, expires).await {
                Ok(()) => hints.wake(),
                Err(e) => warn!(hold = %hold.id, error = %e, "cannot put the caller in line"),
            }
        });
    }

    /// `words` (prompt names), then hold music until something else is played.
    pub(super) fn play_music(&mut self, call: CallHandle, words: &[&str]) {
        let mut items: Vec<Item> = words
            .iter()
            .filter_map(|w| self.prompts.get(w).ok().map(Item::Prompt))
            .collect();
        items.extend(self.prompts.get("hold-music").ok().map(Item::Loop));
        self.media.play(call, MUSIC, items, false);
    }

    /// A key from a holding caller: a 1 takes the offer (they leave the line and the dialplan
    /// goes on). Whether the key was the holding's.
    pub(super) fn holding_key(&mut self, now: Instant, call: CallHandle, key: char) -> bool {
        let Some(active) = self.calls.get_mut(&call) else {
            return false;
        };
        let Some(holding) = active.holding.as_ref().filter(|h| h.waiting) else {
            return false;
        };
        if key != '1' || !holding.offer {
            return true;
        }
        let id = holding.id;
        active.holding = None;
        self.holding.remove(&id);
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.remove_hold(id).await {
                warn!(hold = %id, error = %e, "cannot take the caller out of line");
            }
        });
        info!(%call, hold = %id, "holding caller took the callback offer");
        self.media.play(call, 0, Vec::new(), false);
        if let Some(session) = self.calls.get_mut(&call).and_then(|a| a.session.as_mut()) {
            session.take_offer(now);
        }
        self.drive(now, call);
        true
    }

    /// Announcements that are due, and the store's holds kept alive.
    pub(super) fn holding_housekeeping(&mut self, now: Instant) {
        if now >= self.holds_renewed + HOLD_LEASE / 3 && !self.holding.is_empty() {
            self.holds_renewed = now;
            let (store, node) = (self.store.clone(), self.hold_settings.node.clone());
            let until =
                chrono::Utc::now() + chrono::Duration::from_std(HOLD_LEASE).unwrap_or_default();
            tokio::spawn(async move {
                if let Err(e) = store.renew_holds(&node, until).await {
                    warn!(error = %e, "cannot keep the holding callers in line");
                }
            });
        }
        let every = self.hold_settings.every;
        for (call, active) in &mut self.calls {
            let Some(holding) = active
                .holding
                .as_mut()
                .filter(|h| h.waiting && h.next_announcement <= now)
            else {
                continue;
            };
            holding.next_announcement = now + every;
            let Some(queue) = self
                .operations
                .callbacks
                .policy()
                .queues
                .get(&holding.queue)
                .cloned()
            else {
                continue;
            };
            let (operations, tx, call) = (self.operations.clone(), self.tx.clone(), *call);
            let (id, skill, offer) = (holding.id, holding.skill.clone(), holding.offer);
            let place = store::Place {
                priority: 0,
                enqueued_at: active.record.started_at,
                id,
            };
            tokio::spawn(async move {
                let store = &operations.callbacks.store;
                let estimate = crate::queues::of_place(
                    store,
                    &queue,
                    &skill,
                    place,
                    operations.wrap_up,
                    chrono::Utc::now(),
                )
                .await;
                match estimate {
                    Ok(estimate) => {
                        let vars = crate::ivr::line_vars(&estimate);
                        let _ = tx.send(Inbound::Announce { call, vars, offer }).await;
                    }
                    Err(e) => {
                        warn!(%call, error = %e, "cannot tell a holding caller where they stand")
                    }
                }
            });
        }
    }

    /// Tells a holding caller where they stand (the dialplan's line variables), then the
    /// music goes on.
    pub(super) fn announce(&mut self, call: CallHandle, vars: Vec<(String, Value)>, offer: bool) {
        if !self
            .calls
            .get(&call)
            .and_then(|a| a.holding.as_ref())
            .is_some_and(|h| h.waiting)
        {
            return;
        }
        let var = |name: &str| {
            vars.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.text())
                .and_then(|t| t.parse::<u32>().ok())
        };
        let position = var("position").unwrap_or(1);
        debug!(%call, position, wait_minutes = var("wait_minutes"), "a holding caller is told where they stand");
        let mut words = vec!["you-are-number"];
        words.extend(media::say::number(position));
        words.push("in-line");
        if let Some(minutes) = var("wait_minutes") {
            words.extend(["estimated-wait", "about"]);
            words.extend(media::say::number(minutes));
            words.push(if minutes == 1 { "minute" } else { "minutes" });
        }
        if offer {
            words.push("queue-offer");
        }
        self.play_music(call, &words);
    }

    /// A holding call ended: its place in line goes.
    pub(super) fn holding_over(&mut self, holding: Holding) {
        self.holding.remove(&holding.id);
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.remove_hold(holding.id).await {
                warn!(hold = %holding.id, error = %e, "cannot take the caller out of line");
            }
        });
    }
}
