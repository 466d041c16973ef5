//! The INVITE client transaction (RFC 3261 section 17.1.1, with the Accepted state of
//! RFC 6026 section 7.2).
//!
//! ```text
//! state                input     action                                  next state
//! Calling              Timer A   send the INVITE again, double Timer A   Calling
//! Calling              Timer B   TimedOut                                Terminated
//! Calling, Proceeding  1xx       pass up                                 Proceeding
//! Calling, Proceeding  2xx       pass up, start Timer M                  Accepted
//! Calling, Proceeding  300-699   pass up, send ACK, start Timer D        Completed
//! Accepted             2xx       pass up                                 Accepted
//! Accepted             Timer M                                           Terminated
//! Completed            300-699   send the ACK again                      Completed
//! Completed            Timer D                                           Terminated
//! ```
//!
//! Anything else is ignored. Timers A and B start with the transaction; Proceeding has no
//! timer (the core ends a call that rings too long with a CANCEL). Over a reliable transport
//! there is no Timer A and Timer D is zero.
//!
//! The transaction acknowledges 300-699 responses itself; for a 2xx the ACK belongs to the
//! dialog, so the core builds it, and every retransmitted 2xx is passed up for it to answer.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{earliest, Backoff, Event, Timers, Transport};
use crate::header::CSeq;
use crate::message::{split_list, Message, Method, Name};

/// Timer D over an unreliable transport: how long the Completed state absorbs retransmitted
/// final responses (RFC 3261 table 4: "> 32 s for UDP"). It does not scale with T1.
pub const TIMER_D_UNRELIABLE: Duration = Duration::from_secs(32);

/// The Max-Forwards of the requests the transaction builds (RFC 3261 section 8.1.1.6).
const MAX_FORWARDS: &str = "70";

/// Where an INVITE client transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The INVITE is out (and retransmitted on Timer A); no response yet.
    Calling,
    /// A provisional response came; waiting for a final one, without retransmitting.
    Proceeding,
    /// A 2xx came (RFC 6026); retransmitted 2xx are passed up until Timer M.
    Accepted,
    /// A 300-699 came and was acknowledged; retransmissions of it are acknowledged again
    /// until Timer D.
    Completed,
    /// Over; the transaction can be forgotten.
    Terminated,
}

/// An INVITE client transaction: sends the INVITE (retransmitting it over an unreliable
/// transport), passes responses up, acknowledges 300-699 responses, and times out.
///
/// Drive it with [`handle_response`](Self::handle_response) and
/// [`handle_timeout`](Self::handle_timeout), then drain [`poll_transmit`](Self::poll_transmit)
/// and [`poll_event`](Self::poll_event) and wait until [`poll_timeout`](Self::poll_timeout).
#[derive(Debug)]
pub struct ClientInvite {
    request: Message,
    transport: Transport,
    timers: Timers,
    state: State,
    /// The ACK for the 300-699 response, kept to send again for each retransmission of it.
    ack: Option<Message>,
    /// INVITE retransmission (Calling, unreliable transport only).
    timer_a: Option<Instant>,
    /// The interval Timer A waits next: T1, doubling each time.
    backoff_a: Backoff,
    /// Transaction timeout (Calling).
    timer_b: Option<Instant>,
    /// End of the wait for final response retransmissions (Completed).
    timer_d: Option<Instant>,
    /// End of the wait for 2xx retransmissions (Accepted).
    timer_m: Option<Instant>,
    transmits: VecDeque<Message>,
    events: VecDeque<Event>,
}

impl ClientInvite {
    /// Starts the transaction; the INVITE is the first thing
    /// [`poll_transmit`](Self::poll_transmit) returns. Timer A (unreliable transport only) and
    /// Timer B start now.
    pub fn new(request: Message, transport: Transport, timers: Timers, now: Instant) -> Self {
        let mut backoff_a = Backoff::new(timers.t1, None);
        let timer_a = match transport {
            Transport::Unreliable => now.checked_add(backoff_a.step()),
            Transport::Reliable => None,
        };
        let mut transmits = VecDeque::with_capacity(2);
        transmits.push_back(request.clone());
        ClientInvite {
            request,
            transport,
            timers,
            state: State::Calling,
            ack: None,
            timer_a,
            backoff_a,
            timer_b: now.checked_add(timers.transaction_timeout()),
            timer_d: None,
            timer_m: None,
            transmits,
            events: VecDeque::new(),
        }
    }

