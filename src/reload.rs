//! Reloading the configuration while callbackd runs: SIGHUP, or `POST /api/v1/reload`.
//!
//! The configuration file (with the environment's settings over it), the prompts, the
//! dialplan and the chat bots are all read and checked first; if anything is wrong, nothing
//! changes and the problem is told with its file (and line, for TOML files). Otherwise the
//! settings new calls, callbacks and chats use are put in place at once: the prompts and the
//! dialplan, `sip.entries` and what else new calls use, the phones, the trunks and routes,
//! the queues and the dialing policy, and the bots. Calls, attempts and conversations in
//! progress keep what they started with. Any other setting changed in the file is named as
//! needing a restart, and keeps its old value until then: those are the addresses callbackd
//! binds and advertises, the store, the API, the media ports and threads, the dialer's and the
//! limits' settings, logging and retention.

use std::collections::BTreeMap;
use std::sync::Arc;

use callbacks::Callbacks;
use serde::Serialize;
use store::Store;

use crate::config::{Config, Environment, Source};

/// The settings a reload applies, by the start of their key; a change to any other needs a
/// restart.
const RELOADABLE: [&str; 19] = [
    "ivr.dialplan",
    "media.prompts",
    "chat.bots",
    "sip.entries",
    "sip.default_entry",
    "sip.caller_id",
    "sip.ring_time",
    "sip.early_media",
    "sip.max_call_duration",
    "sip.phones",
    "sip.outbound_proxy",
    "sip.trunk_username",
    "sip.trunk_password",
    "sip.trunk_password_file",
    "sip.trunk_domain",
    "trunks",
    "routes",
    "queues",
    "dialing",
];

/// What a reload did.
#[derive(Debug, Serialize)]
pub struct Reloaded {
    /// What was put in place, in a few words each.
    pub applied: Vec<String>,
    /// Settings changed in the file that only a restart puts in place.
    pub needs_restart: Vec<String>,
}

/// Everything a reload replaces, and where the configuration comes from.
pub struct Reloader {
    source: Source,
    environment: Environment,
    resolver: hickory_resolver::TokioResolver,
    sip: crate::signalling::Sip,
    callbacks: Arc<Callbacks<Store>>,
    routes: crate::routing::Shared,
    chats: Arc<crate::chat::Chats>,
    /// The file's settings in effect (key → value), to tell what changed. Held for the whole
    /// of a reload, so two never interleave.
    last: tokio::sync::Mutex<BTreeMap<String, String>>,
}

impl Reloader {
    /// The configuration in place now is `text` (what `source` held at start-up).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        source: Source,
        environment: Environment,
        text: &str,
        resolver: hickory_resolver::TokioResolver,
        sip: crate::signalling::Sip,
        callbacks: Arc<Callbacks<Store>>,
        routes: crate::routing::Shared,
        chats: Arc<crate::chat::Chats>,
    ) -> Reloader {
        Reloader {
            source,
            environment,
            resolver,
            sip,
            callbacks,
            routes,
            chats,
            last: tokio::sync::Mutex::new(settings(text)),
        }
    }

    /// Reads, checks and puts in place the configuration; on any problem nothing changes
    /// and the problem is returned. Logged either way.
    pub async fn reload(&self) -> Result<Reloaded, String> {
        let result = self.try_reload().await;
        match &result {
            Ok(reloaded) => tracing::info!(
                applied = ?reloaded.applied,
                needs_restart = ?reloaded.needs_restart,
                "configuration reloaded; new calls, callbacks and chats use it"
            ),
            Err(problem) => {
                tracing::warn!(problem, "configuration not reloaded; the old one stays")
            }
        }
        result
    }

    async fn try_reload(&self) -> Result<Reloaded, String> {
        let mut last = self.last.lock().await;
        let text = self.source.read().map_err(|e| e.to_string())?;
        let config =
            Config::load_text(&self.source, &text, &self.environment).map_err(|e| e.to_string())?;
        let voice = crate::signalling::Voice::load(&config).map_err(|e| format!("{e:#}"))?;
        let bots =
            crate::chat::load(&config.chat.bots, &config.queues).map_err(|e| format!("{e:#}"))?;

        let now = settings(&text);
        let mut needs_restart: Vec<String> = changed(&last, &now)
            .filter(|key| !reloadable(key))
            .collect();
        let routes = self.routes.load().reloaded(&config, &self.resolver);
        if registrations(&routes) != registrations(&self.routes.load()) {
            needs_restart.push("the trunks callbackd registers with".to_owned());
        }
        let mut applied = vec![format!(
            "{} and {}: {}",
            config.media.prompts.display(),
            config.ivr.dialplan.display(),
            voice.summary()
        )];
        needs_restart.extend(self.sip.reload(voice, config.sip.clone()).await?);
        applied.push(format!("{} trunks", routes.trunks().count()));
        self.routes.store(Arc::new(routes));
        let policy = config.policy();
        applied.push(format!(
            "{} queues and the dialing policy",
            policy.queues.len()
        ));
        self.callbacks.set_policy(policy);
        applied.push(format!("{} chat intents", bots.intents.len()));
        self.chats.set_bots(bots);
        // What is in effect now: the reloadable settings as reloaded, the others as they
        // were at start-up, so a change waiting for a restart is named at every reload.
        last.retain(|key, _| !reloadable(key));
        last.extend(now.into_iter().filter(|(key, _)| reloadable(key)));
        Ok(Reloaded {
            applied,
            needs_restart,
        })
    }
}

