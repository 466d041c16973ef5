//! Prometheus metrics, served at `/metrics` in the Prometheus text format.
//!
//! What happens is counted where it happens, through the `metrics` facade: calls ended, keys,
//! IVR operations, dial attempts, store operations, HTTP requests, RTP totals of each leg and
//! the pacing threads' lateness. What is kept elsewhere is read when Prometheus asks: the user
//! agent's message counters (plain integers in the signalling loop, so a message costs one
//! increment), calls, transactions and ports held, trunk targets, chat sessions, and, at most
//! every [`STORE_EVERY`], callbacks by queue and state and agents by state from the store, so
//! a scrape every second costs the store no more than one every ten.
//!
//! With `api.metrics = false` nothing is recorded: the facade's calls do nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use metrics::{counter, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::api::{ApiError, AppState};

/// How often callbacks and agents are counted in the store at most.
const STORE_EVERY: Duration = Duration::from_secs(10);

/// How often the recorder's histograms are folded, so samples do not pile up between scrapes
/// (or without any).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Every metric, its kind and what it counts (the `# HELP` line).
const METRICS: &[(&str, Kind, &str)] = &[
    (
        "callbackd_sip_requests_total",
        Kind::Counter,
        "SIP requests received and sent, by method (other: any method callbackd does not know)",
    ),
    (
        "callbackd_sip_responses_total",
        Kind::Counter,
        "SIP responses received and sent, by status class",
    ),
    (
        "callbackd_sip_invalid_messages_total",
        Kind::Counter,
        "Datagrams and TCP messages that did not parse as SIP",
    ),
    (
        "callbackd_sip_retransmissions_total",
        Kind::Counter,
        "Retransmissions: sent, ours on a timer; received, requests that came again",
    ),
    (
        "callbackd_sip_refusals_total",
        Kind::Counter,
        "Requests refused before anything was kept for them, by reason",
    ),
    (
        "callbackd_sip_transactions",
        Kind::Gauge,
        "SIP server transactions held",
    ),
    (
        "callbackd_sip_transaction_bytes",
        Kind::Gauge,
        "Bytes of the requests behind the server transactions held",
    ),
    (
        "callbackd_calls_active",
        Kind::Gauge,
        "Calls being set up, in progress or ending",
    ),
    (
        "callbackd_bridges_active",
        Kind::Gauge,
        "Agent and customer calls being connected to each other",
    ),
    ("callbackd_rtp_ports", Kind::Gauge, "RTP ports held"),
    (
        "callbackd_calls_total",
        Kind::Counter,
        "Calls ended, by direction and how they ended",
    ),
    (
        "callbackd_rtp_packets_total",
        Kind::Counter,
        "RTP packets of ended legs, sent and received",
    ),
    (
        "callbackd_rtp_packets_dropped_total",
        Kind::Counter,
        "RTP packets of ended legs dropped unheard, by reason",
    ),
    (
        "callbackd_rtp_packets_lost_total",
        Kind::Counter,
        "RTP packets of ended legs missing from the far end's sequence",
    ),
    (
        "callbackd_rtp_late_skips_total",
        Kind::Counter,
        "RTP packets a pacing thread skipped because they were more than 8 ms late",
    ),
    (
        "callbackd_rtp_pacing_lateness_seconds",
        Kind::Histogram,
        "How late a pacing thread woke for its millisecond slot",
    ),
    (
        "callbackd_keys_total",
        Kind::Counter,
        "DTMF keys heard, by how they came",
    ),
    (
        "callbackd_ivr_operations_total",
        Kind::Counter,
        "IVR operations run by calls, by operation and result",
    ),
    (
        "callbackd_ivr_flows_total",
        Kind::Counter,
        "Calls through the dialplan ended: whether one of their changes succeeded",
    ),
    (
        "callbackd_callbacks",
        Kind::Gauge,
        "Callbacks by queue and state (read from the store every 10 s at most)",
    ),
    (
        "callbackd_agents",
        Kind::Gauge,
        "Agents by state (read from the store every 10 s at most)",
    ),
    (
        "callbackd_dialer_attempts_total",
        Kind::Counter,
        "Dial attempts this node recorded, by outcome",
    ),
    (
        "callbackd_dialer_lease_takeovers_total",
        Kind::Counter,
        "Leases this node took over from a node that stopped renewing them",
    ),
    (
        "callbackd_trunk_targets",
        Kind::Gauge,
        "Trunk targets by what their keep-alives found (up, down, unknown)",
    ),
    (
        "callbackd_store_operation_seconds",
        Kind::Histogram,
        "Store operations' latency, by operation",
    ),
    (
        "callbackd_store_errors_total",
        Kind::Counter,
        "Store operations that failed, by operation",
    ),
    (
        "callbackd_store_connections",
        Kind::Gauge,
        "Store connections open, and idle",
    ),
    (
        "callbackd_http_requests_total",
        Kind::Counter,
        "HTTP requests answered, by method, route and status",
    ),
    (
        "callbackd_call_records_dropped_total",
        Kind::Counter,
        "Call records not stored: the store failed three times, or 20,000 were waiting",
    ),
    (
        "callbackd_chat_sessions",
        Kind::Gauge,
        "Chat conversations open",
    ),
    (
        "callbackd_chat_sessions_started_total",
        Kind::Counter,
        "Chat conversations started",
    ),
    (
        "callbackd_draining",
        Kind::Gauge,
        "1 while the node drains before it stops",
    ),
    (
        "callbackd_build_info",
        Kind::Gauge,
        "Always 1; the version is a label",
    ),
    ("process_open_fds", Kind::Gauge, "Open file descriptors"),
    (
        "process_max_fds",
        Kind::Gauge,
        "The most file descriptors the process may open (RLIMIT_NOFILE)",
    ),
    (
        "process_resident_memory_bytes",
        Kind::Gauge,
        "Resident memory",
    ),
];

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// The recorder's handle, and when the store was last counted.
pub struct Metrics {
    handle: PrometheusHandle,
    store_read: tokio::sync::Mutex<Option<Instant>>,
}

