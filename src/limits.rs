//! The limiter for guessing and booking: every look-up of a callback by confirmation ID (by
//! phone or chat) and every booking from a caller or the chat is counted in the store, per
//! source, per subject (the confirmation ID, the number) and in all, so the limits hold across
//! nodes and cannot be raced: each attempt is recorded first and checked against counts that
//! include it (see `Store::reserve`). A wrong guess stays counted for the window; a right one
//! is forgiven with the misses of its call on the way to it.

use std::net::IpAddr;

use callbacks::{Address, ConfirmationId, StoreError};
use chrono::{DateTime, Duration, Utc};
use store::{SecurityEvent, Since, Store};
use tracing::warn;

use crate::config::LimitsConfig;
use crate::ivr::Caller;

const GUESS: &str = "guess";
const BOOKING: &str = "booking";

/// Why an attempt was not let through.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// A limit is reached: which one, for the log.
    #[error("too many {0}")]
    Limited(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A look-up counted before it is made.
#[derive(Debug, Clone, Copy)]
pub struct Guess {
    reservation: i64,
    /// Past the hourly budget of failures from anyone: the caller ID alone is not enough.
    pub strict: bool,
}

/// A booking counted before it is made.
#[derive(Debug, Clone, Copy)]
pub struct Booking {
    reservation: i64,
}

/// How one kind of attempt is counted: where its counts start (per client, per subject, in
/// all), the limit on each with its name for the log, and the log line of a refusal.
struct Rule {
    kind: &'static str,
    since: Since,
    limits: [(u64, &'static str); 3],
    refused: &'static str,
}

pub struct Limiter {
    store: Store,
    limits: LimitsConfig,
}

/// Who the limiter counts for a request from `ip`: the address, or for IPv6 its /64, the
/// network one subscriber holds whole (as the SIP admission counts sources).
pub fn client_of(ip: IpAddr) -> String {
    sip::admission::source_key(ip).to_string()
}

impl Limiter {
    pub fn new(store: Store, limits: LimitsConfig) -> Limiter {
        Limiter { store, limits }
    }

    /// How long the oldest count matters: events older than this are forgotten.
    pub fn kept(&self) -> Duration {
        self.limits
            .source_window
            .max(self.limits.id_window)
            .max(Duration::days(1))
    }

    fn event(kind: &str, caller: &Caller, subject: &str, now: DateTime<Utc>) -> SecurityEvent {
        SecurityEvent {
            at: now,
            kind: kind.into(),
            client: caller.client.clone(),
            subject: subject.into(),
            caller_id: caller.caller_id.clone(),
            source: caller.source.clone(),
            call_id: caller.call_id.clone(),
        }
    }

    /// Counts a look-up of `id` by `caller` before it is made. Refused when the source or the
    /// ID has had its failures: the caller must then be told only what a wrong answer tells.
    pub async fn guess(
        &self,
        caller: &Caller,
        id: &ConfirmationId,
        now: DateTime<Utc>,
    ) -> Result<Guess, Refusal> {
        let l = &self.limits;
        let rule = Rule {
            kind: GUESS,
            since: Since {
                client: now - l.source_window,
                subject: now - l.id_window,
                all: now - Duration::hours(1),
            },
            limits: [
                (l.failures_per_source, "failed look-ups from this source"),
                (l.failures_per_id, "failed look-ups of this confirmation ID"),
                (
                    l.lockdown_failures_per_hour,
                    "failed look-ups from everyone in the last hour",
                ),
            ],
            refused: "callback look-up refused: limit reached",
        };
        let counted = self.count(rule, caller, id.as_str(), now).await?;
        Ok(Guess {
            reservation: counted.id,
            strict: counted.all > l.failed_lookups_per_hour,
        })
    }

    /// Counts an attempt under `rule` before it is made: refused (and taken back) when a count
    /// that includes it is past its limit, so a limit of 10 lets the 10th happen.
    async fn count(
        &self,
        rule: Rule,
        caller: &Caller,
        subject: &str,
        now: DateTime<Utc>,
    ) -> Result<store::Reservation, Refusal> {
        let counted = self
            .store
            .reserve(&Self::event(rule.kind, caller, subject, now), &rule.since)
            .await?;
        let over = [counted.client, counted.subject, counted.all]
            .into_iter()
            .zip(rule.limits)
            .find(|(count, (limit, _))| count > limit);
        if let Some((_, (_, limit))) = over {
            self.withdraw(counted.id).await;
            warn!(
                source = %caller.source,
                call_id = caller.call_id,
                caller = %callbacks::mask(&caller.caller_id),
                limit,
                "{}",
                rule.refused
            );
            return Err(Refusal::Limited(limit));
        }
        Ok(counted)
    }

    /// The look-up found nothing matching: it stays counted for the window, and counts in
    /// everyone's failures from now on. One log line per failure, with the source, for
    /// fail2ban.
    pub async fn wrong(&self, caller: &Caller, guess: &Guess) {
        warn!(
            source = %caller.source,
            call_id = caller.call_id,
            caller = %callbacks::mask(&caller.caller_id),
            "failed callback look-up"
        );
        if let Err(e) = self.store.settle(guess.reservation).await {
            warn!(error = %e, "cannot count a failed look-up in everyone's failures");
        }
    }

    /// The look-up was right: it and the misses of its call on `id` count for nothing.
    pub async fn right(&self, caller: &Caller, id: &ConfirmationId) {
        if let Err(e) = self
            .store
            .forgive(GUESS, &caller.call_id, id.as_str())
            .await
        {
            warn!(error = %e, "cannot forgive a right look-up's misses");
        }
    }

    /// The look-up could not be made (the store failed): it counts for nothing.
    pub async fn cancel(&self, guess: Guess) {
        self.withdraw(guess.reservation).await;
    }

    /// Counts a booking of `address` by `caller` before it is made; refused past the limits
    /// per source and per number.
    pub async fn booking(
        &self,
        caller: &Caller,
        address: &Address,
        now: DateTime<Utc>,
    ) -> Result<Booking, Refusal> {
        let l = &self.limits;
        let rule = Rule {
            kind: BOOKING,
            since: Since {
                client: now - Duration::hours(1),
                subject: now - Duration::days(1),
                all: now,
            },
            limits: [
                (l.bookings_per_source_per_hour, "bookings from this source"),
                (l.bookings_per_number_per_day, "bookings of this number"),
                (u64::MAX, "bookings"),
            ],
            refused: "booking refused: limit reached",
        };
        let counted = self.count(rule, caller, address.as_str(), now).await?;
        Ok(Booking {
            reservation: counted.id,
        })
    }

    /// The booking made nothing and told nothing (it was refused, or the store failed).
    pub async fn unbook(&self, booking: Booking) {
        self.withdraw(booking.reservation).await;
    }

    async fn withdraw(&self, reservation: i64) {
        if let Err(e) = self.store.withdraw(reservation).await {
            warn!(error = %e, "cannot withdraw a counted attempt; it counts until it ages out");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_host_is_counted_with_its_whole_64() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(client_of(ip("198.51.100.7")), "198.51.100.7");
        assert_eq!(
            client_of(ip("2001:db8:1:2:aaaa::1")),
            client_of(ip("2001:db8:1:2:ffff::9"))
        );
        assert_eq!(client_of(ip("2001:db8:1:2::1")), "2001:db8:1:2::");
        assert_ne!(
            client_of(ip("2001:db8:1:2::1")),
            client_of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(client_of(ip("::ffff:198.51.100.7")), "198.51.100.7");
    }
}
