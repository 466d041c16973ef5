//! Typed views of the headers the stack acts on: Via, From/To/Contact/Route (name-addr),
//! CSeq. Parsing tolerates the linear whitespace RFC 3261 allows around separators.

use crate::message::{is_token_byte, Method};
use crate::uri::{split_hostport, Uri, UriError};

/// Why a header value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("malformed Via")]
    Via,
    #[error("Via branch is only the magic cookie z9hG4bK")]
    BareBranch,
    #[error("malformed CSeq")]
    CSeq,
    #[error("CSeq number above 2^32-1")]
    CSeqTooLarge,
    #[error("unterminated quoted string")]
    Unterminated,
    #[error("display name needs quotes")]
    DisplayName,
    #[error("missing angle brackets or malformed address")]
    Address,
    #[error("malformed header parameter")]
    Param,
    #[error("bad URI: {0}")]
    Uri(#[from] UriError),
}

/// Header parameters (`;name=value`), values unquoted.
pub type Params = Vec<(String, Option<String>)>;

fn find_param<'a>(params: &'a Params, name: &str) -> Option<Option<&'a str>> {
    params
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_deref())
}

/// Reads `*( ";" name [ "=" value ] )` with whitespace allowed around `;` and `=`.
fn parse_params(mut text: &str) -> Result<Params, HeaderError> {
    let mut params = Vec::new();
    loop {
        text = text.trim_start();
        if text.is_empty() {
            return Ok(params);
        }
        text = text
            .strip_prefix(';')
            .ok_or(HeaderError::Param)?
            .trim_start();
        let name_len = text.bytes().take_while(|b| is_token_byte(*b)).count();
        if name_len == 0 {
            return Err(HeaderError::Param);
        }
        let name = &text[..name_len];
        text = text[name_len..].trim_start();
        let value = if let Some(rest) = text.strip_prefix('=') {
            let rest = rest.trim_start();
            let (value, after) = if rest.starts_with('"') {
                let (quoted, after) = quoted_string(rest)?;
                (quoted, after)
            } else {
                let len = rest
                    .bytes()
                    .take_while(|b| is_token_byte(*b) || b"[]:".contains(b))
                    .count();
                if len == 0 {
                    return Err(HeaderError::Param);
                }
                (rest[..len].to_owned(), &rest[len..])
            };
            text = after;
            Some(value)
        } else {
            None
        };
        params.push((name.to_owned(), value));
    }
}

/// A quoted string at the start of `text`: its unescaped content and what follows it.
fn quoted_string(text: &str) -> Result<(String, &str), HeaderError> {
    let mut out = String::new();
    let mut chars = text.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &text[i + 1..])),
            '\\' => match chars.next() {
                Some((_, escaped)) => out.push(escaped),
                None => break,
            },
            c => out.push(c),
        }
    }
    Err(HeaderError::Unterminated)
}

/// One Via value: `SIP/2.0/UDP host:port;branch=…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// `2.0` in any message this stack acts on; kept so that a response can still be routed
    /// back to a sender of another version.
    pub version: String,
    pub transport: String,
    pub host: String,
    pub port: Option<u16>,
    pub params: Params,
}

impl Via {
    pub fn parse(value: &str) -> Result<Via, HeaderError> {
        // sent-protocol: three tokens separated by "/" with optional whitespace around each.
        let mut rest = value;
        let mut protocol = Vec::with_capacity(3);
        for i in 0..3 {
            rest = rest.trim_start();
            let len = rest.bytes().take_while(|b| is_token_byte(*b)).count();
            if len == 0 {
                return Err(HeaderError::Via);
            }
            protocol.push(&rest[..len]);
            rest = rest[len..].trim_start();
            if i < 2 {
                rest = rest.strip_prefix('/').ok_or(HeaderError::Via)?;
            }
        }
        if !protocol[0].eq_ignore_ascii_case("SIP") {
            return Err(HeaderError::Via);
        }
        let end = rest.find(';').unwrap_or(rest.len());
        let sent_by = rest[..end].trim();
        let (host, port) = split_hostport(sent_by).map_err(|_| HeaderError::Via)?;
        let params = parse_params(&rest[end..]).map_err(|_| HeaderError::Via)?;
        let via = Via {
            version: protocol[1].to_owned(),
            transport: protocol[2].to_ascii_uppercase(),
            host: host.to_owned(),
            port,
            params,
        };
        if via
            .branch()
            .is_some_and(|b| b.eq_ignore_ascii_case("z9hG4bK"))
        {
            return Err(HeaderError::BareBranch);
        }
        Ok(via)
    }

