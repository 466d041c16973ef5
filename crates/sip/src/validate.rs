//! What a user agent server checks before it acts on a request (RFC 3261 section 8.2), and
//! the responses it sends back, including to messages too broken to act on.

use crate::header::{CSeq, HeaderError, NameAddr, Via};
use crate::message::{Headers, Message, Method, Name};
use crate::parse::{Invalid, Problem};
use crate::uri::{Uri, UriError};

/// What this user agent implements; everything else is refused with 405 or 501.
#[derive(Debug, Clone)]
pub struct Capabilities {
    pub methods: Vec<Method>,
    /// Option tags this user agent supports (`Require` naming others gets 420).
    pub extensions: Vec<&'static str>,
}

impl Capabilities {
    /// The `Allow` header value.
    pub fn allow(&self) -> String {
        self.methods
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The parts of a valid request every later layer needs, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeaders {
    pub method: Method,
    pub uri: Uri,
    pub via: Vec<Via>,
    pub from: NameAddr,
    pub to: NameAddr,
    pub call_id: String,
    pub cseq: CSeq,
    pub max_forwards: Option<u8>,
    /// Empty for `Contact: *`.
    pub contact: Vec<NameAddr>,
}

/// An error response to send instead of acting on a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: u16,
    pub reason: String,
    pub headers: Vec<(Name, String)>,
}

impl Refusal {
    fn new(code: u16, reason: impl Into<String>) -> Refusal {
        Refusal {
            code,
            reason: reason.into(),
            headers: Vec::new(),
        }
    }

    fn bad(detail: impl std::fmt::Display) -> Refusal {
        Refusal::new(400, format!("Bad Request ({detail})"))
    }

    fn with(mut self, name: Name, value: impl Into<String>) -> Refusal {
        self.headers.push((name, value.into()));
        self
    }

