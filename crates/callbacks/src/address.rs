//! Where a callback goes: its media, its address, and the dialing policy every number passes.

use std::fmt;
use std::str::FromStr;

use phonenumber::country::Id as Region;
use serde::{Deserialize, Deserializer, Serialize};

/// How the customer is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Media {
    /// A phone call to an E.164 number through the trunk.
    Voice,
    /// A SIP call straight to a SIP URI.
    Sip,
    /// A text message to an E.164 number.
    Sms,
}

impl Media {
    pub fn as_str(self) -> &'static str {
        match self {
            Media::Voice => "voice",
            Media::Sip => "sip",
            Media::Sms => "sms",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Media::Voice, Media::Sip, Media::Sms]
            .into_iter()
            .find(|m| m.as_str() == text)
    }

    /// Whether this media is reached at a phone number (as opposed to a SIP URI).
    pub fn uses_phone_number(self) -> bool {
        !matches!(self, Media::Sip)
    }
}

/// A phone number in E.164 form (`+12125550100`) that passed the dialing policy when it was set.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PhoneNumber {
    e164: String,
}

impl PhoneNumber {
    pub fn e164(&self) -> &str {
        &self.e164
    }

    /// The number's country (an ISO 3166 code such as `US` or `JM`), where the metadata knows it.
    pub fn region(&self) -> Option<String> {
        let number = phonenumber::parse(None, &self.e164).ok()?;
        number.country().id().map(|r| r.as_ref().to_owned())
    }

    /// The number with all but the country code and the first three digits hidden, for logs.
    pub fn masked(&self) -> String {
        mask(&self.e164)
    }

    /// The last `n` digits, for caller verification.
    pub fn last_digits(&self, n: usize) -> &str {
        &self.e164[self.e164.len().saturating_sub(n)..]
    }
}

/// A phone number (or caller ID) fit for logs: the first five characters (the country and
/// area), the rest hidden, so the last digits, which verify a caller, never show.
pub fn mask(number: &str) -> String {
    number
        .chars()
        .enumerate()
        .map(|(i, c)| if i < 5 { c } else { '*' })
        .collect()
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({})", self.masked())
    }
}

/// A `sip:` or `sips:` URI with a user part and a host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SipUri(String);

impl SipUri {
    /// `sip:user@host[:port]` or `sips:…`; parameters and headers are refused, so nothing
    /// beyond the user and the host can steer the call.
    pub fn parse(text: &str) -> Result<Self, AddressError> {
        let rest = text
            .strip_prefix("sip:")
            .or_else(|| text.strip_prefix("sips:"))
            .ok_or(AddressError::NotSipUri)?;
        let (user, hostport) = rest.split_once('@').ok_or(AddressError::NotSipUri)?;
        let user_ok = !user.is_empty() && user.bytes().all(is_user_byte);
        if user_ok && Self::split_host(hostport).is_some() {
            Ok(Self(text.to_owned()))
        } else {
            Err(AddressError::NotSipUri)
        }
    }

