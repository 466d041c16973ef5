//! Driving a call's IVR session: the dialplan's actions (play, collect, run an operation,
//! transfer, hang up) carried out on the call, and operations' results fed back in.

use std::time::Instant;

use ivr::session::{Action, Clip, Value};
use media::playout::Item;
use rand::rngs::StdRng;
use rand::SeedableRng;
use sip::ua::CallHandle;
use tracing::{debug, warn};

use crate::ivr::Caller;

use super::{Inbound, Loop};

impl Loop {
    /// Carries out what a call's dialplan session asks for.
    pub(super) fn drive(&mut self, now: Instant, call: CallHandle) {
        let Some(active) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(session) = active.session.as_mut() else {
            return;
        };
        let mut transfer = None;
        while let Some(action) = session.poll_action() {
            match action {
                Action::Play {
                    id,
                    clips,
                    barge_in,
                } => {
                    let items = clips
                        .into_iter()
                        .filter_map(|clip| match clip {
                            Clip::Prompt(name) => self.prompts.get(&name).ok().map(Item::Prompt),
                            Clip::Silence(d) => Some(Item::Silence(d)),
                        })
                        .collect();
                    self.media.play(call, id, items, barge_in);
                }
                Action::Run { operation, args } => {
                    debug!(%call, operation, "dialplan operation");
                    let (operations, tx) = (self.operations.clone(), self.tx.clone());
                    let caller = Caller {
                        channel: callbacks::Channel::Ivr,
                        caller_id: active
                            .ivr
                            .as_ref()
                            .map(|(_, c)| c.clone())
                            .unwrap_or_default(),
                        client: active.client.clone(),
                        source: active.source.to_string(),
                        call_id: active.record.call_id.clone(),
                        failures: active.failures,
                        arrived: active.record.started_at,
                    };
                    tokio::spawn(async move {
                        let mut rng = StdRng::from_entropy();
                        let run = operations.run(
                            &mut rng,
                            chrono::Utc::now(),
                            &caller,
                            &operation,
                            &args,
                        );
                        // A store that hangs must not leave the caller in silence.
                        let (result, vars) =
                            match tokio::time::timeout(crate::ivr::OPERATION_TIMEOUT, run).await {
                                Ok(done) => done,
                                Err(_) => {
                                    warn!(%call, operation, "operation timed out");
                                    crate::ivr::unavailable(&operation)
                                }
                            };
                        let name = crate::ivr::OPERATIONS
                            .iter()
                            .find(|o| o.name == operation)
                            .map_or("other", |o| o.name);
                        metrics::counter!("callbackd_ivr_operations_total", "operation" => name, "result" => result)
                            .increment(1);
                        let _ = tx.send(Inbound::Ran { call, result, vars }).await;
                    });
                }
                Action::Transfer { queue, offer } => transfer = Some((queue, offer)),
                Action::HangUp => {
                    if !active.hanging_up {
                        active.hanging_up = true;
                        self.ua.hang_up(now, call);
                    }
                }
            }
        }
        if let Some((queue, offer)) = transfer {
            self.hold(now, call, &queue, offer);
        }
    }

    /// A call's dialplan operation finished.
    pub(super) fn ran(
        &mut self,
        now: Instant,
        call: CallHandle,
        result: &str,
        vars: Vec<(String, Value)>,
    ) {
        let Some(active) = self.calls.get_mut(&call) else {
            return;
        };
        if crate::ivr::failed(result) {
            active.failures += 1;
        }
        active.changed |= result == "success";
        if let Some(session) = active.session.as_mut() {
            session.handle_result(now, result, vars);
            self.drive(now, call);
        }
    }
}
