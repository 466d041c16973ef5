//! The HTTP API (`/api/v1`, JSON) and `/healthz`.

pub mod board;
mod error;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use callbacks::{
    Actor, Agent, AgentError, AgentState, CallbackStore, Callbacks, Channel, ConfirmationId,
    Filter, Modification, NewAgent, NewCallback, Source, StoreError,
};
use chrono::Utc;
use rand::{rngs::StdRng, SeedableRng};
use serde::Deserialize;
use serde_json::{json, Value};
use store::Store;

pub use error::ApiError;

use crate::config::Secret;
use crate::signalling::{self, PlaceError, Sip};

/// The OpenAPI description of this API, kept in the repository.
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");
/// The customers' chat widget, and the operators' board: plain HTML, script and style, no
/// build; scripts and styles are files of their own, so the pages need no inline code (see the
/// Content-Security-Policy in `http`).
const CHAT_PAGE: &str = include_str!("../../web/chat.html");
const CHAT_SCRIPT: &str = include_str!("../../web/chat.js");
const CHAT_STYLE: &str = include_str!("../../web/chat.css");
const BOARD_PAGE: &str = include_str!("../../web/board.html");
const BOARD_SCRIPT: &str = include_str!("../../web/board.js");
const BOARD_STYLE: &str = include_str!("../../web/board.css");

pub struct AppState {
    pub callbacks: Arc<Callbacks<Store>>,
    pub token: Option<Secret>,
    pub sip: Sip,
    /// This node's dialer, for its gauges; `None` when this node does not dial.
    pub dialer: Option<Arc<crate::dialer::Dialer>>,
    /// Told when an agent turns ready or a callback changes.
    pub hints: crate::hints::Hints,
    /// `dialer.wrap_up`, part of every call's handle time.
    pub wrap_up: chrono::Duration,
    pub chats: Arc<crate::chat::Chats>,
    /// Where calls can go: a callback nothing can reach is marked with the reason.
    pub routes: crate::routing::Shared,
    /// Set when the node drains (SIGTERM): `/readyz` says so.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    /// Reloads the configuration (`POST /api/v1/reload`, and SIGHUP).
    pub reloader: Arc<crate::reload::Reloader>,
    /// What the board shows, computed once for every board open on this node.
    pub board: board::Feed,
    /// Set when the drain is over and the node stops: event streams end, so open boards do
    /// not hold the stop.
    pub stopped: Arc<std::sync::atomic::AtomicBool>,
    /// The Prometheus recorder; `None` with `api.metrics = false`.
    pub metrics: Option<crate::metrics::Metrics>,
}

impl AppState {
    /// A callback as the API shows it: with `unroutable`, the reason the dialer cannot
    /// place it as configured, when it would be dialed otherwise.
    fn callback_json(&self, callback: &callbacks::Callback) -> Value {
        let mut body = serde_json::to_value(callback).expect("callbacks serialize");
        if let Some(reason) = self.routes.load().unroutable(callback) {
            body["unroutable"] = reason.into();
        }
        body
    }

    fn wake_dialer(&self) {
        self.hints.wake();
    }
}

type AppResult<T> = Result<T, ApiError>;

