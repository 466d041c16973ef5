//! The INVITE server transaction (RFC 3261 section 17.2.1, with RFC 6026's Accepted state).
//!
//! ```text
//!   INVITE → Proceeding ──1xx──> Proceeding
//!               │  └──2xx──> Accepted ──Timer L──> Terminated      (the core retransmits 2xx)
//!               └──300-699──> Completed ──ACK──> Confirmed ──Timer I──> Terminated
//!                                  └──Timer H (no ACK)──> Terminated
//! ```

use std::collections::VecDeque;
use std::time::Instant;

use super::{earliest, Backoff, Event, Timers, Transport};
use crate::message::{Message, Method};
use crate::validate::response_to;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Proceeding,
    Completed,
    Confirmed,
    Accepted,
    Terminated,
}

#[derive(Debug)]
pub struct ServerInvite {
    state: State,
    transport: Transport,
    timers: Timers,
    last_response: Option<Message>,
    /// Timer G: retransmit a 300-699 over an unreliable transport.
    timer_g: Option<(Instant, Backoff)>,
    /// Timer H: give up waiting for the ACK.
    timer_h: Option<Instant>,
    /// Timer I: absorb ACK retransmissions.
    timer_i: Option<Instant>,
    /// Timer L: absorb INVITE retransmissions after a 2xx.
    timer_l: Option<Instant>,
    transmits: VecDeque<Message>,
    events: VecDeque<Event>,
}