    /// A response matched to this transaction (by [`Key::of_response`](super::Key)).
    /// Anything that is not a response with a status of 100 to 699, and any response the
    /// current state has no use for, is ignored.
    pub fn handle_response(&mut self, response: Message, now: Instant) {
        let Some(code) = response.code() else {
            return;
        };
        match (self.state, code) {
            (State::Calling | State::Proceeding, 100..=199) => {
                self.state = State::Proceeding;
                self.timer_a = None;
                self.timer_b = None;
                self.events.push_back(Event::Response(response));
            }
            (State::Calling | State::Proceeding, 200..=299) => {
                self.state = State::Accepted;
                self.timer_a = None;
                self.timer_b = None;
                self.timer_m = now.checked_add(self.timers.transaction_timeout());
                self.events.push_back(Event::Response(response));
            }
            (State::Calling | State::Proceeding, 300..=699) => {
                let ack = self.build_ack(&response);
                self.transmits.push_back(ack.clone());
                self.ack = Some(ack);
                self.state = State::Completed;
                self.timer_a = None;
                self.timer_b = None;
                self.events.push_back(Event::Response(response));
                match self.transport {
                    Transport::Unreliable => self.timer_d = now.checked_add(TIMER_D_UNRELIABLE),
                    // Timer D is zero: nothing can be retransmitted to absorb.
                    Transport::Reliable => self.terminate(),
                }
            }
            (State::Accepted, 200..=299) => {
                // Another 2xx (a retransmission, or another fork's answer): the core
                // acknowledges it within its dialog.
                self.events.push_back(Event::Response(response));
            }
            (State::Completed, 300..=699) => {
                // A retransmission: our ACK was lost.
                if let Some(ack) = &self.ack {
                    self.transmits.push_back(ack.clone());
                }
            }
            _ => {}
        }
    }

