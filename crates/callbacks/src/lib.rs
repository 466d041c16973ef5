//! The callback domain of callbackd, with no I/O.
//!
//! A [`Callback`] is a customer's request to be phoned back. This crate holds its whole
//! lifecycle (the states and the one table of legal transitions), the keypad-friendly
//! [`ConfirmationId`] a caller uses to find it again, the [`Receipt`] issued for every
//! modification attempt, the dialing policy that decides which numbers may be called, the
//! queue policies (calling windows, booking horizon, retries), and the [`CallbackStore`] trait
//! that `crates/store` implements for PostgreSQL and SQLite.
//!
//! Nothing here reads the clock or draws its own randomness: every operation takes `now`, and
//! identifiers come from a random generator passed in, so tests are deterministic.

mod address;
mod agent;
mod callback;
mod damm;
pub mod dialer;
mod duration;
mod ids;
mod modification;
mod queue;
mod service;
mod store;
mod timezone;
pub mod wait;

pub use address::{
    mask, Address, AddressError, DialingPolicy, Media, NumberType, PhoneNumber, SipUri,
};
pub use agent::{Agent, AgentError, AgentEvent, AgentState, NewAgent, Skill, SkillSpec};
pub use callback::{Callback, IllegalTransition, RequestedTime, Source, State};
pub use dialer::{Attempt, AttemptOutcome, Verdict};
pub use duration::{parse_duration, serde_duration};
pub use ids::{ConfirmationId, ConfirmationIdError, ReceiptCode};
pub use modification::{Actor, Channel, FailureReason, Modification, Outcome, Receipt, Rejection};
pub use queue::{CallingWindow, Policy, Queue};
pub use service::{Callbacks, CreateError, ModifyError, NewCallback, Refused};
pub use store::{CallbackStore, Event, Filter, StoreError};