pub fn router(state: Arc<AppState>, guard: Arc<crate::http::Guard>) -> Router {
    let chat_origins: Vec<HeaderValue> = guard
        .chat_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    let chat = Router::new()
        .route("/chat/sessions", post(start_chat))
        .route("/chat/sessions/{id}/messages", post(chat_message))
        .layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(chat_origins)
                .allow_methods([axum::http::Method::POST])
                .allow_headers([header::CONTENT_TYPE]),
        );
    let api = Router::new()
        .route("/callbacks", post(create).get(list))
        .route("/callbacks/{confirmation_id}", get(show))
        .route("/callbacks/{confirmation_id}/modifications", post(modify))
        .route("/agents", post(create_agent).get(agents))
        .route("/agents/{id}", get(agent))
        .route("/agents/{id}/state", put(set_agent_state))
        .route("/status", get(status))
        .route("/calls", get(calls))
        .route("/queues", get(queues))
        .route("/trunks", get(trunks))
        .route("/queues/{name}", get(queue))
        .route("/test-calls", post(test_call))
        .route("/reload", post(reload))
        .route(
            "/sip/trace",
            get(trace_status).put(set_trace).delete(stop_trace),
        )
        .route("/events", get(board::events))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize))
        // The chat is for customers: no API token.
        .merge(chat)
        .route("/openapi.json", get(openapi));
    let asset = |kind: &'static str, text: &'static str| {
        get(move || async move { ([(header::CONTENT_TYPE, kind)], text) })
    };
    let (js, css) = ("text/javascript; charset=utf-8", "text/css; charset=utf-8");
    // Prometheus sends the API's token as its bearer token (`authorization` in its scrape
    // configuration).
    let metrics = Router::new()
        .route("/metrics", get(crate::metrics::scrape))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .nest("/api/v1", api)
        .merge(metrics)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        // The pages; the board's data needs the token, and the board asks for it.
        .route("/chat", get(|| async { Html(CHAT_PAGE) }))
        .route("/chat.js", asset(js, CHAT_SCRIPT))
        .route("/chat.css", asset(css, CHAT_STYLE))
        .route("/board", get(|| async { Html(BOARD_PAGE) }))
        .route("/board.js", asset(js, BOARD_SCRIPT))
        .route("/board.css", asset(css, BOARD_STYLE))
        .fallback(|| async { ApiError::not_found("no such endpoint; see /api/v1/openapi.json") })
        .with_state(state)
        .layer(axum::extract::DefaultBodyLimit::max(crate::http::MAX_BODY))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            crate::http::BODY_TIMEOUT,
        ))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            crate::http::REQUEST_TIMEOUT,
        ))
        .layer(middleware::from_fn(crate::http::access))
        .layer(middleware::from_fn_with_state(guard, crate::http::check))
}

async fn authorize(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        // The scheme name is case-insensitive (RFC 9110 section 11.1).
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim().to_owned())
            // An EventSource cannot send headers: `?access_token=` (RFC 6750 section 2.3), on
            // the event stream only, where there is no other way.
            .or_else(|| {
                let uri = request
                    .extensions()
                    .get::<axum::extract::OriginalUri>()
                    .map_or(request.uri(), |original| &original.0);
                (uri.path() == "/api/v1/events")
                    .then(|| Query::<BTreeMap<String, String>>::try_from_uri(uri).ok())
                    .flatten()
                    .and_then(|Query(mut q)| q.remove("access_token"))
            });
        if !presented.is_some_and(|p| token.matches(&p)) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(request).await
}

fn rng() -> StdRng {
    StdRng::from_entropy()
}

fn api_actor() -> Actor {
    Actor::new(Channel::Api, "api")
}

fn confirmation_id(text: &str) -> AppResult<ConfirmationId> {
    ConfirmationId::parse(text)
        .map_err(|e| ApiError::bad_request("invalid_confirmation_id", format!("`{text}`: {e}")))
}

/// `ETag`/`If-Match` carry the callback's version, for optimistic concurrency.
fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("digits are a valid header")
}

/// The version named by `If-Match`; `*` (any version) is the same as no condition.
fn if_match(headers: &HeaderMap) -> AppResult<Option<i64>> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    if value.as_bytes().trim_ascii() == b"*" {
        return Ok(None);
    }
    value
        .to_str()
        .ok()
        .map(|v| v.trim().trim_start_matches("W/").trim_matches('"'))
        .and_then(|v| v.parse().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(
                "bad_if_match",
                "If-Match must be the callback's ETag, e.g. \"3\"",
            )
        })
}