    /// Host (with IPv6 brackets) and optional port of `host[:port]`.
    fn split_host(hostport: &str) -> Option<(&str, Option<u16>)> {
        let (host, port) = if hostport.starts_with('[') {
            let end = hostport.find(']')?;
            let (host, rest) = hostport.split_at(end + 1);
            let inner = &host[1..host.len() - 1];
            if inner.is_empty()
                || !inner
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
            {
                return None;
            }
            (host, rest)
        } else {
            let end = hostport.find(':').unwrap_or(hostport.len());
            let (host, rest) = hostport.split_at(end);
            if host.is_empty()
                || !host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            {
                return None;
            }
            (host, rest)
        };
        let port = match port.strip_prefix(':') {
            None if port.is_empty() => None,
            Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
                Some(digits.parse().ok()?)
            }
            _ => return None,
        };
        Some((host, port))
    }

    pub fn user(&self) -> &str {
        let rest = self.0.split_once(':').map_or("", |(_, r)| r);
        rest.split_once('@').map_or("", |(u, _)| u)
    }

    /// The user part with its `%XX` escapes decoded, as the far end reads it; refused when an
    /// escape is broken or decodes to a character a plain user part may not have.
    pub fn decoded_user(&self) -> Result<String, AddressError> {
        let raw = self.user().as_bytes();
        let mut decoded = Vec::with_capacity(raw.len());
        let mut i = 0;
        while i < raw.len() {
            if raw[i] == b'%' {
                let hex = raw.get(i + 1..i + 3).ok_or(AddressError::NotSipUri)?;
                let hex = std::str::from_utf8(hex).map_err(|_| AddressError::NotSipUri)?;
                decoded.push(u8::from_str_radix(hex, 16).map_err(|_| AddressError::NotSipUri)?);
                i += 3;
            } else {
                decoded.push(raw[i]);
                i += 1;
            }
        }
        if decoded.iter().all(|&b| is_user_byte(b) && b != b'%') {
            Ok(String::from_utf8(decoded).expect("ASCII"))
        } else {
            Err(AddressError::NotSipUri)
        }
    }

    pub fn host(&self) -> &str {
        let hostport = self.0.split_once('@').map_or("", |(_, h)| h);
        Self::split_host(hostport).map_or("", |(h, _)| h)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The characters a SIP URI's user part may have here: letters, digits, the unreserved marks,
/// `%` escapes and the few user-unreserved characters a number or a name needs.
fn is_user_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.!~*'()%+&$,".contains(&b)
}

/// The callback's address: a number for voice and text messages, a SIP URI for SIP calls.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    Phone(PhoneNumber),
    Sip(SipUri),
}

impl Address {
    /// Parses `text` as the address for `media`, checking numbers against `policy`.
    pub fn parse(media: Media, text: &str, policy: &DialingPolicy) -> Result<Self, AddressError> {
        if media.uses_phone_number() {
            policy.check(text).map(Address::Phone)
        } else {
            policy.check_sip(text.trim()).map(Address::Sip)
        }
    }

    /// An address read back from the store, where it was checked when it was set: only its
    /// shape is verified, so a later change of dialing policy does not make it unreadable.
    pub fn stored(media: Media, text: &str) -> Result<Self, AddressError> {
        if !media.uses_phone_number() {
            return SipUri::parse(text).map(Address::Sip);
        }
        let digits = text.strip_prefix('+').ok_or(AddressError::WrongKind {
            media: media.as_str(),
            wanted: "an E.164 number",
        })?;
        if !(2..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AddressError::InvalidNumber);
        }
        Ok(Address::Phone(PhoneNumber {
            e164: text.to_owned(),
        }))
    }

    pub fn as_str(&self) -> &str {
        match self {
            Address::Phone(n) => n.e164(),
            Address::Sip(u) => u.as_str(),
        }
    }

    /// The country of a phone number; `None` for SIP URIs and unknown countries.
    pub fn region(&self) -> Option<String> {
        match self {
            Address::Phone(n) => n.region(),
            Address::Sip(_) => None,
        }
    }

    /// The customer's time zone as the address tells it: the number's country where that has
    /// a single zone, else `fallback`.
    pub fn time_zone(&self, fallback: chrono_tz::Tz) -> chrono_tz::Tz {
        self.region()
            .as_deref()
            .and_then(crate::timezone::for_region)
            .unwrap_or(fallback)
    }

    pub fn fits(&self, media: Media) -> bool {
        matches!(self, Address::Phone(_)) == media.uses_phone_number()
    }

    /// The address with phone digits hidden, for logs.
    pub fn masked(&self) -> String {
        match self {
            Address::Phone(n) => n.masked(),
            Address::Sip(u) => u.as_str().to_owned(),
        }
    }
}

