//! What the TCP listeners (SIP and HTTP) share: connections counted in all and per source, so
//! no one source holds them all and no one listener takes every file descriptor; accept
//! errors (out of file descriptors) waited out rather than retried in a spin; and a throttle
//! for log lines an attacker could otherwise repeat at the rate they send.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tracing::warn;

/// Says yes at most once per `every`.
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
}

impl Throttle {
    pub const fn new(every: Duration) -> Throttle {
        Throttle { every, last: None }
    }

    pub fn ready(&mut self, now: Instant) -> bool {
        let ready = self
            .last
            .map_or(true, |at| now.duration_since(at) >= self.every);
        if ready {
            self.last = Some(now);
        }
        ready
    }
}

/// The next connection. An accept error (out of file descriptors: EMFILE, ENFILE) is waited
/// out with a pause, not retried at once, and logged every 10 s at most.
pub async fn next_connection(
    listener: &TcpListener,
    what: &str,
    log: &mut Throttle,
) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) => {
                if log.ready(Instant::now()) {
                    warn!(error = %e, "{what} cannot accept connections; retrying (logged every 10 s)");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Connections open on one listener: at most `max` in all and `per_source` from one source
/// (an IPv6 source is its /64); sources in `exempt` (trusted networks) count only in all.
pub struct Connections {
    max: usize,
    per_source: usize,
    exempt: Vec<(IpAddr, u8)>,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    all: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// A connection counted; dropping it counts it out.
pub struct Counted {
    connections: Arc<Connections>,
    key: IpAddr,
}

/// A connection refused: how many were open, in all and from its source.
#[derive(Debug)]
pub struct Full {
    pub all: usize,
    pub from_source: usize,
}

impl Connections {
    pub fn new(max: usize, per_source: usize, exempt: Vec<(IpAddr, u8)>) -> Arc<Connections> {
        Arc::new(Connections {
            max,
            per_source,
            exempt,
            open: Mutex::new(Open::default()),
        })
    }

    fn open(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a new connection from `peer`, or refuses it.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Counted, Full> {
        let key = sip::admission::source_key(peer);
        let exempt = self
            .exempt
            .iter()
            .any(|n| sip::admission::in_network(peer, *n));
        let mut open = self.open();
        let from_source = open.by_source.get(&key).copied().unwrap_or(0);
        if open.all >= self.max || (!exempt && from_source >= self.per_source) {
            return Err(Full {
                all: open.all,
                from_source,
            });
        }
        open.all += 1;
        *open.by_source.entry(key).or_default() += 1;
        Ok(Counted {
            connections: self.clone(),
            key,
        })
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut open = self.connections.open();
        open.all -= 1;
        if let Some(n) = open.by_source.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.by_source.remove(&self.key);
            }
        }
    }
}

/// How many connections each TCP listener may hold, given the file descriptors there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The limit on open files, once raised as far as allowed.
    pub files: u64,
    pub sip_tcp: usize,
    pub http: usize,
}

/// Descriptors kept for what is neither a call nor a connection: the store's pool, the
/// listeners, prompt files, logs.
const RESERVED_FILES: u64 = 128;
/// SIP connections over TCP one listener holds at most.
pub const MAX_SIP_TCP: usize = 1024;

/// Raises the soft limit on open files to the hard one (where allowed), then splits it: an
/// eighth at most for HTTP connections and a quarter at most for SIP over TCP, each no more
/// than it asks for, so the rest (five eighths or more) stays for the calls' RTP ports and
/// what else callbackd opens. A flood of idle connections cannot leave a call without an RTP
/// port, nor calls the API without a connection. Warns when the rest is short of two
/// descriptors per call (`sip.max_calls`, twice over for the dialer's pairs).
pub fn budget(max_calls: usize, http_wanted: usize) -> Budget {
    let files = match files_limit() {
        None => 1024,
        Some((soft, hard)) if soft < hard => {
            let raised = libc::rlimit {
                rlim_cur: hard,
                rlim_max: hard,
            };
            // SAFETY: setrlimit only reads the struct passed.
            match unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } {
                0 => hard,
                _ => soft,
            }
        }
        Some((soft, _)) => soft,
    };
    split(files, max_calls, http_wanted)
}

/// The limit on open files, soft and hard, if the system tells it.
pub fn files_limit() -> Option<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed.
    let known = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    known.then_some((limit.rlim_cur, limit.rlim_max))
}

fn split(files: u64, max_calls: usize, http_wanted: usize) -> Budget {
    let share = |fraction: u64, cap: usize| {
        usize::try_from(files / fraction)
            .unwrap_or(usize::MAX)
            .min(cap)
    };
    let (sip_tcp, http) = (share(4, MAX_SIP_TCP), share(8, http_wanted));
    let left = files.saturating_sub((sip_tcp + http) as u64 + RESERVED_FILES);
    if left < 2 * max_calls as u64 {
        warn!(
            files,
            max_calls,
            "too few file descriptors for this many calls: raise the limit on open files (LimitNOFILE under systemd) or lower sip.max_calls"
        );
    }
    Budget {
        files,
        sip_tcp: sip_tcp.max(1),
        http: http.max(1),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_file_budget_keeps_most_for_calls_and_shares_the_rest() {
        let roomy = super::split(1_048_576, 500, 512);
        assert_eq!((roomy.sip_tcp, roomy.http), (super::MAX_SIP_TCP, 512));
        let tight = super::split(1024, 500, 512);
        assert_eq!((tight.sip_tcp, tight.http), (256, 128), "with a warning");
    }

    use super::*;

    #[test]
    fn connections_are_capped_in_all_and_per_source_and_counted_out_when_dropped() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let c = Connections::new(3, 2, vec![(ip("10.0.0.0"), 8)]);
        let a1 = c.admit(ip("192.0.2.1")).unwrap();
        let _a2 = c.admit(ip("192.0.2.1")).unwrap();
        assert!(c.admit(ip("192.0.2.1")).is_err(), "two per source");
        let _b = c.admit(ip("10.1.1.1")).unwrap();
        assert!(c.admit(ip("10.1.1.1")).is_err(), "three in all");
        drop(a1);
        assert!(c.admit(ip("192.0.2.1")).is_ok());
    }
}