async fn create(
    State(state): State<Arc<AppState>>,
    body: Result<Json<NewCallback>, JsonRejection>,
) -> AppResult<Response> {
    let Json(new) = body?;
    let callback = state
        .callbacks
        .create(&mut rng(), Utc::now(), &api_actor(), Source::Api, new)
        .await?;
    tracing::info!(callback = %callback.confirmation_id, channel = "api", queue = %callback.queue, address = %callback.address.masked(), "callback created");
    state.wake_dialer();
    let tag = etag(callback.version);
    Ok((StatusCode::CREATED, [(header::ETAG, tag)], Json(callback)).into_response())
}

async fn show(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> AppResult<Response> {
    let Path(id) = path?;
    let id = confirmation_id(&id)?;
    let (callback, history) = state
        .callbacks
        .show(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no callback has confirmation ID {id}")))?;
    let tag = etag(callback.version);
    let attempts = state.callbacks.store.attempts(callback.id).await?;
    let estimate = match state.callbacks.policy().queues.get(&callback.queue) {
        Some(queue) => {
            crate::queues::of_callback(
                &state.callbacks.store,
                queue,
                &callback,
                state.wrap_up,
                Utc::now(),
            )
            .await?
        }
        None => None,
    };
    let mut body = state.callback_json(&callback);
    body["history"] = serde_json::to_value(history).expect("events serialize");
    body["dial_attempts"] = serde_json::to_value(attempts).expect("attempts serialize");
    body["line"] = serde_json::to_value(estimate).expect("estimates serialize");
    Ok(([(header::ETAG, tag)], Json(body)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    queue: Option<String>,
    skill: Option<String>,
    limit: Option<u32>,
}

async fn list(
    State(state): State<Arc<AppState>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> AppResult<Json<Value>> {
    let Query(q) = query?;
    // An empty parameter (`?state=`) is the same as none; control characters are never a
    // queue or skill name.
    let given = |v: Option<String>| -> AppResult<Option<String>> {
        match v.filter(|v| !v.is_empty()) {
            Some(v) if v.chars().any(char::is_control) => Err(ApiError::bad_request(
                "bad_query",
                "parameters must not contain control characters",
            )),
            other => Ok(other),
        }
    };
    let (wanted_state, queue, skill) = (given(q.state)?, given(q.queue)?, given(q.skill)?);
    let wanted_state = wanted_state
        .as_deref()
        .map(|s| {
            callbacks::State::parse(s)
                .ok_or_else(|| ApiError::bad_request("bad_query", format!("unknown state `{s}`")))
        })
        .transpose()?;
    let limit = page_limit(q.limit)?;
    let filter = Filter {
        state: wanted_state,
        queue,
        skill,
        limit,
    };
    let callbacks = state.callbacks.store.list(&filter).await?;
    let callbacks: Vec<Value> = callbacks.iter().map(|c| state.callback_json(c)).collect();
    Ok(Json(json!({ "callbacks": callbacks })))
}

async fn modify(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Json<Modification>, JsonRejection>,
) -> AppResult<Response> {
    let Path(id) = path?;
    let id = confirmation_id(&id)?;
    let expected = if_match(&headers)?;
    let Json(modification) = body?;
    let (callback, receipt) = state
        .callbacks
        .modify(
            &mut rng(),
            Utc::now(),
            &api_actor(),
            &id,
            expected,
            &modification,
        )
        .await
        .map_err(|e| ApiError::from(e).precondition(expected.is_some()))?;
    tracing::info!(callback = %callback.confirmation_id, channel = "api", action = receipt.action, receipt = %receipt.code, state = %callback.state, "callback modified");
    state.hints.changed(callback.id);
    let tag = etag(callback.version);
    Ok((
        [(header::ETAG, tag)],
        Json(json!({ "receipt": receipt, "callback": callback })),
    )
        .into_response())
}

async fn queue_body(state: &AppState, name: &str) -> AppResult<Value> {
    let policy = state.callbacks.policy();
    let queue = policy
        .queues
        .get(name)
        .ok_or_else(|| ApiError::not_found(format!("there is no queue `{name}`")))?;
    let counts: BTreeMap<&str, u64> = state
        .callbacks
        .store
        .counts(name)
        .await?
        .into_iter()
        .map(|(s, n)| (s.as_str(), n))
        .collect();
    let mut lines = serde_json::Map::new();
    for skill in &queue.skills {
        let line = crate::queues::line(
            &state.callbacks.store,
            queue,
            skill,
            state.wrap_up,
            Utc::now(),
        )
        .await?;
        lines.insert(
            skill.clone(),
            serde_json::to_value(line).expect("lines serialize"),
        );
    }
    Ok(json!({
        "name": name,
        "skills": queue.skills,
        "lines": lines,
        "handle_time_seconds": queue.handle_time.num_seconds(),
        "time_zone": queue.time_zone.name(),
        "calling_window": queue.calling_window,
        "max_attempts": queue.max_attempts,
        "retry_backoff_seconds": queue.retry_backoff.iter().map(|d| d.num_seconds()).collect::<Vec<_>>(),
        "booking_horizon_seconds": queue.booking_horizon.num_seconds(),
        "expiry_seconds": queue.expiry.num_seconds(),
        "counts": callbacks::State::ALL.iter().map(|s| (s.as_str(), counts.get(s.as_str()).copied().unwrap_or(0))).collect::<BTreeMap<_, _>>(),
    }))
}

async fn all_queues(state: &AppState) -> AppResult<Vec<Value>> {
    let mut all = Vec::new();
    for name in state.callbacks.policy().queues.keys() {
        all.push(queue_body(state, name).await?);
    }
    Ok(all)
}

async fn queues(State(state): State<Arc<AppState>>) -> AppResult<Json<Value>> {
    Ok(Json(json!({ "queues": all_queues(&state).await? })))
}

/// The trunks, their targets and what the keep-alives found of each.
async fn trunks(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({ "trunks": state.routes.load().status() }))
}

async fn queue(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> AppResult<Json<Value>> {
    let Path(name) = path?;
    Ok(Json(queue_body(&state, &name).await?))
}

async fn create_agent(
    State(state): State<Arc<AppState>>,
    body: Result<Json<NewAgent>, JsonRejection>,
) -> AppResult<Response> {
    let Json(new) = body?;
    let agent = new
        .build(&state.callbacks.policy(), Utc::now())
        .map_err(agent_error)?;
    match state.callbacks.store.insert_agent(&agent, "api").await {
        Err(StoreError::DuplicateAgent) => Err(ApiError::Request {
            status: StatusCode::CONFLICT,
            code: "duplicate_agent",
            message: format!("an agent `{}` exists already", agent.id),
        }),
        other => other.map_err(ApiError::from),
    }?;
    tracing::info!(agent = %agent.id, "agent created");
    Ok((StatusCode::CREATED, Json(agent)).into_response())
}

fn agent_error(e: AgentError) -> ApiError {
    let (status, code) = match e {
        AgentError::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"),
        AgentError::IllegalTransition { .. } => (StatusCode::CONFLICT, "illegal_in_state"),
    };
    ApiError::Request {
        status,
        code,
        message: e.to_string(),
    }
}

async fn agents(State(state): State<Arc<AppState>>) -> AppResult<Json<Value>> {
    let agents = state.callbacks.store.agents().await?;
    Ok(Json(json!({ "agents": agents })))
}

async fn find_agent(state: &AppState, id: &str) -> AppResult<Agent> {
    state
        .callbacks
        .store
        .agent(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("there is no agent `{id}`")))
}

async fn agent(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> AppResult<Json<Value>> {
    let Path(id) = path?;
    let agent = find_agent(&state, &id).await?;
    let history = state.callbacks.store.agent_history(&id).await?;
    let mut body = serde_json::to_value(&agent).expect("agents serialize");
    body["history"] = serde_json::to_value(history).expect("agent events serialize");
    Ok(Json(body))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentStateRequest {
    state: AgentState,
    #[serde(default)]
    reason: Option<String>,
}

/// Logs an agent in (ready) or out, or sets them not ready with a reason.
async fn set_agent_state(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<AgentStateRequest>, JsonRejection>,
) -> AppResult<Json<Agent>> {
    let Path(id) = path?;
    let Json(request) = body?;
    if !request.state.chosen_by_operators() {
        return Err(ApiError::Request {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid_input",
            message: format!(
                "an agent can be set to logged_out, ready or not_ready; {} is the dialer's",
                request.state
            ),
        });
    }
    if request
        .reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > 200 || r.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request(
            "bad_request_body",
            "reason is at most 200 characters, none of them control characters",
        ));
    }
    // The dialer may move the agent at the same moment; read again and retry then.
    for _ in 0..5 {
        let old = find_agent(&state, &id).await?;
        if matches!(old.state, AgentState::Reserved | AgentState::OnCall) {
            return Err(ApiError::Request {
                status: StatusCode::CONFLICT,
                code: "illegal_in_state",
                message: format!(
                    "agent `{id}` is {} a callback; their state can be set once the call is over",
                    if old.state == AgentState::OnCall {
                        "on"
                    } else {
                        "being offered"
                    }
                ),
            });
        }
        let new = old
            .moved(request.state, request.reason.clone(), Utc::now())
            .map_err(agent_error)?;
        match state.callbacks.store.move_agent(&old, &new, "api").await {
            Err(StoreError::Conflict { .. }) => continue,
            other => other?,
        }
        tracing::info!(agent = %id, state = %new.state, "agent state set");
        state.wake_dialer();
        return Ok(Json(new));
    }
    Err(ApiError::Request {
        status: StatusCode::CONFLICT,
        code: "conflict",
        message: "the agent kept changing; try again".into(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestCallRequest {
    /// A SIP URI: `sip:1001@192.0.2.10:5060`, or a number at the trunk.
    to: String,
    /// How long to hold the call once answered (default 2 s, at most 60).
    #[serde(default = "default_hold")]
    hold_seconds: u64,
    /// Keys to press once answered (`0`–`9`, `*`, `#`, `A`–`D`), as telephone-events.
    #[serde(default)]
    keys: String,
    /// Prompts (by name) played to the answered call before it is connected.
    #[serde(default)]
    whisper: Vec<String>,
    /// A second call to place once the first is answered, and bridge to it.
    #[serde(default)]
    connect_to: Option<String>,
}

fn default_hold() -> u64 {
    2
}

/// Places a call (through `sip.outbound_proxy` when set), holds it, hangs up, and answers with
/// how it went: for operators checking a trunk, a PBX route or a phone.
async fn test_call(
    State(state): State<Arc<AppState>>,
    body: Result<Json<TestCallRequest>, JsonRejection>,
) -> AppResult<Json<Value>> {
    let Json(call) = body?;
    if call.hold_seconds > 60 {
        return Err(ApiError::bad_request(
            "bad_request_body",
            "hold_seconds is at most 60",
        ));
    }
    if call.keys.len() > 32
        || !call
            .keys
            .chars()
            .all(|k| media::rfc4733::event(k).is_some())
    {
        return Err(ApiError::bad_request(
            "bad_request_body",
            "keys takes at most 32 of 0-9, *, #, A-D",
        ));
    }
    // A test call goes only where a callback could: to a phone registered here, or to an
    // address the dialing policy allows for `sip` callbacks (so not to a premium number).
    for to in std::iter::once(&call.to).chain(&call.connect_to) {
        state
            .callbacks
            .policy()
            .dialing
            .check_sip(to)
            .map_err(|e| ApiError::from(callbacks::Rejection::from(e)))?;
    }
    let test = signalling::TestCall {
        to: call.to,
        hold: std::time::Duration::from_secs(call.hold_seconds),
        keys: call.keys,
        whisper: call.whisper,
        connect_to: call.connect_to,
    };
    match state.sip.test_call(test).await {
        Ok(outcome) => Ok(Json(serde_json::to_value(outcome).expect("serializable"))),
        Err(
            e @ (PlaceError::BadUri(_)
            | PlaceError::NoRoute(_)
            | PlaceError::UnknownPrompt(_)
            | PlaceError::NotRegistered(_)),
        ) => Err(ApiError::Request {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid_input",
            message: e.to_string(),
        }),
        Err(e) => Err(ApiError::Request {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
            message: e.to_string(),
        }),
    }
}

/// Loads the dialplan again for new calls; a dialplan with problems is refused with them, and
/// the one in use stays.
/// Reloads the configuration, as SIGHUP does (see `crate::reload`).
async fn reload(State(state): State<Arc<AppState>>) -> AppResult<Json<crate::reload::Reloaded>> {
    state
        .reloader
        .reload()
        .await
        .map(Json)
        .map_err(|problem| ApiError::Request {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid_configuration",
            message: problem,
        })
}

/// A list's `limit`: 1 to 1000, 100 when not given.
fn page_limit(limit: Option<u32>) -> AppResult<u32> {
    match limit.unwrap_or(100) {
        limit @ 1..=1000 => Ok(limit),
        _ => Err(ApiError::bad_request(
            "bad_query",
            "limit must be between 1 and 1000",
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallsQuery {
    since: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

/// Call records, oldest first: from `since` (RFC 3339 or a date), or after `cursor` (the
/// `next_cursor` of the page before); `limit` a page (1 to 1000, default 100).
async fn calls(
    State(state): State<Arc<AppState>>,
    query: Result<Query<CallsQuery>, QueryRejection>,
) -> AppResult<Json<Value>> {
    let Query(q) = query?;
    let limit = page_limit(q.limit)?;
    let start = match (q.cursor, q.since) {
        (Some(cursor), _) => crate::calls::parse_cursor(&cursor)
            .ok_or_else(|| ApiError::bad_request("bad_query", "not a cursor this API gave"))?,
        (None, Some(since)) => crate::calls::from(
            crate::calls::parse_since(&since)
                .map_err(|message| ApiError::bad_request("bad_query", message))?,
        ),
        (None, None) => crate::calls::from(chrono::DateTime::<Utc>::UNIX_EPOCH),
    };
    let page = state.callbacks.store.calls(start, limit).await?;
    let next = (page.len() == limit as usize)
        .then(|| page.last().map(crate::calls::cursor_after))
        .flatten();
    Ok(Json(json!({"calls": page, "next_cursor": next})))
}

/// What the SIP trace chooses now, and its file.
async fn trace_status(State(state): State<Arc<AppState>>) -> AppResult<Json<Value>> {
    trace(&state, None).await
}

/// Traces what the filter chooses from now on: `all`, `sources` (IP addresses) and
/// `numbers` (matched against the Request-URI, From and To).
async fn set_trace(
    State(state): State<Arc<AppState>>,
    body: Result<Json<crate::trace::Filter>, JsonRejection>,
) -> AppResult<Json<Value>> {
    let Json(filter) = body?;
    trace(&state, Some(filter)).await
}

async fn stop_trace(State(state): State<Arc<AppState>>) -> AppResult<Json<Value>> {
    trace(&state, Some(crate::trace::Filter::default())).await
}

async fn trace(state: &AppState, filter: Option<crate::trace::Filter>) -> AppResult<Json<Value>> {
    let (filter, path) = state
        .sip
        .trace(filter)
        .await
        .map_err(|message| ApiError::Request {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "trace_unavailable",
            message,
        })?;
    Ok(Json(json!({
        "on": !filter.is_empty(),
        "filter": filter,
        "file": path.display().to_string(),
    })))
}

/// What this node holds now: calls, dialogs, bridges, RTP ports, open files and sockets,
/// store connections and dialer attempts. At rest the calls, dialogs, bridges, RTP ports and
/// attempts are 0, and the sockets are the listeners', the store's and this request's.
async fn status(State(state): State<Arc<AppState>>) -> AppResult<Json<Value>> {
    let sip = state.sip.gauges().await.map_err(|e| ApiError::Request {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code: "unavailable",
        message: e.to_string(),
    })?;
    // Open files, and how many of them are sockets (SIP, RTP, HTTP, PostgreSQL).
    let (mut files, mut sockets) = (0, 0);
    for fd in std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
    {
        files += 1;
        let target = std::fs::read_link(fd.path()).unwrap_or_default();
        sockets += usize::from(target.to_string_lossy().starts_with("socket:"));
    }
    let (open, idle) = state.callbacks.store.connections();
    let dialer = state.dialer.as_ref().map(|d| {
        let (node, attempts) = d.gauges();
        json!({"node": node, "attempts": attempts})
    });
    Ok(Json(json!({
        "sip": sip,
        "file_descriptors": files,
        "sockets": sockets,
        "store": {"backend": state.callbacks.store.backend(), "connections": open, "idle": idle},
        "dialer": dialer,
    })))
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn healthz(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({"status": "ok", "store": state.callbacks.store.backend()}))
}

/// Whether this node should be given work: 200 when its store answers and it is not
/// draining, else 503 with the reason. SIP is bound before the API listens at all.
async fn readyz(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    let store = state.callbacks.store.backend();
    if state.draining.load(std::sync::atomic::Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining", "store": store})),
        );
    }
    match state.callbacks.store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"status": "ready", "store": store})),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "store unreachable", "store": store, "error": e.to_string()})),
        ),
    }
}

fn replies(replies: Vec<::chat::session::Reply>) -> Value {
    replies
        .into_iter()
        .map(|r| json!({"text": r.text, "choices": r.choices}))
        .collect()
}

/// What starts a conversation: an empty JSON object, so a page on another site cannot start
/// one with a plain form (that needs a CORS preflight, which only `chat.allowed_origins` pass).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartChat {}

async fn start_chat(
    State(state): State<Arc<AppState>>,
    crate::http::Client(client): crate::http::Client,
    body: Result<Json<StartChat>, JsonRejection>,
) -> AppResult<(StatusCode, Json<Value>)> {
    let Json(StartChat {}) = body?;
    let (id, greeting) = state.chats.start(client).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": id,
            "idle_timeout_seconds": state.chats.idle().num_seconds(),
            "replies": replies(greeting),
        })),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatMessage {
    text: String,
}

async fn chat_message(
    State(state): State<Arc<AppState>>,
    crate::http::Client(client): crate::http::Client,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<ChatMessage>, JsonRejection>,
) -> AppResult<Json<Value>> {
    let Path(id) = id?;
    let Json(message) = body?;
    let gone = || {
        ApiError::not_found(format!("there is no conversation `{id}` (or it expired); start one with POST /api/v1/chat/sessions"))
    };
    let session = uuid::Uuid::parse_str(&id).map_err(|_| gone())?;
    let text = message.text.trim();
    if text.is_empty() || text.chars().count() > crate::chat::MAX_MESSAGE {
        return Err(ApiError::bad_request(
            "invalid_message",
            format!("a message has 1 to {} characters", crate::chat::MAX_MESSAGE),
        ));
    }
    // Answered to the end even if the customer goes away meanwhile, so the conversation is
    // put back in the store and not held until its hold runs out.
    let chats = state.chats.clone();
    let text = text.to_owned();
    let answered = tokio::spawn(async move { chats.message(session, &text, client).await }).await;
    let answered = answered.map_err(|e| {
        tracing::error!(error = %e, "a chat message's answer failed");
        ApiError::Request {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: "the message could not be answered".into(),
        }
    })?;
    let said = match answered {
        Ok(said) => said,
        Err(crate::chat::Refused::Gone) => return Err(gone()),
        Err(refused) => return Err(refused.into()),
    };
    Ok(Json(json!({"replies": replies(said)})))
}
