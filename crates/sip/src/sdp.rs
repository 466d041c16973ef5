//! SDP (RFC 4566) for audio-only calls, and the offer/answer rules of RFC 3264 that callbackd
//! needs.
//!
//! [`SessionDescription::parse`] reads any SDP a PBX, trunk or phone is likely to send: LF or
//! CRLF line ends, IPv4 and IPv6, lines and attributes it does not model (kept, and written back
//! out). Text that is not SDP gives an [`SdpError`] naming the line and what was wrong; no input
//! makes it panic.
//!
//! On top of the model sit the three steps of a call's media negotiation:
//!
//! - [`answer`]: we received an offer (an INVITE with SDP); pick PCMU or PCMA and
//!   telephone-event, reject every other stream, mirror the direction.
//! - [`offer`]: we place a call (or received an INVITE without SDP); offer PCMU, PCMA and
//!   telephone-event.
//! - [`accept_answer`]: read the answer to our offer.
//!
//! Each gives a [`NegotiatedMedia`]: what the media layer needs to send and receive RTP.
//!
//! Everything here is pure: no clock, no sockets; the session ID and version come from the
//! caller.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// The RTP payload type we offer for telephone-event (RFC 4733 DTMF).
pub const TELEPHONE_EVENT_PAYLOAD_TYPE: u8 = 101;

/// The packetization time we send and ask for, in milliseconds.
pub const PTIME_MS: u32 = 20;

/// The events we announce for telephone-event: the 16 DTMF digits and flash.
pub const TELEPHONE_EVENTS: &str = "0-16";

/// What is wrong with an SDP body, or why an offer or answer cannot be used.
///
/// Line numbers count from 1 and include blank lines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// The body holds nothing but blank lines.
    #[error("the SDP body is empty")]
    Empty,
    /// The first line is not `v=`.
    #[error("SDP line {line}: the first line must be `v=0`")]
    MissingVersion {
        /// The first non-blank line.
        line: usize,
    },
    /// `v=` holds something other than 0.
    #[error("SDP line {line}: unsupported protocol version (only `v=0` exists)")]
    UnsupportedVersion {
        /// The `v=` line.
        line: usize,
    },
    /// A line is not of the form `<letter>=<value>`.
    #[error("SDP line {line}: expected `<letter>=<value>`")]
    MalformedLine {
        /// The offending line.
        line: usize,
    },
    /// A line that may appear only once per section appears again.
    #[error("SDP line {line}: a second `{kind}=` line in the same section")]
    DuplicateLine {
        /// The second occurrence.
        line: usize,
        /// The line type, such as `o` or `c`.
        kind: char,
    },
    /// The body has no `o=` line.
    #[error("the SDP body has no origin (`o=`) line")]
    MissingOrigin,
    /// The `o=` line does not have its six fields.
    #[error(
        "SDP line {line}: bad origin: expected `o=<username> <session id> <version> IN <IP4|IP6> <address>`"
    )]
    BadOrigin {
        /// The `o=` line.
        line: usize,
    },
    /// A `c=` line cannot be used.
    #[error("SDP line {line}: bad connection line: {reason}")]
    BadConnection {
        /// The `c=` line.
        line: usize,
        /// What was wrong.
        reason: &'static str,
    },
    /// A `t=` line is not two numbers.
    #[error("SDP line {line}: bad timing: expected `t=<start> <stop>` with two numbers")]
    BadTiming {
        /// The `t=` line.
        line: usize,
    },
    /// An `m=` line cannot be used.
    #[error("SDP line {line}: bad media line: {reason}")]
    BadMedia {
        /// The `m=` line.
        line: usize,
        /// What was wrong.
        reason: &'static str,
    },
    /// A known attribute (`rtpmap`, `fmtp`, `ptime`) has a value that does not fit its syntax.
    #[error("SDP line {line}: bad `a={name}` attribute: {reason}")]
    BadAttribute {
        /// The `a=` line.
        line: usize,
        /// The attribute name, such as `rtpmap`.
        name: &'static str,
        /// What was wrong.
        reason: &'static str,
    },
    /// The offer has no audio stream we could answer (none, or all disabled with port 0).
    #[error("the offer has no active audio stream")]
    NoAudioStream,
    /// The audio stream uses a transport other than plain RTP/AVP (for example SRTP).
    #[error("the audio stream uses transport {protocol:?}; only RTP/AVP is supported")]
    UnsupportedProtocol {
        /// The transport protocol of the `m=` line.
        protocol: String,
    },
    /// Neither PCMU nor PCMA (among those allowed) is offered or answered.
    #[error("no common codec: the audio stream offers neither PCMU nor PCMA")]
    NoCommonCodec,
    /// The audio stream has no `c=` line, neither its own nor a session-level one.
    #[error("the audio stream (m= line {media_index}) has no connection address")]
    MissingConnection {
        /// Index of the `m=` line among the media descriptions, from 0.
        media_index: usize,
    },
    /// The answer does not have one `m=` line per `m=` line of the offer (RFC 3264 section 6).
    #[error("the answer has {answered} media lines but the offer had {offered}")]
    MediaCountMismatch {
        /// `m=` lines in our offer.
        offered: usize,
        /// `m=` lines in the answer.
        answered: usize,
    },
    /// The answerer rejected our audio stream (port 0).
    #[error("the answer rejected the audio stream (port 0)")]
    AudioRejected,
}

/// Which way media flows on a stream, as written in an SDP (RFC 3264 section 5.1).
///
/// In a description it is the writer's view: `sendonly` means the writer will only send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    /// Send and receive (the default when no direction attribute is present).
    #[default]
    SendRecv,
    /// Only send.
    SendOnly,
    /// Only receive.
    RecvOnly,
    /// Neither send nor receive.
    Inactive,
}

impl Direction {
    /// The attribute name, such as `sendrecv`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// Reads an attribute name (`sendrecv`, `sendonly`, `recvonly`, `inactive`, any case).
    pub fn from_name(name: &str) -> Option<Direction> {
        [
            Direction::SendRecv,
            Direction::SendOnly,
            Direction::RecvOnly,
            Direction::Inactive,
        ]
        .into_iter()
        .find(|d| d.as_str().eq_ignore_ascii_case(name))
    }

    /// The same flow seen from the other end: `sendonly` becomes `recvonly` and back; the
    /// others stay. This is the direction an answer mirrors from an offer.
    pub fn reversed(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            other => other,
        }
    }

    /// Whether the side holding this direction sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether the side holding this direction receives media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// The flow both directions allow (sending only if both send, receiving only if both
    /// receive).
    pub fn intersect(self, other: Direction) -> Direction {
        Direction::from_flags(
            self.sends() && other.sends(),
            self.receives() && other.receives(),
        )
    }

    fn from_flags(sends: bool, receives: bool) -> Direction {
        match (sends, receives) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The audio codecs callbackd speaks: G.711 µ-law and A-law, 8 kHz mono.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 µ-law, static payload type 0.
    Pcmu,
    /// G.711 A-law, static payload type 8.
    Pcma,
}

impl Codec {
    /// The sample rate of both codecs (and of the RTP clock), in Hz.
    pub const CLOCK_RATE: u32 = 8000;

    /// The static RTP payload type (RFC 3551): 0 for PCMU, 8 for PCMA.
    pub fn static_payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// The encoding name used in `a=rtpmap`.
    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    /// The codec a static payload type stands for when no `a=rtpmap` says otherwise.
    pub fn from_static_payload_type(payload_type: u8) -> Option<Codec> {
        match payload_type {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            _ => None,
        }
    }

    /// The codec an `a=rtpmap` line describes, if it is one of ours (8000 Hz, mono).
    pub fn from_rtpmap(rtpmap: &RtpMap) -> Option<Codec> {
        if rtpmap.clock_rate != Self::CLOCK_RATE || rtpmap.channels.is_some_and(|c| c != 1) {
            return None;
        }
        [Codec::Pcmu, Codec::Pcma]
            .into_iter()
            .find(|c| c.encoding_name().eq_ignore_ascii_case(&rtpmap.encoding))
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.encoding_name())
    }
}

/// The `o=` line: who made the description, and which version of it this is.
///
/// The session ID and version are kept as the text received (RFC 4566 wants digits, but a
/// call should not fail over them); [`Origin::version_number`] reads the version as a number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The user name, `-` when there is none.
    pub username: String,
    /// The session ID; stays the same for the life of the session.
    pub session_id: String,
    /// The session version; increases each time the description changes (re-INVITE).
    pub session_version: String,
    /// The network type, `IN`.
    pub network_type: String,
    /// The address type, `IP4` or `IP6`.
    pub address_type: String,
    /// The originator's address (an IP address or a host name).
    pub address: String,
}

impl Origin {
    /// Our own origin: user `-`, the given session ID and version, our address.
    pub fn new(session_id: u64, session_version: u64, address: IpAddr) -> Origin {
        Origin {
            username: "-".to_owned(),
            session_id: session_id.to_string(),
            session_version: session_version.to_string(),
            network_type: "IN".to_owned(),
            address_type: address_type(address).to_owned(),
            address: address.to_string(),
        }
    }

    /// The session version as a number, when it is one.
    pub fn version_number(&self) -> Option<u64> {
        self.session_version.parse().ok()
    }
}

/// The `t=` line: when the session is active. Calls use `t=0 0` (unbounded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timing {
    /// Start time (NTP seconds), 0 for unbounded.
    pub start: u64,
    /// Stop time (NTP seconds), 0 for unbounded.
    pub stop: u64,
}

/// An `a=rtpmap:` attribute: which encoding a payload type carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    /// The RTP payload type, 0 to 127.
    pub payload_type: u8,
    /// The encoding name, such as `PCMU` or `telephone-event`.
    pub encoding: String,
    /// The RTP clock rate in Hz.
    pub clock_rate: u32,
    /// The number of audio channels, when given.
    pub channels: Option<u8>,
}

