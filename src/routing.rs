//! Where the calls callbackd places can go, as configured: the dialer asks before it takes a
//! callback, and the API and the board show the answer, so a callback nothing can reach waits
//! in line, marked with the reason, instead of using up its attempts.

use callbacks::{Address, Callback, Media};

use crate::config::SipConfig;

/// What the configuration lets callbackd call.
#[derive(Debug, Clone)]
pub struct Routes {
    /// Numbers go out as `sip:+E164@<trunk_host>`: the trunk's domain, else its address.
    trunk_host: Option<String>,
    /// Whether `sip.outbound_proxy` carries SIP URIs whose host is a name.
    proxy: bool,
    /// `sip.realm`: `sip:USER@<realm>` is a phone registered with callbackd.
    realm: String,
}

impl Routes {
    pub fn new(sip: &SipConfig) -> Routes {
        Routes {
            trunk_host: sip
                .trunk_domain
                .clone()
                .or_else(|| sip.outbound_proxy.map(|a| a.to_string())),
            proxy: sip.outbound_proxy.is_some(),
            realm: sip.realm.clone(),
        }
    }

    /// Whether anything at all can be dialed beyond SIP URIs naming an address.
    pub fn has_trunk(&self) -> bool {
        self.proxy
    }

    /// The SIP URI `address` is called at, or why no call can be placed to it.
    pub fn uri(&self, address: &Address) -> Result<String, &'static str> {
        match address {
            Address::Phone(number) => match &self.trunk_host {
                Some(host) => Ok(format!("sip:{}@{host}", number.e164())),
                None => {
                    Err("numbers are called through a trunk, and sip.outbound_proxy is not set")
                }
            },
            Address::Sip(uri) => {
                let host = uri.host().trim_start_matches('[').trim_end_matches(']');
                let reachable = self.proxy
                    || host.parse::<std::net::IpAddr>().is_ok()
                    || host.eq_ignore_ascii_case(&self.realm);
                if reachable {
                    Ok(uri.as_str().to_owned())
                } else {
                    Err("the URI names a host, not an address, and sip.outbound_proxy is not set")
                }
            }
        }
    }

    /// Why the dialer cannot place `cb` as configured, for a callback it would dial: open,
    /// and called rather than texted.
    pub fn unroutable(&self, cb: &Callback) -> Option<&'static str> {
        if !cb.state.is_open() || cb.media == Media::Sms {
            return None;
        }
        self.uri(&cb.address).err()
    }
}
