//! `callbackd serve`: the HTTP API and the lifecycle clock, until SIGINT or SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use callbacks::Callbacks;
use chrono::Utc;
use store::Store;
use tokio::net::TcpListener;

use crate::api::{self, AppState};
use crate::config::{Config, Secret, Source};
use rand::{rngs::StdRng, SeedableRng};

/// How often scheduled callbacks are checked for falling due or expiring.
const LIFECYCLE_TICK: Duration = Duration::from_secs(1);

/// Where the generated API token is kept in the store.
const TOKEN_SETTING: &str = "api_token";

/// The API token: the configured one, else the one generated at first start and kept in the
/// store (printed when it is made); none only with `--no-auth`.
async fn api_token(
    config: &Config,
    store: &Store,
    no_auth: bool,
) -> anyhow::Result<Option<Secret>> {
    if let Some(token) = &config.api.token {
        return Ok(Some(token.clone()));
    }
    if no_auth {
        tracing::warn!(
            "--no-auth: anyone who reaches {} can use the API",
            config.api.listen
        );
        return Ok(None);
    }
    let mut random = [0u8; 24];
    rand::RngCore::fill_bytes(&mut StdRng::from_entropy(), &mut random);
    let fresh: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let kept = store
        .setting_or(TOKEN_SETTING, &fresh)
        .await
        .context("keeping the API token in the store")?;
    if kept == fresh {
        println!("callbackd: API token (generated now, kept in the store; `callbackd token` prints it again): {kept}");
    }
    Ok(Some(Secret::from(kept)))
}

/// `callbackd token`: the API token generated at first start.
pub async fn print_token(config: &Config) -> anyhow::Result<()> {
    if config.api.token.is_some() {
        println!("api.token is set in the configuration; that is the token");
        return Ok(());
    }
    let url = config.store.url.expose();
    let store = Store::open(url)
        .await
        .with_context(|| format!("opening the store at {}", store::redact(url)))?;
    let token = store.setting(TOKEN_SETTING).await?;
    store.close().await;
    match token {
        Some(token) => println!("{token}"),
        None => anyhow::bail!("no token yet: `callbackd serve` makes one at its first start"),
    }
    Ok(())
}

