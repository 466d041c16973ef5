//! Sans-IO media for callbackd: RTP sessions (SSRC, sequence, timestamps, symmetric latching),
//! the G.711 codecs, keys in every form (RFC 4733 telephone-events in and out, in-band tones),
//! prompts and what a leg plays, saying numbers, times and dates, and the call leg that ties
//! them together, bridging included.
//!
//! Like the SIP crate, nothing here reads the clock, opens a socket or sleeps: packets and the
//! current time go in, samples, digits and deadlines come out.

pub mod dtmf;
pub mod g711;
pub mod leg;
pub mod playout;
pub mod prompt;
pub mod rfc4733;
pub mod rtp;
pub mod say;
