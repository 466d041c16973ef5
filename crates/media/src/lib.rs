//! Sans-IO media for callbackd: RTP sessions (SSRC, sequence, timestamps, symmetric latching),
//! the G.711 codecs, and the RFC 4733 telephone-event receiver.
//!
//! Like the SIP crate, nothing here reads the clock, opens a socket or sleeps: packets and the
//! current time go in, samples, digits and deadlines come out.

pub mod g711;
pub mod rfc4733;
pub mod rtp;
