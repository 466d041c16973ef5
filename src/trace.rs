//! The SIP trace: every message callbackd receives or sends, for the sources or numbers an
//! operator chose (or all), written as it happens to a pcap file that sngrep, Wireshark and
//! tcpdump open. Switched on and off at run time through the API (`/api/v1/sip/trace`).
//!
//! What could let someone act as a caller is masked before it is written, each character in
//! place so lengths stay right: the keys in the bodies of SIP INFO, the SRTP keys of
//! `a=crypto` lines, and the digests of `Authorization` headers.
//!
//! Each message is one packet with an Ethernet, IP and UDP header made up around it (over TCP
//! too: a trace is read message by message).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// Which messages are traced: all, or those from or to one of `sources`, or naming one of
/// `numbers` in the Request-URI, From or To.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    #[serde(default)]
    pub all: bool,
    #[serde(default)]
    pub sources: Vec<IpAddr>,
    #[serde(default)]
    pub numbers: Vec<String>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        !self.all && self.sources.is_empty() && self.numbers.is_empty()
    }

    fn matches(&self, peer: IpAddr, bytes: &[u8]) -> bool {
        if self.all || self.sources.contains(&peer) {
            return true;
        }
        if self.numbers.is_empty() {
            return false;
        }
        let Ok(message) = sip::parse::parse_datagram(bytes) else {
            return false;
        };
        let users = [
            message.uri().map(str::to_owned),
            message
                .headers
                .get(&sip::message::Name::From)
                .map(str::to_owned),
            message
                .headers
                .get(&sip::message::Name::To)
                .map(str::to_owned),
        ];
        users.iter().flatten().any(|text| {
            let user = digits(user_part(text));
            self.numbers
                .iter()
                .any(|number| same_number(&user, &digits(number)))
        })
    }
}

/// The user part of a URI or of a name-addr header value (`"Ann" <sip:+1212…@host>;tag=x`).
fn user_part(text: &str) -> &str {
    let uri = text.split_once('<').map_or(text, |(_, rest)| rest);
    let after_scheme = uri.split_once(':').map_or(uri, |(_, rest)| rest);
    after_scheme.split_once('@').map_or("", |(user, _)| user)
}

fn digits(text: &str) -> String {
    text.chars().filter(char::is_ascii_digit).collect()
}

/// The same number, one perhaps without its country code: equal digits, or the longer ending
/// with the shorter of at least six.
fn same_number(a: &str, b: &str) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    short.len() >= 6 && long.ends_with(short)
}

/// Masks, in place, what must not reach a trace file.
pub fn redact(bytes: &mut [u8]) {
    let head_end = find(bytes, b"\r\n\r\n").map_or(bytes.len(), |i| i + 4);
    let (head, body) = bytes.split_at_mut(head_end);
    if head.starts_with(b"INFO ") {
        // `Signal=5` (application/dtmf-relay): the values; `5` (application/dtmf): the line.
        for line in body.split_mut(|b| *b == b'\n') {
            let from = line.iter().position(|b| *b == b'=').map_or(0, |i| i + 1);
            for b in &mut line[from..] {
                if !b.is_ascii_whitespace() {
                    *b = b'x';
                }
            }
        }
    } else {
        mask_after(body, b"inline:", |b| {
            matches!(b, b'|' | b'\r' | b'\n' | b' ')
        });
    }
    mask_after(head, b"response=\"", |b| b == b'"');
}