    /// Fires every timer whose deadline is at or before `now`, each once, however late the
    /// call comes. Timer B is looked at first: once the transaction has expired, a
    /// retransmission that fell due at about the same time would be wasted.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due = |deadline: Option<Instant>| deadline.is_some_and(|d| d <= now);
        if due(self.timer_b) {
            self.events.push_back(Event::TimedOut);
            self.terminate();
            return;
        }
        if due(self.timer_a) {
            self.transmits.push_back(self.request.clone());
            self.timer_a = now.checked_add(self.backoff_a.step());
        }
        if due(self.timer_d) || due(self.timer_m) {
            self.terminate();
        }
    }

    /// Messages waiting for [`poll_transmit`](Self::poll_transmit).
    pub fn pending(&self) -> usize {
        self.transmits.len()
    }

    /// The next message to send: the INVITE and its retransmissions, and the ACK for a
    /// 300-699 response (once more for each retransmission of that response).
    pub fn poll_transmit(&mut self) -> Option<Message> {
        self.transmits.pop_front()
    }

    /// The next event for the core; [`Event::Terminated`] is always the last one.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The earliest pending timer, when [`handle_timeout`](Self::handle_timeout) should be
    /// called next; `None` once nothing is pending (Proceeding and Terminated).
    pub fn poll_timeout(&self) -> Option<Instant> {
        earliest(&[self.timer_a, self.timer_b, self.timer_d, self.timer_m])
    }

    /// Where the transaction stands.
    pub fn state(&self) -> State {
        self.state
    }

    /// The INVITE this transaction sends.
    pub fn request(&self) -> &Message {
        &self.request
    }

    /// The CANCEL for this INVITE (RFC 3261 section 9.1): the same Request-URI, Call-ID, To,
    /// From and Route headers, the CSeq number with method CANCEL, a single Via equal to the
    /// INVITE's top Via (so that it reaches the same server transaction), Max-Forwards 70 and
    /// no body. It is sent in a transaction of its own.
    pub fn cancel_request(&self) -> Message {
        self.companion(Method::Cancel, self.request.headers.get(&Name::To))
    }

    /// The ACK for a 300-699 response (RFC 3261 section 17.1.1.3): like the CANCEL, but with
    /// the To of the response (which carries the tag the server chose).
    fn build_ack(&self, response: &Message) -> Message {
        let to = response
            .headers
            .get(&Name::To)
            .or_else(|| self.request.headers.get(&Name::To));
        self.companion(Method::Ack, to)
    }

    /// A request that follows the INVITE through the same hops: Request-URI, top Via, Route
    /// set, From, Call-ID and CSeq number copied, with `method` and `to`.
    fn companion(&self, method: Method, to: Option<&str>) -> Message {
        let invite = &self.request.headers;
        let mut message = Message::request(method.clone(), self.request.uri().unwrap_or_default());
        let headers = &mut message.headers;
        if let Some(top_via) = invite
            .get(&Name::Via)
            .and_then(|line| split_list(line).next())
        {
            headers.push(Name::Via, top_via.trim());
        }
        for route in invite.all(&Name::Route) {
            headers.push(Name::Route, route);
        }
        headers.push(Name::MaxForwards, MAX_FORWARDS);
        if let Some(from) = invite.get(&Name::From) {
            headers.push(Name::From, from);
        }
        if let Some(to) = to {
            headers.push(Name::To, to);
        }
        if let Some(call_id) = invite.get(&Name::CallId) {
            headers.push(Name::CallId, call_id);
        }
        if let Some(cseq) = invite.get(&Name::CSeq).and_then(|v| CSeq::parse(v).ok()) {
            headers.push(Name::CSeq, format!("{} {method}", cseq.number));
        }
        message
    }

    /// Moves to Terminated, stopping every timer; `Event::Terminated` is queued only once.
    fn terminate(&mut self) {
        if self.state == State::Terminated {
            return;
        }
        self.state = State::Terminated;
        self.timer_a = None;
        self.timer_b = None;
        self.timer_d = None;
        self.timer_m = None;
        self.events.push_back(Event::Terminated);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::transaction::Key;

    const TOP_VIA: &str = "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-inv-1;rport";

    fn invite() -> Message {
        let mut m = Message::request(Method::Invite, "sip:+15550001111@trunk.example.net");
        let h = &mut m.headers;
        h.push(Name::Via, TOP_VIA);
        h.push(Name::Route, "<sip:p1.example.net;lr>");
        h.push(
            Name::Route,
            "<sip:p2.example.net;lr>, <sip:p3.example.net;lr>",
        );
        h.push(Name::MaxForwards, "69");
        h.push(Name::From, "\"Callback\" <sip:callbackd@192.0.2.10>;tag=f1");
        h.push(Name::To, "<sip:+15550001111@trunk.example.net>");
        h.push(Name::CallId, "call-1@192.0.2.10");
        h.push(Name::CSeq, "314 INVITE");
        h.push(Name::Contact, "<sip:callbackd@192.0.2.10:5060>");
        h.push(Name::Authorization, "Digest username=\"cb\"");
        h.push(Name::ContentType, "application/sdp");
        m.body = Bytes::from_static(b"v=0\r\n");
        m
    }

    /// A response to `request` from a server that picked `to_tag`.
    fn response(request: &Message, code: u16, to_tag: &str) -> Message {
        let mut r = Message::response(code, "Reason");
        for via in request.headers.all(&Name::Via) {
            r.headers.push(Name::Via, via);
        }
        for name in [Name::From, Name::CallId, Name::CSeq] {
            if let Some(value) = request.headers.get(&name) {
                r.headers.push(name, value);
            }
        }
        let to = request.headers.get(&Name::To).unwrap_or_default();
        r.headers.push(Name::To, format!("{to};tag={to_tag}"));
        r
    }

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    /// A transaction driven in virtual time: every timer fires exactly at its deadline, and
    /// everything sent and every event is logged with its time since the start.
    struct Script {
        tx: ClientInvite,
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
                tx: ClientInvite::new(invite(), transport, timers, base),
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
            let r = response(self.tx.request(), code, "t9");
            self.tx.handle_response(r, self.base + at);
            self.drain(self.base + at);
        }

        fn sent_at(&self) -> Vec<Duration> {
            self.sent.iter().map(|(at, _)| *at).collect()
        }

        fn sent_methods(&self) -> Vec<(Duration, Method)> {
            self.sent
                .iter()
                .map(|(at, m)| (*at, m.method().cloned().unwrap()))
                .collect()
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

    #[test]
    fn silent_peer_over_udp_gets_seven_invites_then_timer_b_at_32s() {
        let mut s = Script::new(Transport::Unreliable);
        assert_eq!(s.tx.state(), State::Calling);
        assert_eq!(s.tx.poll_timeout(), Some(s.base + ms(500)));
        s.run_until(ms(100_000));
        assert_eq!(
            s.sent_at(),
            [0, 500, 1_500, 3_500, 7_500, 15_500, 31_500].map(ms)
        );
        assert!(s.sent.iter().all(|(_, m)| *m == invite()));
        assert_eq!(
            s.event_log(),
            [
                (ms(32_000), "TimedOut".into()),
                (ms(32_000), "Terminated".into())
            ]
        );
        assert_eq!(s.tx.state(), State::Terminated);
        assert_eq!(s.tx.poll_timeout(), None);
    }

    #[test]
    fn silent_peer_over_tcp_gets_one_invite_then_timer_b() {
        let mut s = Script::new(Transport::Reliable);
        assert_eq!(s.tx.poll_timeout(), Some(s.base + ms(32_000)));
        s.run_until(ms(100_000));
        assert_eq!(s.sent_at(), [ms(0)]);
        assert_eq!(
            s.event_log(),
            [
                (ms(32_000), "TimedOut".into()),
                (ms(32_000), "Terminated".into())
            ]
        );
    }

    #[test]
    fn timers_follow_t1() {
        let timers = Timers {
            t1: ms(100),
            ..Timers::default()
        };
        let mut s = Script::with_timers(Transport::Unreliable, timers);
        s.run_until(ms(100_000));
        assert_eq!(s.sent_at(), [0, 100, 300, 700, 1_500, 3_100, 6_300].map(ms));
        assert_eq!(s.events[0], (ms(6_400), Event::TimedOut));
    }

    #[test]
    fn provisional_stops_retransmissions_and_timer_b() {
        let mut s = Script::new(Transport::Unreliable);
        s.respond(ms(1_000), 100);
        assert_eq!(s.tx.state(), State::Proceeding);
        assert_eq!(s.tx.poll_timeout(), None);
        s.respond(ms(2_000), 180);
        s.respond(ms(5_000), 183);
        s.run_until(ms(200_000));
        assert_eq!(s.sent_at(), [0, 500].map(ms));
        assert_eq!(
            s.event_log(),
            [
                (ms(1_000), "100".into()),
                (ms(2_000), "180".into()),
                (ms(5_000), "183".into())
            ]
        );
        assert_eq!(
            s.tx.state(),
            State::Proceeding,
            "only a final response or a CANCEL ends it"
        );
    }

    #[test]
    fn provisional_then_busy_is_acknowledged_header_by_header() {
        let mut s = Script::new(Transport::Unreliable);
        s.respond(ms(200), 180);
        s.respond(ms(3_000), 486);
        assert_eq!(s.tx.state(), State::Completed);
        assert_eq!(
            s.sent_methods(),
            [(ms(0), Method::Invite), (ms(3_000), Method::Ack)]
        );
        let ack = &s.sent[1].1;
        assert_eq!(ack.uri(), Some("sip:+15550001111@trunk.example.net"));
        let h = &ack.headers;
        assert_eq!(h.all(&Name::Via).collect::<Vec<_>>(), [TOP_VIA]);
        assert_eq!(
            h.all(&Name::Route).collect::<Vec<_>>(),
            [
                "<sip:p1.example.net;lr>",
                "<sip:p2.example.net;lr>, <sip:p3.example.net;lr>"
            ]
        );
        assert_eq!(h.get(&Name::MaxForwards), Some("70"));
        assert_eq!(
            h.get(&Name::From),
            Some("\"Callback\" <sip:callbackd@192.0.2.10>;tag=f1")
        );
        assert_eq!(
            h.get(&Name::To),
            Some("<sip:+15550001111@trunk.example.net>;tag=t9")
        );
        assert_eq!(h.get(&Name::CallId), Some("call-1@192.0.2.10"));
        assert_eq!(h.get(&Name::CSeq), Some("314 ACK"));
        assert_eq!(h.iter().count(), 8, "nothing else: {h:?}");
        assert!(ack.body.is_empty());
        assert_eq!(
            ack.to_bytes(),
            b"ACK sip:+15550001111@trunk.example.net SIP/2.0\r\n\
              Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-inv-1;rport\r\n\
              Route: <sip:p1.example.net;lr>\r\n\
              Route: <sip:p2.example.net;lr>, <sip:p3.example.net;lr>\r\n\
              Max-Forwards: 70\r\n\
              From: \"Callback\" <sip:callbackd@192.0.2.10>;tag=f1\r\n\
              To: <sip:+15550001111@trunk.example.net>;tag=t9\r\n\
              Call-ID: call-1@192.0.2.10\r\n\
              CSeq: 314 ACK\r\n\
              Content-Length: 0\r\n\r\n"
                .to_vec()
        );
        assert_eq!(
            s.event_log(),
            [(ms(200), "180".into()), (ms(3_000), "486".into())]
        );
    }

    #[test]
    fn retransmitted_final_gets_the_ack_again_but_is_not_passed_up() {
        let mut s = Script::new(Transport::Unreliable);
        s.respond(ms(700), 486);
        s.respond(ms(1_200), 486);
        s.respond(ms(4_000), 486);
        s.respond(ms(5_000), 180);
        s.respond(ms(6_000), 200);
        assert_eq!(
            s.sent_methods(),
            [
                (ms(0), Method::Invite),
                (ms(500), Method::Invite),
                (ms(700), Method::Ack),
                (ms(1_200), Method::Ack),
                (ms(4_000), Method::Ack)
            ]
        );
        assert_eq!(s.sent[2].1, s.sent[3].1);
        assert_eq!(s.sent[2].1, s.sent[4].1);
        // Timer D: 32 s after the final response.
        assert_eq!(s.tx.poll_timeout(), Some(s.base + ms(32_700)));
        s.run_until(ms(100_000));
        assert_eq!(
            s.event_log(),
            [(ms(700), "486".into()), (ms(32_700), "Terminated".into())]
        );
        s.respond(ms(100_000), 486);
        assert_eq!(s.sent.len(), 5, "no ACK once terminated");
        assert_eq!(s.events.len(), 2);
    }

    #[test]
    fn timer_d_is_32s_whatever_t1() {
        let timers = Timers {
            t1: ms(100),
            ..Timers::default()
        };
        let mut s = Script::with_timers(Transport::Unreliable, timers);
        s.respond(ms(50), 603);
        s.run_until(ms(100_000));
        assert_eq!(s.events.last(), Some(&(ms(32_050), Event::Terminated)));
    }

    #[test]
    fn final_over_tcp_is_acknowledged_and_terminates_at_once() {
        let mut s = Script::new(Transport::Reliable);
        s.respond(ms(900), 404);
        assert_eq!(s.tx.state(), State::Terminated);
        assert_eq!(
            s.sent_methods(),
            [(ms(0), Method::Invite), (ms(900), Method::Ack)]
        );
        assert_eq!(
            s.event_log(),
            [(ms(900), "404".into()), (ms(900), "Terminated".into())]
        );
        assert_eq!(s.tx.poll_timeout(), None);
    }

    #[test]
    fn ok_and_its_retransmission_are_both_passed_up_without_an_ack() {
        let mut s = Script::new(Transport::Unreliable);
        s.respond(ms(300), 180);
        s.respond(ms(2_000), 200);
        assert_eq!(s.tx.state(), State::Accepted);
        // Timer M: 64·T1 after the 2xx.
        assert_eq!(s.tx.poll_timeout(), Some(s.base + ms(34_000)));
        s.respond(ms(2_500), 200);
        s.respond(ms(3_000), 180);
        s.respond(ms(3_500), 500);
        s.run_until(ms(100_000));
        assert_eq!(
            s.sent_at(),
            [ms(0)],
            "the core acknowledges a 2xx, not the transaction"
        );
        assert_eq!(
            s.event_log(),
            [
                (ms(300), "180".into()),
                (ms(2_000), "200".into()),
                (ms(2_500), "200".into()),
                (ms(34_000), "Terminated".into())
            ]
        );
        s.respond(ms(100_000), 200);
        assert_eq!(s.events.len(), 4, "a 2xx after Timer M is not passed up");
    }

    #[test]
    fn ok_while_calling_stops_timer_a_and_b() {
        let mut s = Script::new(Transport::Unreliable);
        s.respond(ms(1_000), 200);
        s.run_until(ms(100_000));
        assert_eq!(s.sent_at(), [0, 500].map(ms));
        assert_eq!(
            s.event_log(),
            [(ms(1_000), "200".into()), (ms(33_000), "Terminated".into())]
        );
    }

    #[test]
    fn timer_m_applies_over_tcp_too() {
        let mut s = Script::new(Transport::Reliable);
        s.respond(ms(0), 200);
        s.run_until(ms(100_000));
        assert_eq!(s.events.last(), Some(&(ms(32_000), Event::Terminated)));
    }

    #[test]
    fn a_late_timeout_sends_one_retransmission_and_reschedules_from_now() {
        let mut s = Script::new(Transport::Unreliable);
        // Timer A was due at 0.5 s; the runtime stalled until 10 s.
        s.tx.handle_timeout(s.base + ms(10_000));
        s.drain(s.base + ms(10_000));
        assert_eq!(s.sent_at(), [0, 10_000].map(ms));
        assert_eq!(s.tx.poll_timeout(), Some(s.base + ms(11_000)));
        s.run_until(ms(100_000));
        assert_eq!(
            s.sent_at(),
            [0, 10_000, 11_000, 13_000, 17_000, 25_000].map(ms)
        );
        assert_eq!(s.events[0], (ms(32_000), Event::TimedOut));
    }

    #[test]
    fn expired_transaction_sends_nothing_more_when_a_and_b_are_both_due() {
        let mut s = Script::new(Transport::Unreliable);
        s.run_until(ms(20_000));
        assert_eq!(s.sent.len(), 6);
        // Timer A (31.5 s) and Timer B (32 s) are both overdue.
        s.tx.handle_timeout(s.base + ms(40_000));
        s.drain(s.base + ms(40_000));
        assert_eq!(s.sent.len(), 6);
        assert_eq!(
            s.event_log(),
            [
                (ms(40_000), "TimedOut".into()),
                (ms(40_000), "Terminated".into())
            ]
        );
    }

    #[test]
    fn nothing_happens_after_terminated() {
        let mut s = Script::new(Transport::Unreliable);
        s.run_until(ms(32_000));
        let (sent, events) = (s.sent.len(), s.events.len());
        for at in [32_000, 40_000, 100_000] {
            s.tx.handle_timeout(s.base + ms(at));
            s.respond(ms(at), 180);
            s.respond(ms(at), 200);
            s.respond(ms(at), 486);
        }
        assert_eq!((s.sent.len(), s.events.len()), (sent, events));
        assert_eq!(s.tx.poll_event(), None);
        assert_eq!(s.tx.poll_transmit(), None);
    }

    #[test]
    fn handle_timeout_before_any_deadline_does_nothing() {
        let mut s = Script::new(Transport::Unreliable);
        s.tx.handle_timeout(s.base + ms(499));
        s.drain(s.base + ms(499));
        assert_eq!(s.sent.len(), 1);
        assert!(s.events.is_empty());
        assert_eq!(s.tx.poll_timeout(), Some(s.base + ms(500)));
    }

    #[test]
    fn odd_input_is_ignored_without_panicking() {
        let mut s = Script::new(Transport::Unreliable);
        let now = s.base + ms(100);
        // A request is not a response.
        s.tx.handle_response(invite(), now);
        // Statuses the parser would never let through.
        for code in [0, 99, 700, 999, u16::MAX] {
            s.tx.handle_response(Message::response(code, "?"), now);
        }
        s.drain(now);
        assert_eq!((s.sent.len(), s.events.len()), (1, 0));
        assert_eq!(s.tx.state(), State::Calling);
        // A final response without headers is still acknowledged, with the INVITE's To.
        s.tx.handle_response(Message::response(500, "Oops"), now);
        s.drain(now);
        let ack = &s.sent[1].1;
        assert_eq!(ack.method(), Some(&Method::Ack));
        assert_eq!(
            ack.headers.get(&Name::To),
            Some("<sip:+15550001111@trunk.example.net>")
        );
    }

    #[test]
    fn a_request_without_headers_does_not_panic() {
        let now = Instant::now();
        let bare = Message::response(200, "not even a request");
        let mut tx = ClientInvite::new(bare.clone(), Transport::Unreliable, Timers::default(), now);
        assert_eq!(tx.request(), &bare);
        let cancel = tx.cancel_request();
        assert_eq!(cancel.method(), Some(&Method::Cancel));
        assert_eq!(cancel.uri(), Some(""));
        tx.handle_response(Message::response(404, "Not Found"), now);
        assert_eq!(tx.poll_transmit(), Some(bare));
        assert_eq!(
            tx.poll_transmit().and_then(|m| m.method().cloned()),
            Some(Method::Ack)
        );
    }

    #[test]
    fn huge_timers_do_not_overflow() {
        let timers = Timers {
            t1: Duration::from_secs(u64::MAX / 128),
            t2: Duration::MAX,
            t4: Duration::MAX,
        };
        let now = Instant::now();
        let mut tx = ClientInvite::new(invite(), Transport::Unreliable, timers, now);
        tx.handle_timeout(now + ms(1));
        tx.handle_response(Message::response(200, "OK"), now);
        assert_eq!(tx.state(), State::Accepted);
    }

    #[test]
    fn cancel_copies_the_invite_fields_with_the_top_via() {
        let mut s = Script::new(Transport::Unreliable);
        // The INVITE came with a second Via value on the same line; only the top one goes.
        let mut request = invite();
        request
            .headers
            .set(Name::Via, format!("{TOP_VIA}, SIP/2.0/UDP 198.51.100.1"));
        s.tx = ClientInvite::new(request, Transport::Unreliable, Timers::default(), s.base);
        s.respond(ms(100), 180);
        let cancel = s.tx.cancel_request();
        assert_eq!(
            cancel.to_bytes(),
            b"CANCEL sip:+15550001111@trunk.example.net SIP/2.0\r\n\
              Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-inv-1;rport\r\n\
              Route: <sip:p1.example.net;lr>\r\n\
              Route: <sip:p2.example.net;lr>, <sip:p3.example.net;lr>\r\n\
              Max-Forwards: 70\r\n\
              From: \"Callback\" <sip:callbackd@192.0.2.10>;tag=f1\r\n\
              To: <sip:+15550001111@trunk.example.net>\r\n\
              Call-ID: call-1@192.0.2.10\r\n\
              CSeq: 314 CANCEL\r\n\
              Content-Length: 0\r\n\r\n"
                .to_vec()
        );
        assert_eq!(
            s.tx.state(),
            State::Proceeding,
            "building a CANCEL changes nothing"
        );
        // The CANCEL matches the INVITE's server transaction (same branch and sent-by).
        let key = |m: &Message| match Key::of_request(m) {
            Some(Key::Branch {
                branch, sent_by, ..
            }) => (branch, sent_by),
            other => panic!("{other:?}"),
        };
        assert_eq!(key(&cancel), key(s.tx.request()));
    }
}