impl RtpMap {
    /// Whether this is telephone-event/8000 (RFC 4733 DTMF).
    pub fn is_telephone_event(&self) -> bool {
        self.encoding.eq_ignore_ascii_case("telephone-event")
            && self.clock_rate == Codec::CLOCK_RATE
    }
}

/// One `a=` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribute {
    /// `a=rtpmap:<pt> <encoding>/<rate>[/<channels>]` (in RTP media only).
    RtpMap(RtpMap),
    /// `a=fmtp:<pt> <parameters>` (in RTP media only).
    Fmtp {
        /// The payload type the parameters apply to.
        payload_type: u8,
        /// The format parameters, as written (such as `0-16` for telephone-event).
        parameters: String,
    },
    /// `a=ptime:<ms>`: the packetization time the writer wants to receive.
    Ptime(u32),
    /// `a=sendrecv`, `a=sendonly`, `a=recvonly` or `a=inactive`.
    Direction(Direction),
    /// Any other attribute, kept as written.
    Other {
        /// The attribute name (the text before the first `:`).
        name: String,
        /// The value after the first `:`, if there is one.
        value: Option<String>,
    },
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attribute::RtpMap(map) => {
                write!(
                    f,
                    "rtpmap:{} {}/{}",
                    map.payload_type, map.encoding, map.clock_rate
                )?;
                if let Some(channels) = map.channels {
                    write!(f, "/{channels}")?;
                }
                Ok(())
            }
            Attribute::Fmtp {
                payload_type,
                parameters,
            } if parameters.is_empty() => write!(f, "fmtp:{payload_type}"),
            Attribute::Fmtp {
                payload_type,
                parameters,
            } => write!(f, "fmtp:{payload_type} {parameters}"),
            Attribute::Ptime(ms) => write!(f, "ptime:{ms}"),
            Attribute::Direction(d) => f.write_str(d.as_str()),
            Attribute::Other { name, value: None } => f.write_str(name),
            Attribute::Other {
                name,
                value: Some(value),
            } => write!(f, "{name}:{value}"),
        }
    }
}

/// A line this module does not model (`i=`, `u=`, `e=`, `p=`, `b=`, `r=`, `z=`, `k=`, a second
/// `t=`, or an unknown type), kept so that it is written back out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherLine {
    /// The line type letter.
    pub kind: char,
    /// Everything after `=`.
    pub value: String,
}

/// One `m=` section: a media stream and its own lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    /// The media type: `audio`, `video`, `application`, `image`...
    pub media: String,
    /// The transport port; 0 means the stream is disabled or rejected.
    pub port: u16,
    /// The number of ports (`<port>/<count>`), when given.
    pub port_count: Option<u16>,
    /// The transport protocol, such as `RTP/AVP`.
    pub protocol: String,
    /// The formats; for RTP media, the payload types as decimal numbers (0 to 127).
    pub formats: Vec<String>,
    /// The media-level `c=` address, overriding the session-level one.
    pub connection: Option<IpAddr>,
    /// The `a=` lines, in order.
    pub attributes: Vec<Attribute>,
    /// Unmodelled lines (`i=`, `b=`, `k=`...), in order.
    pub other_lines: Vec<OtherLine>,
}

impl MediaDescription {
    /// Whether this is an audio stream.
    pub fn is_audio(&self) -> bool {
        self.media.eq_ignore_ascii_case("audio")
    }

    /// Whether the transport is RTP of some profile (`RTP/AVP`, `RTP/SAVP`, ...).
    pub fn is_rtp(&self) -> bool {
        is_rtp_protocol(&self.protocol)
    }

    /// The formats as RTP payload types (those that are numbers 0 to 127).
    pub fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        self.formats.iter().filter_map(|f| parse_payload_type(f))
    }

    /// The `a=rtpmap` for a payload type, if there is one.
    pub fn rtpmap(&self, payload_type: u8) -> Option<&RtpMap> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::RtpMap(map) if map.payload_type == payload_type => Some(map),
            _ => None,
        })
    }

    /// The `a=fmtp` parameters for a payload type, if there are some.
    pub fn fmtp(&self, payload_type: u8) -> Option<&str> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::Fmtp {
                payload_type: pt,
                parameters,
            } if *pt == payload_type => Some(parameters.as_str()),
            _ => None,
        })
    }

    /// The `a=ptime` value, if there is one.
    pub fn ptime(&self) -> Option<u32> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::Ptime(ms) => Some(*ms),
            _ => None,
        })
    }

    /// The media-level direction attribute, if there is one.
    pub fn direction(&self) -> Option<Direction> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::Direction(d) => Some(*d),
            _ => None,
        })
    }

    /// The codec a payload type of this stream carries, if it is PCMU or PCMA: by its
    /// `a=rtpmap` when there is one, else by the static payload type table.
    pub fn codec_of(&self, payload_type: u8) -> Option<Codec> {
        match self.rtpmap(payload_type) {
            Some(map) => Codec::from_rtpmap(map),
            None => Codec::from_static_payload_type(payload_type),
        }
    }

    /// The first listed payload type that is telephone-event/8000.
    pub fn telephone_event(&self) -> Option<u8> {
        self.payload_types()
            .find(|pt| self.rtpmap(*pt).is_some_and(RtpMap::is_telephone_event))
    }

    /// A disabled copy of this stream (port 0, same formats), as an answer rejects it.
    fn rejected(&self) -> MediaDescription {
        MediaDescription {
            media: self.media.clone(),
            port: 0,
            port_count: None,
            protocol: self.protocol.clone(),
            formats: self.formats.clone(),
            connection: None,
            attributes: Vec::new(),
            other_lines: Vec::new(),
        }
    }
}

/// A whole SDP body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// The `o=` line.
    pub origin: Origin,
    /// The `s=` line (`-` when empty).
    pub session_name: String,
    /// The session-level `c=` address, used by media without their own.
    pub connection: Option<IpAddr>,
    /// The first `t=` line (`0 0` when absent).
    pub timing: Timing,
    /// The session-level `a=` lines, in order.
    pub attributes: Vec<Attribute>,
    /// Unmodelled session-level lines, in the order RFC 4566 lists their types.
    pub other_lines: Vec<OtherLine>,
    /// The `m=` sections, in order.
    pub media: Vec<MediaDescription>,
}

impl SessionDescription {
    /// Parses an SDP body. Lines may end in CRLF or LF; blank lines and trailing spaces are
    /// ignored; unknown lines and attributes are kept.
    pub fn parse(text: &str) -> Result<SessionDescription, SdpError> {
        let mut version_line = None;
        let mut origin = None;
        let mut session_name: Option<String> = None;
        let mut connection = None;
        let mut timing = None;
        let mut attributes = Vec::new();
        let mut other_lines = Vec::new();
        let mut media: Vec<MediaDescription> = Vec::new();

        for (index, raw) in text.split('\n').enumerate() {
            let line = index + 1;
            let content = raw.trim_end();
            if content.is_empty() {
                continue;
            }
            let (kind, value) = split_line(line, content)?;
            if version_line.is_none() {
                if kind != 'v' {
                    return Err(SdpError::MissingVersion { line });
                }
                if value.trim() != "0" {
                    return Err(SdpError::UnsupportedVersion { line });
                }
                version_line = Some(line);
                continue;
            }
            if kind == 'v' {
                return Err(SdpError::DuplicateLine { line, kind });
            }
            if kind == 'm' {
                media.push(parse_media(line, value)?);
                continue;
            }
            match media.last_mut() {
                None => match kind {
                    'o' if origin.is_some() => return Err(SdpError::DuplicateLine { line, kind }),
                    'o' => origin = Some(parse_origin(line, value)?),
                    's' if session_name.is_some() => {
                        return Err(SdpError::DuplicateLine { line, kind })
                    }
                    's' => session_name = Some(value.to_owned()),
                    'c' if connection.is_some() => {
                        return Err(SdpError::DuplicateLine { line, kind })
                    }
                    'c' => connection = Some(parse_connection(line, value)?),
                    't' if timing.is_none() => timing = Some(parse_timing(line, value)?),
                    'a' => attributes.push(parse_attribute(line, value, false)?),
                    _ => other_lines.push(OtherLine {
                        kind,
                        value: value.to_owned(),
                    }),
                },
                Some(m) => match kind {
                    'c' if m.connection.is_some() => {
                        return Err(SdpError::DuplicateLine { line, kind })
                    }
                    'c' => m.connection = Some(parse_connection(line, value)?),
                    'a' => {
                        let rtp = m.is_rtp();
                        m.attributes.push(parse_attribute(line, value, rtp)?);
                    }
                    _ => m.other_lines.push(OtherLine {
                        kind,
                        value: value.to_owned(),
                    }),
                },
            }
        }

        if version_line.is_none() {
            return Err(SdpError::Empty);
        }
        let origin = origin.ok_or(SdpError::MissingOrigin)?;
        other_lines.sort_by_key(|l| line_rank(l.kind));
        for m in &mut media {
            m.other_lines.sort_by_key(|l| line_rank(l.kind));
        }
        let session_name = match session_name {
            Some(name) if !name.is_empty() => name,
            _ => "-".to_owned(),
        };
        Ok(SessionDescription {
            origin,
            session_name,
            connection,
            timing: timing.unwrap_or_default(),
            attributes,
            other_lines,
            media,
        })
    }

