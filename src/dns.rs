//! Trunks by host name (RFC 3263). The transport is the trunk's configured one; a name given
//! without a port is looked up in turn for:
//! - NAPTR records: the one for that transport (`SIP+D2U`, `SIP+D2T`) with the lowest order
//!   and preference names the SRV records to use;
//! - without one, the SRV records `_sip._udp.NAME` or `_sip._tcp.NAME`;
//! - the SRV records give the targets, in priority order and by weight within a priority
//!   (RFC 2782);
//! - a name without them is looked up for A/AAAA records on port 5060, as is a name given
//!   with a port (on that port).
//!
//! Each trunk's targets are looked up again when the answer's TTL runs out, so the SIP loop
//! always has a list to use and never waits on DNS.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;
use rand::Rng;
use tracing::{info, warn};

use crate::config::{DnsConfig, Transport};

/// A trunk's targets, best first, shared by the task that looks them up and the SIP loop.
#[derive(Debug, Clone, Default)]
pub struct Targets(Arc<RwLock<Vec<SocketAddr>>>);

impl Targets {
    /// A fixed list (a trunk given by address).
    pub fn fixed(targets: Vec<SocketAddr>) -> Targets {
        Targets(Arc::new(RwLock::new(targets)))
    }

    pub fn get(&self) -> Vec<SocketAddr> {
        self.0.read().map(|t| t.clone()).unwrap_or_default()
    }

    /// Whether nobody but the holder of this one uses these targets any more (their trunk
    /// was removed or changed by a reload).
    fn forsaken(&self) -> bool {
        Arc::strong_count(&self.0) == 1
    }

    fn set(&self, targets: Vec<SocketAddr>) {
        if let Ok(mut t) = self.0.write() {
            *t = targets;
        }
    }
}

/// Answers are looked up again after their TTL, within these bounds.
const SOONEST: Duration = Duration::from_secs(5);
const LATEST: Duration = Duration::from_secs(300);
/// After a failed look-up, the next comes this soon.
const RETRY: Duration = Duration::from_secs(10);

/// The resolver: the servers configured, else the system's (`/etc/resolv.conf`).
pub fn resolver(config: &DnsConfig) -> anyhow::Result<TokioResolver> {
    let provider = TokioConnectionProvider::default();
    if config.servers.is_empty() {
        return Ok(TokioResolver::builder(provider)?.build());
    }
    let mut servers = NameServerConfigGroup::new();
    for server in &config.servers {
        servers.merge(NameServerConfigGroup::from_ips_clear(
            &[server.ip()],
            server.port(),
            true,
        ));
    }
    let config = ResolverConfig::from_parts(None, vec![], servers);
    Ok(TokioResolver::builder_with_config(config, provider).build())
}

/// Looks up `host` for a trunk over `transport` (with `port`, only its addresses); the
/// targets, best first, and how long they hold.
pub async fn resolve(
    resolver: &TokioResolver,
    host: &str,
    port: Option<u16>,
    transport: Transport,
) -> Result<(Vec<SocketAddr>, Duration), String> {
    let fqdn = format!("{}.", host.trim_end_matches('.'));
    if port.is_none() {
        let (naptr_service, srv_prefix) = match transport {
            Transport::Udp => ("SIP+D2U", "_sip._udp"),
            Transport::Tcp => ("SIP+D2T", "_sip._tcp"),
        };
        let srv_name = match naptr(resolver, &fqdn, naptr_service).await {
            Some(name) => name,
            None => format!("{srv_prefix}.{fqdn}"),
        };
        if let Ok(srv) = resolver.srv_lookup(srv_name).await {
            let ttl = srv
                .as_lookup()
                .valid_until()
                .saturating_duration_since(std::time::Instant::now());
            let records: Vec<(u16, u16, String, u16)> = srv
                .iter()
                .map(|r| (r.priority(), r.weight(), r.target().to_utf8(), r.port()))
                .collect();
            let ordered = order(records, &mut rand::thread_rng());
            let mut targets = Vec::new();
            for (name, port) in ordered {
                if let Ok(ips) = resolver.lookup_ip(name.as_str()).await {
                    targets.extend(ips.iter().map(|ip| SocketAddr::new(ip, port)));
                }
            }
            if !targets.is_empty() {
                return Ok((targets, ttl));
            }
        }
    }
    let ips = resolver
        .lookup_ip(fqdn.as_str())
        .await
        .map_err(|e| format!("`{host}` resolves to nothing: {e}"))?;
    let ttl = ips
        .valid_until()
        .saturating_duration_since(std::time::Instant::now());
    let port = port.unwrap_or(5060);
    Ok((
        ips.iter().map(|ip| SocketAddr::new(ip, port)).collect(),
        ttl,
    ))
}