pub async fn run(config: Config, source: &Source, no_auth: bool) -> anyhow::Result<()> {
    let metrics = match config.api.metrics {
        true => Some(crate::metrics::Metrics::install()?),
        false => None,
    };
    let url = config.store.url.expose();
    let store = Store::open(url)
        .await
        .with_context(|| format!("opening the store at {}", store::redact(url)))?;
    tracing::info!(config = %source, store = store.backend(), url = %store::redact(url), "store ready");
    let token = api_token(&config, &store, no_auth).await?;
    let callbacks = Arc::new(Callbacks::new(store, config.policy()));
    let listener = TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("binding the HTTP API to {}", config.api.listen))?;
    let address = listener.local_addr()?;

    let hints = crate::hints::Hints::default();
    let operations = Arc::new(crate::ivr::Operations {
        callbacks: callbacks.clone(),
        max_failures_per_call: config.ivr.max_failures_per_call,
        limiter: crate::limits::Limiter::new(callbacks.store.clone(), config.limits.clone()),
        wrap_up: config.dialer.wrap_up,
        notifier: crate::notifier::Notifier::from_config(&config.notifier),
        hints: hints.clone(),
    });
    let bots = crate::chat::load(&config.chat.bots, &config.queues)?;
    tracing::info!(bots = %config.chat.bots.display(), intents = bots.intents.len(), "chat bots loaded");
    let chats = Arc::new(crate::chat::Chats::new(
        bots,
        operations.clone(),
        &config.chat,
    ));
    let budget = crate::listeners::budget(config.sip.max_calls, config.api.max_connections);
    tracing::info!(
        open_files = budget.files,
        sip_tcp = budget.sip_tcp,
        http = budget.http,
        "connections allowed, by the limit on open files"
    );
    // One set of trunks for all who route: the targets of those given by name are looked up
    // in the background and shared.
    let resolver = crate::dns::resolver(&config.dns)?;
    let routes = crate::routing::Routes::new(&config);
    routes.follow_names(&resolver);
    let routes: crate::routing::Shared = Arc::new(arc_swap::ArcSwap::from_pointee(routes));
    let records = crate::records::Recorder::start(callbacks.store.clone(), config.log.call_records);
    let sip = crate::signalling::start(
        &config,
        budget.sip_tcp,
        routes.clone(),
        operations.clone(),
        hints.clone(),
        records.clone(),
    )
    .await?;
    for address in &sip.udp {
        println!("callbackd: SIP on udp://{address}");
    }
    for address in &sip.tcp {
        println!("callbackd: SIP on tcp://{address}");
    }
    tracing::info!(udp = ?sip.udp, tcp = ?sip.tcp, "SIP listening");
    // Tests and scripts read these lines to find the ports when the config asks for port 0;
    // the HTTP line comes last, when everything is up.
    println!("callbackd: HTTP API on http://{address}");
    tracing::info!(%address, "HTTP API listening");

    if config.dialer.enabled && !routes.load().has_trunk() {
        tracing::warn!(
            "the dialer is on, but no trunk is configured ([trunks], or sip.outbound_proxy): callbacks \
             to numbers stay queued, marked unroutable, until one is; phones registered with \
             callbackd and SIP URIs naming an address can be called (see docs/networks.md)"
        );
    }
    let dialer = config.dialer.enabled.then(|| {
        crate::dialer::Dialer::new(
            callbacks.clone(),
            sip.sip.clone(),
            config.dialer.clone(),
            &config.sip,
            routes.clone(),
            hints.clone(),
        )
    });
    let mut tasks = vec![tokio::spawn(hints.clone().listen(callbacks.store.clone()))];
    if let Some(dialer) = &dialer {
        tasks.push(tokio::spawn(dialer.clone().run()));
        tasks.push(tokio::spawn(crate::dialer::follow_registrations(
            dialer.clone(),
            sip.registrations,
        )));
    }
    // Look-ups and bookings count within the limits' windows; older ones count for nothing
    // and are forgotten.
    let kept = operations.limiter.kept();
    let lifecycle = tokio::spawn(lifecycle(
        callbacks.clone(),
        kept,
        config.retention.clone(),
        config.chat.session_idle,
    ));
    let reloader = Arc::new(crate::reload::Reloader::new(
        source.clone(),
        std::env::vars().collect(),
        &source.read()?,
        resolver,
        sip.sip.clone(),
        callbacks.clone(),
        routes.clone(),
        chats.clone(),
    ));
    let reloads = tokio::spawn(reload_on_hangup(reloader.clone()));
    let (draining, stopped) = (Arc::default(), Arc::default());
    let drained = drain(
        sip.sip.clone(),
        dialer.clone(),
        config.sip.drain_timeout.to_std().unwrap_or_default(),
        Arc::clone(&draining),
        Arc::clone(&stopped),
    );
    let state = Arc::new(AppState {
        callbacks: callbacks.clone(),
        token,
        sip: sip.sip.clone(),
        dialer,
        hints,
        wrap_up: config.dialer.wrap_up,
        chats,
        routes,
        draining,
        stopped,
        metrics,
        board: api::board::feed(),
        reloader,
    });
    tasks.push(tokio::spawn(api::board::run(state.clone())));
    let guard = Arc::new(crate::http::Guard {
        hosts: config.api.hosts.clone(),
        trusted_proxies: config.api.trusted_proxies.clone(),
        chat_origins: config.chat.allowed_origins.clone(),
    });
    let connections = crate::listeners::Connections::new(
        budget.http,
        config.api.max_connections_per_address,
        config.api.trusted_proxies.clone(),
    );
    crate::systemd::notify("READY=1\nSTATUS=serving");
    crate::http::serve(listener, api::router(state, guard), connections, drained).await;
    lifecycle.abort();
    for task in tasks {
        task.abort();
    }
    reloads.abort();
    // The records of the last calls, written before the store closes.
    let _ = tokio::time::timeout(Duration::from_secs(5), records.flush()).await;
    callbacks.store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Moves scheduled callbacks into the queue when their time comes and expires stale ones;