    /// The session-level direction attribute, if there is one.
    pub fn direction(&self) -> Option<Direction> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::Direction(d) => Some(*d),
            _ => None,
        })
    }

    /// The direction in force for a media stream: its own attribute, else the session's, else
    /// `sendrecv`.
    pub fn media_direction(&self, media: &MediaDescription) -> Direction {
        media
            .direction()
            .or_else(|| self.direction())
            .unwrap_or_default()
    }

    /// The connection address in force for a media stream: its own `c=`, else the session's.
    pub fn media_connection(&self, media: &MediaDescription) -> Option<IpAddr> {
        media.connection.or(self.connection)
    }

    /// Whether a media stream is put on hold by the writer of this description: its address
    /// is `0.0.0.0` (or `::`), or its direction is `sendonly` or `inactive` (RFC 3264 section
    /// 8.4).
    pub fn media_is_on_hold(&self, media: &MediaDescription) -> bool {
        let address_hold = self
            .media_connection(media)
            .is_some_and(|ip| ip.is_unspecified());
        let direction = self.media_direction(media);
        address_hold || matches!(direction, Direction::SendOnly | Direction::Inactive)
    }

    /// Whether the first active audio stream is on hold (see
    /// [`SessionDescription::media_is_on_hold`]). False when there is no active audio stream.
    pub fn is_hold(&self) -> bool {
        self.media
            .iter()
            .find(|m| m.is_audio() && m.port != 0)
            .is_some_and(|m| self.media_is_on_hold(m))
    }
}

impl fmt::Display for SessionDescription {
    /// Writes the description as SDP text with CRLF line ends, lines in RFC 4566 order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.origin;
        f.write_str("v=0\r\n")?;
        write!(
            f,
            "o={} {} {} {} {} {}\r\n",
            o.username, o.session_id, o.session_version, o.network_type, o.address_type, o.address
        )?;
        write!(f, "s={}\r\n", self.session_name)?;
        write_other_lines(f, &self.other_lines, |rank| rank < RANK_CONNECTION)?;
        if let Some(ip) = self.connection {
            write_connection(f, ip)?;
        }
        write_other_lines(f, &self.other_lines, |rank| {
            rank > RANK_CONNECTION && rank < RANK_TIMING
        })?;
        write!(f, "t={} {}\r\n", self.timing.start, self.timing.stop)?;
        write_other_lines(f, &self.other_lines, |rank| rank >= RANK_TIMING)?;
        for a in &self.attributes {
            write!(f, "a={a}\r\n")?;
        }
        for m in &self.media {
            write!(f, "m={} {}", m.media, m.port)?;
            if let Some(count) = m.port_count {
                write!(f, "/{count}")?;
            }
            write!(f, " {}", m.protocol)?;
            for format in &m.formats {
                write!(f, " {format}")?;
            }
            f.write_str("\r\n")?;
            write_other_lines(f, &m.other_lines, |rank| rank < RANK_CONNECTION)?;
            if let Some(ip) = m.connection {
                write_connection(f, ip)?;
            }
            write_other_lines(f, &m.other_lines, |rank| rank > RANK_CONNECTION)?;
            for a in &m.attributes {
                write!(f, "a={a}\r\n")?;
            }
        }
        Ok(())
    }
}

/// What the media layer needs once offer and answer are settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NegotiatedMedia {
    /// Where to send RTP: the peer's connection address and audio port.
    pub remote_rtp: SocketAddr,
    /// The codec to send and expect.
    pub codec: Codec,
    /// The payload type of that codec on this call.
    pub payload_type: u8,
    /// The payload type for telephone-event (DTMF), when both sides use it. After
    /// [`accept_answer`] it is the answer's number (the one to send with); the peer normally
    /// sends with the same.
    pub telephone_event: Option<u8>,
    /// What we may do on this stream, from our side: `sendrecv`, `recvonly` when the peer put
    /// us on hold, and so on.
    pub direction: Direction,
    /// Whether the peer put the call on hold (its address is `0.0.0.0`, or it only sends, or is
    /// inactive).
    pub on_hold: bool,
    /// The packetization time the peer asked for, if any.
    pub remote_ptime: Option<u32>,
    /// Index of the audio stream among the `m=` lines (a later re-INVITE keeps it there).
    pub media_index: usize,
}

impl NegotiatedMedia {
    /// Whether we should send RTP now: our direction allows it and the peer gave a real
    /// address and port.
    pub fn should_send(&self) -> bool {
        self.direction.sends()
            && !self.remote_rtp.ip().is_unspecified()
            && self.remote_rtp.port() != 0
    }

    /// Whether we should expect RTP from the peer.
    pub fn should_receive(&self) -> bool {
        self.direction.receives()
    }
}

/// What we accept when answering an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preferences {
    /// The codecs we accept. The choice follows the offer's order (the offerer's preference),
    /// not this list's.
    pub codecs: Vec<Codec>,
    /// Whether to accept telephone-event/8000 when it is offered.
    pub telephone_event: bool,
}

impl Default for Preferences {
    /// PCMU and PCMA, with telephone-event.
    fn default() -> Self {
        Preferences {
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            telephone_event: true,
        }
    }
}

/// Our answer to an offer: the SDP to send, and the negotiated media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The answer body. Its origin version is 1; for a later answer in the same session
    /// (re-INVITE) set `sdp.origin.session_version` to the next number.
    pub sdp: SessionDescription,
    /// What the media layer needs.
    pub media: NegotiatedMedia,
}

/// Builds our offer: one audio stream on `local_ip:local_port` with PCMU, PCMA and
/// telephone-event/8000 (payload type 101, events 0-16), ptime 20, sendrecv.
pub fn offer(
    local_ip: IpAddr,
    local_port: u16,
    session_id: u64,
    version: u64,
) -> SessionDescription {
    let codecs = [Codec::Pcmu, Codec::Pcma];
    let mut formats: Vec<String> = codecs
        .iter()
        .map(|c| c.static_payload_type().to_string())
        .collect();
    formats.push(TELEPHONE_EVENT_PAYLOAD_TYPE.to_string());
    let mut attributes: Vec<Attribute> = codecs
        .iter()
        .map(|c| codec_rtpmap(*c, c.static_payload_type()))
        .collect();
    attributes.extend(telephone_event_attributes(TELEPHONE_EVENT_PAYLOAD_TYPE));
    attributes.push(Attribute::Ptime(PTIME_MS));
    attributes.push(Attribute::Direction(Direction::SendRecv));
    our_description(
        local_ip,
        session_id,
        version,
        vec![MediaDescription {
            media: "audio".to_owned(),
            port: local_port,
            port_count: None,
            protocol: "RTP/AVP".to_owned(),
            formats,
            connection: None,
            attributes,
            other_lines: Vec::new(),
        }],
    )
}

/// Answers a received offer (RFC 3264 section 6).
///
/// Accepts the first active RTP/AVP audio stream offering PCMU or PCMA: picks the first of the
/// allowed codecs in the offer's order, keeps the offer's telephone-event payload type,
/// announces ptime 20, and mirrors the direction (`sendonly` gets `recvonly`, and so on). Every
/// other stream is rejected with port 0. The answer's connection address is `local_ip`.
pub fn answer(
    offer: &SessionDescription,
    local_ip: IpAddr,
    local_port: u16,
    session_id: u64,
    preferences: &Preferences,
) -> Result<Answer, SdpError> {
    let mut chosen = None;
    let mut first_failure = None;
    for (index, m) in offer.media.iter().enumerate() {
        if !m.is_audio() || m.port == 0 {
            continue;
        }
        match negotiate_offered_stream(offer, index, m, preferences) {
            Ok(negotiated) => {
                chosen = Some(negotiated);
                break;
            }
            Err(e) => {
                first_failure.get_or_insert(e);
            }
        }
    }
    let negotiated = match chosen {
        Some(n) => n,
        None => return Err(first_failure.unwrap_or(SdpError::NoAudioStream)),
    };

    let our_direction = offer
        .media
        .get(negotiated.media_index)
        .map(|m| offer.media_direction(m).reversed())
        .unwrap_or_default();
    let mut formats = vec![negotiated.payload_type.to_string()];
    let mut attributes = vec![codec_rtpmap(negotiated.codec, negotiated.payload_type)];
    if let Some(te) = negotiated.telephone_event {
        formats.push(te.to_string());
        attributes.extend(telephone_event_attributes(te));
    }
    attributes.push(Attribute::Ptime(PTIME_MS));
    attributes.push(Attribute::Direction(our_direction));
    let accepted = MediaDescription {
        media: "audio".to_owned(),
        port: local_port,
        port_count: None,
        protocol: "RTP/AVP".to_owned(),
        formats,
        connection: None,
        attributes,
        other_lines: Vec::new(),
    };
    let media = offer
        .media
        .iter()
        .enumerate()
        .map(|(index, m)| {
            if index == negotiated.media_index {
                accepted.clone()
            } else {
                m.rejected()
            }
        })
        .collect();
    Ok(Answer {
        sdp: our_description(local_ip, session_id, 1, media),
        media: NegotiatedMedia {
            direction: our_direction,
            ..negotiated
        },
    })
}

/// Reads the answer to our offer: the codec the answerer chose (the first PCMU or PCMA it
/// lists that we offered), its telephone-event payload type, where to send, and which way
/// media may flow from our side.
pub fn accept_answer(
    our_offer: &SessionDescription,
    answer: &SessionDescription,
) -> Result<NegotiatedMedia, SdpError> {
    if our_offer.media.len() != answer.media.len() {
        return Err(SdpError::MediaCountMismatch {
            offered: our_offer.media.len(),
            answered: answer.media.len(),
        });
    }
    let (index, offered) = our_offer
        .media
        .iter()
        .enumerate()
        .find(|(_, m)| m.is_audio() && m.port != 0)
        .ok_or(SdpError::NoAudioStream)?;
    let answered = answer.media.get(index).ok_or(SdpError::NoAudioStream)?;
    if !answered.is_audio() {
        return Err(SdpError::NoAudioStream);
    }
    if answered.port == 0 {
        return Err(SdpError::AudioRejected);
    }
    if !answered.protocol.eq_ignore_ascii_case(&offered.protocol) {
        return Err(SdpError::UnsupportedProtocol {
            protocol: answered.protocol.clone(),
        });
    }
    let offered_codecs: Vec<Codec> = offered
        .payload_types()
        .filter_map(|pt| offered.codec_of(pt))
        .collect();
    let (payload_type, codec) = answered
        .payload_types()
        .find_map(|pt| {
            answered
                .codec_of(pt)
                .filter(|c| offered_codecs.contains(c))
                .map(|c| (pt, c))
        })
        .ok_or(SdpError::NoCommonCodec)?;
    let telephone_event = if offered.telephone_event().is_some() {
        answered.telephone_event()
    } else {
        None
    };
    let ip = answer
        .media_connection(answered)
        .ok_or(SdpError::MissingConnection { media_index: index })?;
    let their_direction = answer.media_direction(answered);
    let direction = our_offer
        .media_direction(offered)
        .intersect(their_direction.reversed());
    Ok(NegotiatedMedia {
        remote_rtp: SocketAddr::new(ip, answered.port),
        codec,
        payload_type,
        telephone_event,
        direction,
        on_hold: answer.media_is_on_hold(answered),
        remote_ptime: answered.ptime(),
        media_index: index,
    })
}

