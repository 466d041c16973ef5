//! Where the calls callbackd places go, as configured: trunks by name, and the rules that
//! choose a number's trunk by its prefix and its queue. The dialer asks before it takes a
//! callback, the SIP runtime when it places the call, and the API and the board show the
//! answer, so a callback nothing can reach waits in line, marked with the reason, instead of
//! using up its attempts.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use callbacks::{Address, Callback, Media};
use sip::ua::{Credentials, Link};

use crate::config::{CalledNumber, Config, NumberFormat, RouteConfig, Transport, TrunkConfig};
use crate::dns::Targets;

/// The routes in use, shared by the SIP runtime, the dialer and the API: a reload puts new
/// ones in place (see [`Routes::reloaded`]) for the calls placed from then on.
pub type Shared = std::sync::Arc<arc_swap::ArcSwap<Routes>>;

/// A trunk, ready to send to.
#[derive(Debug, Clone)]
pub struct Trunk {
    /// Where its calls go, best first: its address, or what its host name resolves to.
    pub targets: Targets,
    /// Its host name, with its port if given, to look up; `None` for an address.
    name: Option<(String, Option<u16>)>,
    transport: Transport,
    pub link: Link,
    /// The Request-URI host of the numbers it carries.
    domain: String,
    pub credentials: Option<Credentials>,
    pub caller_id: Option<String>,
    /// The domain of the address of record, when callbackd registers with it.
    registers_in: Option<String>,
    numbers: NumberFormat,
    country_code: String,
    national_prefix: String,
    international_prefix: String,
    prefix: String,
    called_number: CalledNumber,
    /// Whether the caller ID is asserted to it, and the Privacy it is sent.
    asserted_identity: bool,
    privacy: Option<String>,
    /// How often its targets are sent OPTIONS; `None`: never.
    pub qualify: Option<std::time::Duration>,
    /// Targets found down by the keep-alives (shared: the API shows them).
    pub down: Health,
    /// Its configuration, for a reload to tell whether it changed.
    configured: TrunkConfig,
}

/// The targets of a trunk its keep-alives found down, and those they found up.
#[derive(Debug, Clone, Default)]
pub struct Health(std::sync::Arc<std::sync::RwLock<BTreeMap<SocketAddr, bool>>>);

impl Health {
    /// Records what a keep-alive found; whether that changes what was known.
    pub fn set(&self, target: SocketAddr, up: bool) -> bool {
        self.0
            .write()
            .map(|mut h| h.insert(target, up) != Some(up))
            .unwrap_or(false)
    }

    /// `Some(true)` up, `Some(false)` down, `None` not checked.
    pub fn of(&self, target: SocketAddr) -> Option<bool> {
        self.0.read().ok().and_then(|h| h.get(&target).copied())
    }

    /// `up`, `down` or `unknown` (not checked), as the API and the metrics say it.
    pub fn state_of(&self, target: SocketAddr) -> &'static str {
        match self.of(target) {
            Some(true) => "up",
            Some(false) => "down",
            None => "unknown",
        }
    }
}

impl Trunk {
    /// Whether it has a target not found down.
    fn may_be_up(&self) -> bool {
        self.targets
            .get()
            .iter()
            .any(|t| self.down.of(*t) != Some(false))
    }

    /// Its targets, those not found down first (in their order), then the others.
    pub fn ordered_targets(&self) -> Vec<SocketAddr> {
        let (mut up, down): (Vec<_>, Vec<_>) = self
            .targets
            .get()
            .into_iter()
            .partition(|t| self.down.of(*t) != Some(false));
        up.extend(down);
        up
    }

    /// Starts looking its host name up, if it is given by name, and keeping its targets
    /// fresh while it is in use.
    fn follow_name(&self, trunk: &str, resolver: &hickory_resolver::TokioResolver) {
        if let Some((host, port)) = self.name.clone() {
            tokio::spawn(crate::dns::follow(
                resolver.clone(),
                trunk.to_owned(),
                host,
                port,
                self.transport,
                self.targets.clone(),
            ));
        }
    }