impl Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Why an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("`{0}` is not allowed in a phone number: give digits only, with a leading + and the country code")]
    ForbiddenCharacter(char),
    #[error("this is not a phone number: {0}")]
    Unparseable(String),
    #[error("this number does not exist in its country's numbering plan")]
    InvalidNumber,
    #[error("numbers in {0} may not be called")]
    RegionNotAllowed(String),
    #[error("{0} numbers may not be called")]
    TypeNotAllowed(NumberType),
    #[error("numbers starting {0} may not be called")]
    PrefixBlocked(String),
    #[error("numbers must start with one of the allowed prefixes")]
    PrefixNotAllowed,
    #[error(
        "a SIP address must look like sip:user@host or sip:user@host:port, without parameters"
    )]
    NotSipUri,
    #[error("SIP callbacks to {0} are not allowed (dialing.sip_domains)")]
    SipDomainNotAllowed(String),
    #[error("a {media} callback needs {wanted}")]
    WrongKind {
        media: &'static str,
        wanted: &'static str,
    },
}

/// The kinds of number libphonenumber's metadata tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NumberType {
    FixedLine,
    Mobile,
    FixedLineOrMobile,
    TollFree,
    PremiumRate,
    SharedCost,
    PersonalNumber,
    Voip,
    Pager,
    Uan,
    Emergency,
    Voicemail,
    ShortCode,
    StandardRate,
    Carrier,
    NoInternational,
    Unknown,
}

impl From<phonenumber::Type> for NumberType {
    fn from(t: phonenumber::Type) -> Self {
        use phonenumber::Type as T;
        match t {
            T::FixedLine => Self::FixedLine,
            T::Mobile => Self::Mobile,
            T::FixedLineOrMobile => Self::FixedLineOrMobile,
            T::TollFree => Self::TollFree,
            T::PremiumRate => Self::PremiumRate,
            T::SharedCost => Self::SharedCost,
            T::PersonalNumber => Self::PersonalNumber,
            T::Voip => Self::Voip,
            T::Pager => Self::Pager,
            T::Uan => Self::Uan,
            T::Emergency => Self::Emergency,
            T::Voicemail => Self::Voicemail,
            T::ShortCode => Self::ShortCode,
            T::StandardRate => Self::StandardRate,
            T::Carrier => Self::Carrier,
            T::NoInternational => Self::NoInternational,
            T::Unknown => Self::Unknown,
        }
    }
}

impl fmt::Display for NumberType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_value(self).expect("unit variant");
        f.write_str(text.as_str().unwrap_or_default().replace('_', "-").as_str())
    }
}

/// Which numbers callbackd may call: checked whenever a number is set and again before a dial.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DialingPolicy {
    /// The deployment's own country: numbers written without `+` are read as national numbers
    /// of this country.
    #[serde(deserialize_with = "region")]
    pub home_region: Region,
    /// Countries (ISO 3166 codes, not calling codes: +1 also covers Caribbean countries) whose
    /// numbers may be called. Defaults to the home region alone.
    #[serde(default, deserialize_with = "regions")]
    pub allowed_regions: Vec<Region>,
    /// Kinds of number that may be called; premium-rate, shared-cost, personal and other
    /// special numbers are left out by default.
    #[serde(default = "default_allowed_types")]
    pub allowed_types: Vec<NumberType>,
    /// When not empty, an E.164 number must start with one of these (e.g. `+1212`).
    #[serde(default)]
    pub allowed_prefixes: Vec<String>,
    /// E.164 prefixes that are never called, whatever else allows them.
    #[serde(default)]
    pub blocked_prefixes: Vec<String>,
    /// Hosts that SIP callbacks may go to (a PBX, a trunk); none by default, so `sip` media is
    /// refused until some are configured.
    #[serde(default)]
    pub sip_domains: Vec<String>,
    /// The realm of callbackd's registrar, when agents' phones may register: SIP callbacks
    /// may go to its users (`sip:1002@callbackd`). They are reached where they registered,
    /// never through a trunk, so a user part of digits is an extension, not a number.
    #[serde(skip)]
    pub phones_domain: Option<String>,
}