/// Checks one offered audio stream and works out what we would use on it. The direction is
/// filled in by the caller.
fn negotiate_offered_stream(
    offer: &SessionDescription,
    index: usize,
    m: &MediaDescription,
    preferences: &Preferences,
) -> Result<NegotiatedMedia, SdpError> {
    if !m.protocol.eq_ignore_ascii_case("RTP/AVP") {
        return Err(SdpError::UnsupportedProtocol {
            protocol: m.protocol.clone(),
        });
    }
    let (payload_type, codec) = m
        .payload_types()
        .find_map(|pt| {
            m.codec_of(pt)
                .filter(|c| preferences.codecs.contains(c))
                .map(|c| (pt, c))
        })
        .ok_or(SdpError::NoCommonCodec)?;
    let ip = offer
        .media_connection(m)
        .ok_or(SdpError::MissingConnection { media_index: index })?;
    let telephone_event = if preferences.telephone_event {
        m.telephone_event()
    } else {
        None
    };
    Ok(NegotiatedMedia {
        remote_rtp: SocketAddr::new(ip, m.port),
        codec,
        payload_type,
        telephone_event,
        direction: Direction::SendRecv,
        on_hold: offer.media_is_on_hold(m),
        remote_ptime: m.ptime(),
        media_index: index,
    })
}

fn our_description(
    local_ip: IpAddr,
    session_id: u64,
    version: u64,
    media: Vec<MediaDescription>,
) -> SessionDescription {
    SessionDescription {
        origin: Origin::new(session_id, version, local_ip),
        session_name: "callbackd".to_owned(),
        connection: Some(local_ip),
        timing: Timing::default(),
        attributes: Vec::new(),
        other_lines: Vec::new(),
        media,
    }
}

fn codec_rtpmap(codec: Codec, payload_type: u8) -> Attribute {
    Attribute::RtpMap(RtpMap {
        payload_type,
        encoding: codec.encoding_name().to_owned(),
        clock_rate: Codec::CLOCK_RATE,
        channels: None,
    })
}

fn telephone_event_attributes(payload_type: u8) -> [Attribute; 2] {
    [
        Attribute::RtpMap(RtpMap {
            payload_type,
            encoding: "telephone-event".to_owned(),
            clock_rate: Codec::CLOCK_RATE,
            channels: None,
        }),
        Attribute::Fmtp {
            payload_type,
            parameters: TELEPHONE_EVENTS.to_owned(),
        },
    ]
}

fn address_type(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    }
}

fn write_connection(f: &mut fmt::Formatter<'_>, ip: IpAddr) -> fmt::Result {
    write!(f, "c=IN {} {ip}\r\n", address_type(ip))
}

fn write_other_lines(
    f: &mut fmt::Formatter<'_>,
    lines: &[OtherLine],
    rank_filter: impl Fn(u8) -> bool,
) -> fmt::Result {
    for line in lines.iter().filter(|l| rank_filter(line_rank(l.kind))) {
        write!(f, "{}={}\r\n", line.kind, line.value)?;
    }
    Ok(())
}

const RANK_CONNECTION: u8 = 4;
const RANK_TIMING: u8 = 6;

/// Where a line type goes in RFC 4566 order: `i u e p` before `c=`, `b` between `c=` and
/// `t=`, the rest (`r z k`, extra `t=`, unknown types) after `t=`, all before `a=`.
fn line_rank(kind: char) -> u8 {
    match kind {
        'i' => 0,
        'u' => 1,
        'e' => 2,
        'p' => 3,
        'c' => RANK_CONNECTION,
        'b' => 5,
        't' => RANK_TIMING,
        'r' => 7,
        'z' => 8,
        'k' => 9,
        _ => 10,
    }
}

fn is_rtp_protocol(protocol: &str) -> bool {
    protocol
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("RTP/"))
}

/// Splits `<letter>=<value>`.
fn split_line(line: usize, content: &str) -> Result<(char, &str), SdpError> {
    let mut chars = content.chars();
    match (chars.next(), chars.next()) {
        (Some(kind), Some('=')) if kind.is_ascii_alphabetic() => Ok((kind, chars.as_str())),
        _ => Err(SdpError::MalformedLine { line }),
    }
}

fn parse_origin(line: usize, value: &str) -> Result<Origin, SdpError> {
    let fields: Vec<&str> = value.split_ascii_whitespace().collect();
    match fields.as_slice() {
        [username, session_id, session_version, network_type, address_type, address] => {
            Ok(Origin {
                username: (*username).to_owned(),
                session_id: (*session_id).to_owned(),
                session_version: (*session_version).to_owned(),
                network_type: (*network_type).to_owned(),
                address_type: (*address_type).to_owned(),
                address: (*address).to_owned(),
            })
        }
        _ => Err(SdpError::BadOrigin { line }),
    }
}

fn parse_connection(line: usize, value: &str) -> Result<IpAddr, SdpError> {
    let bad = |reason| SdpError::BadConnection { line, reason };
    let fields: Vec<&str> = value.split_ascii_whitespace().collect();
    let [network_type, address_type, address] = fields.as_slice() else {
        return Err(bad("expected `c=IN <IP4|IP6> <address>` with three fields"));
    };
    if !network_type.eq_ignore_ascii_case("IN") {
        return Err(bad("the network type is not IN"));
    }
    // A multicast address carries `/<ttl>[/<count>]`; calls are unicast, so it is dropped.
    let address = address.split('/').next().unwrap_or_default();
    let address = address
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(address);
    let ip: IpAddr = address
        .parse()
        .map_err(|_| bad("the address is not an IP address"))?;
    let matches = if address_type.eq_ignore_ascii_case("IP4") {
        ip.is_ipv4()
    } else if address_type.eq_ignore_ascii_case("IP6") {
        ip.is_ipv6()
    } else {
        return Err(bad("the address type is neither IP4 nor IP6"));
    };
    if !matches {
        return Err(bad("the address does not match its address type"));
    }
    Ok(ip)
}

fn parse_timing(line: usize, value: &str) -> Result<Timing, SdpError> {
    let fields: Vec<&str> = value.split_ascii_whitespace().collect();
    match fields.as_slice() {
        [start, stop] => match (start.parse(), stop.parse()) {
            (Ok(start), Ok(stop)) => Ok(Timing { start, stop }),
            _ => Err(SdpError::BadTiming { line }),
        },
        _ => Err(SdpError::BadTiming { line }),
    }
}

fn parse_media(line: usize, value: &str) -> Result<MediaDescription, SdpError> {
    let bad = |reason| SdpError::BadMedia { line, reason };
    let mut fields = value.split_ascii_whitespace();
    let (Some(media), Some(port), Some(protocol)) = (fields.next(), fields.next(), fields.next())
    else {
        return Err(bad("expected `m=<media> <port> <protocol> <formats>...`"));
    };
    let (port, port_count) = match port.split_once('/') {
        Some((port, count)) => (
            port,
            Some(
                count
                    .parse::<u16>()
                    .map_err(|_| bad("the port count is not a number 0-65535"))?,
            ),
        ),
        None => (port, None),
    };
    let port = port
        .parse::<u16>()
        .map_err(|_| bad("the port is not a number 0-65535"))?;
    let formats: Vec<String> = fields.map(str::to_owned).collect();
    if is_rtp_protocol(protocol) && formats.iter().any(|f| parse_payload_type(f).is_none()) {
        return Err(bad("an RTP payload type is not a number 0-127"));
    }
    Ok(MediaDescription {
        media: media.to_owned(),
        port,
        port_count,
        protocol: protocol.to_owned(),
        formats,
        connection: None,
        attributes: Vec::new(),
        other_lines: Vec::new(),
    })
}

fn parse_payload_type(text: &str) -> Option<u8> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u8>().ok().filter(|pt| *pt <= 127)
}

/// Parses the value of an `a=` line. `rtpmap` and `fmtp` are modelled only inside RTP media;
/// elsewhere they are kept as [`Attribute::Other`].
fn parse_attribute(line: usize, value: &str, rtp_media: bool) -> Result<Attribute, SdpError> {
    let (name, attr_value) = match value.split_once(':') {
        Some((name, v)) => (name, Some(v)),
        None => (value, None),
    };
    let other = || Attribute::Other {
        name: name.to_owned(),
        value: attr_value.map(str::to_owned),
    };
    if rtp_media && name.eq_ignore_ascii_case("rtpmap") {
        return parse_rtpmap(line, attr_value.unwrap_or_default()).map(Attribute::RtpMap);
    }
    if rtp_media && name.eq_ignore_ascii_case("fmtp") {
        return parse_fmtp(line, attr_value.unwrap_or_default());
    }
    if name.eq_ignore_ascii_case("ptime") {
        return parse_ptime(line, attr_value.unwrap_or_default()).map(Attribute::Ptime);
    }
    if attr_value.is_none() {
        if let Some(direction) = Direction::from_name(name) {
            return Ok(Attribute::Direction(direction));
        }
    }
    Ok(other())
}