/// Whether a reload puts the setting `key` in place.
fn reloadable(key: &str) -> bool {
    RELOADABLE
        .iter()
        .any(|start| key == *start || key.starts_with(&format!("{start}.")))
}

/// The trunks registered with, as a reload compares them (wherever their names resolve).
fn registrations(routes: &crate::routing::Routes) -> Vec<sip::ua::TrunkRegistration> {
    let mut registrations = routes.registrations();
    for registration in &mut registrations {
        registration.registrar = None;
    }
    registrations
}

/// A configuration file's settings, each value (a table's, down to the last level) by its
/// dotted key; nothing for a file that does not parse (the reload refuses it anyway).
fn settings(text: &str) -> BTreeMap<String, String> {
    fn flatten(prefix: &str, table: &toml::Table, into: &mut BTreeMap<String, String>) {
        for (key, value) in table {
            let key = match prefix {
                "" => key.clone(),
                _ => format!("{prefix}.{key}"),
            };
            match value {
                toml::Value::Table(inner) => flatten(&key, inner, into),
                other => {
                    into.insert(key, other.to_string());
                }
            }
        }
    }
    let mut settings = BTreeMap::new();
    if let Ok(table) = text.parse::<toml::Table>() {
        flatten("", &table, &mut settings);
    }
    settings
}

/// The keys set differently (or only) in one of `old` and `new`.
fn changed<'a>(
    old: &'a BTreeMap<String, String>,
    new: &'a BTreeMap<String, String>,
) -> impl Iterator<Item = String> + 'a {
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter(|key| old.get(*key) != new.get(*key))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_settings_are_told_apart_by_whether_a_reload_applies_them() {
        let old = settings(
            "[sip]\nudp = [\"127.0.0.1:5060\"]\ndefault_entry = \"a\"\n[sip.entries]\n\"5000\" = \"a\"\n\
             [queues.support]\nmax_attempts = 3\n[store]\nurl = \"sqlite://x.db\"\n",
        );
        let new = settings(
            "[sip]\nudp = [\"127.0.0.1:5070\"]\ndefault_entry = \"a\"\n[sip.entries]\n\"5000\" = \"b\"\n\
             [queues.support]\nmax_attempts = 4\n[store]\nurl = \"sqlite://x.db\"\n[trunks.carrier]\nhost = \"192.0.2.1\"\n",
        );
        let all: Vec<String> = changed(&old, &new).collect();
        assert_eq!(
            all,
            [
                "queues.support.max_attempts",
                "sip.entries.5000",
                "sip.udp",
                "trunks.carrier.host"
            ]
        );
        let restart: Vec<&String> = all.iter().filter(|k| !reloadable(k)).collect();
        assert_eq!(restart, ["sip.udp"]);
        assert!(!reloadable("sip.entries_file"), "a key is matched whole");
    }
}
