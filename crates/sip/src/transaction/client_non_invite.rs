//! The non-INVITE client transaction (RFC 3261 section 17.1.2): BYE, CANCEL, OPTIONS,
//! REGISTER, INFO and every other request but INVITE and ACK.
//!
//! ```text
//! state              input     action                                      next state
//! Trying             Timer E   send the request again, double Timer E      Trying
//!                              up to T2
//! Proceeding         Timer E   send the request again, Timer E = T2        Proceeding
//! Trying, Proceeding Timer F   TimedOut                                    Terminated
//! Trying, Proceeding 1xx       pass up                                     Proceeding
//! Trying, Proceeding 200-699   pass up, start Timer K                      Completed
//! Completed          Timer K                                               Terminated
//! ```
//!
//! Anything else is ignored, which absorbs retransmitted final responses in Completed.
//! Timers E and F start with the transaction. Over a reliable transport there is no Timer E
//! and Timer K is zero.

use std::collections::VecDeque;
use std::time::Instant;

use super::{earliest, Backoff, Event, Timers, Transport};
use crate::message::Message;

/// Where a non-INVITE client transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The request is out (and retransmitted on Timer E); no response yet.
    Trying,
    /// A provisional response came; the request is still retransmitted, every T2.
    Proceeding,
    /// A final response came; retransmissions of it are absorbed until Timer K.
    Completed,
    /// Over; the transaction can be forgotten.
    Terminated,
}

/// A non-INVITE client transaction: sends the request (retransmitting it over an unreliable
/// transport until a final response), passes responses up, and times out.
///
/// Drive it with [`handle_response`](Self::handle_response) and
/// [`handle_timeout`](Self::handle_timeout), then drain [`poll_transmit`](Self::poll_transmit)
/// and [`poll_event`](Self::poll_event) and wait until [`poll_timeout`](Self::poll_timeout).
#[derive(Debug)]
pub struct ClientNonInvite {
    request: Message,
    transport: Transport,
    timers: Timers,
    state: State,
    /// Request retransmission (Trying and Proceeding, unreliable transport only).
    timer_e: Option<Instant>,
    /// The interval Timer E waits next while Trying: T1, doubling, capped at T2.
    backoff_e: Backoff,
    /// Transaction timeout (Trying and Proceeding).
    timer_f: Option<Instant>,
    /// End of the wait for final response retransmissions (Completed).
    timer_k: Option<Instant>,
    transmits: VecDeque<Message>,
    events: VecDeque<Event>,
}

impl ClientNonInvite {
    /// Starts the transaction; the request is the first thing
    /// [`poll_transmit`](Self::poll_transmit) returns. Timer E (unreliable transport only) and
    /// Timer F start now.
    pub fn new(request: Message, transport: Transport, timers: Timers, now: Instant) -> Self {
        let mut backoff_e = Backoff::new(timers.t1, Some(timers.t2));
        let timer_e = match transport {
            Transport::Unreliable => now.checked_add(backoff_e.step()),
            Transport::Reliable => None,
        };
        let mut transmits = VecDeque::with_capacity(2);
        transmits.push_back(request.clone());
        ClientNonInvite {
            request,
            transport,
            timers,
            state: State::Trying,
            timer_e,
            backoff_e,
            timer_f: now.checked_add(timers.transaction_timeout()),
            timer_k: None,
            transmits,
            events: VecDeque::new(),
        }
    }

    /// A response matched to this transaction (by [`Key::of_response`](super::Key)).
    /// Anything that is not a response with a status of 100 to 699, and any response the
    /// current state has no use for (such as a retransmitted final response), is ignored.
    pub fn handle_response(&mut self, response: Message, now: Instant) {
        let Some(code) = response.code() else {
            return;
        };
        match (self.state, code) {
            (State::Trying | State::Proceeding, 100..=199) => {
                // Timer E keeps its deadline; from its next firing it waits T2.
                self.state = State::Proceeding;
                self.events.push_back(Event::Response(response));
            }
            (State::Trying | State::Proceeding, 200..=699) => {
                self.state = State::Completed;
                self.timer_e = None;
                self.timer_f = None;
                self.events.push_back(Event::Response(response));
                match self.transport {
                    Transport::Unreliable => self.timer_k = now.checked_add(self.timers.t4),
                    // Timer K is zero: nothing can be retransmitted to absorb.
                    Transport::Reliable => self.terminate(),
                }
            }
            _ => {}
        }
    }