    /// The response to `request` (whose headers may be all that could be read).
    pub fn response(&self, request: &Headers, to_tag: &str) -> Message {
        let mut response = response_to(request, self.code, &self.reason, Some(to_tag));
        for (name, value) in &self.headers {
            response.headers.push(name.clone(), value.clone());
        }
        response
    }
}

fn exactly_one<'a>(headers: &'a Headers, name: &'a Name) -> Result<&'a str, Refusal> {
    let mut values = headers.all(name);
    match (values.next(), values.next()) {
        (Some(v), None) => Ok(v),
        (None, _) => Err(Refusal::bad(format!("missing {} header", name.as_str()))),
        (Some(_), Some(_)) => Err(Refusal::bad(format!(
            "more than one {} header",
            name.as_str()
        ))),
    }
}

fn named(what: &str, e: HeaderError) -> Refusal {
    Refusal::bad(format!("{what}: {e}"))
}

fn media_type(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Checks a request in the order of RFC 3261 section 8.2: well-formedness first (400), then
/// the method (405/501), the Request-URI scheme (416), required extensions (420), the body's
/// type (415) and what the caller accepts back (406).
pub fn check_request(message: &Message, caps: &Capabilities) -> Result<RequestHeaders, Refusal> {
    let (Some(method), Some(uri)) = (message.method(), message.uri()) else {
        return Err(Refusal::bad("not a request"));
    };
    let h = &message.headers;
    let vias = h
        .list(&Name::Via)
        .ok_or_else(|| Refusal::bad("empty value in Via"))?;
    if vias.is_empty() {
        return Err(Refusal::bad("missing Via header"));
    }
    let via = vias
        .iter()
        .map(|v| Via::parse(v))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| named("Via", e))?;
    if via.iter().any(|v| v.version != "2.0") {
        return Err(Refusal::bad("Via names a SIP version other than 2.0"));
    }
    let from = NameAddr::parse(exactly_one(h, &Name::From)?).map_err(|e| named("From", e))?;
    let to = NameAddr::parse(exactly_one(h, &Name::To)?).map_err(|e| named("To", e))?;
    let call_id = exactly_one(h, &Name::CallId)?;
    if call_id.is_empty() || call_id.contains(char::is_whitespace) {
        return Err(Refusal::bad("malformed Call-ID"));
    }
    let cseq = CSeq::parse(exactly_one(h, &Name::CSeq)?).map_err(|e| named("CSeq", e))?;
    let max_forwards = match h.count(&Name::MaxForwards) {
        0 => None,
        1 => Some(
            h.get(&Name::MaxForwards)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u8>().ok())
                .ok_or_else(|| Refusal::bad("Max-Forwards must be 0 to 255"))?,
        ),
        _ => return Err(Refusal::bad("more than one Max-Forwards header")),
    };
    let contact = match h.list(&Name::Contact) {
        None => return Err(Refusal::bad("empty value in Contact")),
        Some(values) if values == ["*"] && *method == Method::Register => Vec::new(),
        Some(values) => values
            .iter()
            .map(|v| NameAddr::parse(v))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| named("Contact", e))?,
    };
    let uri = Uri::parse(uri).map_err(|e| match e {
        UriError::Bracketed => Refusal::bad("Request-URI in angle brackets"),
        e => Refusal::bad(format!("Request-URI: {e}")),
    })?;
    if uri.is_sip() && uri.headers.is_some() {
        return Err(Refusal::bad("Request-URI with headers"));
    }

    if !caps.methods.contains(method) {
        let code = if matches!(method, Method::Extension(_)) {
            501
        } else {
            405
        };
        let reason = if code == 501 {
            "Not Implemented"
        } else {
            "Method Not Allowed"
        };
        return Err(Refusal::new(code, reason).with(Name::Allow, caps.allow()));
    }
    if cseq.method != *method {
        return Err(Refusal::bad("CSeq method does not match the Request-Line"));
    }
    if !uri.is_sip() {
        return Err(Refusal::new(416, "Unsupported URI Scheme"));
    }
    if *method == Method::Register && !to.uri.is_sip() {
        return Err(Refusal::bad("To of a REGISTER must be a SIP URI"));
    }
    if !matches!(method, Method::Ack | Method::Cancel) {
        let required = h
            .list(&Name::Require)
            .ok_or_else(|| Refusal::bad("empty value in Require"))?;
        let unknown: Vec<&str> = required
            .into_iter()
            .filter(|tag| !caps.extensions.iter().any(|e| e.eq_ignore_ascii_case(tag)))
            .collect();
        if !unknown.is_empty() {
            return Err(
                Refusal::new(420, "Bad Extension").with(Name::Unsupported, unknown.join(", "))
            );
        }
    }
    let offers_media = matches!(
        method,
        Method::Invite | Method::Ack | Method::Update | Method::Prack
    );
    if offers_media && !message.body.is_empty() {
        let content_type = h.get(&Name::ContentType).map(media_type);
        if content_type.as_deref() != Some("application/sdp") {
            return Err(
                Refusal::new(415, "Unsupported Media Type").with(Name::Accept, "application/sdp")
            );
        }
    }
    if *method == Method::Invite {
        if let Some(accept) = h.list(&Name::Accept) {
            let takes_sdp = accept.is_empty()
                || accept
                    .iter()
                    .map(|a| media_type(a))
                    .any(|a| a == "application/sdp" || a == "application/*" || a == "*/*");
            if !takes_sdp {
                return Err(Refusal::new(406, "Not Acceptable"));
            }
        }
    }
    Ok(RequestHeaders {
        method: method.clone(),
        uri,
        via,
        from,
        to,
        call_id: call_id.to_owned(),
        cseq,
        max_forwards,
        contact,
    })
}

/// A response to a request, copying Via, From, To, Call-ID and CSeq (RFC 3261 section 8.2.6);
/// `to_tag` is added to a To without one, except on 100 Trying.
pub fn response_to(request: &Headers, code: u16, reason: &str, to_tag: Option<&str>) -> Message {
    let mut response = Message::response(code, reason);
    for value in request.all(&Name::Via) {
        response.headers.push(Name::Via, value);
    }
    for name in [Name::From, Name::To, Name::CallId, Name::CSeq] {
        if let Some(value) = request.get(&name) {
            let value = match (&name, to_tag) {
                (Name::To, Some(tag)) if code > 100 && !has_tag(value) => {
                    format!("{value};tag={tag}")
                }
                _ => value.to_owned(),
            };
            response.headers.push(name, value);
        }
    }
    response
}

fn has_tag(to: &str) -> bool {
    NameAddr::parse(to).map_or(to.contains(";tag="), |n| n.tag().is_some())
}