impl Metrics {
    /// Installs the process's recorder. Call once, inside the runtime.
    pub fn install() -> anyhow::Result<Metrics> {
        const LATENCY: &[f64] = &[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        ];
        const LATENESS: &[f64] = &[
            0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032,
        ];
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("callbackd_store_operation_seconds".into()),
                LATENCY,
            )?
            .set_buckets_for_metric(
                Matcher::Full("callbackd_rtp_pacing_lateness_seconds".into()),
                LATENESS,
            )?
            .install_recorder()?;
        for &(name, kind, help) in METRICS {
            match kind {
                Kind::Counter => metrics::describe_counter!(name, help),
                Kind::Gauge => metrics::describe_gauge!(name, help),
                Kind::Histogram => metrics::describe_histogram!(name, help),
            }
        }
        gauge!("callbackd_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        zeroes();
        let upkeep = handle.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(UPKEEP_EVERY);
            loop {
                every.tick().await;
                upkeep.run_upkeep();
            }
        });
        Ok(Metrics {
            handle,
            store_read: tokio::sync::Mutex::new(None),
        })
    }
}

/// Counters of events that may not have happened yet, served at zero from the start: a
/// `rate()` or `increase()` over a series that appears only with its first event misses it.
fn zeroes() {
    for direction in ["inbound", "outbound"] {
        for outcome in sip::ua::EndReason::NAMES {
            counter!("callbackd_calls_total", "direction" => direction, "outcome" => outcome)
                .absolute(0);
        }
    }
    for outcome in callbacks::AttemptOutcome::ALL {
        counter!("callbackd_dialer_attempts_total", "outcome" => outcome.as_str()).absolute(0);
    }
    for source in media::leg::KeySource::ALL {
        counter!("callbackd_keys_total", "source" => source.as_str()).absolute(0);
    }
    for outcome in ["changed", "unchanged"] {
        counter!("callbackd_ivr_flows_total", "outcome" => outcome).absolute(0);
    }
    for direction in ["sent", "received"] {
        counter!("callbackd_rtp_packets_total", "direction" => direction).absolute(0);
    }
    for name in [
        "callbackd_rtp_packets_lost_total",
        "callbackd_dialer_lease_takeovers_total",
        "callbackd_chat_sessions_started_total",
        "callbackd_call_records_dropped_total",
    ] {
        counter!(name).absolute(0);
    }
}

