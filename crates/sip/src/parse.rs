//! Reading messages off the wire: framing (datagram or stream), unfolding, header lines.
//!
//! Parsing is liberal where RFC 3261 allows (folded lines, whitespace before the colon,
//! compact names, bare LF line ends, no empty line at the end of a datagram) and strict where
//! a mistake would change meaning (the request line, Content-Length). A message whose head
//! could be read but is wrong still yields its headers, so a 400 can be sent back.

use bytes::Bytes;

use crate::message::{is_token_byte, Headers, Message, Method, Name, StartLine};

/// The most a message head may take; beyond it the sender is not speaking SIP to us.
pub const MAX_HEAD: usize = 64 * 1024;
/// The largest body accepted: an SDP is a few kilobytes; anything near this is not a call.
/// (A UDP datagram cannot be larger; over TCP it bounds what one connection makes us hold.)
pub const MAX_BODY: usize = 64 * 1024;

/// What is wrong with a message that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("empty message")]
    Empty,
    #[error("message head is not UTF-8")]
    NotUtf8,
    #[error("message head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("malformed start line")]
    BadStartLine,
    #[error("unsupported SIP version {0}")]
    UnsupportedVersion(String),
    #[error("malformed status code")]
    BadStatusCode,
    #[error("malformed header line {0}")]
    BadHeaderLine(usize),
    #[error("malformed Content-Length")]
    BadContentLength,
    #[error("conflicting Content-Length values")]
    ConflictingContentLength,
    #[error("Content-Length {declared} exceeds the {available} body bytes received")]
    BodyTruncated { declared: usize, available: usize },
    #[error("body larger than {MAX_BODY} bytes")]
    BodyTooLarge,
}

impl Problem {
    /// The status a request with this problem is answered with.
    pub fn status(&self) -> u16 {
        match self {
            Problem::UnsupportedVersion(_) => 505,
            Problem::HeadTooLarge | Problem::BodyTooLarge => 513,
            _ => 400,
        }
    }
}

/// A message that cannot be used: why, and what could be read of it (enough to answer a
/// request with an error, when `headers` is there).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{problem}")]
pub struct Invalid {
    pub problem: Problem,
    /// Whether the message looked like a request (responses are never answered).
    pub request: bool,
    pub headers: Option<Headers>,
}

impl Invalid {
    fn bare(problem: Problem) -> Invalid {
        Invalid {
            problem,
            request: false,
            headers: None,
        }
    }
}

/// Parses one UDP datagram. The body is framed by Content-Length; without one it is the rest
/// of the datagram, and bytes after the declared body are ignored (RFC 3261 section 18.3).
pub fn parse_datagram(datagram: &[u8]) -> Result<Message, Invalid> {
    let start = skip_blank_lines(datagram);
    let data = &datagram[start..];
    if data.is_empty() {
        return Err(Invalid::bare(Problem::Empty));
    }
    // A datagram that ends without the empty line still ends its head.
    let (head_len, body_start) = find_head_end(data).unwrap_or((data.len(), data.len()));
    if head_len > MAX_HEAD {
        return Err(Invalid::bare(Problem::HeadTooLarge));
    }
    let (start_line, headers, request) = parse_head(&data[..head_len])?;
    let rest = &data[body_start..];
    let body = match content_length(&headers) {
        Err(problem) => return Err(invalid(problem, request, headers)),
        Ok(None) => rest,
        Ok(Some(declared)) if declared > rest.len() => {
            let problem = Problem::BodyTruncated {
                declared,
                available: rest.len(),
            };
            return Err(invalid(problem, request, headers));
        }
        Ok(Some(declared)) => &rest[..declared],
    };
    if body.len() > MAX_BODY {
        return Err(invalid(Problem::BodyTooLarge, request, headers));
    }
    Ok(Message {
        start: start_line,
        headers,
        body: Bytes::copy_from_slice(body),
    })
}

