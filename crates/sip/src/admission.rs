//! Admission per source, in the style of Kamailio's pike module: each source address that is
//! not trusted gets a token bucket for the messages it sends, a cap on its calls at once and on
//! its calls not yet confirmed (answered but not acknowledged), and a strike for each failed
//! authentication. A source that sends past its bucket or fails authentication too often is
//! banned for a while: everything it sends is dropped unread. IPv6 sources are counted by
//! their /64, the network one subscriber holds whole.
//!
//! The table is bounded: sources whose bucket is full again and who are not banned carry no
//! information and are forgotten; past [`MAX_SOURCES`] a new source is not tracked (it still
//! meets the global limits).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Sources tracked at once, at most.
pub const MAX_SOURCES: usize = 65_536;

/// Limits on each source that is not trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Messages a source may send a second, sustained; it may burst twice as many.
    pub requests_per_second: u32,
    /// Calls from one source at once.
    pub calls: u32,
    /// Calls from one source not yet confirmed: ringing, or answered and not acknowledged.
    pub unconfirmed_calls: u32,
    /// Failed authentications from one source within a minute before it is banned.
    pub auth_failures_per_minute: u32,
    /// How long a banned source stays banned.
    pub ban: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            requests_per_second: 30,
            calls: 30,
            unconfirmed_calls: 10,
            auth_failures_per_minute: 10,
            ban: Duration::from_secs(300),
        }
    }
}

/// Why a source was banned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BanReason {
    /// It sent faster than its bucket allows.
    Flood,
    /// It failed authentication too often.
    AuthFailures,
}

/// A network: an address and a prefix length.
pub type Network = (IpAddr, u8);

/// Whether `ip` is inside the network `address/prefix`.
pub fn in_network(ip: IpAddr, (network, prefix): Network) -> bool {
    match (ip, network) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let bits = u32::from(prefix.min(32));
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let bits = u32::from(prefix.min(128));
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// The key a source is counted by: the address, or an IPv6 address's /64.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & (u128::MAX << 64);
                IpAddr::V6(bits.into())
            }
        },
        v4 => v4,
    }
}

#[derive(Debug, Clone)]
struct Source {
    /// Tokens left, in thousandths of a request.
    tokens: u64,
    refilled: Instant,
    banned_until: Option<Instant>,
    /// When the recent authentication failures happened (at most the limit's worth).
    strikes: Vec<Instant>,
}

/// The per-source counts.
#[derive(Debug)]
pub struct Admission {
    settings: Settings,
    sources: HashMap<IpAddr, Source>,
}

impl Admission {
    pub fn new(settings: Settings) -> Admission {
        Admission {
            settings,
            sources: HashMap::new(),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn capacity(&self) -> u64 {
        u64::from(self.settings.requests_per_second) * 2 * 1000
    }

    /// Whether `ip` is banned at `now`.
    pub fn banned(&self, ip: IpAddr, now: Instant) -> bool {
        self.sources
            .get(&source_key(ip))
            .and_then(|s| s.banned_until)
            .is_some_and(|until| until > now)
    }

    fn source(&mut self, ip: IpAddr, now: Instant) -> Option<&mut Source> {
        let capacity = self.capacity();
        let key = source_key(ip);
        if !self.sources.contains_key(&key) && self.sources.len() >= MAX_SOURCES {
            return None;
        }
        Some(self.sources.entry(key).or_insert(Source {
            tokens: capacity,
            refilled: now,
            banned_until: None,
            strikes: Vec::new(),
        }))
    }

    /// Takes a token for a message from `ip`. `Err(Flood)` when the bucket is empty: the
    /// source is banned from now, and the caller drops the request.
    pub fn request(&mut self, ip: IpAddr, now: Instant) -> Result<(), BanReason> {
        let (capacity, rate, ban) = (
            self.capacity(),
            u64::from(self.settings.requests_per_second),
            self.settings.ban,
        );
        let Some(source) = self.source(ip, now) else {
            return Ok(());
        };
        // Requests read off different sockets may come a little out of order: time only
        // moves forward here.
        let elapsed = now.saturating_duration_since(source.refilled);
        let earned = u64::try_from(elapsed.as_millis())
            .unwrap_or(u64::MAX)
            .saturating_mul(rate);
        source.tokens = source.tokens.saturating_add(earned).min(capacity);
        source.refilled = source.refilled.max(now);
        if source.tokens >= 1000 {
            source.tokens -= 1000;
            Ok(())
        } else {
            source.banned_until = Some(now + ban);
            Err(BanReason::Flood)
        }
    }

    /// A failed authentication from `ip`; `Err(AuthFailures)` when it was one too many within a
    /// minute: the source is banned from now.
    pub fn strike(&mut self, ip: IpAddr, now: Instant) -> Result<(), BanReason> {
        let (limit, ban) = (self.settings.auth_failures_per_minute, self.settings.ban);
        let Some(source) = self.source(ip, now) else {
            return Ok(());
        };
        source
            .strikes
            .retain(|t| now.saturating_duration_since(*t) < Duration::from_secs(60));
        source.strikes.push(now);
        if source.strikes.len() > limit as usize {
            source.strikes.clear();
            source.banned_until = Some(now + ban);
            Err(BanReason::AuthFailures)
        } else {
            Ok(())
        }
    }

    /// Forgets what no longer matters: bans that ran out, strikes older than a minute, and
    /// sources left with a full bucket and nothing else.
    pub fn tidy(&mut self, now: Instant) {
        let (capacity, rate) = (
            self.capacity(),
            u64::from(self.settings.requests_per_second),
        );
        self.sources.retain(|_, s| {
            if s.banned_until.is_some_and(|until| until <= now) {
                s.banned_until = None;
            }
            s.strikes
                .retain(|t| now.saturating_duration_since(*t) < Duration::from_secs(60));
            let elapsed = now.saturating_duration_since(s.refilled);
            let earned = u64::try_from(elapsed.as_millis())
                .unwrap_or(u64::MAX)
                .saturating_mul(rate);
            s.banned_until.is_some()
                || !s.strikes.is_empty()
                || s.tokens.saturating_add(earned) < capacity
        });
    }

    /// Sources tracked now.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.sources.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            requests_per_second: 10,
            calls: 5,
            unconfirmed_calls: 2,
            auth_failures_per_minute: 3,
            ban: Duration::from_secs(300),
        }
    }

