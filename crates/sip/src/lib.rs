//! A sans-IO SIP stack (RFC 3261 and friends).
//!
//! It takes bytes, events and the current time, and returns messages to send, events and the
//! next deadline; it never reads the clock, opens a socket or sleeps. The runtime in the
//! `callbackd` binary owns the sockets and pumps it.

pub mod admission;
pub mod advertise;
pub mod auth;
pub mod header;
pub mod message;
pub mod parse;
pub mod registrar;
pub mod sdp;
pub mod transaction;
pub mod ua;
pub mod uri;
pub mod validate;