    fn new(config: &TrunkConfig) -> Trunk {
        let address = config.host.parse::<std::net::IpAddr>().ok();
        let (targets, name) = match address {
            Some(ip) => {
                let at = SocketAddr::new(ip, config.port.unwrap_or(5060));
                (Targets::fixed(vec![at]), None)
            }
            None => (Targets::default(), Some((config.host.clone(), config.port))),
        };
        // The Request-URI's host: the domain, else the host as configured.
        let host = match (address, config.port) {
            (Some(ip), port) => SocketAddr::new(ip, port.unwrap_or(5060)).to_string(),
            (None, Some(port)) => format!("{}:{port}", config.host),
            (None, None) => config.host.clone(),
        };
        Trunk {
            targets,
            name,
            transport: config.transport,
            link: match config.transport {
                Transport::Udp => Link::Udp,
                Transport::Tcp => Link::Tcp,
            },
            domain: config.domain.clone().unwrap_or(host),
            credentials: config.username.clone().map(|username| Credentials {
                username,
                password: config
                    .password
                    .as_ref()
                    .map(|p| p.expose().to_owned())
                    .unwrap_or_default(),
                realm: config.realm.clone(),
            }),
            caller_id: config.caller_id.clone(),
            registers_in: config
                .register
                .then(|| config.domain.clone().unwrap_or_else(|| config.host.clone())),
            numbers: config.numbers,
            country_code: config.country_code.clone(),
            national_prefix: config.national_prefix.clone(),
            international_prefix: config.international_prefix.clone(),
            prefix: config.prefix.clone(),
            called_number: config.called_number,
            asserted_identity: config.asserted_identity,
            privacy: config.privacy.clone(),
            qualify: config.qualify.to_std().ok().filter(|d| !d.is_zero()),
            down: Health::default(),
            configured: config.clone(),
        }
    }

    /// The headers its INVITEs carry for the caller ID `from_user`: P-Asserted-Identity (in
    /// the trunk's domain) and Privacy, as configured.
    pub fn identity_headers(&self, from_user: &str) -> Vec<(sip::message::Name, String)> {
        let mut headers = Vec::new();
        if self.asserted_identity {
            headers.push((
                sip::message::Name::Other("P-Asserted-Identity".into()),
                format!("<sip:{from_user}@{}>", self.domain),
            ));
        }
        if let Some(privacy) = &self.privacy {
            headers.push((sip::message::Name::Other("Privacy".into()), privacy.clone()));
        }
        headers
    }

    /// `e164` (`+12125550100`) as this trunk wants it written.
    pub fn format(&self, e164: &str) -> String {
        let digits = e164.trim_start_matches('+');
        let number = match self.numbers {
            NumberFormat::E164 => format!("+{digits}"),
            NumberFormat::Digits => digits.to_owned(),
            NumberFormat::National => match digits.strip_prefix(self.country_code.as_str()) {
                Some(national) => format!("{}{national}", self.national_prefix),
                None => format!("{}{digits}", self.international_prefix),
            },
        };
        format!("{}{number}", self.prefix)
    }

    /// The Request-URI for `e164`: `#` in a technical prefix is escaped, as a URI's user
    /// part needs.
    fn uri(&self, e164: &str) -> String {
        let user = self.format(e164).replace('#', "%23");
        format!("sip:{user}@{}", self.domain)
    }
}

/// Where one call goes: the Request-URI, and the trunk that carries it (none for phones
/// registered with callbackd and URIs naming an address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub uri: String,
    pub trunk: Option<String>,
    /// Where the call goes instead if this trunk cannot carry it: the route's next trunks,
    /// each with the number written its way.
    pub then: Vec<Target>,
}

impl Target {
    /// A URI called as it is (an agent, a test call).
    pub fn direct(uri: impl Into<String>) -> Target {
        Target {
            uri: uri.into(),
            trunk: None,
            then: Vec::new(),
        }
    }
}

/// What the configuration lets callbackd call.
#[derive(Debug, Clone)]
pub struct Routes {
    trunks: BTreeMap<String, Trunk>,
    /// The rules, most specific first: a queue's before everyone's, then longer prefixes.
    rules: Vec<RouteConfig>,
    /// `sip.realm`: `sip:USER@<realm>` is a phone registered with callbackd.
    realm: String,
}