    /// Fires every timer whose deadline is at or before `now`, each once, however late the
    /// call comes. Timer F is looked at first: once the transaction has expired, a
    /// retransmission that fell due at about the same time would be wasted.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due = |deadline: Option<Instant>| deadline.is_some_and(|d| d <= now);
        if due(self.timer_f) {
            self.events.push_back(Event::TimedOut);
            self.terminate();
            return;
        }
        if due(self.timer_e) {
            self.transmits.push_back(self.request.clone());
            let interval = match self.state {
                State::Proceeding => self.timers.t2,
                _ => self.backoff_e.step(),
            };
            self.timer_e = now.checked_add(interval);
        }
        if due(self.timer_k) {
            self.terminate();
        }
    }

    /// Messages waiting for [`poll_transmit`](Self::poll_transmit).
    pub fn pending(&self) -> usize {
        self.transmits.len()
    }

    /// The next message to send: the request and its retransmissions.
    pub fn poll_transmit(&mut self) -> Option<Message> {
        self.transmits.pop_front()
    }

    /// The next event for the core; [`Event::Terminated`] is always the last one.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The earliest pending timer, when [`handle_timeout`](Self::handle_timeout) should be
    /// called next; `None` once terminated.
    pub fn poll_timeout(&self) -> Option<Instant> {
        earliest(&[self.timer_e, self.timer_f, self.timer_k])
    }

    /// Where the transaction stands.
    pub fn state(&self) -> State {
        self.state
    }

    /// The request this transaction sends.
    pub fn request(&self) -> &Message {
        &self.request
    }

    /// Moves to Terminated, stopping every timer; `Event::Terminated` is queued only once.
    fn terminate(&mut self) {
        if self.state == State::Terminated {
            return;
        }
        self.state = State::Terminated;
        self.timer_e = None;
        self.timer_f = None;
        self.timer_k = None;
        self.events.push_back(Event::Terminated);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::message::{Method, Name};

    fn bye() -> Message {
        let mut m = Message::request(Method::Bye, "sip:+15550001111@198.51.100.7:5060");
        let h = &mut m.headers;
        h.push(
            Name::Via,
            "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-bye-1;rport",
        );
        h.push(Name::MaxForwards, "70");
        h.push(Name::From, "<sip:callbackd@192.0.2.10>;tag=f1");
        h.push(Name::To, "<sip:+15550001111@trunk.example.net>;tag=t9");
        h.push(Name::CallId, "call-1@192.0.2.10");
        h.push(Name::CSeq, "315 BYE");
        m
    }

    fn response(request: &Message, code: u16) -> Message {
        let mut r = Message::response(code, "Reason");
        for name in [Name::Via, Name::From, Name::To, Name::CallId, Name::CSeq] {
            if let Some(value) = request.headers.get(&name) {
                r.headers.push(name, value);
            }
        }
        r
    }

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    /// A transaction driven in virtual time: every timer fires exactly at its deadline, and
    /// everything sent and every event is logged with its time since the start.
    struct Script {
        tx: ClientNonInvite,
        base: Instant,
        sent: Vec<(Duration, Message)>,
        events: Vec<(Duration, Event)>,
    }

    impl Script {
        fn new(transport: Transport) -> Script {
            Script::with_timers(transport, Timers::default())
        }

        fn with_timers(transport: Transport, timers: Timers) -> Script {
            let base = Instant::now();
            let mut s = Script {
                tx: ClientNonInvite::new(bye(), transport, timers, base),
                base,
                sent: Vec::new(),
                events: Vec::new(),
            };
            s.drain(base);
            s
        }

        fn drain(&mut self, now: Instant) {
            let at = now - self.base;
            while let Some(m) = self.tx.poll_transmit() {
                self.sent.push((at, m));
            }
            while let Some(e) = self.tx.poll_event() {
                self.events.push((at, e));
            }
        }

        /// Fires each timer due up to `until`, at its own deadline.
        fn run_until(&mut self, until: Duration) {
            for _ in 0..1000 {
                match self.tx.poll_timeout() {
                    Some(deadline) if deadline <= self.base + until => {
                        self.tx.handle_timeout(deadline);
                        self.drain(deadline);
                    }
                    _ => return,
                }
            }
            panic!("timers keep firing without time passing");
        }

        /// Runs the timers up to `at`, then delivers a response of `code`.
        fn respond(&mut self, at: Duration, code: u16) {
            self.run_until(at);
            let r = response(self.tx.request(), code);
            self.tx.handle_response(r, self.base + at);
            self.drain(self.base + at);
        }

        fn sent_at(&self) -> Vec<Duration> {
            self.sent.iter().map(|(at, _)| *at).collect()
        }

        /// The events as (time, status code or name) for compact assertions.
        fn event_log(&self) -> Vec<(Duration, String)> {
            self.events
                .iter()
                .map(|(at, e)| {
                    let name = match e {
                        Event::Response(r) => r.code().unwrap().to_string(),
                        Event::TimedOut => "TimedOut".into(),
                        Event::Terminated => "Terminated".into(),
                    };
                    (*at, name)
                })
                .collect()
        }
    }

    fn timed_out_at(millis: u64) -> Vec<(Duration, String)> {
        vec![
            (ms(millis), "TimedOut".into()),
            (ms(millis), "Terminated".into()),
        ]
    }

    #[test]
    fn silent_peer_over_udp_backs_off_to_t2_until_timer_f_at_32s() {
        let mut s = Script::new(Transport::Unreliable);
        assert_eq!(s.tx.state(), State::Trying);
        s.run_until(ms(100_000));
        assert_eq!(
            s.sent_at(),
            [0, 500, 1_500, 3_500, 7_500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500].map(ms)
        );
        assert!(s.sent.iter().all(|(_, m)| *m == bye()));
        assert_eq!(s.event_log(), timed_out_at(32_000));
        assert_eq!(s.tx.state(), State::Terminated);
        assert_eq!(s.tx.poll_timeout(), None);
    }

    #[test]
    fn silent_peer_over_tcp_gets_one_request_then_timer_f() {
        let mut s = Script::new(Transport::Reliable);
        assert_eq!(s.tx.poll_timeout(), Some(s.base + ms(32_000)));
        s.run_until(ms(100_000));
        assert_eq!(s.sent_at(), [ms(0)]);
        assert_eq!(s.event_log(), timed_out_at(32_000));
    }

    #[test]
    fn timers_follow_t1_and_t2() {
        let timers = Timers {
            t1: ms(100),
            t2: ms(1_000),
            t4: ms(5_000),
        };
        let mut s = Script::with_timers(Transport::Unreliable, timers);
        s.run_until(ms(100_000));
        // Backoff 0.1, 0.2, 0.4, 0.8, then T2 = 1 s until Timer F at 6.4 s.
        assert_eq!(
            s.sent_at(),
            [0, 100, 300, 700, 1_500, 2_500, 3_500, 4_500, 5_500].map(ms)
        );
        assert_eq!(s.event_log(), timed_out_at(6_400));
    }

    #[test]
    fn provisional_keeps_retransmitting_every_t2_until_timer_f() {
        let mut s = Script::new(Transport::Unreliable);
        s.respond(ms(1_000), 100);
        assert_eq!(s.tx.state(), State::Proceeding);
        // Timer E keeps the deadline it had (1.5 s), then waits T2 each time.
        assert_eq!(s.tx.poll_timeout(), Some(s.base + ms(1_500)));
        s.respond(ms(6_000), 100);
        s.run_until(ms(100_000));
        assert_eq!(
            s.sent_at(),
            [0, 500, 1_500, 5_500, 9_500, 13_500, 17_500, 21_500, 25_500, 29_500].map(ms)
        );
        let mut expected = vec![(ms(1_000), "100".into()), (ms(6_000), "100".into())];
        expected.extend(timed_out_at(32_000));
        assert_eq!(s.event_log(), expected);
    }

    #[test]
    fn provisional_before_the_first_retransmission_goes_straight_to_t2() {
        let mut s = Script::new(Transport::Unreliable);
        s.respond(ms(100), 100);
        s.run_until(ms(13_000));
        // Timer E still fires at 0.5 s, then every T2 (in Trying it would be 1.5, 3.5, 7.5).
        assert_eq!(s.sent_at(), [0, 500, 4_500, 8_500, 12_500].map(ms));
    }

    #[test]
    fn final_response_is_passed_up_once_then_timer_k() {
        let mut s = Script::new(Transport::Unreliable);
        s.respond(ms(700), 200);
        assert_eq!(s.tx.state(), State::Completed);
        // Timer K: T4 after the final response.
        assert_eq!(s.tx.poll_timeout(), Some(s.base + ms(5_700)));
        s.respond(ms(1_000), 200);
        s.respond(ms(2_000), 200);
        s.respond(ms(3_000), 100);
        s.respond(ms(4_000), 481);
        s.run_until(ms(100_000));
        assert_eq!(
            s.sent_at(),
            [0, 500].map(ms),
            "no retransmission once completed"
        );
        assert_eq!(
            s.event_log(),
            [(ms(700), "200".into()), (ms(5_700), "Terminated".into())]
        );
    }

    #[test]
    fn final_response_while_proceeding() {
        let mut s = Script::new(Transport::Unreliable);
        s.respond(ms(200), 100);
        s.respond(ms(300), 180);
        s.respond(ms(9_000), 404);
        s.run_until(ms(100_000));
        // Timer E fires at 0.5 s as scheduled; from then on (Proceeding) it waits T2.
        assert_eq!(s.sent_at(), [0, 500, 4_500, 8_500].map(ms));
        assert_eq!(
            s.event_log(),
            [
                (ms(200), "100".into()),
                (ms(300), "180".into()),
                (ms(9_000), "404".into()),
                (ms(14_000), "Terminated".into())
            ]
        );
    }

    #[test]
    fn timer_k_follows_t4() {
        let timers = Timers {
            t4: ms(2_500),
            ..Timers::default()
        };
        let mut s = Script::with_timers(Transport::Unreliable, timers);
        s.respond(ms(100), 503);
        s.run_until(ms(100_000));
        assert_eq!(s.events.last(), Some(&(ms(2_600), Event::Terminated)));
    }

    #[test]
    fn final_over_tcp_terminates_at_once() {
        let mut s = Script::new(Transport::Reliable);
        s.respond(ms(50), 100);
        s.respond(ms(400), 200);
        assert_eq!(s.tx.state(), State::Terminated);
        assert_eq!(s.tx.poll_timeout(), None);
        assert_eq!(s.sent_at(), [ms(0)]);
        assert_eq!(
            s.event_log(),
            [
                (ms(50), "100".into()),
                (ms(400), "200".into()),
                (ms(400), "Terminated".into())
            ]
        );
    }

    #[test]
    fn a_late_timeout_sends_one_retransmission_and_reschedules_from_now() {
        let mut s = Script::new(Transport::Unreliable);
        // Timer E was due at 0.5 s; the runtime stalled until 10 s.
        s.tx.handle_timeout(s.base + ms(10_000));
        s.drain(s.base + ms(10_000));
        assert_eq!(s.sent_at(), [0, 10_000].map(ms));
        assert_eq!(s.tx.poll_timeout(), Some(s.base + ms(11_000)));
        s.run_until(ms(20_000));
        assert_eq!(s.sent_at(), [0, 10_000, 11_000, 13_000, 17_000].map(ms));
    }

    #[test]
    fn expired_transaction_sends_nothing_more_when_e_and_f_are_both_due() {
        let mut s = Script::new(Transport::Unreliable);
        s.run_until(ms(30_000));
        assert_eq!(s.sent.len(), 10);
        // Timer E (31.5 s) and Timer F (32 s) are both overdue.
        s.tx.handle_timeout(s.base + ms(45_000));
        s.drain(s.base + ms(45_000));
        assert_eq!(s.sent.len(), 10);
        assert_eq!(s.event_log(), timed_out_at(45_000));
    }

    #[test]
    fn timer_f_also_ends_proceeding_over_tcp() {
        let mut s = Script::new(Transport::Reliable);
        s.respond(ms(100), 100);
        s.run_until(ms(100_000));
        assert_eq!(s.sent_at(), [ms(0)]);
        let mut expected = vec![(ms(100), "100".into())];
        expected.extend(timed_out_at(32_000));
        assert_eq!(s.event_log(), expected);
    }

    #[test]
    fn nothing_happens_after_terminated() {
        let mut s = Script::new(Transport::Unreliable);
        s.respond(ms(100), 200);
        s.run_until(ms(10_000));
        let (sent, events) = (s.sent.len(), s.events.len());
        for at in [10_000, 40_000, 100_000] {
            s.tx.handle_timeout(s.base + ms(at));
            s.respond(ms(at), 100);
            s.respond(ms(at), 200);
            s.respond(ms(at), 500);
        }
        assert_eq!((s.sent.len(), s.events.len()), (sent, events));
        assert_eq!(s.events.last().map(|(_, e)| e), Some(&Event::Terminated));
        assert_eq!(s.tx.poll_event(), None);
        assert_eq!(s.tx.poll_transmit(), None);
    }

    #[test]
    fn odd_input_is_ignored_without_panicking() {
        let mut s = Script::new(Transport::Unreliable);
        let now = s.base + ms(100);
        s.tx.handle_response(bye(), now);
        for code in [0, 99, 700, 999, u16::MAX] {
            s.tx.handle_response(Message::response(code, "?"), now);
        }
        s.tx.handle_timeout(s.base);
        s.drain(now);
        assert_eq!((s.sent.len(), s.events.len()), (1, 0));
        assert_eq!(s.tx.state(), State::Trying);
        assert_eq!(s.tx.poll_timeout(), Some(s.base + ms(500)));
    }

    #[test]
    fn huge_timers_do_not_overflow() {
        let timers = Timers {
            t1: Duration::from_secs(u64::MAX / 128),
            t2: Duration::MAX,
            t4: Duration::MAX,
        };
        let now = Instant::now();
        let mut tx = ClientNonInvite::new(bye(), Transport::Unreliable, timers, now);
        tx.handle_response(Message::response(100, "Trying"), now);
        tx.handle_timeout(now + ms(1));
        tx.handle_response(Message::response(200, "OK"), now);
        assert_eq!(tx.state(), State::Completed);
        assert_eq!(tx.poll_timeout(), None);
    }
}