/// For a byte stream (TCP): how many bytes the next message takes, counting leading blank
/// lines (keep-alives), as soon as its head is complete (the body may still be arriving:
/// compare with the buffer's length); `None` while the head is incomplete. Over a stream
/// Content-Length is required; a message without one has no body.
pub fn frame(buffer: &[u8]) -> Result<Option<usize>, Invalid> {
    let start = skip_blank_lines(buffer);
    let data = &buffer[start..];
    let Some((head_len, body_start)) = find_head_end(data) else {
        return if data.len() > MAX_HEAD {
            Err(Invalid::bare(Problem::HeadTooLarge))
        } else {
            Ok(None)
        };
    };
    if head_len > MAX_HEAD {
        return Err(Invalid::bare(Problem::HeadTooLarge));
    }
    let (_, headers, request) = parse_head(&data[..head_len])?;
    let body = match content_length(&headers) {
        Err(problem) => return Err(invalid(problem, request, headers)),
        Ok(declared) => declared.unwrap_or(0),
    };
    if body > MAX_BODY {
        return Err(invalid(Problem::BodyTooLarge, request, headers));
    }
    Ok(Some(start + body_start + body))
}

/// Parses one message framed by [`frame`].
pub fn parse_framed(message: &[u8]) -> Result<Message, Invalid> {
    parse_datagram(message)
}

fn invalid(problem: Problem, request: bool, headers: Headers) -> Invalid {
    Invalid {
        problem,
        request,
        headers: Some(headers),
    }
}

fn skip_blank_lines(data: &[u8]) -> usize {
    data.iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count()
}

/// Where the head ends and the body starts: at the first empty line, CRLF or bare LF.
fn find_head_end(data: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while let Some(offset) = data[i..].iter().position(|b| *b == b'\n') {
        let lf = i + offset;
        let next = lf + 1;
        if data.get(next) == Some(&b'\n') {
            return Some((lf, next + 1));
        }
        if data.get(next) == Some(&b'\r') && data.get(next + 1) == Some(&b'\n') {
            return Some((lf, next + 2));
        }
        i = next;
    }
    None
}

fn parse_head(head: &[u8]) -> Result<(StartLine, Headers, bool), Invalid> {
    let text = std::str::from_utf8(head).map_err(|_| Invalid::bare(Problem::NotUtf8))?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let first = lines.next().unwrap_or_default();
    let request = !first.starts_with("SIP/");
    let mut headers = Headers::default();
    let mut current: Option<(Name, String)> = None;
    for (number, line) in lines.enumerate() {
        if line.is_empty() {
            // Only the end of a datagram that stops without its empty line gets here.
            continue;
        }
        if line.starts_with([' ', '\t']) {
            // A folded continuation of the header above (RFC 3261 section 7.3.1).
            match current.as_mut() {
                Some((_, value)) => {
                    if !value.is_empty() {
                        value.push(' ');
                    }
                    value.push_str(line.trim());
                }
                None => return Err(Invalid::bare(Problem::BadHeaderLine(number + 2))),
            }
            continue;
        }
        if let Some((name, value)) = current.take() {
            headers.push(name, value);
        }
        let (name, value) = line.split_once(':').ok_or_else(|| Invalid {
            problem: Problem::BadHeaderLine(number + 2),
            request,
            headers: Some(headers.clone()),
        })?;
        let name = name.trim_end_matches([' ', '\t']);
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(Invalid {
                problem: Problem::BadHeaderLine(number + 2),
                request,
                headers: Some(headers),
            });
        }
        current = Some((Name::parse(name), value.trim().to_owned()));
    }
    if let Some((name, value)) = current {
        headers.push(name, value);
    }
    match parse_start_line(first) {
        Ok(start) => Ok((start, headers, request)),
        Err(problem) => Err(Invalid {
            problem,
            request,
            headers: Some(headers),
        }),
    }
}

fn is_sip_version(text: &str) -> bool {
    text.eq_ignore_ascii_case("SIP/2.0")
}

