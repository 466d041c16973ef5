//! Two extensions carriers and session border controllers ask for, often with `Require`.
//!
//! **Session timers** (RFC 4028). The side named `refresher` refreshes the dialog every
//! interval with a re-INVITE or UPDATE carrying `Session-Expires`; the other side hangs up
//! with BYE when a refresh has not come by the interval's end (less a third, at most 32 s).
//! callbackd answers refreshes, asks a caller who supports timers but asks none for
//! [`SESSION_INTERVAL`] with the caller refreshing, refreshes with UPDATE when it is the
//! refresher, and hangs up when refreshes stop. Calls it places offer `timer` in `Supported`
//! and take the interval and refresher the answering side chooses.
//!
//! **Reliable provisional responses** (RFC 3262). When an INVITE requires `100rel`,
//! callbackd's 180 and 183 carry `RSeq` and are resent (T1, doubling) until the caller's
//! PRACK; the 200 waits for it. When a call callbackd places gets a reliable provisional
//! response, it sends a PRACK, once per `RSeq`.

use std::time::{Duration, Instant};

use crate::message::{Headers, Message, Name};
use crate::transaction::Backoff;

/// The shortest session interval callbackd accepts, RFC 4028's floor.
pub const MIN_SE: u32 = 90;
/// The interval callbackd asks of a caller that supports session timers but asks none.
pub const SESSION_INTERVAL: u32 = 1800;
/// The option tags callbackd supports, for `Supported`.
pub const SUPPORTED: &str = "100rel, timer";

/// Whether `tag` is in the request's or response's `Require`.
pub(super) fn requires(headers: &Headers, tag: &str) -> bool {
    headers
        .list(&Name::Require)
        .unwrap_or_default()
        .iter()
        .any(|t| t.eq_ignore_ascii_case(tag))
}

/// Whether the sender supports `tag` (in `Supported`, or in `Require`).
fn supports(headers: &Headers, tag: &str) -> bool {
    requires(headers, tag)
        || headers
            .list(&Name::Supported)
            .unwrap_or_default()
            .iter()
            .any(|t| t.eq_ignore_ascii_case(tag))
}

/// Which side of a transaction refreshes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refresher {
    Uac,
    Uas,
}

/// The interval and refresher a `Session-Expires` names, `None` without one; an error for
/// a value that is not `delta-seconds *(;param)`.
fn session_expires(headers: &Headers) -> Result<Option<(u32, Option<Refresher>)>, ()> {
    let Some(value) = headers.get(&Name::SessionExpires) else {
        return Ok(None);
    };
    let mut parts = value.split(';');
    let seconds = parts.next().unwrap_or_default().trim();
    if seconds.is_empty() || !seconds.bytes().all(|b| b.is_ascii_digit()) {
        return Err(());
    }
    // Larger than any real interval: read as the largest.
    let seconds = seconds.parse::<u32>().unwrap_or(u32::MAX);
    let mut refresher = None;
    for param in parts {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        if name.trim().eq_ignore_ascii_case("refresher") {
            refresher = match value.trim().to_ascii_lowercase().as_str() {
                "uac" => Some(Refresher::Uac),
                "uas" => Some(Refresher::Uas),
                _ => return Err(()),
            };
        }
    }
    Ok(Some((seconds, refresher)))
}

/// A call's session timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SessionTimer {
    /// The session interval, in seconds.
    interval: u32,
    /// Whether callbackd sends the refreshes; else it waits for the peer's.
    pub(super) we_refresh: bool,
    /// When callbackd refreshes next, or hangs up unless refreshed first.
    pub(super) due: Instant,
}

impl SessionTimer {
    /// A timer (re)started at `now`: callbackd refreshes at half the interval; the peer's
    /// refresh is awaited until the interval less a third of it, at most 32 s (RFC 4028
    /// section 10).
    fn start(interval: u32, we_refresh: bool, now: Instant) -> SessionTimer {
        let length = Duration::from_secs(interval.into());
        let due = if we_refresh {
            now + length / 2
        } else {
            now + length - (length / 3).min(Duration::from_secs(32))
        };
        SessionTimer {
            interval,
            we_refresh,
            due,
        }
    }

    /// The `Session-Expires` value for a request (`we_send` true) or response callbackd sends.
    pub(super) fn header(&self, we_send: bool) -> String {
        let refresher = if self.we_refresh == we_send {
            "uac"
        } else {
            "uas"
        };
        format!("{};refresher={refresher}", self.interval)
    }

    /// Whether the peer must refresh, so a response with this timer carries `Require: timer`.
    pub(super) fn peer_refreshes(&self) -> bool {
        !self.we_refresh
    }

    /// An INVITE or UPDATE (a refresh, or a request that starts a call) as callbackd answers
    /// it: the timer to run from `now` (`current`, the call's, kept when the request names
    /// none), or the error response.
    pub(super) fn answering(
        request: &Headers,
        current: Option<&SessionTimer>,
        now: Instant,
    ) -> Result<Option<SessionTimer>, (u16, &'static str)> {
        let supported = supports(request, "timer");
        let asked = session_expires(request).map_err(|()| (400, "Bad Session-Expires"))?;
        let timer = match asked {
            Some((interval, _)) if interval < MIN_SE && supported => {
                return Err((422, "Session Interval Too Small"));
            }
            // A proxy asked it for a caller who cannot be told it is too small: raised.
            Some((interval, refresher)) => Some(SessionTimer::start(
                interval.max(MIN_SE),
                !supported || refresher == Some(Refresher::Uas),
                now,
            )),
            None => match current {
                Some(timer) => Some(SessionTimer::start(timer.interval, timer.we_refresh, now)),
                None if supported => Some(SessionTimer::start(SESSION_INTERVAL, false, now)),
                None => None,
            },
        };
        Ok(timer)
    }

