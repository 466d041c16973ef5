//! The IVR: dialplans written in TOML (`dialplan`), checked when loaded, and run by a sans-IO
//! interpreter (`session`) that takes keys, prompt ends, timeouts and operation results with
//! the current time, and gives back what to play, what operation to run, and when to wake it.
//!
//! Nothing here knows SIP, RTP or the store: the runtime plays the prompts, runs the
//! operations (look up a callback, modify it, ...) and feeds the results back.

pub mod dialplan;
pub mod pattern;
pub mod session;
