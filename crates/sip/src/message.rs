//! The SIP message model: start line, ordered headers, body; and writing it back out.

use std::fmt::{self, Write as _};

use bytes::Bytes;

/// A request method (RFC 3261 section 7.1). Unknown methods are legal tokens and are kept, so
/// that they can be answered with 501.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Info,
    Update,
    Prack,
    Subscribe,
    Notify,
    Refer,
    Message,
    Publish,
    Extension(String),
}

impl Method {
    const KNOWN: [(Method, &'static str); 14] = [
        (Method::Invite, "INVITE"),
        (Method::Ack, "ACK"),
        (Method::Bye, "BYE"),
        (Method::Cancel, "CANCEL"),
        (Method::Options, "OPTIONS"),
        (Method::Register, "REGISTER"),
        (Method::Info, "INFO"),
        (Method::Update, "UPDATE"),
        (Method::Prack, "PRACK"),
        (Method::Subscribe, "SUBSCRIBE"),
        (Method::Notify, "NOTIFY"),
        (Method::Refer, "REFER"),
        (Method::Message, "MESSAGE"),
        (Method::Publish, "PUBLISH"),
    ];

    /// How many methods are counted apart in statistics: each known one, and all others as one.
    pub const COUNTED: usize = Self::KNOWN.len() + 1;

    /// This method's place among the [`Self::COUNTED`]: a known method's own, or the last.
    pub fn counted_index(&self) -> usize {
        Self::KNOWN
            .iter()
            .position(|(m, _)| m == self)
            .unwrap_or(Self::KNOWN.len())
    }

    /// The name of the method counted at `index`: `"other"` for the last.
    pub fn counted_name(index: usize) -> &'static str {
        Self::KNOWN.get(index).map_or("other", |(_, name)| name)
    }