/// once a minute, forgets security events older than `kept`, what is past its retention, and
/// chat conversations idle for `chat_idle`.
async fn lifecycle(
    callbacks: Arc<Callbacks<Store>>,
    kept: chrono::Duration,
    retention: crate::config::RetentionConfig,
    chat_idle: chrono::Duration,
) {
    let mut tick = tokio::time::interval(LIFECYCLE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for round in 0u64.. {
        tick.tick().await;
        if round % 60 == 0 {
            let (store, now) = (&callbacks.store, Utc::now());
            for (what, purged) in [
                (
                    "security events",
                    store.prune_security_events(now - kept).await,
                ),
                (
                    "call records",
                    store.purge_calls(now - retention.calls).await,
                ),
                (
                    "closed callbacks",
                    store.purge_closed(now - retention.closed_callbacks).await,
                ),
                (
                    "idle chat conversations",
                    store.purge_conversations(now - chat_idle).await,
                ),
            ] {
                match purged {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(forgotten = n, what, "past their retention"),
                    Err(e) => {
                        tracing::warn!(error = %e, what, "cannot forget what is past its retention")
                    }
                }
            }
        }
        match callbacks.advance(Utc::now(), 500).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(changed = n, "lifecycle steps taken"),
            Err(e) => tracing::warn!(error = %e, "lifecycle step failed; retrying"),
        }
    }
}

/// SIGHUP reloads the configuration (see `crate::reload`).
async fn reload_on_hangup(reloader: Arc<crate::reload::Reloader>) {
    let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        return;
    };
    while hangup.recv().await.is_some() {
        // The outcome is logged either way.
        let _ = reloader.reload().await;
    }
}

/// The first SIGTERM or SIGINT drains the node: new calls and OPTIONS get 503 (a proxy or
/// dispatcher sends them elsewhere), the dialer claims nothing more, and the calls in progress
/// and the attempts under way may finish for up to `timeout`; then those left are hung up.
/// A second signal stops at once. Returns, with `stopped` set, when the node may stop.
async fn drain(
    sip: crate::signalling::Sip,
    dialer: Option<Arc<crate::dialer::Dialer>>,
    timeout: Duration,
    draining: Arc<std::sync::atomic::AtomicBool>,
    stopped: Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::signal::unix::{signal, Signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
    async fn next(term: &mut Signal, int: &mut Signal) {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    next(&mut term, &mut int).await;
    draining.store(true, std::sync::atomic::Ordering::Relaxed);
    crate::systemd::notify("STOPPING=1\nSTATUS=draining: calls in progress may finish");
    tracing::info!(
        drain_timeout = ?timeout,
        "draining: new calls and OPTIONS get 503, the dialer claims nothing more, calls in \
         progress may finish; a second signal stops at once"
    );
    sip.drain().await;
    if let Some(dialer) = &dialer {
        dialer.stop_claiming();
    }
    tokio::select! {
        _ = quiet(&sip, dialer.as_deref()) => tracing::info!("drained: no call is left"),
        _ = tokio::time::sleep(timeout) => {
            tracing::warn!("drain_timeout passed: hanging up the calls left");
            sip.hang_up_all().await;
            // Their BYEs answered (or not) and the attempts settled, within a few seconds.
            let _ = tokio::time::timeout(HANG_UP_GRACE, quiet(&sip, dialer.as_deref())).await;
        }
        _ = next(&mut term, &mut int) => tracing::warn!("a second signal: stopping now, with the calls left"),
    }
    stopped.store(true, std::sync::atomic::Ordering::Relaxed);
    tracing::info!("shutting down");
}

/// How long the calls hung up at the end of a drain have to finish.
const HANG_UP_GRACE: Duration = Duration::from_secs(5);

/// Returns once the node has no call and its dialer no attempt under way.
async fn quiet(sip: &crate::signalling::Sip, dialer: Option<&crate::dialer::Dialer>) {
    loop {
        let calls = sip.gauges().await.map_or(0, |g| g.calls);
        let attempts = dialer.map_or(0, |d| d.gauges().1);
        if calls == 0 && attempts == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