/// The SRV name that `fqdn`'s NAPTR records give for `service` (e.g. `SIP+D2U`): of the
/// records with that service and the flag `s`, the one with the lowest order, then
/// preference. `None` when there are none.
async fn naptr(resolver: &TokioResolver, fqdn: &str, service: &str) -> Option<String> {
    let lookup = resolver.lookup(fqdn, RecordType::NAPTR).await.ok()?;
    lookup
        .iter()
        .filter_map(|r| match r {
            RData::NAPTR(n)
                if n.flags().eq_ignore_ascii_case(b"s")
                    && n.services().eq_ignore_ascii_case(service.as_bytes()) =>
            {
                Some((n.order(), n.preference(), n.replacement().to_utf8()))
            }
            _ => None,
        })
        .min()
        .map(|(_, _, name)| name)
}

/// SRV records `(priority, weight, target, port)` in the order RFC 2782 tries them: lowest
/// priority first, and within a priority at random, each record as likely as its weight
/// (records of weight 0 only after the others, unless all are 0).
fn order(mut records: Vec<(u16, u16, String, u16)>, rng: &mut impl Rng) -> Vec<(String, u16)> {
    records.sort_by_key(|r| r.0);
    let mut ordered = Vec::new();
    while !records.is_empty() {
        let priority = records[0].0;
        let mut same: Vec<_> = records
            .iter()
            .filter(|r| r.0 == priority)
            .cloned()
            .collect();
        records.retain(|r| r.0 != priority);
        while !same.is_empty() {
            let total: u32 = same.iter().map(|r| u32::from(r.1)).sum();
            let pick = if total == 0 {
                0
            } else {
                let mut point = rng.gen_range(1..=total);
                same.iter()
                    .position(|r| {
                        let w = u32::from(r.1);
                        if point <= w {
                            return true;
                        }
                        point -= w;
                        false
                    })
                    .unwrap_or(0)
            };
            let (_, _, target, port) = same.remove(pick);
            ordered.push((target, port));
        }
    }
    ordered
}

/// Keeps `targets` of the trunk `name` fresh: looked up now, then again as answers expire,
/// until nobody else uses them. A failed look-up keeps the last targets and is logged.
pub async fn follow(
    resolver: TokioResolver,
    name: String,
    host: String,
    port: Option<u16>,
    transport: Transport,
    targets: Targets,
) {
    while !targets.forsaken() {
        let wait = match resolve(&resolver, &host, port, transport).await {
            Ok((found, ttl)) => {
                if found != targets.get() {
                    info!(trunk = name, host, targets = ?found, "trunk targets");
                }
                targets.set(found);
                ttl.clamp(SOONEST, LATEST)
            }
            Err(error) => {
                warn!(trunk = name, %error, "trunk host name not resolved; keeping the last targets");
                RETRY
            }
        };
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use rand::{rngs::StdRng, SeedableRng};

    use super::*;

    #[test]
    fn srv_records_go_by_priority_then_weight() {
        let records = vec![
            (20, 0, "backup".to_owned(), 5062),
            (10, 90, "big".to_owned(), 5060),
            (10, 10, "small".to_owned(), 5061),
        ];
        let mut rng = StdRng::seed_from_u64(7);
        let mut big_first = 0;
        for _ in 0..1000 {
            let ordered = order(records.clone(), &mut rng);
            assert_eq!(ordered.len(), 3);
            assert_eq!(ordered[2], ("backup".to_owned(), 5062), "priority 20 last");
            big_first += usize::from(ordered[0].0 == "big");
        }
        assert!(
            (850..=950).contains(&big_first),
            "weight 90 of 100: {big_first}"
        );
    }
}