    /// The timer a 2xx to a request callbackd sent (the INVITE of a call it placed, or a
    /// refresh) starts at `now`: none when the response names none, or names it badly.
    pub(super) fn from_answer(response: &Headers, now: Instant) -> Option<SessionTimer> {
        let (interval, refresher) = session_expires(response).ok()??;
        Some(SessionTimer::start(
            interval.max(MIN_SE),
            refresher != Some(Refresher::Uas),
            now,
        ))
    }

    /// Started again after a refresh callbackd sent was answered.
    pub(super) fn refreshed(&self, now: Instant) -> SessionTimer {
        SessionTimer::start(self.interval, self.we_refresh, now)
    }
}

/// Adds the headers of `timer` to a 2xx callbackd sends.
pub(super) fn add_timer(response: &mut Message, timer: &SessionTimer) {
    response
        .headers
        .push(Name::SessionExpires, timer.header(false));
    if timer.peer_refreshes() {
        response.headers.push(Name::Require, "timer");
    }
}

/// A reliable provisional response callbackd sent and resends until its PRACK.
#[derive(Debug, Clone)]
pub(super) struct Reliable {
    pub(super) rseq: u32,
    pub(super) response: Message,
    /// When it goes again, over UDP.
    pub(super) resend: Option<(Instant, Backoff)>,
    /// Past this without a PRACK the call is refused (RFC 3262 section 3: 64·T1).
    pub(super) give_up: Instant,
    /// The SDP of a 200 held back until the PRACK comes.
    pub(super) answer: Option<bytes::Bytes>,
}

/// The `RSeq` of a reliable provisional response (`Require: 100rel`), if it is one.
pub(super) fn rseq(response: &Headers) -> Option<u32> {
    if !requires(response, "100rel") {
        return None;
    }
    response.get(&Name::RSeq)?.trim().parse().ok()
}

/// `RSeq CSeq-number method` of a PRACK's `RAck`.
pub(super) fn rack(request: &Headers) -> Option<(u32, u32)> {
    let mut parts = request.get(&Name::RAck)?.split_whitespace();
    let rseq = parts.next()?.parse().ok()?;
    let cseq = parts.next()?.parse().ok()?;
    parts
        .next()?
        .eq_ignore_ascii_case("INVITE")
        .then_some((rseq, cseq))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[(&str, &str)]) -> Headers {
        let mut h = Headers::default();
        for (name, value) in lines {
            h.push(Name::parse(name), *value);
        }
        h
    }

    #[test]
    fn session_expires_reads_its_interval_and_refresher_and_refuses_garbage() {
        let read = |v: &str| session_expires(&headers(&[("Session-Expires", v)]));
        assert_eq!(read("1800"), Ok(Some((1800, None))));
        assert_eq!(
            read("600;refresher=UAS"),
            Ok(Some((600, Some(Refresher::Uas))))
        );
        assert_eq!(
            session_expires(&headers(&[("x", "300 ; refresher=uac")])),
            Ok(Some((300, Some(Refresher::Uac))))
        );
        assert_eq!(read("99999999999999"), Ok(Some((u32::MAX, None))));
        for bad in ["", "abc", "-5", "10s", "1800;refresher=both"] {
            assert_eq!(read(bad), Err(()), "{bad}");
        }
    }

    #[test]
    fn callbackd_answers_with_the_interval_and_refresher_the_rfc_asks() {
        let now = Instant::now();
        let answer = |lines: &[(&str, &str)]| SessionTimer::answering(&headers(lines), None, now);
        // Too small for a caller who supports timers: 422 (the caller retries with Min-SE).
        assert_eq!(
            answer(&[("Supported", "timer"), ("Session-Expires", "30")]),
            Err((422, "Session Interval Too Small"))
        );
        // ... raised for one who does not (a proxy asked it), and callbackd refreshes.
        let raised = answer(&[("Session-Expires", "30")]).unwrap().unwrap();
        assert_eq!(raised.header(false), "90;refresher=uas");
        assert!(!raised.peer_refreshes());
        let uac = answer(&[
            ("Supported", "timer"),
            ("Session-Expires", "600;refresher=uac"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(uac.header(false), "600;refresher=uac");
        assert_eq!(uac.due, now + Duration::from_secs(600 - 32));
        let uas = answer(&[
            ("Supported", "timer"),
            ("Session-Expires", "600;refresher=uas"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(uas.due, now + Duration::from_secs(300));
        // A caller who supports timers and asks none is asked for half an hour.
        let ours = answer(&[("Supported", "timer")]).unwrap().unwrap();
        assert_eq!(ours.header(false), "1800;refresher=uac");
        assert_eq!(answer(&[]), Ok(None));
        assert_eq!(
            answer(&[("Session-Expires", "soon")]),
            Err((400, "Bad Session-Expires"))
        );
    }

    #[test]
    fn rack_and_rseq_read_what_rfc_3262_writes() {
        assert_eq!(
            rack(&headers(&[("RAck", "776656 1 INVITE")])),
            Some((776656, 1))
        );
        assert_eq!(rack(&headers(&[("RAck", "1 1 BYE")])), None);
        assert_eq!(rack(&headers(&[("RAck", "x 1 INVITE")])), None);
        assert_eq!(
            rseq(&headers(&[("Require", "100rel"), ("RSeq", "5")])),
            Some(5)
        );
        assert_eq!(rseq(&headers(&[("RSeq", "5")])), None);
    }
}
