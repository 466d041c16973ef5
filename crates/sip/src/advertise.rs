//! The address peers are told to reach us at, which need not be one we bind.
//!
//! Behind NAT (a cloud VM, say) callbackd binds a private address while peers must be told the
//! public one. On a host with several interfaces, a PBX on the private side must be told the
//! private address and a carrier the public one. So what goes in Via, Contact and the SDP's
//! `c=` is chosen by where the message goes: the first rule whose network holds the peer, else
//! the default. A rule without a port takes the port callbackd listens on for the transport
//! the message travels over.

use std::net::IpAddr;

use crate::admission::{in_network, Network};
use crate::ua::Link;

/// An address told to peers: a host (an address or a name, IPv6 in brackets) and, when a NAT
/// maps another port than the one callbackd listens on, the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Told {
    pub host: String,
    pub port: Option<u16>,
}

/// What peers are told, by where they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertise {
    /// (network, told), the longest prefix first; the default, last, has no network.
    rules: Vec<(Option<Network>, Told)>,
    /// The ports callbackd listens on for UDP and TCP.
    udp_port: u16,
    tcp_port: u16,
}

impl Advertise {
    /// Tells every peer `told`, with the port of the transport unless it has one.
    pub fn new(told: Told, udp_port: u16, tcp_port: u16) -> Self {
        Advertise {
            rules: vec![(None, told)],
            udp_port,
            tcp_port,
        }
    }

    /// Tells peers inside `network` (address, prefix length) `told` instead, unless a longer
    /// prefix holds them too.
    pub fn with_network(mut self, network: Network, told: Told) -> Self {
        let at = self
            .rules
            .iter()
            .position(|(n, ..)| n.is_none_or(|(_, prefix)| prefix < network.1))
            .unwrap_or(self.rules.len());
        self.rules.insert(at, (Some(network), told));
        self
    }

    fn rule(&self, peer: IpAddr) -> &Told {
        let (_, told) = self
            .rules
            .iter()
            .find(|(network, _)| network.is_none_or(|n| in_network(peer, n)))
            .unwrap_or(&self.rules[self.rules.len() - 1]);
        told
    }

    /// `host:port` for Via and Contact, for a message to `peer` over `link`.
    pub fn sent_by(&self, peer: IpAddr, link: Link) -> String {
        let Told { host, port } = self.rule(peer);
        let port = port.unwrap_or(match link {
            Link::Udp => self.udp_port,
            Link::Tcp => self.tcp_port,
        });
        format!("{host}:{port}")
    }

    /// The host alone (the From host of calls we place, the Call-ID's suffix).
    pub fn host(&self, peer: IpAddr) -> &str {
        &self.rule(peer).host
    }

    /// The address for the SDP of a call with `peer`, when the host told it is an address.
    pub fn media(&self, peer: IpAddr) -> Option<IpAddr> {
        self.host(peer)
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()
    }

    /// Every host told, for checks at start-up.
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|(_, told)| told.host.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn told(host: &str, port: Option<u16>) -> Told {
        Told {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn the_most_specific_network_holding_the_peer_chooses_what_it_is_told() {
        let advertise = Advertise::new(told("198.51.100.1", None), 5060, 5080)
            .with_network(
                ("10.0.0.0".parse().unwrap(), 8),
                told("10.9.9.9", Some(5999)),
            )
            .with_network(("10.1.0.0".parse().unwrap(), 24), told("10.1.0.2", None));
        let pbx: IpAddr = "10.1.0.3".parse().unwrap();
        let lan: IpAddr = "10.2.0.3".parse().unwrap();
        let carrier: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(advertise.sent_by(pbx, Link::Udp), "10.1.0.2:5060");
        assert_eq!(advertise.sent_by(pbx, Link::Tcp), "10.1.0.2:5080");
        assert_eq!(advertise.sent_by(lan, Link::Tcp), "10.9.9.9:5999");
        assert_eq!(advertise.sent_by(carrier, Link::Udp), "198.51.100.1:5060");
        assert_eq!(
            advertise.media(carrier),
            Some("198.51.100.1".parse().unwrap())
        );
        assert_eq!(advertise.host(pbx), "10.1.0.2");
    }

    #[test]
    fn a_name_is_told_as_it_is_and_gives_no_media_address() {
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let named = Advertise::new(told("sip.example.com", Some(5070)), 5060, 5060);
        assert_eq!(named.sent_by(v6, Link::Udp), "sip.example.com:5070");
        assert_eq!(named.media(v6), None);
        let bracketed = Advertise::new(told("[2001:db8::5]", None), 5060, 5060);
        assert_eq!(bracketed.sent_by(v6, Link::Udp), "[2001:db8::5]:5060");
        assert_eq!(bracketed.media(v6), Some("2001:db8::5".parse().unwrap()));
    }
}