fn parse_rtpmap(line: usize, value: &str) -> Result<RtpMap, SdpError> {
    let bad = |reason| SdpError::BadAttribute {
        line,
        name: "rtpmap",
        reason,
    };
    let (payload_type, encoding) = value
        .trim_start()
        .split_once(char::is_whitespace)
        .ok_or_else(|| bad("expected `a=rtpmap:<payload type> <encoding>/<clock rate>`"))?;
    let payload_type =
        parse_payload_type(payload_type).ok_or_else(|| bad("the payload type is not 0-127"))?;
    let mut parts = encoding.trim().split('/');
    let name = parts.next().unwrap_or_default().trim();
    if name.is_empty() {
        return Err(bad("the encoding name is empty"));
    }
    let clock_rate = parts
        .next()
        .and_then(|r| r.trim().parse::<u32>().ok())
        .ok_or_else(|| bad("the clock rate is missing or not a number"))?;
    let channels = match parts.next() {
        Some(c) => Some(
            c.trim()
                .parse::<u8>()
                .map_err(|_| bad("the channel count is not a number 0-255"))?,
        ),
        None => None,
    };
    if parts.next().is_some() {
        return Err(bad("too many `/` fields after the encoding name"));
    }
    Ok(RtpMap {
        payload_type,
        encoding: name.to_owned(),
        clock_rate,
        channels,
    })
}

fn parse_fmtp(line: usize, value: &str) -> Result<Attribute, SdpError> {
    let value = value.trim_start();
    let (payload_type, parameters) = match value.split_once(char::is_whitespace) {
        Some((pt, params)) => (pt, params.trim()),
        None => (value, ""),
    };
    let payload_type = parse_payload_type(payload_type).ok_or(SdpError::BadAttribute {
        line,
        name: "fmtp",
        reason: "the payload type is not 0-127",
    })?;
    Ok(Attribute::Fmtp {
        payload_type,
        parameters: parameters.to_owned(),
    })
}

