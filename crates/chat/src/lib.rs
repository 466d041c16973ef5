//! The chat: intents and the bots that handle them are data (`chatbots/*.toml`, checked when
//! loaded, [`bots`]); a text classifier trained from their examples at start-up picks the
//! intent of each message and the capability of the bot that can answer it ([`classifier`]);
//! and a sans-IO conversation ([`session`]) answers, or, when a message is beyond the bot,
//! offers a callback with the wait and books it.
//!
//! Nothing here touches the store or the network: the conversation asks the runtime for what
//! it needs (an estimate of the wait, a callback booked, looked up or changed) and is given
//! the results.

pub mod bots;
pub mod classifier;
pub mod session;
