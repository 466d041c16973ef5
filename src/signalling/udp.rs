//! SIP over UDP: one task per socket reads datagrams for the loop; answers go back out of
//! the socket the peer last reached.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use sip::ua::Link;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::debug;

use super::{Inbound, Loop};

pub(super) async fn receive_udp(
    socket: std::sync::Arc<UdpSocket>,
    index: usize,
    tx: mpsc::Sender<Inbound>,
) {
    let mut buffer = vec![0; 65_535];
    loop {
        match socket.recv_from(&mut buffer).await {
            Ok((n, source)) => {
                let message = Inbound::Message {
                    source,
                    link: Link::Udp,
                    bytes: buffer[..n].to_vec(),
                    socket: index,
                    read: Instant::now(),
                };
                if tx.send(message).await.is_err() {
                    return;
                }
            }
            // ICMP port unreachable from an earlier send surfaces here on some systems.
            Err(e) => debug!(error = %e, "UDP receive error"),
        }
    }
}

/// Peers remembered for the choice of reply socket; past this many the memory starts over.
const MAX_UDP_PEERS: usize = 65_536;

impl Loop {
    pub(super) fn remember_socket(&mut self, peer: SocketAddr, socket: usize) {
        if self.udp.len() > 1 {
            if self.udp_peers.len() >= MAX_UDP_PEERS {
                self.udp_peers.clear();
            }
            self.udp_peers.insert(peer, socket);
        }
    }

    /// The socket to send to `to` from: the one the peer last reached us on (NATs and strict
    /// peers want answers from where they sent), else one of its family.
    pub(super) fn udp_socket(&self, to: SocketAddr) -> Option<Arc<UdpSocket>> {
        self.udp_peers
            .get(&to)
            .and_then(|i| self.udp.get(*i))
            .or_else(|| self.udp.iter().find(|(v4, _)| *v4 == to.is_ipv4()))
            .map(|(_, socket)| socket.clone())
    }
}

pub(super) async fn send_udp(socket: &UdpSocket, to: SocketAddr, bytes: &[u8]) {
    if let Err(e) = socket.send_to(bytes, to).await {
        debug!(%to, error = %e, "UDP send failed");
    }
}
