//! Text-message confirmations: after a change a caller made by phone to a callback reached by
//! text message is committed, the change is posted as JSON to an SMS gateway's webhook
//! (`[notifier] url`, plain HTTP on a trusted network; off when unset).
//!
//! Messages queue in memory and go one at a time, each tried three times (1 s, then 2 s
//! apart); one still refused is logged and dropped, and messages queued when callbackd stops
//! are lost: the change itself is committed either way, with its receipt in the history.

use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// What the gateway is sent.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    /// The callback's number, E.164.
    pub to: String,
    /// The text to send.
    pub text: String,
    pub confirmation_id: String,
    pub receipt: String,
}

/// Where messages go: `http://HOST:PORT/PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    host: String,
    port: u16,
    path: String,
}

impl Webhook {
    pub fn parse(url: &str) -> Result<Webhook, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            format!("`{url}` must start with http:// (the gateway is on a trusted network)")
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let bad = || format!("`{url}` is not an http://HOST:PORT/PATH URL");
        let port_of = |p: &str| {
            p.parse::<u16>()
                .map_err(|_| format!("`{url}`: `{p}` is not a port"))
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, rest) = v6.split_once(']').ok_or_else(bad)?;
            let port = match rest.strip_prefix(':') {
                Some(p) => port_of(p)?,
                None if rest.is_empty() => 80,
                None => return Err(bad()),
            };
            (format!("[{host}]"), port)
        } else {
            match authority.split_once(':') {
                Some((host, p)) => (host.to_owned(), port_of(p)?),
                None => (authority.to_owned(), 80),
            }
        };
        if host.is_empty() || authority.contains('@') || path.chars().any(char::is_whitespace) {
            return Err(bad());
        }
        Ok(Webhook {
            host,
            port,
            path: path.to_owned(),
        })
    }

    /// Posts `body`; the response's status code.
    async fn post(&self, body: &[u8]) -> std::io::Result<u16> {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        let mut stream = TcpStream::connect((host, self.port)).await?;
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.path,
            self.host,
            self.port,
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        let mut response = Vec::new();
        let mut chunk = [0u8; 1024];
        // The status line is all that is read.
        while !response.contains(&b'\n') && response.len() < 8192 {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            response.extend_from_slice(&chunk[..n]);
        }
        let line = String::from_utf8_lossy(&response);
        line.split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| std::io::Error::other("the gateway's answer is not HTTP"))
    }
}

/// The text telling the customer how their callback stands after a change with `receipt`.
pub fn text(cb: &callbacks::Callback, receipt: &str) -> String {
    use callbacks::State;
    let id = &cb.confirmation_id;
    let stands = match cb.state {
        State::Scheduled => format!(
            "is booked for {}",
            cb.next_attempt_at
                .with_timezone(&cb.time_zone)
                .format("%a %-d %b at %H:%M")
        ),
        State::Queued | State::Dialing | State::Connected => {
            "is in line: we will call you soon".into()
        }
        State::Paused => "is paused until you resume it".into(),
        State::Cancelled => "is cancelled".into(),
        State::Completed | State::Failed | State::Expired => "is closed".into(),
    };
    format!("Your callback {id} {stands}. Reference code {receipt}.")
}

/// Sends messages in the background.
pub struct Notifier {
    tx: mpsc::UnboundedSender<Message>,
    worker: JoinHandle<()>,
}

/// How long one try may take.
const TIMEOUT: Duration = Duration::from_secs(5);

impl Notifier {
    /// The notifier `[notifier]` asks for, if any (its URL was checked with the config).
    pub fn from_config(config: &crate::config::NotifierConfig) -> Option<Notifier> {
        let webhook = Webhook::parse(config.url.as_deref()?).ok()?;
        Some(Notifier::start(webhook))
    }

    pub fn start(webhook: Webhook) -> Notifier {
        let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
        let worker = tokio::spawn(async move {
            while let Some(message) = rx.recv().await {
                deliver(&webhook, &message).await;
            }
        });
        Notifier { tx, worker }
    }

    /// Queues a message.
    pub fn send(&self, message: Message) {
        let _ = self.tx.send(message);
    }

    /// Delivers what is queued, then stops.
    pub async fn finish(self) {
        drop(self.tx);
        let _ = self.worker.await;
    }
}

async fn deliver(webhook: &Webhook, message: &Message) {
    let body = serde_json::to_vec(message).expect("messages serialize");
    let masked = callbacks::mask(&message.to);
    for (try_, pause) in [(1, 1), (2, 2), (3, 0)] {
        let status = tokio::time::timeout(TIMEOUT, webhook.post(&body)).await;
        match status {
            Ok(Ok(code)) if (200..300).contains(&code) => {
                info!(to = %masked, receipt = %message.receipt, "text message handed to the gateway");
                return;
            }
            Ok(Ok(code)) => warn!(to = %masked, code, try_, "the SMS gateway refused the message"),
            Ok(Err(e)) => warn!(to = %masked, error = %e, try_, "cannot reach the SMS gateway"),
            Err(_) => warn!(to = %masked, try_, "the SMS gateway did not answer in time"),
        }
        tokio::time::sleep(Duration::from_secs(pause)).await;
    }
    warn!(to = %masked, receipt = %message.receipt, "text message dropped after three tries");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls() {
        assert_eq!(
            Webhook::parse("http://127.0.0.1:9000/sms").unwrap(),
            Webhook {
                host: "127.0.0.1".into(),
                port: 9000,
                path: "/sms".into()
            }
        );
        assert_eq!(Webhook::parse("http://gw.example").unwrap().port, 80);
        assert_eq!(Webhook::parse("http://[::1]:81/x").unwrap().host, "[::1]");
        assert!(Webhook::parse("https://gw.example/sms")
            .unwrap_err()
            .contains("http://"));
        assert!(Webhook::parse("http://gw:port/").is_err());
        assert!(Webhook::parse("http://user:pw@gw/").is_err());
    }
}
