//! The IVR: dialplans written in TOML (`dialplan`), checked when loaded, and run by a sans-IO
//! interpreter (`session`) that takes keys, prompt ends, timeouts and operation results with
//! the current time, and gives back what to play, what operation to run, and when to wake it.
//!
//! Nothing here knows SIP, RTP or the store: the runtime plays the prompts, runs the
//! operations (look up a callback, modify it, ...) and feeds the results back.
//!
//! Two of the outputs an IVR needs are not actions of their own. A timer is
//! [`session::Session::poll_timeout`]: the one deadline the session waits for now, which the
//! runtime asks for after every input, so there is never a timer to cancel. Stopping a prompt
//! is the media's: a `Play` says whether a key may cut it (`barge_in`), so the audio stops the
//! moment a key is heard, without a round trip through the session, and a new `Play` replaces
//! whatever plays.

pub mod dialplan;
pub mod pattern;
pub mod session;