fn default_allowed_types() -> Vec<NumberType> {
    use NumberType::*;
    vec![FixedLine, Mobile, FixedLineOrMobile, TollFree, Voip]
}

fn parse_region(text: &str) -> Result<Region, String> {
    Region::from_str(text)
        .map_err(|_| format!("`{text}` is not an ISO 3166 country code such as US or GB"))
}

fn region<'de, D: Deserializer<'de>>(d: D) -> Result<Region, D::Error> {
    parse_region(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn regions<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Region>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|t| parse_region(t).map_err(serde::de::Error::custom))
        .collect()
}

impl DialingPolicy {
    /// A policy allowing the usual kinds of number in one country.
    pub fn home(region: &str) -> Result<Self, String> {
        Ok(Self {
            home_region: parse_region(region)?,
            allowed_regions: Vec::new(),
            allowed_types: default_allowed_types(),
            allowed_prefixes: Vec::new(),
            blocked_prefixes: Vec::new(),
            sip_domains: Vec::new(),
            phones_domain: None,
        })
    }

    /// Checks a SIP URI: a phone registered with callbackd may be called; otherwise its host
    /// must be an allowed SIP domain, and a user part a PBX or a trunk could dial as a number
    /// (once percent-decoded, digits without letters: `+1900…`, `%2B1900…`, `011…`, `1900…`)
    /// must pass the same checks as any number.
    pub fn check_sip(&self, text: &str) -> Result<SipUri, AddressError> {
        let uri = SipUri::parse(text)?;
        let host = uri.host();
        if self
            .phones_domain
            .as_ref()
            .is_some_and(|d| d.eq_ignore_ascii_case(host))
        {
            return Ok(uri);
        }
        if !self
            .sip_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(host))
        {
            return Err(AddressError::SipDomainNotAllowed(host.to_owned()));
        }
        let user = uri.decoded_user()?;
        if user.bytes().any(|b| b.is_ascii_digit())
            && !user.bytes().any(|b| b.is_ascii_alphabetic())
        {
            self.check(&user)?;
        }
        Ok(uri)
    }

    /// The first configuration problem, if any: prefixes must be E.164 (`+` and digits).
    pub fn problem(&self) -> Option<String> {
        self.allowed_prefixes
            .iter()
            .chain(&self.blocked_prefixes)
            .find(|p| {
                p.strip_prefix('+')
                    .is_none_or(|d| d.is_empty() || !d.bytes().all(|b| b.is_ascii_digit()))
            })
            .map(|p| format!("prefix `{p}` must be `+` followed by digits, e.g. \"+1900\""))
    }

    /// Parses, normalises and checks a number.
    pub fn check(&self, text: &str) -> Result<PhoneNumber, AddressError> {
        let text = text.trim();
        // Visual grouping is fine; anything a dialer could read as a command is not.
        if let Some(c) = text
            .chars()
            .enumerate()
            .find(|&(i, c)| !(c.is_ascii_digit() || " -().".contains(c) || (c == '+' && i == 0)))
            .map(|(_, c)| c)
        {
            return Err(AddressError::ForbiddenCharacter(c));
        }
        if !text.chars().any(|c| c.is_ascii_digit()) {
            return Err(AddressError::Unparseable("it has no digits".into()));
        }
        let number = phonenumber::parse(Some(self.home_region), text)
            .map_err(|e| AddressError::Unparseable(e.to_string()))?;
        if number.extension().is_some() {
            return Err(AddressError::ForbiddenCharacter('x'));
        }
        if !phonenumber::is_valid(&number) {
            return Err(AddressError::InvalidNumber);
        }
        let region = number.country().id();
        let allowed_regions: &[Region] = if self.allowed_regions.is_empty() {
            std::slice::from_ref(&self.home_region)
        } else {
            &self.allowed_regions
        };
        if !region.is_some_and(|r| allowed_regions.contains(&r)) {
            let name = region.map_or("an unknown country".to_owned(), |r| r.as_ref().to_owned());
            return Err(AddressError::RegionNotAllowed(name));
        }
        let kind = NumberType::from(number.number_type(&phonenumber::metadata::DATABASE));
        if !self.allowed_types.contains(&kind) {
            return Err(AddressError::TypeNotAllowed(kind));
        }
        let e164 = number.format().mode(phonenumber::Mode::E164).to_string();
        if let Some(p) = self
            .blocked_prefixes
            .iter()
            .find(|p| e164.starts_with(p.as_str()))
        {
            return Err(AddressError::PrefixBlocked(p.clone()));
        }
        if !self.allowed_prefixes.is_empty()
            && !self
                .allowed_prefixes
                .iter()
                .any(|p| e164.starts_with(p.as_str()))
        {
            return Err(AddressError::PrefixNotAllowed);
        }
        Ok(PhoneNumber { e164 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us() -> DialingPolicy {
        DialingPolicy::home("US").unwrap()
    }

    #[test]
    fn normalises_to_e164() {
        for text in [
            "+1 212 555 0100",
            "(212) 555-0100",
            "2125550100",
            "+12125550100",
        ] {
            assert_eq!(us().check(text).unwrap().e164(), "+12125550100", "{text}");
        }
        assert_eq!(
            us().check("+12125550100").unwrap().region().as_deref(),
            Some("US")
        );
    }

    #[test]
    fn refuses_anything_that_is_not_a_plain_number() {
        for (text, c) in [
            ("+1212555010a", 'a'),
            ("2125550100*1", '*'),
            ("2125550100#", '#'),
            ("212555&0100", '&'),
            ("2125550100;ext=1", ';'),
            ("2125550100@evil", '@'),
            ("2125550100,,1", ','),
            ("212+5550100", '+'),
            ("2125550100w1", 'w'),
        ] {
            assert_eq!(
                us().check(text),
                Err(AddressError::ForbiddenCharacter(c)),
                "{text}"
            );
        }
        assert!(matches!(us().check(""), Err(AddressError::Unparseable(_))));
        assert!(matches!(
            us().check("+1 () -"),
            Err(AddressError::Unparseable(_))
        ));
    }

    #[test]
    fn blocks_premium_rate_by_default() {
        assert_eq!(
            us().check("+1 900 555 0100"),
            Err(AddressError::TypeNotAllowed(NumberType::PremiumRate))
        );
        assert!(us().check("+1 800 555 0100").is_ok(), "toll free is fine");
    }

    #[test]
    fn nanp_caribbean_is_not_home() {
        // +1 876 is Jamaica: same country calling code, an international call.
        assert_eq!(
            us().check("+1 876 555 0100"),
            Err(AddressError::RegionNotAllowed("JM".into()))
        );
        assert!(us().check("+44 20 7946 0958").is_err());
        let mut both = us();
        both.allowed_regions = vec![Region::US, Region::GB];
        assert_eq!(
            both.check("+44 20 7946 0958").unwrap().e164(),
            "+442079460958"
        );
    }

    #[test]
    fn invalid_numbers_are_refused() {
        assert_eq!(us().check("+1 212 555"), Err(AddressError::InvalidNumber));
    }

    #[test]
    fn prefixes() {
        let mut p = us();
        p.blocked_prefixes = vec!["+1212".into()];
        assert_eq!(
            p.check("+12125550100"),
            Err(AddressError::PrefixBlocked("+1212".into()))
        );
        let mut p = us();
        p.allowed_prefixes = vec!["+1646".into()];
        assert_eq!(p.check("+12125550100"), Err(AddressError::PrefixNotAllowed));
        assert!(p.check("+16465550100").is_ok());
    }

    #[test]
    fn sip_uris() {
        let uri = SipUri::parse("sip:alice@pbx.example.com").unwrap();
        assert_eq!((uri.user(), uri.host()), ("alice", "pbx.example.com"));
        let uri = SipUri::parse("sips:1000@[::1]:5061").unwrap();
        assert_eq!((uri.user(), uri.host()), ("1000", "[::1]"));
        for bad in [
            "alice@pbx",
            "sip:alice",
            "sip:@host",
            "sip:a b@host",
            "sip:a@ho st",
            "tel:+1212",
            "sip:a@host;maddr=evil.example",
            "sip:a@host?Route=x",
            "sip:a;x=y@host",
            "sip:a@host:",
            "sip:a@host:99999",
            "sip:a@[zz]",
            "sip:a@[::1",
        ] {
            assert_eq!(SipUri::parse(bad), Err(AddressError::NotSipUri), "{bad}");
        }
    }

    #[test]
    fn sip_callbacks_only_to_allowed_domains_and_numbers() {
        let mut p = us();
        assert_eq!(
            p.check_sip("sip:ada@pbx.example.com"),
            Err(AddressError::SipDomainNotAllowed("pbx.example.com".into()))
        );
        p.sip_domains = vec!["PBX.example.com".into()];
        assert!(p.check_sip("sip:ada@pbx.example.com").is_ok());
        assert!(p.check_sip("sip:+12125550100@pbx.example.com").is_ok());
        assert_eq!(
            p.check_sip("sip:+19005550100@pbx.example.com"),
            Err(AddressError::TypeNotAllowed(NumberType::PremiumRate))
        );
    }

    #[test]
    fn phones_registered_with_callbackd_may_be_called_by_extension() {
        let mut p = us();
        assert_eq!(
            p.check_sip("sip:1002@callbackd"),
            Err(AddressError::SipDomainNotAllowed("callbackd".into())),
            "without phones there is nothing to call there"
        );
        p.phones_domain = Some("callbackd".into());
        assert!(p.check_sip("sip:1002@callbackd").is_ok());
        assert!(p.check_sip("sip:ada@CALLBACKD").is_ok());
        assert_eq!(
            p.check_sip("sip:1002@pbx.example.com"),
            Err(AddressError::SipDomainNotAllowed("pbx.example.com".into())),
            "other hosts still need dialing.sip_domains"
        );
    }

    // Regression: only a user part starting with `+` was checked, so a premium number written
    // any other way a PBX or trunk dials it went through (issue 17, finding 13).
    #[test]
    fn sip_users_that_dial_as_numbers_are_checked_however_written() {
        let mut p = us();
        p.sip_domains = vec!["pbx.example.com".into()];
        for user in [
            "%2B19005550100",
            "%2b19005550100",
            "19005550100",
            "9005550100",
            "011%2B19005550100",
            "%31%39%30%30%35%35%35%30%31%30%30",
            "*6719005550100",
            "1900-555-0100",
            "1001",
        ] {
            assert!(
                p.check_sip(&format!("sip:{user}@pbx.example.com")).is_err(),
                "{user} must be checked as a number"
            );
        }
        for bad in ["%3Bmaddr=x", "%40evil", "%2", "%zz", "%00"] {
            assert_eq!(
                p.check_sip(&format!("sip:a{bad}@pbx.example.com")),
                Err(AddressError::NotSipUri),
                "{bad}"
            );
        }
        for fine in ["ada", "c17", "%2B12125550100", "1-212-555-0100", "agent.7"] {
            assert!(
                p.check_sip(&format!("sip:{fine}@pbx.example.com")).is_ok(),
                "{fine}"
            );
        }
    }

    #[test]
    fn prefixes_must_be_e164() {
        let mut p = us();
        assert_eq!(p.problem(), None);
        p.blocked_prefixes = vec!["1900".into()];
        assert!(p.problem().unwrap().contains("`1900`"));
    }

    #[test]
    fn address_follows_media() {
        let a = Address::parse(Media::Sms, "+12125550100", &us()).unwrap();
        assert!(a.fits(Media::Voice) && a.fits(Media::Sms) && !a.fits(Media::Sip));
        assert!(Address::parse(Media::Sip, "+12125550100", &us()).is_err());
        assert_eq!(a.masked(), "+1212*******");
        assert_eq!(format!("{:?}", a), "Phone(PhoneNumber(+1212*******))");
    }
}
