//! SIP over TCP: accepting connections within the limits, framing messages by
//! Content-Length, and writing what the loop sends back over the same connection.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sip::ua::Link;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::warn;

use crate::listeners::{next_connection, Connections, Throttle};

use super::{Inbound, Loop};

/// A connection that sends nothing for this long is closed (PBXs send keep-alives).
const TCP_IDLE: Duration = Duration::from_secs(300);
/// Once a message has begun, the rest of it must come within this (a slow sender holds
/// nothing for long).
const TCP_MESSAGE_TIME: Duration = Duration::from_secs(10);

pub(super) async fn accept(
    listener: TcpListener,
    tx: mpsc::Sender<Inbound>,
    connections: std::sync::Arc<Connections>,
) {
    let (mut refused_log, mut error_log) = (
        Throttle::new(Duration::from_secs(10)),
        Throttle::new(Duration::from_secs(10)),
    );
    loop {
        let (stream, peer) = next_connection(&listener, "SIP over TCP", &mut error_log).await;
        let counted = match connections.admit(peer.ip()) {
            Ok(counted) => counted,
            Err(full) => {
                if refused_log.ready(Instant::now()) {
                    warn!(%peer, total = full.all, from_source = full.from_source, "too many SIP connections over TCP; closing new ones (logged every 10 s)");
                }
                continue;
            }
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            connection(stream, peer, tx).await;
            drop(counted);
        });
    }
}

/// One TCP connection: frames messages by Content-Length; a framing error gets the message
/// handed over whole (so a request still gets its 400) and closes the connection.
pub(super) async fn connection(stream: TcpStream, peer: SocketAddr, tx: mpsc::Sender<Inbound>) {
    let (mut reader, mut writer) = stream.into_split();
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(256);
    if tx
        .send(Inbound::TcpOpened {
            peer,
            writer: out_tx,
        })
        .await
        .is_err()
    {
        return;
    }
    let write = tokio::spawn(async move {
        while let Some(bytes) = out_rx.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    let mut buffer = Vec::with_capacity(8192);
    let mut chunk = vec![0; 16_384];
    // The next message's length once its head is in, and how far the search for the end of
    // the head has looked: each byte is looked at about once however slowly the bytes come.
    let mut length: Option<usize> = None;
    let mut searched: usize = 0;
    // When the message now arriving began: it must be whole within TCP_MESSAGE_TIME.
    let mut begun: Option<Instant> = None;
    'read: loop {
        let wait = begun.map_or(TCP_IDLE, |at| TCP_MESSAGE_TIME.saturating_sub(at.elapsed()));
        match tokio::time::timeout(wait, reader.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => buffer.extend_from_slice(&chunk[..n]),
        }
        loop {
            if length.is_none() {
                let from = searched.saturating_sub(3);
                let head_done = buffer[from..].windows(2).any(|w| w == b"\n\n")
                    || buffer[from..].windows(4).any(|w| w == b"\r\n\r\n");
                if !head_done && buffer.len() <= sip::parse::MAX_HEAD {
                    searched = buffer.len();
                    break;
                }
                match sip::parse::frame(&buffer) {
                    Ok(Some(total)) => length = Some(total),
                    Ok(None) => {
                        searched = buffer.len();
                        break;
                    }
                    Err(_) => {
                        // A framing error: hand it over whole (a request still gets its 400),
                        // then close, since the stream can no longer be followed.
                        let bytes = std::mem::take(&mut buffer);
                        let _ = tx
                            .send(Inbound::Message {
                                source: peer,
                                link: Link::Tcp,
                                bytes,
                                socket: 0,
                                read: Instant::now(),
                            })
                            .await;
                        break 'read;
                    }
                }
            }
            match length {
                Some(total) if buffer.len() >= total => {
                    let bytes: Vec<u8> = buffer.drain(..total).collect();
                    (length, searched, begun) = (None, 0, None);
                    if tx
                        .send(Inbound::Message {
                            source: peer,
                            link: Link::Tcp,
                            bytes,
                            socket: 0,
                            read: Instant::now(),
                        })
                        .await
                        .is_err()
                    {
                        break 'read;
                    }
                }
                _ => break,
            }
        }
        if !buffer.is_empty() && begun.is_none() {
            begun = Some(Instant::now());
        }
    }
    let _ = tx.send(Inbound::TcpClosed { peer }).await;
    // Let queued answers go out before the connection closes.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    write.abort();
}

impl Loop {
    /// Sends over the connection the peer opened; a message for a connection gone, or one
    /// too far behind, is dropped (a retransmission or the peer's reconnect recovers it).
    pub(super) fn send_tcp(&self, to: SocketAddr, bytes: Vec<u8>) {
        if let Some(writer) = self.tcp.get(&to) {
            let _ = writer.try_send(bytes);
        }
    }
}