impl Routes {
    pub fn new(config: &Config) -> Routes {
        let mut rules = config.routes();
        rules.sort_by_key(|r| (r.queue.is_none(), std::cmp::Reverse(r.prefix.len())));
        Routes {
            trunks: config
                .trunks()
                .iter()
                .map(|(name, t)| (name.clone(), Trunk::new(t)))
                .collect(),
            rules,
            realm: config.sip.realm.clone(),
        }
    }

    /// Starts looking up the trunks given by host name, and keeping their targets fresh.
    pub fn follow_names(&self, resolver: &hickory_resolver::TokioResolver) {
        for (trunk, t) in &self.trunks {
            t.follow_name(trunk, resolver);
        }
    }

    /// The routes of `config`, to use in place of these. A trunk configured as before is
    /// kept as it is: its targets, what its keep-alives found, and its look-ups go on. A new
    /// or changed one starts afresh (and is looked up, if given by name); the look-ups of
    /// one removed or changed stop at their next turn.
    pub fn reloaded(&self, config: &Config, resolver: &hickory_resolver::TokioResolver) -> Routes {
        let mut routes = Routes::new(config);
        for (name, trunk) in routes.trunks.iter_mut() {
            match self.trunks.get(name) {
                Some(old) if old.configured == trunk.configured => *trunk = old.clone(),
                _ => trunk.follow_name(name, resolver),
            }
        }
        routes
    }

    /// Whether any trunk is configured.
    pub fn has_trunk(&self) -> bool {
        !self.trunks.is_empty()
    }

    pub fn trunk(&self, name: &str) -> Option<&Trunk> {
        self.trunks.get(name)
    }

    pub fn trunks(&self) -> impl Iterator<Item = (&String, &Trunk)> {
        self.trunks.iter()
    }

    /// What the API and the board show of each trunk: its targets and what the keep-alives
    /// found of them (`up`, `down`, or `unknown` when none are sent or none has come back).
    /// How many targets of each trunk are in each state (`up`, `down`, `unknown`), for the
    /// metrics.
    pub fn target_states(&self) -> std::collections::BTreeMap<(String, &'static str), usize> {
        let mut states = std::collections::BTreeMap::new();
        for (name, t) in &self.trunks {
            for state in ["up", "down", "unknown"] {
                states.insert((name.clone(), state), 0);
            }
            for at in t.targets.get() {
                *states
                    .entry((name.clone(), t.down.state_of(at)))
                    .or_default() += 1;
            }
        }
        states
    }

    pub fn status(&self) -> serde_json::Value {
        let trunks: Vec<serde_json::Value> = self
            .trunks
            .iter()
            .map(|(name, t)| {
                let targets: Vec<serde_json::Value> = t
                    .targets
                    .get()
                    .into_iter()
                    .map(|at| {
                        serde_json::json!({"address": at.to_string(), "state": t.down.state_of(at)})
                    })
                    .collect();
                serde_json::json!({
                    "name": name,
                    "domain": t.domain,
                    "qualify_seconds": t.qualify.map(|q| q.as_secs()),
                    "targets": targets,
                })
            })
            .collect();
        serde_json::json!(trunks)
    }

    /// The number a call from `source` was dialled to, from the header its trunk uses (the
    /// Request-URI's user for calls from anyone else), else the Request-URI's.
    pub fn dialled(&self, source: std::net::IpAddr, dialled: &sip::ua::Dialled) -> String {
        let from_trunk = self
            .trunks
            .values()
            .find(|t| t.targets.get().iter().any(|a| a.ip() == source))
            .map_or(CalledNumber::RequestUri, |t| t.called_number);
        let named = match from_trunk {
            CalledNumber::RequestUri => None,
            CalledNumber::To => dialled.to.as_ref(),
            CalledNumber::PCalledPartyId => dialled.p_called_party_id.as_ref(),
            CalledNumber::Diversion => dialled.diversion.as_ref(),
        };
        named.unwrap_or(&dialled.request_uri).clone()
    }