    pub fn branch(&self) -> Option<&str> {
        find_param(&self.params, "branch").flatten()
    }

    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name)
    }

    /// `SIP/2.0/UDP host:port;params`, as it goes on the wire.
    pub fn to_header_value(&self) -> String {
        let mut out = format!("SIP/2.0/{} {}", self.transport, self.host);
        if let Some(port) = self.port {
            out += &format!(":{port}");
        }
        write_params(&mut out, &self.params);
        out
    }
}

fn write_params(out: &mut String, params: &Params) {
    for (name, value) in params {
        out.push(';');
        out.push_str(name);
        if let Some(v) = value {
            out.push('=');
            if v.bytes().all(|b| is_token_byte(b) || b"[]:".contains(&b)) && !v.is_empty() {
                out.push_str(v);
            } else {
                out.push('"');
                out.push_str(&v.replace('\\', "\\\\").replace('"', "\\\""));
                out.push('"');
            }
        }
    }
}

/// `"Display" <uri>;params` or `uri;params` (From, To, Contact, Route, Record-Route).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    pub display: Option<String>,
    pub uri: Uri,
    pub params: Params,
}

impl NameAddr {
    pub fn parse(value: &str) -> Result<NameAddr, HeaderError> {
        let text = value.trim();
        let (display, rest) = if text.starts_with('"') {
            let (name, rest) = quoted_string(text)?;
            let rest = rest.trim_start();
            if !rest.starts_with('<') {
                return Err(HeaderError::Address);
            }
            (Some(name), rest)
        } else if let Some(lt) = text.find('<') {
            let name = text[..lt].trim();
            // An unquoted display name is tokens separated by whitespace.
            if !name
                .split_whitespace()
                .all(|word| word.bytes().all(is_token_byte))
            {
                return Err(HeaderError::DisplayName);
            }
            (
                (!name.is_empty()).then(|| name.split_whitespace().collect::<Vec<_>>().join(" ")),
                &text[lt..],
            )
        } else {
            // addr-spec: the URI ends at the first ';' (what follows are header parameters),
            // and it may carry neither ',' nor '?' headers outside angle brackets.
            let end = text.find(';').unwrap_or(text.len());
            let uri_text = text[..end].trim_end();
            if uri_text.contains(['?', ',']) {
                return Err(HeaderError::Address);
            }
            let uri = Uri::parse(uri_text)?;
            return Ok(NameAddr {
                display: None,
                uri,
                params: parse_params(&text[end..])?,
            });
        };
        let inner_end = rest.find('>').ok_or(HeaderError::Address)?;
        let inner = &rest[1..inner_end];
        let uri = Uri::parse(inner)?;
        Ok(NameAddr {
            display,
            uri,
            params: parse_params(&rest[inner_end + 1..])?,
        })
    }

    pub fn tag(&self) -> Option<&str> {
        find_param(&self.params, "tag").flatten()
    }

    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name)
    }
}

/// `CSeq: 4711 INVITE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub number: u32,
    pub method: Method,
}

