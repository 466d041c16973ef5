//! The non-INVITE server transaction (RFC 3261 section 17.2.2).
//!
//! ```text
//!   request → Trying ──1xx──> Proceeding ──final──> Completed ──Timer J──> Terminated
//!               └────────────final────────────────────┘
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{Event, Timers, Transport};
use crate::message::Message;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

#[derive(Debug)]
pub struct ServerNonInvite {
    state: State,
    transport: Transport,
    timers: Timers,
    last_response: Option<Message>,
    /// Timer J: absorb request retransmissions after the final response.
    timer_j: Option<Instant>,
    transmits: VecDeque<Message>,
    events: VecDeque<Event>,
}

impl ServerNonInvite {
    pub fn new(transport: Transport, timers: Timers) -> ServerNonInvite {
        ServerNonInvite {
            state: State::Trying,
            transport,
            timers,
            last_response: None,
            timer_j: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// A retransmission of the request: answered with the last response, if there is one.
    pub fn handle_request(&mut self, _request: &Message, _now: Instant) {
        if matches!(self.state, State::Proceeding | State::Completed) {
            if let Some(last) = self.last_response.clone() {
                self.transmits.push_back(last);
            }
        }
    }

    pub fn send_response(&mut self, response: Message, now: Instant) {
        let Some(code) = response.code() else {
            return;
        };
        if !matches!(self.state, State::Trying | State::Proceeding) {
            return;
        }
        self.transmits.push_back(response.clone());
        self.last_response = Some(response);
        if code < 200 {
            self.state = State::Proceeding;
            return;
        }
        self.state = State::Completed;
        let wait = match self.transport {
            Transport::Unreliable => self.timers.transaction_timeout(),
            Transport::Reliable => Duration::ZERO,
        };
        self.timer_j = Some(now + wait);
        self.handle_timeout(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.timer_j.is_some_and(|at| at <= now) {
            self.timer_j = None;
            self.state = State::Terminated;
            self.events.push_back(Event::Terminated);
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Message> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timer_j
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_datagram;
    use crate::validate::response_to;

    fn options() -> Message {
        parse_datagram(b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-2\r\nFrom: <sip:b@127.0.0.1>;tag=f\r\nTo: <sip:a@127.0.0.1>\r\nCall-ID: c2\r\nCSeq: 1 OPTIONS\r\n\r\n").unwrap()
    }

    #[test]
    fn final_response_is_repeated_for_retransmissions_until_timer_j() {
        let start = Instant::now();
        let mut t = ServerNonInvite::new(Transport::Unreliable, Timers::default());
        t.handle_request(&options(), start);
        assert_eq!(t.poll_transmit(), None, "nothing to repeat in Trying");
        t.send_response(response_to(&options().headers, 200, "OK", Some("x")), start);
        assert_eq!(t.poll_transmit().and_then(|m| m.code()), Some(200));
        t.handle_request(&options(), start + Duration::from_secs(3));
        assert_eq!(t.poll_transmit().and_then(|m| m.code()), Some(200));
        t.send_response(
            response_to(&options().headers, 500, "Late", Some("x")),
            start,
        );
        assert_eq!(t.poll_transmit(), None, "one final response only");
        assert_eq!(t.poll_timeout(), Some(start + Duration::from_secs(32)));
        t.handle_timeout(start + Duration::from_secs(32));
        assert_eq!(
            (t.state(), t.poll_event()),
            (State::Terminated, Some(Event::Terminated))
        );
    }

    #[test]
    fn over_tcp_it_ends_with_the_final_response() {
        let start = Instant::now();
        let mut t = ServerNonInvite::new(Transport::Reliable, Timers::default());
        t.send_response(response_to(&options().headers, 100, "Trying", None), start);
        assert_eq!(t.state(), State::Proceeding);
        t.send_response(response_to(&options().headers, 200, "OK", Some("x")), start);
        assert_eq!(t.state(), State::Terminated);
        assert_eq!(t.poll_event(), Some(Event::Terminated));
    }
}