    #[test]
    fn networks() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(in_network(ip("10.1.2.3"), (ip("10.0.0.0"), 8)));
        assert!(!in_network(ip("11.1.2.3"), (ip("10.0.0.0"), 8)));
        assert!(in_network(ip("192.0.2.7"), (ip("0.0.0.0"), 0)));
        assert!(in_network(ip("::1"), (ip("::1"), 128)));
        assert!(!in_network(ip("127.0.0.1"), (ip("::1"), 128)));
    }

    #[test]
    fn a_source_may_burst_twice_its_rate_then_is_banned_until_the_ban_runs_out() {
        let now = Instant::now();
        let mut a = Admission::new(settings());
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        for i in 0..20 {
            assert_eq!(a.request(ip, now), Ok(()), "request {i} of the burst");
        }
        assert_eq!(a.request(ip, now), Err(BanReason::Flood));
        assert!(a.banned(ip, now + Duration::from_secs(299)));
        assert!(!a.banned(ip, now + Duration::from_secs(300)));
        let other: IpAddr = "198.51.100.8".parse().unwrap();
        assert!(!a.banned(other, now), "others are not touched");
        assert_eq!(a.request(other, now), Ok(()));
    }

    #[test]
    fn a_steady_source_within_its_rate_is_never_banned() {
        let start = Instant::now();
        let mut a = Admission::new(settings());
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        for i in 0..10_000u64 {
            // Ten a second for 1,000 seconds.
            let now = start + Duration::from_millis(i * 100);
            assert_eq!(a.request(ip, now), Ok(()), "request {i}");
        }
    }

    #[test]
    fn too_many_failed_authentications_in_a_minute_ban_the_source() {
        let now = Instant::now();
        let mut a = Admission::new(settings());
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let at = |secs| now + Duration::from_secs(secs);
        for t in [0, 1, 2] {
            assert_eq!(a.strike(ip, at(t)), Ok(()));
        }
        // A minute later those no longer count: three more are allowed, not a fourth.
        for t in [70, 71, 72] {
            assert_eq!(a.strike(ip, at(t)), Ok(()));
        }
        assert!(!a.banned(ip, at(72)));
        assert_eq!(a.strike(ip, at(73)), Err(BanReason::AuthFailures));
        let neighbour: IpAddr = "2001:db8::ffff".parse().unwrap();
        assert!(a.banned(neighbour, at(74)), "the whole /64 is one source");
        assert!(!a.banned("2001:db8:0:1::1".parse().unwrap(), now));
    }

    #[test]
    fn the_table_forgets_sources_that_have_nothing_to_remember() {
        let now = Instant::now();
        let mut a = Admission::new(settings());
        for i in 0..100u8 {
            let ip = IpAddr::from([10, 0, 0, i]);
            a.request(ip, now).unwrap();
        }
        let flooder: IpAddr = "10.0.1.1".parse().unwrap();
        while a.request(flooder, now).is_ok() {}
        assert_eq!(a.tracked(), 101);
        // A tenth of a second refills one request: all but the banned one are full again.
        a.tidy(now + Duration::from_millis(100));
        assert_eq!(a.tracked(), 1);
        a.tidy(now + Duration::from_secs(301));
        assert_eq!(a.tracked(), 0, "the ban ran out and its bucket refilled");
    }
}
