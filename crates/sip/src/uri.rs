//! URIs in requests and headers: SIP and SIPS URIs in full (RFC 3261 section 19.1, with
//! IPv6 references as RFC 5118 describes), any other scheme kept as opaque text.

use std::fmt;

/// Why a URI was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    #[error("no scheme")]
    NoScheme,
    #[error("whitespace or control character in URI")]
    Whitespace,
    #[error("URI enclosed in angle brackets where a bare URI belongs")]
    Bracketed,
    #[error("malformed user part")]
    BadUser,
    #[error("malformed host")]
    BadHost,
    #[error("malformed port")]
    BadPort,
    #[error("malformed URI parameter")]
    BadParam,
    #[error("malformed URI headers")]
    BadHeaders,
    #[error("malformed %-escape")]
    BadEscape,
}

/// A URI scheme this stack knows how to reach, or another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    Sip,
    Sips,
    Other(String),
}

/// A parsed URI; `Display` gives back the text it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri {
    raw: String,
    pub scheme: Scheme,
    /// The user part as written (escapes kept).
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    pub params: Vec<(String, Option<String>)>,
    /// The `?…` part as written, if any.
    pub headers: Option<String>,
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b)
}

/// Checks that every `%` starts a two-digit hex escape.
fn escapes_ok(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
            {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

impl Uri {
    pub fn parse(text: &str) -> Result<Uri, UriError> {
        if text.starts_with('<') {
            return Err(UriError::Bracketed);
        }
        if text
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(UriError::Whitespace);
        }
        let (scheme, rest) = text.split_once(':').ok_or(UriError::NoScheme)?;
        let scheme_ok = scheme
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
        if !scheme_ok {
            return Err(UriError::NoScheme);
        }
        let scheme = if scheme.eq_ignore_ascii_case("sip") {
            Scheme::Sip
        } else if scheme.eq_ignore_ascii_case("sips") {
            Scheme::Sips
        } else {
            return Ok(Uri {
                raw: text.to_owned(),
                scheme: Scheme::Other(scheme.to_ascii_lowercase()),
                user: None,
                host: String::new(),
                port: None,
                params: Vec::new(),
                headers: None,
            });
        };
        // '@' may not appear unescaped after the user part, so the last one ends it.
        let (userinfo, hostpart) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let user = match userinfo {
            None => None,
            Some(info) => {
                let user = info.split_once(':').map_or(info, |(u, _)| u);
                let ok = !user.is_empty()
                    && info
                        .bytes()
                        .all(|b| is_unreserved(b) || b"%&=+$,;?/:".contains(&b))
                    && escapes_ok(info);
                if !ok {
                    return Err(UriError::BadUser);
                }
                Some(user.to_owned())
            }
        };
        let (hostpart, headers) = match hostpart.split_once('?') {
            Some((h, hdrs)) => {
                let ok = !hdrs.is_empty()
                    && hdrs
                        .bytes()
                        .all(|b| is_unreserved(b) || b"%[]/?:+$=&".contains(&b))
                    && escapes_ok(hdrs);
                if !ok {
                    return Err(UriError::BadHeaders);
                }
                (h, Some(hdrs.to_owned()))
            }
            None => (hostpart, None),
        };
        let mut pieces = hostpart.split(';');
        let hostport = pieces.next().unwrap_or_default();
        let (host, port) = split_hostport(hostport)?;
        let mut params = Vec::new();
        for piece in pieces {
            let (name, value) = match piece.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (piece, None),
            };
            let chars_ok = |t: &str| {
                t.bytes()
                    .all(|b| is_unreserved(b) || b"%[]/:&+$".contains(&b))
                    && escapes_ok(t)
            };
            if name.is_empty()
                || !chars_ok(name)
                || value.is_some_and(|v| v.is_empty() || !chars_ok(v))
            {
                return Err(UriError::BadParam);
            }
            params.push((name.to_owned(), value.map(str::to_owned)));
        }
        Ok(Uri {
            raw: text.to_owned(),
            scheme,
            user,
            host: host.to_owned(),
            port,
            params,
            headers,
        })
    }

    pub fn is_sip(&self) -> bool {
        matches!(self.scheme, Scheme::Sip | Scheme::Sips)
    }

    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// `host[:port]` with host a name, an IPv4 address or a bracketed IPv6 reference.
pub fn split_hostport(text: &str) -> Result<(&str, Option<u16>), UriError> {
    let (host, port) = if text.starts_with('[') {
        let end = text.find(']').ok_or(UriError::BadHost)?;
        let inner = &text[1..end];
        let ok = inner.contains(':')
            && inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        if !ok {
            return Err(UriError::BadHost);
        }
        (&text[..=end], &text[end + 1..])
    } else {
        let end = text.find(':').unwrap_or(text.len());
        let host = &text[..end];
        let ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            && !host.starts_with(['-', '.']);
        if !ok {
            return Err(UriError::BadHost);
        }
        (host, &text[end..])
    };
    let port = match port.strip_prefix(':') {
        None if port.is_empty() => None,
        Some(digits)
            if !digits.is_empty()
                && digits.len() <= 5
                && digits.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Some(digits.parse().map_err(|_| UriError::BadPort)?)
        }
        _ => return Err(UriError::BadPort),
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_uris() {
        let u = Uri::parse("sip:alice:secret@example.com:5070;transport=tcp;lr?subject=x").unwrap();
        assert_eq!(u.scheme, Scheme::Sip);
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!((u.host.as_str(), u.port), ("example.com", Some(5070)));
        assert_eq!(u.param("transport"), Some(Some("tcp")));
        assert_eq!(u.param("lr"), Some(None));
        assert_eq!(u.headers.as_deref(), Some("subject=x"));
        assert_eq!(
            u.to_string(),
            "sip:alice:secret@example.com:5070;transport=tcp;lr?subject=x"
        );
        let u = Uri::parse("SIPS:[2001:db8::10]:5061").unwrap();
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port),
            (Scheme::Sips, "[2001:db8::10]", Some(5061))
        );
    }

    #[test]
    fn torture_forms() {
        // RFC 4475 3.1.1.9: the user part holds ;par=u%40example.net
        let u = Uri::parse("sip:user;par=u%40example.net@example.com").unwrap();
        assert_eq!(
            (u.user.as_deref(), u.host.as_str()),
            (Some("user;par=u%40example.net"), "example.com")
        );
        // RFC 4475 3.1.1.2: an unusual but legal user and password
        let u = Uri::parse("sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com").unwrap();
        assert_eq!(u.host, "example.com");
        // RFC 5118 4.3: an address that swallowed its port is one IPv6 address
        assert_eq!(
            Uri::parse("sip:user@[2001:db8::10:5070]").unwrap().port,
            None
        );
        assert_eq!(
            Uri::parse("sip:user@[2001:db8:::192.0.2.1]").unwrap().host,
            "[2001:db8:::192.0.2.1]"
        );
        assert!(Uri::parse("sip:user@[::ffff:192.0.2.10]").is_ok());
        // RFC 5118 4.2: IPv6 without brackets
        assert_eq!(Uri::parse("sip:user@2001:db8::10"), Err(UriError::BadPort));
        let other = Uri::parse("nobodyKnowsThisScheme:totallyopaquecontent").unwrap();
        assert_eq!(other.scheme, Scheme::Other("nobodyknowsthisscheme".into()));
        assert!(!other.is_sip());
        assert!(Uri::parse("soap.beep://192.0.2.103:3002").is_ok());
    }

    #[test]
    fn refusals() {
        assert_eq!(Uri::parse("<sip:a@b>"), Err(UriError::Bracketed));
        assert_eq!(Uri::parse("sip:a@b; lr"), Err(UriError::Whitespace));
        assert_eq!(Uri::parse("nocolon"), Err(UriError::NoScheme));
        assert_eq!(Uri::parse("sip:a@"), Err(UriError::BadHost));
        assert_eq!(Uri::parse("sip:a@b:"), Err(UriError::BadPort));
        assert_eq!(Uri::parse("sip:a@b:70000"), Err(UriError::BadPort));
        assert_eq!(Uri::parse("sip:a@b;;"), Err(UriError::BadParam));
        assert_eq!(Uri::parse("sip:a@b;x="), Err(UriError::BadParam));
        assert_eq!(Uri::parse("sip:%ZZ@b"), Err(UriError::BadUser));
        assert_eq!(Uri::parse("sip:a@b?"), Err(UriError::BadHeaders));
        assert_eq!(Uri::parse("sip:@b"), Err(UriError::BadUser));
        assert_eq!(Uri::parse("sip:a@[zz]"), Err(UriError::BadHost));
    }
}