/// `GET /metrics`.
pub async fn scrape(State(state): State<Arc<AppState>>) -> Response {
    let Some(metrics) = &state.metrics else {
        return ApiError::not_found("metrics are off (api.metrics = false)").into_response();
    };
    if let Ok(sip) = state.sip.gauges().await {
        let stats = &sip.stats;
        for (direction, messages) in [("received", &stats.received), ("sent", &stats.sent)] {
            for (kind, name, n) in messages.labelled() {
                match kind {
                    "request" => counter!("callbackd_sip_requests_total", "direction" => direction, "method" => name).absolute(n),
                    _ => counter!("callbackd_sip_responses_total", "direction" => direction, "class" => name).absolute(n),
                }
            }
        }
        counter!("callbackd_sip_invalid_messages_total").absolute(stats.invalid);
        counter!("callbackd_sip_retransmissions_total", "direction" => "sent")
            .absolute(stats.retransmitted);
        counter!("callbackd_sip_retransmissions_total", "direction" => "received")
            .absolute(stats.repeats);
        for (refusal, n) in stats.refused() {
            counter!("callbackd_sip_refusals_total", "reason" => refusal.as_str()).absolute(n);
        }
        gauge!("callbackd_sip_transactions").set(sip.transactions as f64);
        gauge!("callbackd_sip_transaction_bytes").set(sip.transaction_bytes as f64);
        gauge!("callbackd_calls_active").set(sip.calls as f64);
        gauge!("callbackd_bridges_active").set(sip.bridges as f64);
        gauge!("callbackd_rtp_ports").set(sip.rtp_ports as f64);
    }
    for ((trunk, state), n) in state.routes.load().target_states() {
        gauge!("callbackd_trunk_targets", "trunk" => trunk, "state" => state).set(n as f64);
    }
    let draining = state.draining.load(std::sync::atomic::Ordering::Relaxed);
    gauge!("callbackd_draining").set(f64::from(u8::from(draining)));
    let (open, idle) = state.callbacks.store.connections();
    gauge!("callbackd_store_connections", "state" => "open").set(f64::from(open));
    gauge!("callbackd_store_connections", "state" => "idle").set(idle as f64);
    process_gauges();
    {
        let mut read = metrics.store_read.lock().await;
        if read.map_or(true, |at| at.elapsed() >= STORE_EVERY) {
            *read = Some(Instant::now());
            store_gauges(&state).await;
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.handle.render(),
    )
        .into_response()
}

/// Callbacks by queue and state, agents by state. A store that does not answer leaves the
/// last values (and counts a store error).
async fn store_gauges(state: &AppState) {
    use callbacks::CallbackStore;
    let store = &state.callbacks.store;
    for queue in state.callbacks.policy().queues.keys() {
        let Ok(counts) = store.counts(queue).await else {
            return;
        };
        for callback_state in callbacks::State::ALL {
            let n = counts
                .iter()
                .find(|(s, _)| *s == callback_state)
                .map_or(0, |(_, n)| *n);
            gauge!("callbackd_callbacks", "queue" => queue.clone(), "state" => callback_state.as_str())
                .set(n as f64);
        }
    }
    if let Ok(open) = state.chats.open().await {
        gauge!("callbackd_chat_sessions").set(open as f64);
    }
    if let Ok(agents) = store.agents().await {
        let mut by_state = std::collections::BTreeMap::new();
        for agent in &agents {
            *by_state.entry(agent.state.as_str()).or_insert(0u32) += 1;
        }
        for agent_state in callbacks::AgentState::ALL {
            let n = by_state.get(agent_state.as_str()).copied().unwrap_or(0);
            gauge!("callbackd_agents", "state" => agent_state.as_str()).set(f64::from(n));
        }
    }
}

/// Open file descriptors, their limit and resident memory.
fn process_gauges() {
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    gauge!("process_open_fds").set(fds as f64);
    if let Some((soft, _)) = crate::listeners::files_limit() {
        gauge!("process_max_fds").set(soft as f64);
    }
    // statm: sizes in pages; the second is the resident set.
    let resident = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok());
    if let Some(pages) = resident {
        // SAFETY: sysconf only reads a system setting.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as f64;
        gauge!("process_resident_memory_bytes").set(pages * page);
    }
}
