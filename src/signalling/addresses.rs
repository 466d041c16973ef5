//! Where callbackd binds its media, and what it tells peers: the RTP port pool and the
//! advertised addresses (see docs/networks.md).

use std::net::{IpAddr, SocketAddr};

use anyhow::Context;
use rand::RngCore;
use sip::advertise::{Advertise, Told};

use crate::config::{MediaConfig, SipConfig};

/// Even RTP ports from the configured range; a port is held by a bound socket for as long as
/// its call lasts. Ports are taken at random, so the next call's port cannot be guessed from
/// this one's (packets sprayed at it would only meet strict learning, but need not find it).
pub(super) struct PortPool {
    first: u16,
    last: u16,
}

impl PortPool {
    pub(super) fn new(media: &MediaConfig) -> PortPool {
        PortPool {
            first: media.rtp_ports.0 + media.rtp_ports.0 % 2,
            last: media.rtp_ports.1,
        }
    }

    /// Binds a free even port on `ip`: a few at random, then every one in turn from a random
    /// start, so a nearly full range still finds its last free port.
    pub(super) fn allocate(
        &mut self,
        rng: &mut impl RngCore,
        ip: IpAddr,
    ) -> Option<std::net::UdpSocket> {
        // In u32: the range may reach 65535.
        let span = (u32::from(self.last) - u32::from(self.first)) / 2 + 1;
        let port = |i: u32| (u32::from(self.first) + 2 * (i % span)) as u16;
        let start = rng.next_u32();
        (0..8)
            .map(|_| port(rng.next_u32()))
            .chain((0..span).map(|i| port(start.wrapping_add(i))))
            .find_map(|p| std::net::UdpSocket::bind(SocketAddr::new(ip, p)).ok())
    }
}

/// Where callbackd binds its media and what it tells peers, which behind NAT or on a host with
/// several interfaces are not the same (see docs/networks.md).
pub(super) struct Addresses {
    /// Via, Contact and the SDP's address, by where the peer is.
    pub(super) advertise: Advertise,
    /// The address RTP sockets bind.
    pub(super) media_bind: IpAddr,
}

impl Addresses {
    pub(super) fn new(
        sip: &SipConfig,
        media: &MediaConfig,
        udp: &[SocketAddr],
        tcp: &[SocketAddr],
    ) -> anyhow::Result<Addresses> {
        let first = *udp
            .first()
            .or(tcp.first())
            .context("SIP needs at least one address")?;
        let port = |bound: &[SocketAddr]| bound.first().map_or(first.port(), SocketAddr::port);
        let told = match &sip.advertised {
            Some(told) => told.clone(),
            None => {
                anyhow::ensure!(
                    !first.ip().is_unspecified(),
                    "SIP listens on {first}: set sip.advertised to the address peers reach"
                );
                let host = match first.ip() {
                    IpAddr::V4(ip) => ip.to_string(),
                    IpAddr::V6(ip) => format!("[{ip}]"),
                };
                Told { host, port: None }
            }
        };
        let mut advertise = Advertise::new(told, port(udp), port(tcp));
        for (network, told) in &sip.advertised_to {
            advertise = advertise.with_network(*network, told.clone());
        }
        let media_bind = media.address.unwrap_or(first.ip());
        if media_bind.is_unspecified() {
            if let Some(name) = advertise.hosts().find(|h| {
                h.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .is_err()
            }) {
                anyhow::bail!(
                    "sip.advertised names `{name}`, not an address, and RTP binds {media_bind}: \
                     set media.address, or advertise an address, for the SDP"
                );
            }
        }
        Ok(Addresses {
            advertise,
            media_bind,
        })
    }

    /// The address in the SDP of a call with `peer`.
    pub(super) fn sdp(&self, peer: IpAddr) -> IpAddr {
        self.advertise.media(peer).unwrap_or(self.media_bind)
    }
}

#[cfg(test)]
mod tests {
    use rand::{rngs::StdRng, SeedableRng};

    use super::*;

    #[test]
    fn rtp_ports_are_taken_at_random_and_the_last_free_one_is_found() {
        let mut rng = StdRng::seed_from_u64(11);
        let mut pool = PortPool {
            first: 41_000,
            last: 41_998,
        };
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let held: Vec<std::net::UdpSocket> = (0..20)
            .map(|_| pool.allocate(&mut rng, ip).unwrap())
            .collect();
        let ports: Vec<u16> = held
            .iter()
            .map(|s| s.local_addr().unwrap().port())
            .collect();
        assert!(ports
            .iter()
            .all(|p| p % 2 == 0 && (41_000..=41_998).contains(p)));
        let steps_of_two = ports.windows(2).filter(|w| w[1] == w[0] + 2).count();
        assert!(
            steps_of_two < 3,
            "the next port is not the last plus two: {ports:?}"
        );
        // A range of two ports with one taken: the other is found.
        let mut small = PortPool {
            first: ports[0],
            last: ports[0] + 2,
        };
        let other = small.allocate(&mut rng, ip);
        assert!(other.is_some_and(|s| s.local_addr().unwrap().port() != ports[0]));
    }
}