/// The error response for a message that could not be parsed, when one can be sent: only for
/// requests that carry a Via (a response with no Via at all would go nowhere meaningful).
pub fn answer_invalid(invalid: &Invalid, to_tag: &str) -> Option<Message> {
    let headers = invalid.headers.as_ref()?;
    // An ACK is never answered, however broken.
    let ack = headers
        .get(&Name::CSeq)
        .is_some_and(|c| c.trim_end().ends_with("ACK"));
    if !invalid.request || ack || headers.get(&Name::Via).is_none() {
        return None;
    }
    let reason = match &invalid.problem {
        Problem::UnsupportedVersion(_) => "Version Not Supported".to_owned(),
        Problem::HeadTooLarge | Problem::BodyTooLarge => "Message Too Large".to_owned(),
        problem => format!("Bad Request ({problem})"),
    };
    Some(response_to(
        headers,
        invalid.problem.status(),
        &reason,
        Some(to_tag),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_datagram;

    fn caps() -> Capabilities {
        Capabilities {
            methods: vec![
                Method::Invite,
                Method::Ack,
                Method::Bye,
                Method::Cancel,
                Method::Options,
            ],
            extensions: vec![],
        }
    }

    fn check(raw: &str) -> Result<RequestHeaders, Refusal> {
        check_request(&parse_datagram(raw.as_bytes()).unwrap(), &caps())
    }

    const BASE: &str = "OPTIONS sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: <sip:a@example.com>\r\nFrom: <sip:c@d>;tag=1\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n";

    fn with(extra: &str) -> String {
        let end = if extra.is_empty() { "" } else { "\r\n" };
        format!("{BASE}{extra}{end}\r\n")
    }

    #[test]
    fn a_good_request() {
        let r = check(&with("")).unwrap();
        assert_eq!(
            (r.call_id.as_str(), r.cseq.number, r.max_forwards),
            ("x", 1, Some(70))
        );
        assert_eq!(r.from.tag(), Some("1"));
    }

    #[test]
    fn refusals_in_order() {
        let code = |raw: String| check(&raw).unwrap_err().code;
        assert_eq!(code(BASE.replace("Call-ID: x\r\n", "") + "\r\n"), 400);
        assert_eq!(code(with("Call-ID: y")), 400);
        assert_eq!(
            code(BASE.replace("Max-Forwards: 70", "Max-Forwards: 300") + "\r\n"),
            400
        );
        assert_eq!(
            code(BASE.replace("OPTIONS sip", "NEWMETHOD sip") + "\r\n"),
            501
        );
        assert_eq!(
            code(BASE.replace("OPTIONS sip", "SUBSCRIBE sip") + "\r\n"),
            405
        );
        assert_eq!(code(BASE.replace("1 OPTIONS", "1 INVITE") + "\r\n"), 400);
        assert_eq!(
            code(BASE.replace("OPTIONS sip:a@example.com", "OPTIONS tel:+12125550100") + "\r\n"),
            416
        );
        assert_eq!(code(with("Require: nothingSupportsThis")), 420);
        let refusal = check(&with("Require: foo, bar")).unwrap_err();
        assert_eq!(
            refusal.headers,
            [(Name::Unsupported, "foo, bar".to_owned())]
        );
        let not_implemented =
            check(&(BASE.replace("OPTIONS sip", "FOO sip") + "\r\n")).unwrap_err();
        assert_eq!(
            not_implemented.headers,
            [(Name::Allow, "INVITE, ACK, BYE, CANCEL, OPTIONS".to_owned())]
        );
    }

    #[test]
    fn responses_copy_the_dialog_headers() {
        let request = parse_datagram(with("").as_bytes()).unwrap();
        let r = response_to(&request.headers, 200, "OK", Some("abc"));
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert!(text.starts_with("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:c@d>;tag=1\r\nTo: <sip:a@example.com>;tag=abc\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n"), "{text}");
        let trying = response_to(&request.headers, 100, "Trying", Some("abc"));
        assert_eq!(trying.headers.get(&Name::To), Some("<sip:a@example.com>"));
    }

    #[test]
    fn broken_messages_get_an_answer_when_they_say_where_to() {
        let raw = with("").replace("\r\n\r\n", "\r\nContent-Length: 99\r\n\r\n");
        let invalid = parse_datagram(raw.as_bytes()).unwrap_err();
        let answer = answer_invalid(&invalid, "t").unwrap();
        assert_eq!(answer.code(), Some(400));
        assert!(
            matches!(&answer.start, crate::message::StartLine::Response { reason, .. } if reason.contains("Content-Length 99"))
        );
        let response = parse_datagram(b"SIP/2.0 200 OK\r\nContent-Length: 9\r\n\r\n").unwrap_err();
        assert_eq!(
            answer_invalid(&response, "t"),
            None,
            "responses are never answered"
        );
    }
}