impl ServerInvite {
    /// Starts the transaction; 100 Trying goes out at once, so the caller stops retransmitting.
    pub fn new(request: &Message, transport: Transport, timers: Timers) -> ServerInvite {
        let trying = response_to(&request.headers, 100, "Trying", None);
        let mut transaction = ServerInvite {
            state: State::Proceeding,
            transport,
            timers,
            last_response: None,
            timer_g: None,
            timer_h: None,
            timer_i: None,
            timer_l: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        transaction.transmit(trying);
        transaction
    }

    fn transmit(&mut self, response: Message) {
        self.transmits.push_back(response.clone());
        self.last_response = Some(response);
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// A retransmission of the INVITE, or the ACK for a 300-699 response.
    pub fn handle_request(&mut self, request: &Message, now: Instant) {
        match (request.method(), self.state) {
            (Some(Method::Invite), State::Proceeding | State::Completed) => {
                if let Some(last) = self.last_response.clone() {
                    self.transmits.push_back(last);
                }
            }
            (Some(Method::Ack), State::Completed) => {
                self.state = State::Confirmed;
                self.timer_g = None;
                self.timer_h = None;
                let wait = match self.transport {
                    Transport::Unreliable => self.timers.t4,
                    Transport::Reliable => std::time::Duration::ZERO,
                };
                self.timer_i = Some(now + wait);
                self.handle_timeout(now);
            }
            // Accepted absorbs INVITE retransmissions (the core resends the 2xx); Confirmed
            // absorbs ACK retransmissions.
            _ => {}
        }
    }

    /// A response from the core.
    pub fn send_response(&mut self, response: Message, now: Instant) {
        let Some(code) = response.code() else {
            return;
        };
        if self.state != State::Proceeding {
            return;
        }
        self.transmit(response);
        match code {
            100..=199 => {}
            200..=299 => {
                self.state = State::Accepted;
                self.timer_l = Some(now + self.timers.transaction_timeout());
            }
            _ => {
                self.state = State::Completed;
                if self.transport == Transport::Unreliable {
                    let mut backoff = Backoff::new(self.timers.t1, Some(self.timers.t2));
                    self.timer_g = Some((now + backoff.step(), backoff));
                }
                self.timer_h = Some(now + self.timers.transaction_timeout());
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some((at, mut backoff)) = self.timer_g {
            if at <= now && self.state == State::Completed {
                if let Some(last) = self.last_response.clone() {
                    self.transmits.push_back(last);
                }
                self.timer_g = Some((now + backoff.step(), backoff));
            }
        }
        if self.timer_h.is_some_and(|at| at <= now) {
            self.timer_h = None;
            self.timer_g = None;
            self.events.push_back(Event::TimedOut);
            self.terminate();
        }
        if self.timer_i.is_some_and(|at| at <= now) || self.timer_l.is_some_and(|at| at <= now) {
            self.terminate();
        }
    }

    fn terminate(&mut self) {
        if self.state != State::Terminated {
            self.state = State::Terminated;
            self.timer_g = None;
            self.timer_h = None;
            self.timer_i = None;
            self.timer_l = None;
            self.events.push_back(Event::Terminated);
        }
    }

    /// Messages waiting for [`poll_transmit`](Self::poll_transmit).
    pub fn pending(&self) -> usize {
        self.transmits.len()
    }

    pub fn poll_transmit(&mut self) -> Option<Message> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        earliest(&[
            self.timer_g.map(|(at, _)| at),
            self.timer_h,
            self.timer_i,
            self.timer_l,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_datagram;
    use std::time::Duration;

    const INVITE: &str = "INVITE sip:5000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\r\nFrom: <sip:a@127.0.0.1>;tag=f\r\nTo: <sip:5000@127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n\r\n";

    fn invite() -> Message {
        parse_datagram(INVITE.as_bytes()).unwrap()
    }

    fn ack() -> Message {
        parse_datagram(
            INVITE
                .replace("INVITE sip", "ACK sip")
                .replace("1 INVITE", "1 ACK")
                .as_bytes(),
        )
        .unwrap()
    }

    fn drain(t: &mut ServerInvite) -> Vec<u16> {
        std::iter::from_fn(|| t.poll_transmit())
            .filter_map(|m| m.code())
            .collect()
    }

    /// Runs the timers from `start` to `end`, returning (seconds since start, code) of every
    /// transmission.
    fn run(t: &mut ServerInvite, start: Instant, end: Instant) -> Vec<(f64, u16)> {
        let mut sent = Vec::new();
        while let Some(at) = t.poll_timeout().filter(|at| *at <= end) {
            t.handle_timeout(at);
            for code in drain(t) {
                sent.push(((at - start).as_secs_f64(), code));
            }
        }
        sent
    }

    #[test]
    fn trying_at_once_and_retransmissions_get_the_last_response() {
        let now = Instant::now();
        let mut t = ServerInvite::new(&invite(), Transport::Unreliable, Timers::default());
        assert_eq!(drain(&mut t), [100]);
        t.handle_request(&invite(), now);
        assert_eq!(
            drain(&mut t),
            [100],
            "a retransmitted INVITE gets the last response again"
        );
        let ringing = response_to(&invite().headers, 180, "Ringing", Some("x"));
        t.send_response(ringing, now);
        t.handle_request(&invite(), now);
        assert_eq!(drain(&mut t), [180, 180]);
        assert_eq!(t.poll_event(), None, "never a second call");
    }

    #[test]
    fn error_response_is_retransmitted_until_ack() {
        let start = Instant::now();
        let mut t = ServerInvite::new(&invite(), Transport::Unreliable, Timers::default());
        drain(&mut t);
        t.send_response(
            response_to(&invite().headers, 486, "Busy Here", Some("x")),
            start,
        );
        assert_eq!(drain(&mut t), [486]);
        // Timer G: 0.5, 1, 2, 4, 4 … seconds apart.
        let sent = run(&mut t, start, start + Duration::from_secs(10));
        let times: Vec<f64> = sent.iter().map(|(s, _)| *s).collect();
        assert_eq!(times, [0.5, 1.5, 3.5, 7.5]);
        t.handle_request(&ack(), start + Duration::from_secs(10));
        assert_eq!(t.state(), State::Confirmed);
        assert!(run(&mut t, start, start + Duration::from_secs(14)).is_empty());
        // Timer I = T4 = 5 s after the ACK.
        assert_eq!(t.poll_timeout(), Some(start + Duration::from_secs(15)));
        t.handle_timeout(start + Duration::from_secs(15));
        assert_eq!(
            (t.state(), t.poll_event()),
            (State::Terminated, Some(Event::Terminated))
        );
    }

    #[test]
    fn no_ack_times_out_with_timer_h() {
        let start = Instant::now();
        let mut t = ServerInvite::new(&invite(), Transport::Unreliable, Timers::default());
        drain(&mut t);
        t.send_response(
            response_to(&invite().headers, 603, "Decline", Some("x")),
            start,
        );
        drain(&mut t);
        let sent = run(&mut t, start, start + Duration::from_secs(40));
        assert_eq!(
            sent.len(),
            10,
            "G at 0.5 1.5 3.5 7.5 11.5 15.5 19.5 23.5 27.5 31.5"
        );
        assert_eq!(t.poll_event(), Some(Event::TimedOut));
        assert_eq!(t.poll_event(), Some(Event::Terminated));
    }

    #[test]
    fn over_tcp_nothing_is_retransmitted() {
        let start = Instant::now();
        let mut t = ServerInvite::new(&invite(), Transport::Reliable, Timers::default());
        drain(&mut t);
        t.send_response(
            response_to(&invite().headers, 486, "Busy Here", Some("x")),
            start,
        );
        drain(&mut t);
        assert_eq!(
            t.poll_timeout(),
            Some(start + Duration::from_secs(32)),
            "only Timer H"
        );
        t.handle_request(&ack(), start);
        assert_eq!(t.state(), State::Terminated, "Timer I is zero over TCP");
    }

    #[test]
    fn after_2xx_retransmitted_invites_are_absorbed_until_timer_l() {
        let start = Instant::now();
        let mut t = ServerInvite::new(&invite(), Transport::Unreliable, Timers::default());
        drain(&mut t);
        t.send_response(response_to(&invite().headers, 200, "OK", Some("x")), start);
        assert_eq!(drain(&mut t), [200]);
        assert_eq!(t.state(), State::Accepted);
        t.handle_request(&invite(), start + Duration::from_secs(1));
        assert!(
            drain(&mut t).is_empty(),
            "the core retransmits the 2xx, not the transaction"
        );
        t.handle_timeout(start + Duration::from_secs(32));
        assert_eq!(t.poll_event(), Some(Event::Terminated));
    }

    #[test]
    fn a_late_wakeup_does_not_burst() {
        let start = Instant::now();
        let mut t = ServerInvite::new(&invite(), Transport::Unreliable, Timers::default());
        drain(&mut t);
        t.send_response(
            response_to(&invite().headers, 486, "Busy Here", Some("x")),
            start,
        );
        drain(&mut t);
        t.handle_timeout(start + Duration::from_secs(9));
        assert_eq!(
            drain(&mut t).len(),
            1,
            "one retransmission, rescheduled from now"
        );
    }
}
