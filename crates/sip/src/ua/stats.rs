//! What the user agent counts, for the metrics: plain integers the runtime reads when it is
//! asked for them, so counting costs an increment per message.

use crate::message::{Message, Method};

/// Messages by kind: requests by method (the methods the parser knows, and one count for
/// every other, so a sender of made-up methods cannot grow the table), responses by class.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Messages {
    requests: [u64; Method::COUNTED],
    responses: [u64; 6],
}

impl Messages {
    pub(crate) fn count(&mut self, message: &Message) {
        match (message.method(), message.code()) {
            (Some(method), _) => self.requests[method.counted_index()] += 1,
            (None, Some(code)) => {
                self.responses[(usize::from(code / 100)).clamp(1, 6) - 1] += 1;
            }
            (None, None) => {}
        }
    }

    /// Each count with its labels: (`"request"`, method) or (`"response"`, class such as
    /// `"2xx"`).
    pub fn labelled(&self) -> impl Iterator<Item = (&'static str, &'static str, u64)> + '_ {
        const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "6xx"];
        let requests = self
            .requests
            .iter()
            .enumerate()
            .map(|(i, n)| ("request", Method::counted_name(i), *n));
        let responses = self
            .responses
            .iter()
            .zip(CLASSES)
            .map(|(n, class)| ("response", class, *n));
        requests.chain(responses)
    }
}

/// Why a new request was refused before anything was kept for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Dropped unread: its source is banned.
    Banned,
    /// Its source sent faster than its bucket allows (and is banned from now on).
    Flood,
    /// An INVITE from a source outside the trusted networks and not registered, when only
    /// those may call (403).
    Untrusted,
    /// An INVITE over the limits of its source (503).
    SourceLimit,
    /// An INVITE while the node is overloaded (503).
    Overload,
    /// An INVITE or OPTIONS while the node drains (503).
    Draining,
    /// An INVITE over `max_calls` or `max_calls_per_second` (503).
    CallLimit,
    /// The server transaction table is full (503).
    TransactionsFull,
}

impl Refusal {
    const ALL: [Refusal; 8] = [
        Refusal::Banned,
        Refusal::Flood,
        Refusal::Untrusted,
        Refusal::SourceLimit,
        Refusal::Overload,
        Refusal::Draining,
        Refusal::CallLimit,
        Refusal::TransactionsFull,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Banned => "banned",
            Refusal::Flood => "flood",
            Refusal::Untrusted => "untrusted",
            Refusal::SourceLimit => "source_limit",
            Refusal::Overload => "overload",
            Refusal::Draining => "draining",
            Refusal::CallLimit => "call_limit",
            Refusal::TransactionsFull => "transactions_full",
        }
    }
}

/// Everything the user agent has counted since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub received: Messages,
    pub sent: Messages,
    /// Datagrams that did not parse as SIP.
    pub invalid: u64,
    /// Our requests and responses sent again on a timer (over UDP).
    pub retransmitted: u64,
    /// Requests that came again and were absorbed by their transaction or call.
    pub repeats: u64,
    refused: [u64; Refusal::ALL.len()],
}

impl Stats {
    pub(crate) fn refuse(&mut self, refusal: Refusal) {
        self.refused[refusal as usize] += 1;
    }

    /// Refusals by reason.
    pub fn refused(&self) -> impl Iterator<Item = (Refusal, u64)> + '_ {
        Refusal::ALL.into_iter().zip(self.refused.iter().copied())
    }
}