/// Masks what follows each `marker` up to the first byte `end` accepts.
fn mask_after(bytes: &mut [u8], marker: &[u8], end: impl Fn(u8) -> bool) {
    let mut at = 0;
    while let Some(found) = find(&bytes[at..], marker) {
        let mut i = at + found + marker.len();
        while i < bytes.len() && !end(bytes[i]) {
            bytes[i] = b'x';
            i += 1;
        }
        at = i;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The trace file, and what goes in it.
pub struct Trace {
    path: PathBuf,
    max_bytes: u64,
    filter: Filter,
    file: Option<(BufWriter<File>, u64)>,
}

impl Trace {
    /// A trace writing to `path` when switched on, started anew past `max_bytes` (the full
    /// file kept as `path.1`).
    pub fn new(path: PathBuf, max_bytes: u64) -> Trace {
        Trace {
            path,
            max_bytes,
            filter: Filter::default(),
            file: None,
        }
    }

    /// Whether anything is traced (else nothing need be looked at).
    pub fn is_on(&self) -> bool {
        self.file.is_some()
    }

    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Traces what `filter` chooses from now on; an empty filter stops the trace.
    pub fn set(&mut self, filter: Filter) -> std::io::Result<()> {
        if filter.is_empty() {
            self.file = None;
        } else if self.file.is_none() {
            self.file = Some(open(&self.path)?);
        }
        self.filter = filter;
        Ok(())
    }

    /// One message, from `from` to `to`; `peer` is the far end of the two.
    pub fn record(&mut self, from: SocketAddr, to: SocketAddr, peer: SocketAddr, bytes: &[u8]) {
        if self.file.is_none() || !self.filter.matches(peer.ip(), bytes) {
            return;
        }
        let mut message = bytes.to_vec();
        redact(&mut message);
        let packet = packet(SystemTime::now(), from, to, &message);
        if let Err(e) = self.write(&packet) {
            tracing::warn!(error = %e, path = %self.path.display(), "cannot write the SIP trace; it is off");
            self.filter = Filter::default();
            self.file = None;
        }
    }

    fn write(&mut self, packet: &[u8]) -> std::io::Result<()> {
        let Some((file, size)) = self.file.as_mut() else {
            return Ok(());
        };
        if *size + packet.len() as u64 > self.max_bytes {
            file.flush()?;
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            std::fs::rename(&self.path, old)?;
            self.file = Some(open(&self.path)?);
            return self.write(packet);
        }
        file.write_all(packet)?;
        file.flush()?;
        *size += packet.len() as u64;
        Ok(())
    }
}

/// Opens the trace file to add to, with the pcap header when it is new.
fn open(path: &Path) -> std::io::Result<(BufWriter<File>, u64)> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut size = file.metadata()?.len();
    let mut file = BufWriter::new(file);
    if size == 0 {
        // pcap: magic, version 2.4, no time zone offset, snapshot length, Ethernet.
        let mut header = Vec::with_capacity(24);
        header.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        header.extend_from_slice(&2u16.to_le_bytes());
        header.extend_from_slice(&4u16.to_le_bytes());
        header.extend_from_slice(&[0; 8]);
        header.extend_from_slice(&262_144u32.to_le_bytes());
        header.extend_from_slice(&1u32.to_le_bytes());
        file.write_all(&header)?;
        file.flush()?;
        size = header.len() as u64;
    }
    Ok((file, size))
}

/// A pcap record: `payload` in UDP in IP (the family of `from`) in Ethernet, stamped `at`.
fn packet(at: SystemTime, from: SocketAddr, to: SocketAddr, payload: &[u8]) -> Vec<u8> {
    // What fits in one IP packet's length field.
    let payload = &payload[..payload.len().min(65_000)];
    let udp_len = (8 + payload.len()) as u16;
    let mut frame = Vec::with_capacity(payload.len() + 62);
    frame.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 1]);
    match (from.ip(), to.ip()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            frame.extend_from_slice(&0x0800u16.to_be_bytes());
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&(20 + udp_len).to_be_bytes());
            ip[6] = 0x40; // don't fragment
            ip[8] = 64;
            ip[9] = 17;
            ip[12..16].copy_from_slice(&src.octets());
            ip[16..20].copy_from_slice(&dst.octets());
            let checksum = !ip
                .chunks(2)
                .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
                .fold(0u32, |sum, w| {
                    let s = sum + w;
                    (s & 0xffff) + (s >> 16)
                }) as u16;
            ip[10..12].copy_from_slice(&checksum.to_be_bytes());
            frame.extend_from_slice(&ip);
        }
        (src, dst) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V6(v6) => v6,
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            };
            frame.extend_from_slice(&0x86ddu16.to_be_bytes());
            frame.extend_from_slice(&[0x60, 0, 0, 0]);
            frame.extend_from_slice(&udp_len.to_be_bytes());
            frame.extend_from_slice(&[17, 64]);
            frame.extend_from_slice(&v6(src).octets());
            frame.extend_from_slice(&v6(dst).octets());
        }
    }
    frame.extend_from_slice(&from.port().to_be_bytes());
    frame.extend_from_slice(&to.port().to_be_bytes());
    frame.extend_from_slice(&udp_len.to_be_bytes());
    frame.extend_from_slice(&[0, 0]); // no checksum
    frame.extend_from_slice(payload);
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let mut record = Vec::with_capacity(frame.len() + 16);
    record.extend_from_slice(&(since.as_secs() as u32).to_le_bytes());
    record.extend_from_slice(&since.subsec_micros().to_le_bytes());
    record.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    record.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    record.extend_from_slice(&frame);
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_digests_are_masked_and_lengths_kept() {
        let info = "INFO sip:a@b SIP/2.0\r\nContent-Type: application/dtmf-relay\r\nContent-Length: 24\r\n\r\nSignal=5\r\nDuration=160\r\n";
        let mut bytes = info.as_bytes().to_vec();
        redact(&mut bytes);
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.ends_with("\r\n\r\nSignal=x\r\nDuration=xxx\r\n"),
            "{text}"
        );
        assert!(text.contains("Content-Length: 24"), "the head is untouched");

        let invite = "INVITE sip:a@b SIP/2.0\r\nAuthorization: Digest username=\"cb\", response=\"0123abcd\"\r\n\r\nv=0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:32\r\n";
        let mut bytes = invite.as_bytes().to_vec();
        redact(&mut bytes);
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(text.len(), invite.len());
        assert!(
            text.contains("username=\"cb\", response=\"xxxxxxxx\""),
            "{text}"
        );
        assert!(
            text.contains("inline:xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx|2^20|1:32"),
            "{text}"
        );
    }

    #[test]
    fn numbers_match_in_the_uri_from_or_to_with_or_without_country_code() {
        let filter = Filter {
            numbers: vec!["+1 212 555 0101".into()],
            ..Filter::default()
        };
        let message = |from: &str, to: &str| {
            format!("INVITE sip:5000@cb SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\nFrom: <sip:{from}@pbx>;tag=1\r\nTo: <sip:{to}@cb>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
        };
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(filter.matches(peer, message("+12125550101", "5000").as_bytes()));
        assert!(filter.matches(peer, message("anonymous", "2125550101").as_bytes()));
        assert!(!filter.matches(peer, message("+12125550102", "5000").as_bytes()));
        assert!(!filter.matches(peer, b"garbage"));
        let by_source = Filter {
            sources: vec![peer],
            ..Filter::default()
        };
        assert!(by_source.matches(peer, b"garbage"));
    }
}