fn parse_start_line(line: &str) -> Result<StartLine, Problem> {
    if line.starts_with("SIP/") {
        let (version, rest) = line.split_once(' ').ok_or(Problem::BadStartLine)?;
        if !is_sip_version(version) {
            return Err(Problem::UnsupportedVersion(version.to_owned()));
        }
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let code: u16 = (code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()))
            .then(|| code.parse().ok())
            .flatten()
            .filter(|c| (100..=699).contains(c))
            .ok_or(Problem::BadStatusCode)?;
        return Ok(StartLine::Response {
            code,
            reason: reason.to_owned(),
        });
    }
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Problem::BadStartLine);
    };
    let method = Method::parse(method).ok_or(Problem::BadStartLine)?;
    if uri.is_empty() || uri.contains('\t') {
        return Err(Problem::BadStartLine);
    }
    if !is_sip_version(version) {
        return Err(if version.starts_with("SIP/") {
            Problem::UnsupportedVersion(version.to_owned())
        } else {
            Problem::BadStartLine
        });
    }
    Ok(StartLine::Request {
        method,
        uri: uri.to_owned(),
    })
}

/// The declared body length: `None` without the header; an error if it is not a number or
/// appears twice with different values.
fn content_length(headers: &Headers) -> Result<Option<usize>, Problem> {
    let mut found: Option<usize> = None;
    for value in headers.all(&Name::ContentLength) {
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Problem::BadContentLength);
        }
        let n = value
            .trim_start_matches('0')
            .parse::<usize>()
            .or_else(|e| {
                if value.bytes().all(|b| b == b'0') {
                    Ok(0)
                } else {
                    Err(e)
                }
            })
            .map_err(|_| Problem::BadContentLength)?;
        match found {
            Some(previous) if previous != n => return Err(Problem::ConflictingContentLength),
            _ => found = Some(n),
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: <sip:a@b>\r\nFrom: <sip:c@d>;tag=1\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn a_plain_request() {
        let m = parse_datagram(OPTIONS).unwrap();
        assert_eq!(m.method(), Some(&Method::Options));
        assert_eq!(m.uri(), Some("sip:a@b"));
        assert_eq!(m.headers.get(&Name::CallId), Some("x"));
        assert!(m.body.is_empty());
        assert_eq!(parse_datagram(&m.to_bytes()).unwrap(), m, "round trip");
    }

    #[test]
    fn folding_whitespace_and_compact_names() {
        let m = parse_datagram(b"INVITE sip:a@b SIP/2.0\r\nv  :  SIP/2.0/UDP h\r\n ;branch=z9hG4bK2\r\ni:x\r\nl: 4\r\n\r\nbodyEXTRA").unwrap();
        assert_eq!(
            m.headers.get(&Name::Via),
            Some("SIP/2.0/UDP h ;branch=z9hG4bK2")
        );
        assert_eq!(m.headers.get(&Name::CallId), Some("x"));
        assert_eq!(
            &m.body[..],
            b"body",
            "framed by Content-Length, the rest ignored"
        );
    }

    #[test]
    fn bare_lf_and_missing_final_empty_line() {
        let m = parse_datagram(b"OPTIONS sip:a@b SIP/2.0\nCall-ID: x\nl: 0").unwrap();
        assert_eq!(m.headers.get(&Name::CallId), Some("x"));
        assert!(m.body.is_empty());
    }

    #[test]
    fn content_length_problems_keep_the_headers_for_a_reply() {
        for (cl, problem) in [
            (
                "9999",
                Problem::BodyTruncated {
                    declared: 9999,
                    available: 4,
                },
            ),
            ("-999", Problem::BadContentLength),
            ("abc", Problem::BadContentLength),
            ("99999999999999999999999", Problem::BadContentLength),
        ] {
            let raw =
                format!("INVITE sip:a@b SIP/2.0\r\nCall-ID: x\r\nContent-Length: {cl}\r\n\r\nbody");
            let err = parse_datagram(raw.as_bytes()).unwrap_err();
            assert_eq!(err.problem, problem, "{cl}");
            assert!(err.request);
            assert_eq!(err.headers.unwrap().get(&Name::CallId), Some("x"));
        }
        let raw = b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 4\r\nl: 5\r\n\r\nbodyX";
        assert_eq!(
            parse_datagram(raw).unwrap_err().problem,
            Problem::ConflictingContentLength
        );
        let same = b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 4\r\nl: 004\r\n\r\nbody";
        assert_eq!(&parse_datagram(same).unwrap().body[..], b"body");
    }

    #[test]
    fn start_lines() {
        let bad = |raw: &str| parse_datagram(raw.as_bytes()).unwrap_err().problem;
        assert_eq!(
            bad("INVITE  sip:a@b SIP/2.0\r\n\r\n"),
            Problem::BadStartLine
        );
        assert_eq!(
            bad("INVITE sip:a@b SIP/2.0 \r\n\r\n"),
            Problem::BadStartLine
        );
        assert_eq!(
            bad("INVITE sip:a@b; lr SIP/2.0\r\n\r\n"),
            Problem::BadStartLine
        );
        assert_eq!(
            bad("INVITE sip:a@b SIP/7.0\r\n\r\n"),
            Problem::UnsupportedVersion("SIP/7.0".into())
        );
        assert_eq!(
            bad("SIP/2.0 4294967301 Huge\r\n\r\n"),
            Problem::BadStatusCode
        );
        assert_eq!(bad("SIP/2.0 99 Low\r\n\r\n"), Problem::BadStatusCode);
        assert_eq!(bad("\r\n\r\n"), Problem::Empty);
        assert_eq!(bad("garbage\r\n\r\n"), Problem::BadStartLine);
        let r = parse_datagram(b"SIP/2.0 200 \r\n\r\n").unwrap();
        assert_eq!(
            r.start,
            StartLine::Response {
                code: 200,
                reason: String::new()
            }
        );
        let r = parse_datagram(b"sip/2.0 180 Ringing\r\n\r\n");
        assert!(r.is_err(), "a response starts with SIP/ exactly");
    }

    #[test]
    fn bad_header_lines() {
        let err = parse_datagram(b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x\r\nno colon here\r\n\r\n")
            .unwrap_err();
        assert_eq!(err.problem, Problem::BadHeaderLine(3));
        assert_eq!(err.headers.unwrap().get(&Name::CallId), Some("x"));
        let err = parse_datagram(b"OPTIONS sip:a@b SIP/2.0\r\n\tfolded first\r\n\r\n").unwrap_err();
        assert_eq!(err.problem, Problem::BadHeaderLine(2));
        assert_eq!(
            parse_datagram(&[0xff, 0xfe, b'\r', b'\n'])
                .unwrap_err()
                .problem,
            Problem::NotUtf8
        );
    }

    #[test]
    fn stream_framing() {
        let mut stream = b"\r\n\r\n".to_vec();
        stream.extend_from_slice(OPTIONS);
        stream.extend_from_slice(b"INVITE sip:a@b SIP/2.0\r\nl: 3\r\n\r\nab");
        let first = frame(&stream).unwrap().unwrap();
        assert_eq!(first, 4 + OPTIONS.len());
        let m = parse_framed(&stream[..first]).unwrap();
        assert_eq!(m.method(), Some(&Method::Options));
        let waiting = frame(&stream[first..]).unwrap().unwrap();
        assert_eq!(
            waiting,
            stream.len() - first + 1,
            "known before the last body byte comes"
        );
        stream.push(b'c');
        let second = frame(&stream[first..]).unwrap().unwrap();
        assert_eq!(
            &parse_framed(&stream[first..first + second]).unwrap().body[..],
            b"abc"
        );
        assert_eq!(
            frame(b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x\r\n").unwrap(),
            None
        );
        assert_eq!(
            frame(&vec![b'a'; MAX_HEAD + 1]).unwrap_err().problem,
            Problem::HeadTooLarge
        );
    }

    #[test]
    fn never_panics_on_prefixes_of_a_message() {
        for n in 0..OPTIONS.len() {
            let _ = parse_datagram(&OPTIONS[..n]);
            let _ = frame(&OPTIONS[..n]);
        }
        for b in 0..=255u8 {
            let mut m = OPTIONS.to_vec();
            m[10] = b;
            let _ = parse_datagram(&m);
        }
    }
}