/// Reads a ptime in milliseconds. A fractional part (`20.0`) is accepted and dropped.
fn parse_ptime(line: usize, value: &str) -> Result<u32, SdpError> {
    let value = value.trim();
    let whole = match value.split_once('.') {
        Some((whole, fraction)) if fraction.bytes().all(|b| b.is_ascii_digit()) => whole,
        Some(_) => "",
        None => value,
    };
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SdpError::BadAttribute {
            line,
            name: "ptime",
            reason: "expected a number of milliseconds",
        });
    }
    whole.parse::<u32>().map_err(|_| SdpError::BadAttribute {
        line,
        name: "ptime",
        reason: "the number of milliseconds is too large",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const LOCAL_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5));

    /// An offer as a typical SIP phone (here modelled on a Linphone/Asterisk style) sends it.
    const PHONE_OFFER: &str = "v=0\r\n\
        o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n\
        s=Talk\r\n\
        c=IN IP4 192.0.2.10\r\n\
        b=AS:80\r\n\
        t=0 0\r\n\
        a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics\r\n\
        m=audio 49170 RTP/AVP 8 0 101 18\r\n\
        a=rtpmap:8 PCMA/8000\r\n\
        a=rtpmap:0 PCMU/8000\r\n\
        a=rtpmap:101 telephone-event/8000\r\n\
        a=fmtp:101 0-15\r\n\
        a=rtpmap:18 G729/8000\r\n\
        a=fmtp:18 annexb=no\r\n\
        a=ptime:20\r\n\
        a=sendrecv\r\n";

    fn parse(text: &str) -> SessionDescription {
        match SessionDescription::parse(text) {
            Ok(sd) => sd,
            Err(e) => panic!("parse failed: {e}\n{text}"),
        }
    }

    fn assert_round_trip(sd: &SessionDescription) {
        let text = sd.to_string();
        assert!(text.ends_with("\r\n"), "{text:?}");
        assert!(
            !text.replace("\r\n", "").contains('\n'),
            "bare LF in {text:?}"
        );
        assert_eq!(
            &parse(&text),
            sd,
            "round trip changed the description:\n{text}"
        );
    }

    fn offer_with_media(media_block: &str) -> SessionDescription {
        parse(&format!(
            "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n{media_block}"
        ))
    }

    #[test]
    fn parses_a_phone_offer() {
        let sd = parse(PHONE_OFFER);
        assert_eq!(sd.origin.username, "alice");
        assert_eq!(sd.origin.session_id, "2890844526");
        assert_eq!(sd.origin.version_number(), Some(2890844526));
        assert_eq!(sd.origin.address, "192.0.2.10");
        assert_eq!(sd.session_name, "Talk");
        assert_eq!(
            sd.connection,
            Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)))
        );
        assert_eq!(sd.timing, Timing { start: 0, stop: 0 });
        assert_eq!(
            sd.other_lines,
            vec![OtherLine {
                kind: 'b',
                value: "AS:80".to_owned()
            }]
        );
        assert_eq!(sd.media.len(), 1);
        let m = &sd.media[0];
        assert!(m.is_audio());
        assert_eq!(m.port, 49170);
        assert_eq!(m.protocol, "RTP/AVP");
        assert_eq!(m.payload_types().collect::<Vec<_>>(), vec![8, 0, 101, 18]);
        assert_eq!(m.codec_of(8), Some(Codec::Pcma));
        assert_eq!(m.codec_of(0), Some(Codec::Pcmu));
        assert_eq!(m.codec_of(18), None);
        assert_eq!(m.telephone_event(), Some(101));
        assert_eq!(m.fmtp(101), Some("0-15"));
        assert_eq!(m.fmtp(18), Some("annexb=no"));
        assert_eq!(m.ptime(), Some(20));
        assert_eq!(m.direction(), Some(Direction::SendRecv));
        assert!(!sd.is_hold());
    }

    /// The offer of SIPp's built-in `uac` scenario (what testers send first), with its
    /// `[local_ip]` and `[media_port]` keywords filled in for IPv4 and IPv6.
    #[test]
    fn sipp_uac_offer_is_answered() {
        for (ip_type, ip) in [("4", "127.0.0.1"), ("6", "::1")] {
            let text = format!(
                "v=0\r\no=user1 53655765 2353687637 IN IP{ip_type} {ip}\r\ns=-\r\n\
                 c=IN IP{ip_type} {ip}\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n\
                 a=rtpmap:0 PCMU/8000\r\n"
            );
            let offer = parse(&text);
            let a = match answer(&offer, LOCAL_V4, 20000, 1, &Preferences::default()) {
                Ok(a) => a,
                Err(e) => panic!("{e}"),
            };
            let remote: IpAddr = ip.parse().unwrap_or(LOCAL_V4);
            assert_eq!(a.media.remote_rtp, SocketAddr::new(remote, 6000));
            assert_eq!((a.media.codec, a.media.payload_type), (Codec::Pcmu, 0));
            assert_eq!(a.media.telephone_event, None);
            assert_eq!(a.media.remote_ptime, None);
            assert_round_trip(&offer);
        }
    }

    /// A PBX offer (modelled on what Asterisk sends), then its hold re-INVITE.
    #[test]
    fn pbx_offer_and_hold_reinvite() {
        let initial = "v=0\r\no=- 1234567890 1234567890 IN IP4 203.0.113.5\r\ns=Asterisk\r\n\
             c=IN IP4 203.0.113.5\r\nt=0 0\r\nm=audio 17922 RTP/AVP 3 8 0 101\r\n\
             a=rtpmap:3 GSM/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\n\
             a=maxptime:150\r\na=sendrecv\r\n";
        let offer = parse(initial);
        assert!(!offer.is_hold());
        let first = answer(&offer, LOCAL_V4, 20000, 7, &Preferences::default());
        assert_eq!(
            first
                .as_ref()
                .map(|a| (a.media.codec, a.media.payload_type, a.media.telephone_event)),
            Ok((Codec::Pcma, 8, Some(101)))
        );
        let hold = parse(
            &initial
                .replace("1234567890 IN", "1234567891 IN")
                .replace("a=sendrecv", "a=sendonly"),
        );
        assert_eq!(hold.origin.version_number(), Some(1234567891));
        assert!(hold.is_hold());
        let mut second = match answer(&hold, LOCAL_V4, 20000, 7, &Preferences::default()) {
            Ok(a) => a,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(second.media.direction, Direction::RecvOnly);
        assert!(second.media.on_hold);
        assert!(!second.media.should_send());
        assert!(second.media.should_receive());
        // The same session, a new version: the caller bumps it.
        second.sdp.origin.session_version = "2".to_owned();
        let text = second.sdp.to_string();
        assert!(
            text.starts_with("v=0\r\no=- 7 2 IN IP4 10.0.0.5\r\n"),
            "{text}"
        );
        assert!(text.contains("a=recvonly\r\n"), "{text}");
    }

    #[test]
    fn lf_and_crlf_give_the_same_description() {
        let lf = PHONE_OFFER.replace("\r\n", "\n");
        assert_eq!(parse(&lf), parse(PHONE_OFFER));
        // Mixed, with trailing spaces and a blank line at the end.
        let mixed = PHONE_OFFER
            .replacen("\r\n", "\n", 3)
            .replace("t=0 0", "t=0 0  ")
            + "\r\n\r\n";
        assert_eq!(parse(&mixed), parse(PHONE_OFFER));
    }

    #[test]
    fn unknown_lines_and_attributes_are_kept_and_written_back() {
        let sd = parse(
            "v=0\no=- 1 2 IN IP4 host.example.com\ns=x\ni=info\nu=http://x\ne=a@b\np=+1\n\
             c=IN IP4 192.0.2.1\nb=CT:64\nt=0 0\nr=604800 3600 0\nz=0 -1h\nk=prompt\n\
             x=experimental\na=group:BUNDLE 0\na=tool:foo\n\
             m=audio 4000 RTP/AVP 0\ni=audio\nb=AS:64\nk=clear:x\n\
             a=rtcp:4001 IN IP4 192.0.2.1\na=mid:0\na=ssrc:1 cname:x\n\
             m=video 0 RTP/AVP 96\na=rtpmap:96 H264/90000\na=fmtp:96 profile-level-id=42e01f\n",
        );
        assert_eq!(sd.origin.address, "host.example.com");
        let kinds: String = sd.other_lines.iter().map(|l| l.kind).collect();
        assert_eq!(kinds, "iuepbrzkx");
        assert!(sd.attributes.contains(&Attribute::Other {
            name: "group".to_owned(),
            value: Some("BUNDLE 0".to_owned())
        }));
        assert!(sd.media[0].attributes.contains(&Attribute::Other {
            name: "rtcp".to_owned(),
            value: Some("4001 IN IP4 192.0.2.1".to_owned())
        }));
        assert_eq!(sd.media[1].rtpmap(96).map(|m| m.clock_rate), Some(90000));
        assert_round_trip(&sd);
        let text = sd.to_string();
        // RFC 4566 order: i u e p before c, b after c, then t, r, z, k.
        let order: Vec<char> = text
            .split("\r\n")
            .take_while(|l| !l.starts_with("a="))
            .filter_map(|l| l.chars().next())
            .collect();
        assert_eq!(order.iter().collect::<String>(), "vosiuepcbtrzkx");
    }

    #[test]
    fn connection_lines_ipv4_ipv6_and_media_level() {
        let sd = parse(
            "v=0\r\no=- 1 1 IN IP6 2001:db8::1\r\ns=-\r\nc=IN IP6 2001:db8::1\r\nt=0 0\r\n\
             m=audio 5000 RTP/AVP 0\r\nc=IN IP4 192.0.2.7\r\n\
             m=audio 5002 RTP/AVP 8\r\n",
        );
        let v6: IpAddr = "2001:db8::1"
            .parse()
            .unwrap_or(IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert_eq!(sd.connection, Some(v6));
        assert_eq!(
            sd.media_connection(&sd.media[0]),
            Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)))
        );
        assert_eq!(sd.media_connection(&sd.media[1]), Some(v6));
        let text = sd.to_string();
        assert!(text.contains("c=IN IP6 2001:db8::1\r\n"), "{text}");
        assert!(!text.contains('['));
        assert_round_trip(&sd);
    }

    #[test]
    fn bracketed_ipv6_and_multicast_ttl_are_tolerated() {
        let sd = parse(
            "v=0\no=- 1 1 IN IP6 ::1\ns=-\nc=IN IP6 [2001:db8::2]\nt=0 0\n\
             m=audio 5000 RTP/AVP 0\nc=IN IP4 224.2.1.1/127/3\n",
        );
        assert_eq!(sd.connection, "2001:db8::2".parse().ok());
        assert_eq!(sd.media[0].connection, "224.2.1.1".parse().ok());
        assert!(sd.to_string().contains("c=IN IP6 2001:db8::2\r\n"));
    }

    #[test]
    fn connection_errors_say_what_is_wrong() {
        let cases = [
            ("c=IN IP4", "three fields"),
            ("c=ATM NSAP 47.0091", "network type"),
            ("c=IN IP4 pbx.example.com", "not an IP address"),
            ("c=IN IP4 2001:db8::1", "does not match"),
            ("c=IN IP6 192.0.2.1", "does not match"),
            ("c=IN IPX 192.0.2.1", "neither IP4 nor IP6"),
        ];
        for (line, expected) in cases {
            let text = format!("v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\n{line}\nt=0 0\n");
            match SessionDescription::parse(&text) {
                Err(e @ SdpError::BadConnection { line: 4, .. }) => {
                    assert!(e.to_string().contains(expected), "{line}: {e}")
                }
                other => panic!("{line}: expected BadConnection, got {other:?}"),
            }
        }
    }

    #[test]
    fn structural_errors() {
        let check = |text: &str, expected: SdpError| {
            assert_eq!(SessionDescription::parse(text), Err(expected), "{text:?}");
        };
        check("", SdpError::Empty);
        check("\r\n\n  \n", SdpError::Empty);
        check(
            "o=- 1 1 IN IP4 1.2.3.4\n",
            SdpError::MissingVersion { line: 1 },
        );
        check("\nv=1\n", SdpError::UnsupportedVersion { line: 2 });
        check("v=0\n", SdpError::MissingOrigin);
        check("v=0\nhello\n", SdpError::MalformedLine { line: 2 });
        check("v=0\n=x\n", SdpError::MalformedLine { line: 2 });
        check("v=0\n1=x\n", SdpError::MalformedLine { line: 2 });
        check("v=0\né=x\n", SdpError::MalformedLine { line: 2 });
        check("v=0\nv=0\n", SdpError::DuplicateLine { line: 2, kind: 'v' });
        check(
            "v=0\no=- 1 1 IN IP4 1.2.3.4\no=- 1 1 IN IP4 1.2.3.4\n",
            SdpError::DuplicateLine { line: 3, kind: 'o' },
        );
        check("v=0\no=- 1 1 IN IP4\n", SdpError::BadOrigin { line: 2 });
        check(
            "v=0\no=- 1 1 IN IP4 1.2.3.4\nt=now later\n",
            SdpError::BadTiming { line: 3 },
        );
        check(
            "v=0\no=- 1 1 IN IP4 1.2.3.4\nc=IN IP4 1.2.3.4\nm=audio 1 RTP/AVP 0\nc=IN IP4 1.2.3.4\nc=IN IP4 1.2.3.4\n",
            SdpError::DuplicateLine { line: 6, kind: 'c' },
        );
    }

    #[test]
    fn media_line_errors() {
        let cases = [
            ("m=audio", "expected"),
            ("m=audio 5000", "expected"),
            ("m=audio 70000 RTP/AVP 0", "port is not"),
            ("m=audio x RTP/AVP 0", "port is not"),
            ("m=audio 5000/x RTP/AVP 0", "port count"),
            ("m=audio 5000 RTP/AVP 0 PCMU", "payload type"),
            ("m=audio 5000 RTP/AVP 128", "payload type"),
            ("m=audio 5000 RTP/AVP -1", "payload type"),
        ];
        for (line, expected) in cases {
            let text = format!("v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nt=0 0\n{line}\n");
            match SessionDescription::parse(&text) {
                Err(e @ SdpError::BadMedia { line: 5, .. }) => {
                    assert!(e.to_string().contains(expected), "{line}: {e}")
                }
                other => panic!("{line}: expected BadMedia, got {other:?}"),
            }
        }
        // Non-RTP media may have any formats.
        let sd = offer_with_media("m=image 0 udptl t38\r\nm=application 9 TCP/BFCP *\r\n");
        assert_eq!(sd.media[0].formats, vec!["t38"]);
        assert_eq!(sd.media[1].formats, vec!["*"]);
    }

    #[test]
    fn attribute_errors_and_tolerance() {
        let bad = [
            ("a=rtpmap:0", "rtpmap"),
            ("a=rtpmap:x PCMU/8000", "rtpmap"),
            ("a=rtpmap:0 PCMU", "rtpmap"),
            ("a=rtpmap:0 PCMU/fast", "rtpmap"),
            ("a=rtpmap:0 /8000", "rtpmap"),
            ("a=rtpmap:0 PCMU/8000/1/2", "rtpmap"),
            ("a=rtpmap:0 PCMU/8000/300", "rtpmap"),
            ("a=fmtp:abc 0-16", "fmtp"),
            ("a=ptime:", "ptime"),
            ("a=ptime:twenty", "ptime"),
            ("a=ptime:99999999999", "ptime"),
            ("a=ptime:20.x", "ptime"),
        ];
        for (line, name) in bad {
            let text =
                format!("v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nt=0 0\nm=audio 1 RTP/AVP 0\n{line}\n");
            match SessionDescription::parse(&text) {
                Err(SdpError::BadAttribute {
                    line: 6, name: n, ..
                }) => assert_eq!(n, name, "{line}"),
                other => panic!("{line}: expected BadAttribute, got {other:?}"),
            }
        }
        let sd = offer_with_media(
            "m=audio 1 RTP/AVP 0 101\r\na=RTPMAP:0 pcmu/8000/1\r\na=fmtp:101\r\n\
             a=ptime:20.0\r\na=SendOnly\r\na=sendrecv:odd\r\na=\r\na=:x\r\n\
             m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=fmtp:webrtc-datachannel max=1\r\n",
        );
        let m = &sd.media[0];
        assert_eq!(m.codec_of(0), Some(Codec::Pcmu));
        assert_eq!(m.fmtp(101), Some(""));
        assert_eq!(m.ptime(), Some(20));
        assert_eq!(m.direction(), Some(Direction::SendOnly));
        assert!(m.attributes.contains(&Attribute::Other {
            name: "sendrecv".to_owned(),
            value: Some("odd".to_owned())
        }));
        assert!(matches!(
            sd.media[1].attributes.first(),
            Some(Attribute::Other { name, .. }) if name == "fmtp"
        ));
        assert_round_trip(&sd);
    }

    #[test]
    fn error_messages_name_the_line_and_problem() {
        let e = SessionDescription::parse("v=0\no=- 1 1 IN IP4 1.2.3.4\nm=audio 99999 RTP/AVP 0\n");
        assert_eq!(
            e.map_err(|e| e.to_string()),
            Err("SDP line 3: bad media line: the port is not a number 0-65535".to_owned())
        );
    }

    #[test]
    fn our_offer_has_the_expected_text_and_round_trips() {
        let sd = offer(LOCAL_V4, 20000, 42, 7);
        assert_eq!(
            sd.to_string(),
            "v=0\r\n\
             o=- 42 7 IN IP4 10.0.0.5\r\n\
             s=callbackd\r\n\
             c=IN IP4 10.0.0.5\r\n\
             t=0 0\r\n\
             m=audio 20000 RTP/AVP 0 8 101\r\n\
             a=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:8 PCMA/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\n\
             a=fmtp:101 0-16\r\n\
             a=ptime:20\r\n\
             a=sendrecv\r\n"
        );
        assert_round_trip(&sd);
    }

    #[test]
    fn ipv6_offer_uses_ip6_without_brackets() {
        let ip: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10));
        let sd = offer(ip, 30000, 1, 1);
        let text = sd.to_string();
        assert!(text.contains("o=- 1 1 IN IP6 2001:db8::10\r\n"), "{text}");
        assert!(text.contains("c=IN IP6 2001:db8::10\r\n"), "{text}");
        assert!(!text.contains('['));
        assert_round_trip(&sd);
    }

    #[test]
    fn answer_picks_first_offered_of_ours_and_keeps_telephone_event() {
        let offer = parse(PHONE_OFFER);
        let answer = match answer(&offer, LOCAL_V4, 20000, 99, &Preferences::default()) {
            Ok(a) => a,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            answer.media,
            NegotiatedMedia {
                remote_rtp: "192.0.2.10:49170"
                    .parse()
                    .unwrap_or_else(|_| unreachable!()),
                codec: Codec::Pcma,
                payload_type: 8,
                telephone_event: Some(101),
                direction: Direction::SendRecv,
                on_hold: false,
                remote_ptime: Some(20),
                media_index: 0,
            }
        );
        assert!(answer.media.should_send());
        assert!(answer.media.should_receive());
        assert_eq!(
            answer.sdp.to_string(),
            "v=0\r\n\
             o=- 99 1 IN IP4 10.0.0.5\r\n\
             s=callbackd\r\n\
             c=IN IP4 10.0.0.5\r\n\
             t=0 0\r\n\
             m=audio 20000 RTP/AVP 8 101\r\n\
             a=rtpmap:8 PCMA/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\n\
             a=fmtp:101 0-16\r\n\
             a=ptime:20\r\n\
             a=sendrecv\r\n"
        );
        assert_round_trip(&answer.sdp);
    }

    #[test]
    fn answer_follows_offer_order_within_allowed_codecs() {
        let offer = offer_with_media("m=audio 4000 RTP/AVP 0 8\r\n");
        let a = answer(&offer, LOCAL_V4, 1, 1, &Preferences::default());
        assert_eq!(a.map(|a| a.media.codec), Ok(Codec::Pcmu));
        let only_pcma = Preferences {
            codecs: vec![Codec::Pcma],
            telephone_event: true,
        };
        let a = answer(&offer, LOCAL_V4, 1, 1, &only_pcma);
        assert_eq!(
            a.map(|a| (a.media.codec, a.media.payload_type)),
            Ok((Codec::Pcma, 8))
        );
    }

    #[test]
    fn answer_without_telephone_event_when_not_offered_or_not_wanted() {
        let offer = offer_with_media("m=audio 4000 RTP/AVP 0\r\n");
        let a = answer(&offer, LOCAL_V4, 1, 1, &Preferences::default());
        assert_eq!(a.as_ref().map(|a| a.media.telephone_event), Ok(None));
        let text = a.map(|a| a.sdp.to_string()).unwrap_or_default();
        assert!(text.contains("m=audio 1 RTP/AVP 0\r\n"), "{text}");
        assert!(!text.contains("telephone-event"));

        let offer = parse(PHONE_OFFER);
        let no_dtmf = Preferences {
            telephone_event: false,
            ..Preferences::default()
        };
        let a = answer(&offer, LOCAL_V4, 1, 1, &no_dtmf);
        assert_eq!(a.map(|a| a.media.telephone_event), Ok(None));
    }

    #[test]
    fn answer_keeps_dynamic_payload_types_from_the_offer() {
        let offer = offer_with_media(
            "m=audio 4000 RTP/AVP 96 97\r\na=rtpmap:96 pcmu/8000\r\na=rtpmap:97 Telephone-Event/8000\r\n",
        );
        let a = answer(&offer, LOCAL_V4, 1, 1, &Preferences::default());
        assert_eq!(
            a.map(|a| (a.media.codec, a.media.payload_type, a.media.telephone_event)),
            Ok((Codec::Pcmu, 96, Some(97)))
        );
        // telephone-event at another clock rate is not ours.
        let offer = offer_with_media(
            "m=audio 4000 RTP/AVP 0 100\r\na=rtpmap:100 telephone-event/16000\r\n",
        );
        let a = answer(&offer, LOCAL_V4, 1, 1, &Preferences::default());
        assert_eq!(a.map(|a| a.media.telephone_event), Ok(None));
        // A static number remapped to something else is not PCMU.
        let offer = offer_with_media("m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 opus/48000/2\r\n");
        let a = answer(&offer, LOCAL_V4, 1, 1, &Preferences::default());
        assert_eq!(a.map(|a| a.media), Err(SdpError::NoCommonCodec));
    }

    #[test]
    fn answer_mirrors_direction_and_detects_hold() {
        let cases = [
            (Direction::SendRecv, Direction::SendRecv, false),
            (Direction::SendOnly, Direction::RecvOnly, true),
            (Direction::RecvOnly, Direction::SendOnly, false),
            (Direction::Inactive, Direction::Inactive, true),
        ];
        for (offered, answered, hold) in cases {
            let offer = offer_with_media(&format!("m=audio 4000 RTP/AVP 0\r\na={offered}\r\n"));
            assert_eq!(offer.is_hold(), hold, "{offered}");
            let a = match answer(&offer, LOCAL_V4, 1, 1, &Preferences::default()) {
                Ok(a) => a,
                Err(e) => panic!("{offered}: {e}"),
            };
            assert_eq!(a.media.direction, answered, "{offered}");
            assert_eq!(a.media.on_hold, hold, "{offered}");
            assert_eq!(a.sdp.media[0].direction(), Some(answered));
            assert_eq!(a.media.should_send(), answered.sends());
        }
        // A session-level direction applies to media without their own.
        let offer = parse(
            "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\na=sendonly\nm=audio 4000 RTP/AVP 0\n",
        );
        assert!(offer.is_hold());
        let a = answer(&offer, LOCAL_V4, 1, 1, &Preferences::default());
        assert_eq!(a.map(|a| a.media.direction), Ok(Direction::RecvOnly));
    }

    #[test]
    fn old_style_hold_with_zero_address() {
        let offer = parse(
            "v=0\no=- 1 2 IN IP4 192.0.2.1\ns=-\nc=IN IP4 0.0.0.0\nt=0 0\nm=audio 4000 RTP/AVP 0\n",
        );
        assert!(offer.is_hold());
        let a = match answer(&offer, LOCAL_V4, 1, 1, &Preferences::default()) {
            Ok(a) => a,
            Err(e) => panic!("{e}"),
        };
        assert!(a.media.on_hold);
        assert!(!a.media.should_send(), "never send RTP to 0.0.0.0");
        assert!(a.media.should_receive());
        // Our answer still carries our own address.
        assert_eq!(a.sdp.connection, Some(LOCAL_V4));
    }

    #[test]
    fn answer_rejects_other_streams_with_port_zero() {
        let offer = offer_with_media(
            "m=video 5000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
             m=audio 4000 RTP/SAVP 0\r\n\
             m=audio 4002 RTP/AVP 0 8\r\n\
             m=audio 4004 RTP/AVP 8\r\n\
             m=application 9 TCP/BFCP *\r\n",
        );
        let a = match answer(&offer, LOCAL_V4, 30000, 1, &Preferences::default()) {
            Ok(a) => a,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(a.media.media_index, 2);
        assert_eq!(a.media.remote_rtp.port(), 4002);
        let ports: Vec<u16> = a.sdp.media.iter().map(|m| m.port).collect();
        assert_eq!(ports, vec![0, 0, 30000, 0, 0]);
        let text = a.sdp.to_string();
        assert!(text.contains("m=video 0 RTP/AVP 96\r\n"), "{text}");
        assert!(text.contains("m=audio 0 RTP/SAVP 0\r\n"), "{text}");
        assert!(text.contains("m=application 0 TCP/BFCP *\r\n"), "{text}");
        assert_round_trip(&a.sdp);
    }

    #[test]
    fn answer_failures() {
        let pref = Preferences::default();
        let check = |media: &str, expected: SdpError| {
            let offer = offer_with_media(media);
            assert_eq!(
                answer(&offer, LOCAL_V4, 1, 1, &pref).map(|a| a.media),
                Err(expected),
                "{media}"
            );
        };
        check("", SdpError::NoAudioStream);
        check("m=video 5000 RTP/AVP 96\r\n", SdpError::NoAudioStream);
        check("m=audio 0 RTP/AVP 0\r\n", SdpError::NoAudioStream);
        check(
            "m=audio 4000 RTP/SAVP 0\r\n",
            SdpError::UnsupportedProtocol {
                protocol: "RTP/SAVP".to_owned(),
            },
        );
        check(
            "m=audio 4000 RTP/AVP 18 9\r\na=rtpmap:18 G729/8000\r\n",
            SdpError::NoCommonCodec,
        );
        check("m=audio 4000 RTP/AVP\r\n", SdpError::NoCommonCodec);
        let no_connection =
            parse("v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nt=0 0\nm=audio 4000 RTP/AVP 0\n");
        assert_eq!(
            answer(&no_connection, LOCAL_V4, 1, 1, &pref).map(|a| a.media),
            Err(SdpError::MissingConnection { media_index: 0 })
        );
        let none_allowed = Preferences {
            codecs: Vec::new(),
            telephone_event: true,
        };
        assert_eq!(
            answer(&parse(PHONE_OFFER), LOCAL_V4, 1, 1, &none_allowed).map(|a| a.media),
            Err(SdpError::NoCommonCodec)
        );
    }

    #[test]
    fn offer_answer_between_two_callbackd_instances() {
        let ours = offer(LOCAL_V4, 20000, 5, 1);
        let peer_ip = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2));
        let their = match answer(
            &parse(&ours.to_string()),
            peer_ip,
            40000,
            6,
            &Preferences::default(),
        ) {
            Ok(a) => a,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(their.media.remote_rtp, SocketAddr::new(LOCAL_V4, 20000));
        assert_eq!(their.media.codec, Codec::Pcmu);
        let got = accept_answer(&ours, &parse(&their.sdp.to_string()));
        assert_eq!(
            got,
            Ok(NegotiatedMedia {
                remote_rtp: SocketAddr::new(peer_ip, 40000),
                codec: Codec::Pcmu,
                payload_type: 0,
                telephone_event: Some(101),
                direction: Direction::SendRecv,
                on_hold: false,
                remote_ptime: Some(20),
                media_index: 0,
            })
        );
    }

    #[test]
    fn accept_answer_reads_a_trunk_answer() {
        let ours = offer(LOCAL_V4, 20000, 5, 1);
        let answer = parse(
            "v=0\r\no=FreeSWITCH 1 2 IN IP4 198.51.100.4\r\ns=FreeSWITCH\r\nc=IN IP4 198.51.100.4\r\nt=0 0\r\n\
             m=audio 31000 RTP/AVP 8 96\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:96 telephone-event/8000\r\n\
             a=fmtp:96 0-16\r\na=ptime:30\r\na=recvonly\r\n",
        );
        let got = accept_answer(&ours, &answer);
        assert_eq!(
            got,
            Ok(NegotiatedMedia {
                remote_rtp: "198.51.100.4:31000"
                    .parse()
                    .unwrap_or_else(|_| unreachable!()),
                codec: Codec::Pcma,
                payload_type: 8,
                telephone_event: Some(96),
                direction: Direction::SendOnly,
                on_hold: false,
                remote_ptime: Some(30),
                media_index: 0,
            })
        );
    }

    #[test]
    fn accept_answer_failures() {
        let ours = offer(LOCAL_V4, 20000, 5, 1);
        let with_media = |media: &str| {
            parse(&format!(
                "v=0\no=- 1 1 IN IP4 192.0.2.9\ns=-\nc=IN IP4 192.0.2.9\nt=0 0\n{media}"
            ))
        };
        assert_eq!(
            accept_answer(&ours, &with_media("")),
            Err(SdpError::MediaCountMismatch {
                offered: 1,
                answered: 0
            })
        );
        assert_eq!(
            accept_answer(&ours, &with_media("m=audio 0 RTP/AVP 0\n")),
            Err(SdpError::AudioRejected)
        );
        assert_eq!(
            accept_answer(&ours, &with_media("m=video 4000 RTP/AVP 0\n")),
            Err(SdpError::NoAudioStream)
        );
        assert_eq!(
            accept_answer(&ours, &with_media("m=audio 4000 RTP/AVP 18\n")),
            Err(SdpError::NoCommonCodec)
        );
        assert_eq!(
            accept_answer(&ours, &with_media("m=audio 4000 RTP/SAVP 0\n")),
            Err(SdpError::UnsupportedProtocol {
                protocol: "RTP/SAVP".to_owned()
            })
        );
        let no_c = parse("v=0\no=- 1 1 IN IP4 192.0.2.9\ns=-\nt=0 0\nm=audio 4000 RTP/AVP 0\n");
        assert_eq!(
            accept_answer(&ours, &no_c),
            Err(SdpError::MissingConnection { media_index: 0 })
        );
        // An answer holding us (inactive) leaves neither direction.
        let held = with_media("m=audio 4000 RTP/AVP 0\na=inactive\n");
        let got = accept_answer(&ours, &held);
        assert_eq!(
            got.map(|m| (m.direction, m.on_hold, m.telephone_event)),
            Ok((Direction::Inactive, true, None))
        );
    }

    #[test]
    fn direction_helpers() {
        for d in [
            Direction::SendRecv,
            Direction::SendOnly,
            Direction::RecvOnly,
            Direction::Inactive,
        ] {
            assert_eq!(d.reversed().reversed(), d);
            assert_eq!(Direction::from_name(d.as_str()), Some(d));
            assert_eq!(d.intersect(Direction::SendRecv), d);
            assert_eq!(d.intersect(Direction::Inactive), Direction::Inactive);
        }
        assert_eq!(
            Direction::SendOnly.intersect(Direction::RecvOnly),
            Direction::Inactive
        );
        assert_eq!(Direction::from_name("SENDRECV"), Some(Direction::SendRecv));
        assert_eq!(Direction::from_name("bogus"), None);
    }

    #[test]
    fn round_trips_of_varied_descriptions() {
        let samples = [
            PHONE_OFFER.to_owned(),
            offer(LOCAL_V4, 1, 2, 3).to_string(),
            "v=0\no=- 0 0 IN IP4 127.0.0.1\ns=\nt=0 0\n".to_owned(),
            "v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nt=1 2\nt=3 4\nm=audio 5000/2 RTP/AVP 0\na=rtpmap:0 PCMU/8000/1\n"
                .to_owned(),
            "v=0\no=- 1 1 IN IP6 ::1\ns=-\nc=IN IP6 ::\nt=0 0\nm=audio 9 RTP/AVP 0\nc=IN IP6 fe80::1\na=inactive\n"
                .to_owned(),
        ];
        for text in samples {
            assert_round_trip(&parse(&text));
        }
        // An empty s= becomes `-`, so that what we write is valid SDP.
        assert_eq!(
            parse("v=0\no=- 0 0 IN IP4 127.0.0.1\ns=\nt=0 0\n").session_name,
            "-"
        );
    }

    /// A small deterministic generator (xorshift64*) for the malformed-input test; no
    /// dependency needed.
    struct Xorshift(u64);

    impl Xorshift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % (n.max(1) as u64)).unwrap_or(0)
        }
    }

    /// Parses, and when that succeeds, writes back, parses again (must be equal), and tries
    /// to answer and accept. Nothing may panic.
    /// Returns whether the text parsed.
    fn exercise(text: &str) -> bool {
        let Ok(sd) = SessionDescription::parse(text) else {
            return false;
        };
        let written = sd.to_string();
        assert_eq!(
            SessionDescription::parse(&written).as_ref(),
            Ok(&sd),
            "round trip failed for input {text:?}\nwritten as {written:?}"
        );
        let _ = sd.is_hold();
        let _ = answer(&sd, LOCAL_V4, 1, 1, &Preferences::default());
        let _ = accept_answer(&offer(LOCAL_V4, 1, 1, 1), &sd);
        let _ = accept_answer(&sd, &sd);
        true
    }

    #[test]
    fn malformed_and_truncated_inputs_never_panic() {
        let seeds = [
            PHONE_OFFER,
            "v=0\r\no=- 1 1 IN IP6 2001:db8::1\r\ns=-\r\nc=IN IP6 2001:db8::1\r\nt=0 0\r\n\
             m=audio 5000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n\
             m=video 0 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n",
        ];
        let garbage = [
            "",
            "\0",
            "v",
            "v=",
            "v=0",
            "v=0\r",
            "v=0\n\n\n",
            "=",
            "==",
            "v==0",
            "\u{feff}v=0",
            "v=0\no=",
            "v=0\no=\u{1f600} 1 1 IN IP4 1.1.1.1",
            "v=0\nc=IN",
            "v=0\nm=",
            "v=0\nm= ",
            "v=0\na=rtpmap:",
            "v=0\no=- 1 1 IN IP4 1.1.1.1\nm=audio 1 RTP/AVP 0\na=rtpmap: ",
            "v=0\no=- 1 1 IN IP4 1.1.1.1\nm=audio 1 RTP/AVP 0\na=rtpmap:0 é/8000",
            "v=0\no=- 1 1 IN IP4 1.1.1.1\nm=audio 1 RTP/AVP 0\na=ptime:ééé",
            "v=0\no=- 1 1 IN IP4 1.1.1.1\nm=audio 65535 RTP/AVP 0\nc=IN IP4 255.255.255.255",
            "v=0\no=- 1 1 IN IP4 1.1.1.1\nc=IN IP6 [\nt=0 0",
            "v=0\no=- 1 1 IN IP4 1.1.1.1\nc=IN IP4 1.1.1.1/\nt=0 0",
            "v=0\no=- 1 1 IN IP4 1.1.1.1\nm=audio +5 RTP/AVP +0",
            "\r\r\r\n\r\n",
            "v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\nx=\r\ny=\u{0}\r\n",
        ];
        for g in garbage {
            exercise(g);
        }
        let (mut parsed, mut refused) = (0, 0);
        for seed in seeds {
            // Every prefix (on character boundaries).
            for (i, _) in seed.char_indices() {
                exercise(seed.get(..i).unwrap_or_default());
            }
            // Random byte-level mutations, kept only when they are still UTF-8.
            let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);
            let alphabet = b"v=o-mac/: \r\n0123456789.IPN46AVTRsendrecvonlyx[]*\t";
            for _ in 0..4000 {
                let mut bytes = seed.as_bytes().to_vec();
                for _ in 0..=rng.below(6) {
                    let at = rng.below(bytes.len());
                    match rng.below(4) {
                        0 => {
                            if at < bytes.len() {
                                bytes.remove(at);
                            }
                        }
                        1 => bytes.insert(
                            at,
                            *alphabet.get(rng.below(alphabet.len())).unwrap_or(&b'x'),
                        ),
                        2 => {
                            if let Some(b) = bytes.get_mut(at) {
                                *b = *alphabet.get(rng.below(alphabet.len())).unwrap_or(&b'x');
                            }
                        }
                        _ => {
                            let end = (at + rng.below(40)).min(bytes.len());
                            let chunk: Vec<u8> =
                                bytes.get(at..end).map(<[u8]>::to_vec).unwrap_or_default();
                            let to = rng.below(bytes.len());
                            for (k, b) in chunk.into_iter().enumerate() {
                                bytes.insert((to + k).min(bytes.len()), b);
                            }
                        }
                    }
                }
                if let Ok(text) = String::from_utf8(bytes) {
                    if exercise(&text) {
                        parsed += 1;
                    } else {
                        refused += 1;
                    }
                }
            }
        }
        // The mutations must reach both outcomes often, or the test proves little.
        assert!(
            parsed > 1000 && refused > 1000,
            "parsed {parsed}, refused {refused}"
        );
    }
}