    /// A method token; `None` if it is not a token. Methods are case-sensitive.
    pub fn parse(text: &str) -> Option<Method> {
        if text.is_empty() || !text.bytes().all(is_token_byte) {
            return None;
        }
        Some(
            Self::KNOWN
                .iter()
                .find(|(_, name)| *name == text)
                .map_or_else(|| Method::Extension(text.to_owned()), |(m, _)| m.clone()),
        )
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Extension(name) => name,
            known => Self::KNOWN
                .iter()
                .find(|(m, _)| m == known)
                .map_or("", |(_, name)| name),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `token` characters of RFC 3261 section 25.1.
pub fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// A header name. The ones callbackd reads are recognised in their full and compact forms,
/// case-insensitively; others keep the spelling they arrived with.
#[derive(Debug, Clone, Eq)]
pub enum Name {
    Accept,
    Allow,
    Authorization,
    CallId,
    Contact,
    ContentLength,
    ContentType,
    CSeq,
    Expires,
    From,
    MaxForwards,
    MinSe,
    ProxyAuthenticate,
    ProxyAuthorization,
    ProxyRequire,
    RecordRoute,
    Require,
    RetryAfter,
    RAck,
    Route,
    RSeq,
    Server,
    SessionExpires,
    Supported,
    To,
    Unsupported,
    UserAgent,
    Via,
    WwwAuthenticate,
    Other(String),
}

impl Name {
    const KNOWN: [(Name, &'static str, Option<&'static str>); 29] = [
        (Name::Accept, "Accept", None),
        (Name::Allow, "Allow", None),
        (Name::Authorization, "Authorization", None),
        (Name::CallId, "Call-ID", Some("i")),
        (Name::Contact, "Contact", Some("m")),
        (Name::ContentLength, "Content-Length", Some("l")),
        (Name::ContentType, "Content-Type", Some("c")),
        (Name::CSeq, "CSeq", None),
        (Name::Expires, "Expires", None),
        (Name::From, "From", Some("f")),
        (Name::MaxForwards, "Max-Forwards", None),
        (Name::MinSe, "Min-SE", None),
        (Name::ProxyAuthenticate, "Proxy-Authenticate", None),
        (Name::ProxyAuthorization, "Proxy-Authorization", None),
        (Name::ProxyRequire, "Proxy-Require", None),
        (Name::RecordRoute, "Record-Route", None),
        (Name::Require, "Require", None),
        (Name::RetryAfter, "Retry-After", None),
        (Name::RAck, "RAck", None),
        (Name::Route, "Route", None),
        (Name::RSeq, "RSeq", None),
        (Name::Server, "Server", None),
        (Name::SessionExpires, "Session-Expires", Some("x")),
        (Name::Supported, "Supported", Some("k")),
        (Name::To, "To", Some("t")),
        (Name::Unsupported, "Unsupported", None),
        (Name::UserAgent, "User-Agent", None),
        (Name::Via, "Via", Some("v")),
        (Name::WwwAuthenticate, "WWW-Authenticate", None),
    ];

    pub fn parse(text: &str) -> Name {
        Self::KNOWN
            .iter()
            .find(|(_, full, compact)| {
                full.eq_ignore_ascii_case(text)
                    || compact.is_some_and(|c| c.eq_ignore_ascii_case(text))
            })
            .map_or_else(|| Name::Other(text.to_owned()), |(n, _, _)| n.clone())
    }

    pub fn as_str(&self) -> &str {
        match self {
            Name::Other(name) => name,
            known => Self::KNOWN
                .iter()
                .find(|(n, _, _)| n == known)
                .map_or("", |(_, full, _)| full),
        }
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        match (self, other) {
            (Name::Other(a), Name::Other(b)) => a.eq_ignore_ascii_case(b),
            (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
        }
    }
}

/// One header line (after unfolding), value trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: Name,
    pub value: String,
}

/// The headers in the order they came or will go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<Header>);

impl Headers {
    /// The first value of a header.
    pub fn get(&self, name: &Name) -> Option<&str> {
        self.all(name).next()
    }

    /// Every line of a header, in order.
    pub fn all<'a, 'n>(&'a self, name: &'n Name) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
        self.0
            .iter()
            .filter(move |h| h.name == *name)
            .map(|h| h.value.as_str())
    }

    /// The comma-separated values of a list header, across all its lines; `None` when a
    /// value between commas is empty (`a,,b`), which RFC 3261 does not allow.
    pub fn list<'a>(&'a self, name: &Name) -> Option<Vec<&'a str>> {
        let mut values = Vec::new();
        for line in self.all(name) {
            for item in split_list(line) {
                let item = item.trim();
                if item.is_empty() {
                    return None;
                }
                values.push(item);
            }
        }
        Some(values)
    }

    pub fn count(&self, name: &Name) -> usize {
        self.all(name).count()
    }

    pub fn push(&mut self, name: Name, value: impl Into<String>) {
        self.0.push(Header {
            name,
            value: value.into(),
        });
    }

    /// Replaces every line of `name` with one value.
    pub fn set(&mut self, name: Name, value: impl Into<String>) {
        self.remove(&name);
        self.push(name, value);
    }

    pub fn remove(&mut self, name: &Name) {
        self.0.retain(|h| h.name != *name);
    }

    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.0.iter()
    }

    /// The first line of `name`, to change in place (e.g. the top Via).
    pub fn first_mut(&mut self, name: &Name) -> Option<&mut String> {
        self.0
            .iter_mut()
            .find(|h| h.name == *name)
            .map(|h| &mut h.value)
    }
}

/// Splits a header value at commas that are not inside quotes or angle brackets.
pub fn split_list(value: &str) -> impl Iterator<Item = &str> {
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    let mut angle = false;
    let bytes = value.as_bytes();
    let mut cuts = Vec::new();
    for (i, &b) in bytes.iter().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b'<' if !quoted => angle = true,
            b'>' if !quoted => angle = false,
            b',' if !quoted && !angle => {
                cuts.push((start, i));
                start = i + 1;
            }
            _ => {}
        }
    }
    cuts.push((start, bytes.len()));
    cuts.into_iter().map(move |(a, b)| &value[a..b])
}