    /// The trunks callbackd registers with, each at its first target now, the keep-alives'
    /// down targets last (none yet for a name not resolved).
    pub fn registrations(&self) -> Vec<sip::ua::TrunkRegistration> {
        self.trunks
            .iter()
            .filter_map(|(name, t)| {
                let domain = t.registers_in.clone()?;
                let credentials = t.credentials.clone()?;
                Some(sip::ua::TrunkRegistration {
                    trunk: name.clone(),
                    registrar: t.ordered_targets().first().copied(),
                    link: t.link,
                    domain,
                    user: credentials.username.clone(),
                    credentials: Some(credentials),
                    expires: 3600,
                })
            })
            .collect()
    }

    /// The trunks a number of `queue` goes through, in the order to try them: the most
    /// specific rule's, those that may be up first (a trunk whose every target the
    /// keep-alives found down, or whose name resolves to nothing, goes last).
    fn trunks_for(&self, e164: &str, queue: Option<&str>) -> Vec<(&str, &Trunk)> {
        let Some(rule) = self.rules.iter().find(|r| {
            e164.starts_with(&r.prefix) && r.queue.as_deref().map_or(true, |q| Some(q) == queue)
        }) else {
            return Vec::new();
        };
        let (mut up, down): (Vec<_>, Vec<_>) = rule
            .trunks
            .iter()
            .filter_map(|name| self.trunks.get(name).map(|t| (name.as_str(), t)))
            .partition(|(_, t)| t.may_be_up());
        up.extend(down);
        up
    }

    /// The trunk URIs naming a host go through: the first of the default route (prefix ``).
    pub fn default_trunk(&self, queue: Option<&str>) -> Option<&str> {
        self.trunks_for("", queue).first().map(|(name, _)| *name)
    }

    /// Where a call to `address` for `queue` goes, or why none can be placed.
    pub fn target(&self, address: &Address, queue: Option<&str>) -> Result<Target, &'static str> {
        match address {
            Address::Phone(number) => {
                let mut targets =
                    self.trunks_for(number.e164(), queue)
                        .into_iter()
                        .map(|(name, trunk)| Target {
                            uri: trunk.uri(number.e164()),
                            trunk: Some(name.to_owned()),
                            then: Vec::new(),
                        });
                let mut first = targets.next().ok_or(
                    "numbers are called through a trunk, and none is configured for this one",
                )?;
                first.then = targets.collect();
                Ok(first)
            }
            Address::Sip(uri) => {
                let host = uri.host().trim_start_matches('[').trim_end_matches(']');
                if host.parse::<std::net::IpAddr>().is_ok()
                    || host.eq_ignore_ascii_case(&self.realm)
                {
                    return Ok(Target::direct(uri.as_str()));
                }
                let name = self
                    .default_trunk(queue)
                    .ok_or("the URI names a host, not an address, and no trunk carries it")?;
                Ok(Target {
                    uri: uri.as_str().to_owned(),
                    trunk: Some(name.to_owned()),
                    then: Vec::new(),
                })
            }
        }
    }

    /// Why the dialer cannot place `cb` as configured, for a callback it would dial: open,
    /// and called rather than texted.
    pub fn unroutable(&self, cb: &Callback) -> Option<&'static str> {
        if !cb.state.is_open() || cb.media == Media::Sms {
            return None;
        }
        self.target(&cb.address, Some(&cb.queue)).err()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trunk(numbers: NumberFormat, prefix: &str) -> Trunk {
        let config: TrunkConfig = toml::from_str(&format!(
            "host = \"127.0.0.1\"\ncountry_code = \"44\"\nnational_prefix = \"0\"\nprefix = \"{prefix}\"\nnumbers = \"{}\"",
            match numbers {
                NumberFormat::E164 => "e164",
                NumberFormat::Digits => "digits",
                NumberFormat::National => "national",
            }
        ))
        .unwrap();
        Trunk::new(&config)
    }

    #[test]
    fn numbers_are_written_as_each_trunk_wants() {
        assert_eq!(
            trunk(NumberFormat::E164, "").format("+442071234567"),
            "+442071234567"
        );
        assert_eq!(
            trunk(NumberFormat::Digits, "").format("+442071234567"),
            "442071234567"
        );
        let national = trunk(NumberFormat::National, "");
        assert_eq!(national.format("+442071234567"), "02071234567");
        assert_eq!(national.format("+12125550100"), "0012125550100");
        assert_eq!(
            trunk(NumberFormat::Digits, "1234#").format("+12125550100"),
            "1234#12125550100"
        );
    }
}