impl CSeq {
    pub fn parse(value: &str) -> Result<CSeq, HeaderError> {
        let mut parts = value.split_whitespace();
        let (Some(number), Some(method), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(HeaderError::CSeq);
        };
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(HeaderError::CSeq);
        }
        // Digits only, so a failed parse can only mean "too large".
        let number = number
            .parse::<u32>()
            .map_err(|_| HeaderError::CSeqTooLarge)?;
        Ok(CSeq {
            number,
            method: Method::parse(method).ok_or(HeaderError::CSeq)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_with_torture_whitespace() {
        let v = Via::parse("SIP  /   2.0 /UDP     192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!(
            (v.transport.as_str(), v.host.as_str(), v.port),
            ("UDP", "192.0.2.2", None)
        );
        assert_eq!(v.branch(), Some("390skdjuw"));
        let v =
            Via::parse("SIP  / 2.0  / TCP     spindle.example.com   ;   branch  =   z9hG4bK9ikj8")
                .unwrap();
        assert_eq!(
            (v.transport.as_str(), v.branch()),
            ("TCP", Some("z9hG4bK9ikj8"))
        );
        let v = Via::parse(
            "SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255];branch=z9hG4bKas3-111",
        )
        .unwrap();
        assert_eq!(v.param("received"), Some(Some("[2001:db8::9:255]")));
        let v = Via::parse("SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1;rport").unwrap();
        assert_eq!((v.port, v.param("rport")), (Some(5070), Some(None)));
        assert_eq!(
            v.to_header_value(),
            "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1;rport"
        );
        assert!(Via::parse("SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en").is_ok());
    }

    #[test]
    fn via_refusals() {
        assert_eq!(
            Via::parse("SIP/2.0/UDP 192.0.2.15;;"),
            Err(HeaderError::Via)
        );
        assert_eq!(Via::parse("SIP/2.0/UDP"), Err(HeaderError::Via));
        assert_eq!(Via::parse("SIP/7.0/UDP h").unwrap().version, "7.0");
        assert_eq!(Via::parse("HTTP/1.1/TCP h"), Err(HeaderError::Via));
        assert_eq!(
            Via::parse("SIP/2.0/UDP h;branch=z9hG4bK"),
            Err(HeaderError::BareBranch)
        );
        assert_eq!(Via::parse("SIP/2.0/UDP h;branch="), Err(HeaderError::Via));
    }

    #[test]
    fn name_addrs() {
        let n = NameAddr::parse(
            r#""J Rosenberg \\\""       <sip:jdrosen@example.com> ; tag = 98asjd8"#,
        )
        .unwrap();
        assert_eq!(n.display.as_deref(), Some(r#"J Rosenberg \""#));
        assert_eq!(n.tag(), Some("98asjd8"));
        let n =
            NameAddr::parse("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n").unwrap();
        assert_eq!(
            (n.uri.host.as_str(), n.tag()),
            ("chair-dnrc.example.com", Some("1918181833n"))
        );
        let n = NameAddr::parse(r#""caller"<sip:caller@example.com>;tag=323"#).unwrap();
        assert_eq!(n.display.as_deref(), Some("caller"));
        let n = NameAddr::parse("token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;tag=x")
            .unwrap();
        assert_eq!(n.display.as_deref(), Some("token1~` token2'+_ token3*%!.-"));
        let n = NameAddr::parse("sip:+13035551111@ift.client.example.net;user=phone").unwrap();
        assert_eq!(
            n.param("user"),
            Some(Some("phone")),
            "addr-spec parameters belong to the header"
        );
        assert!(n.uri.params.is_empty());
    }

    #[test]
    fn name_addr_refusals() {
        assert_eq!(
            NameAddr::parse(r#""Mr. J. User <sip:j.user@example.com>"#),
            Err(HeaderError::Unterminated)
        );
        assert_eq!(
            NameAddr::parse("Bell, Alexander <sip:a.g.bell@example.com>;tag=43"),
            Err(HeaderError::DisplayName)
        );
        assert!(NameAddr::parse(r#""Watson, Thomas" < sip:t.watson@example.org >"#).is_err());
        assert_eq!(
            NameAddr::parse("sip:user@example.com?Route=%3Csip:sip.example.com%3E"),
            Err(HeaderError::Address)
        );
        assert_eq!(
            NameAddr::parse(r#""Joe" <sip:joe@example.org>;;;;"#),
            Err(HeaderError::Param)
        );
        assert_eq!(NameAddr::parse("<sip:a@b"), Err(HeaderError::Address));
    }

    #[test]
    fn cseq() {
        assert_eq!(
            CSeq::parse("0009\r\n  INVITE".replace("\r\n", " ").as_str()).unwrap(),
            CSeq {
                number: 9,
                method: Method::Invite
            }
        );
        assert_eq!(CSeq::parse("4294967295 ACK").unwrap().number, u32::MAX);
        assert_eq!(
            CSeq::parse("36893488147419103232 INVITE"),
            Err(HeaderError::CSeqTooLarge)
        );
        assert_eq!(
            CSeq::parse("4294967296 INVITE"),
            Err(HeaderError::CSeqTooLarge)
        );
        assert_eq!(CSeq::parse("-1 INVITE"), Err(HeaderError::CSeq));
        assert_eq!(CSeq::parse("1"), Err(HeaderError::CSeq));
        assert_eq!(CSeq::parse("1 INVITE extra"), Err(HeaderError::CSeq));
    }
}