/// The first line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: Method, uri: String },
    Response { code: u16, reason: String },
}

/// A SIP request or response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub start: StartLine,
    pub headers: Headers,
    pub body: Bytes,
}

impl Message {
    pub fn request(method: Method, uri: impl Into<String>) -> Message {
        Message {
            start: StartLine::Request {
                method,
                uri: uri.into(),
            },
            headers: Headers::default(),
            body: Bytes::new(),
        }
    }

    pub fn response(code: u16, reason: impl Into<String>) -> Message {
        Message {
            start: StartLine::Response {
                code,
                reason: reason.into(),
            },
            headers: Headers::default(),
            body: Bytes::new(),
        }
    }

    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    pub fn uri(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    pub fn code(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// The message as bytes on the wire, with a Content-Length that matches the body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head = String::with_capacity(512);
        match &self.start {
            StartLine::Request { method, uri } => {
                let _ = write!(head, "{method} {uri} SIP/2.0\r\n");
            }
            StartLine::Response { code, reason } => {
                let _ = write!(head, "SIP/2.0 {code} {reason}\r\n");
            }
        }
        for h in self
            .headers
            .iter()
            .filter(|h| h.name != Name::ContentLength)
        {
            let _ = write!(head, "{}: {}\r\n", h.name.as_str(), h.value);
        }
        let _ = write!(head, "Content-Length: {}\r\n\r\n", self.body.len());
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_full_compact_and_case() {
        assert_eq!(Name::parse("v"), Name::Via);
        assert_eq!(Name::parse("VIA"), Name::Via);
        assert_eq!(Name::parse("i"), Name::CallId);
        assert_eq!(Name::parse("l"), Name::ContentLength);
        assert_eq!(Name::parse("X-Foo"), Name::parse("x-foo"));
        assert_ne!(Name::parse("X-Foo"), Name::Via);
        assert_eq!(Name::CallId.as_str(), "Call-ID");
        assert_eq!(Name::parse("C%6Fntact"), Name::Other("C%6Fntact".into()));
    }

    #[test]
    fn methods() {
        assert_eq!(Method::parse("INVITE"), Some(Method::Invite));
        assert_eq!(
            Method::parse("invite"),
            Some(Method::Extension("invite".into())),
            "case-sensitive"
        );
        assert_eq!(
            Method::parse("RE%47IST%45R").unwrap().as_str(),
            "RE%47IST%45R"
        );
        assert_eq!(Method::parse("BAD METHOD"), None);
        assert_eq!(Method::parse(""), None);
    }

    #[test]
    fn lists_split_outside_quotes_and_brackets() {
        let v = r#""Bell, A" <sip:a@x;p=1,2>, <sip:b@y>"#;
        assert_eq!(
            split_list(v).map(str::trim).collect::<Vec<_>>(),
            [r#""Bell, A" <sip:a@x;p=1,2>"#, "<sip:b@y>"]
        );
        let mut h = Headers::default();
        h.push(Name::Via, "a, b");
        h.push(Name::Via, "c");
        assert_eq!(h.list(&Name::Via).unwrap(), ["a", "b", "c"]);
        h.push(Name::Via, "d,,e");
        assert_eq!(h.list(&Name::Via), None);
    }

    #[test]
    fn writes_its_own_content_length() {
        let mut m = Message::response(200, "OK");
        m.headers.push(Name::ContentLength, "99");
        m.headers.push(Name::CallId, "x");
        m.body = Bytes::from_static(b"hello");
        assert_eq!(
            m.to_bytes(),
            b"SIP/2.0 200 OK\r\nCall-ID: x\r\nContent-Length: 5\r\n\r\nhello".to_vec()
        );
    }
}
