//! Transactions (RFC 3261 section 17, with the RFC 6026 changes for 2xx to INVITE): one
//! state machine per file, each driven by `handle_*(now, …)` inputs and drained with
//! `poll_transmit`, `poll_event` and `poll_timeout`. Timers carry their RFC names.

pub mod client_invite;
pub mod client_non_invite;
pub mod server_invite;
pub mod server_non_invite;

use std::time::{Duration, Instant};

use crate::message::{Message, Method, Name};

/// The base timer values (RFC 3261 section 17.1.1.1 and table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// Round-trip estimate: 500 ms by default.
    pub t1: Duration,
    /// Longest retransmission interval for non-INVITE requests and INVITE responses: 4 s.
    pub t2: Duration,
    /// Longest time a message stays in the network: 5 s.
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl Timers {
    /// 64·T1: Timers B, F, H, J (unreliable), L and M.
    pub fn transaction_timeout(&self) -> Duration {
        self.t1 * 64
    }
}

/// A retransmission interval that doubles from T1 on each firing, capped at `cap` when given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    next: Duration,
    cap: Option<Duration>,
}

impl Backoff {
    pub(crate) fn new(t1: Duration, cap: Option<Duration>) -> Backoff {
        Backoff { next: t1, cap }
    }

    /// The interval to wait now; the following one is doubled (and capped).
    pub(crate) fn step(&mut self) -> Duration {
        let now = self.next;
        let doubled = self.next * 2;
        self.next = self.cap.map_or(doubled, |cap| doubled.min(cap));
        now
    }
}

/// How the transaction's messages travel: over UDP they are retransmitted, over TCP never.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Unreliable,
    Reliable,
}

/// What a transaction tells its user (the transaction user: the user agent core).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A response for a client transaction's request (every provisional, and the final one;
    /// for INVITE also every retransmitted 2xx, which the core answers with ACK).
    Response(Message),
    /// No final response came in time (Timer B or F), or the ACK never came (Timer H).
    TimedOut,
    /// The transaction is over and can be forgotten.
    Terminated,
}

/// Which server transaction a request belongs to (RFC 3261 section 17.2.3): the top Via's
/// branch and sent-by, and the method (an ACK belongs to its INVITE). Requests without the
/// `z9hG4bK` cookie (RFC 2543 peers) are matched on the older fields instead.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Branch {
        branch: String,
        sent_by: String,
        method: Method,
    },
    Legacy {
        uri: String,
        from_tag: String,
        call_id: String,
        cseq: u32,
        via: String,
        method: Method,
    },
}

impl Key {
    /// The key of a request; `None` if its Via, CSeq or From cannot be read.
    pub fn of_request(request: &Message) -> Option<Key> {
        let method = match request.method()? {
            Method::Ack => Method::Invite,
            m => m.clone(),
        };
        let top = request.headers.list(&Name::Via)?.first().copied()?;
        let via = crate::header::Via::parse(top).ok()?;
        match via.branch() {
            Some(branch) if branch.starts_with("z9hG4bK") => Some(Key::Branch {
                branch: branch.to_owned(),
                sent_by: format!(
                    "{}:{}",
                    via.host.to_ascii_lowercase(),
                    via.port.unwrap_or(5060)
                ),
                method,
            }),
            _ => {
                let from =
                    crate::header::NameAddr::parse(request.headers.get(&Name::From)?).ok()?;
                let cseq = crate::header::CSeq::parse(request.headers.get(&Name::CSeq)?).ok()?;
                Some(Key::Legacy {
                    uri: request.uri()?.to_owned(),
                    from_tag: from.tag().unwrap_or_default().to_owned(),
                    call_id: request.headers.get(&Name::CallId)?.to_owned(),
                    cseq: cseq.number,
                    via: top.to_owned(),
                    method,
                })
            }
        }
    }

    /// The same transaction's key for another method: a CANCEL shares its INVITE's branch.
    pub fn with_method(&self, method: Method) -> Key {
        let mut key = self.clone();
        match &mut key {
            Key::Branch { method: m, .. } | Key::Legacy { method: m, .. } => *m = method,
        }
        key
    }

    /// The client transaction a response belongs to (RFC 3261 section 17.1.3): the top
    /// Via's branch and the CSeq method.
    pub fn of_response(response: &Message) -> Option<Key> {
        let top = response.headers.list(&Name::Via)?.first().copied()?;
        let via = crate::header::Via::parse(top).ok()?;
        let cseq = crate::header::CSeq::parse(response.headers.get(&Name::CSeq)?).ok()?;
        Some(Key::Branch {
            branch: via.branch()?.to_owned(),
            sent_by: format!(
                "{}:{}",
                via.host.to_ascii_lowercase(),
                via.port.unwrap_or(5060)
            ),
            method: cseq.method,
        })
    }
}

/// What every transaction offers its user, so the core collects it alike.
pub trait Drain {
    fn poll_transmit(&mut self) -> Option<Message>;
    fn poll_event(&mut self) -> Option<Event>;

    /// Everything queued: the messages to send, then the events.
    fn drain(&mut self) -> (Vec<Message>, Vec<Event>) {
        let sends = std::iter::from_fn(|| self.poll_transmit()).collect();
        let events = std::iter::from_fn(|| self.poll_event()).collect();
        (sends, events)
    }
}

macro_rules! drain_for {
    ($($t:ty),*) => {$(
        impl Drain for $t {
            fn poll_transmit(&mut self) -> Option<Message> {
                <$t>::poll_transmit(self)
            }
            fn poll_event(&mut self) -> Option<Event> {
                <$t>::poll_event(self)
            }
        }
    )*};
}

drain_for!(
    client_invite::ClientInvite,
    client_non_invite::ClientNonInvite,
    server_invite::ServerInvite,
    server_non_invite::ServerNonInvite
);

/// The earliest of some optional deadlines.
pub(crate) fn earliest(deadlines: &[Option<Instant>]) -> Option<Instant> {
    deadlines.iter().flatten().min().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let t = Timers::default();
        let mut b = Backoff::new(t.t1, Some(t.t2));
        let steps: Vec<u64> = (0..6).map(|_| b.step().as_millis() as u64).collect();
        assert_eq!(steps, [500, 1000, 2000, 4000, 4000, 4000]);
        let mut a = Backoff::new(t.t1, None);
        let steps: Vec<u64> = (0..7).map(|_| a.step().as_millis() as u64).collect();
        assert_eq!(steps, [500, 1000, 2000, 4000, 8000, 16000, 32000]);
        assert_eq!(t.transaction_timeout(), Duration::from_secs(32));
    }
}
