//! The HTTP listener, and what every request meets before the API and the pages:
//!
//! - connections bounded in all and per address (see `listeners`), each given 10 s to send a
//!   request's headers, and on a kept-alive connection the next request's; a request body
//!   must come within 10 s, a handler answer within two minutes;
//! - the client's address: the peer's, or behind a trusted reverse proxy, the one it adds to
//!   `X-Forwarded-For`;
//! - the host names answered: IP addresses, `localhost` and `api.hosts` (so DNS rebinding
//!   reaches nothing); writes from another origin refused unless the chat allows it (CORS);
//! - security headers on every response (a strict Content-Security-Policy, no framing).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tracing::warn;

use crate::api::ApiError;
use crate::listeners::{next_connection, Connections, Throttle};

/// How long a connection has to send a request's headers (and, kept alive, the next's).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request's body may take to arrive.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a handler may take to answer (a test call rings and holds for up to 90 s).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// The largest request body: a callback's context is at most 64 KiB of JSON.
pub const MAX_BODY: usize = 256 * 1024;
/// The largest request head.
const MAX_HEAD: usize = 64 * 1024;
/// How long connections get to finish once callbackd stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The policy content of every response: nothing loaded but from this origin, no inline
/// script, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The address a connection came from, put on each of its requests.
#[derive(Debug, Clone, Copy)]
struct Peer(SocketAddr);

/// Who the request is from: the peer, or the client a trusted proxy forwarded (port 0, as the
/// proxy does not tell it).
#[derive(Debug, Clone, Copy)]
pub struct Client(pub SocketAddr);

/// What the checks before the API need to know.
pub struct Guard {
    /// Names answered besides IP addresses and `localhost`, lower case.
    pub hosts: Vec<String>,
    pub trusted_proxies: Vec<(IpAddr, u8)>,
    /// Origins that may write to the chat from their pages.
    pub chat_origins: Vec<String>,
}

impl Guard {
    fn trusted_proxy(&self, ip: IpAddr) -> bool {
        self.trusted_proxies
            .iter()
            .any(|n| sip::admission::in_network(ip, *n))
    }

    /// The client behind `peer`: walking `X-Forwarded-For` from the right, the first address
    /// not a trusted proxy's. (Only that header: a proxy appends to it what it saw, while a
    /// `Forwarded` header the client wrote itself would pass through untouched.)
    fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> SocketAddr {
        if !self.trusted_proxy(peer.ip()) {
            return peer;
        }
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse().ok())
            .collect();
        forwarded
            .iter()
            .rev()
            .find(|ip| !self.trusted_proxy(**ip))
            .map_or(peer, |ip| SocketAddr::new(*ip, 0))
    }

    /// Whether `host` (a Host header) names this server.
    fn answers_to(&self, host: &str) -> bool {
        let name = match host.strip_prefix('[') {
            Some(rest) => {
                return rest
                    .split(']')
                    .next()
                    .is_some_and(|ip| ip.parse::<IpAddr>().is_ok())
            }
            None => host.rsplit_once(':').map_or(host, |(name, _)| name),
        };
        name.parse::<IpAddr>().is_ok()
            || name.eq_ignore_ascii_case("localhost")
            || self.hosts.iter().any(|h| h.eq_ignore_ascii_case(name))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Client, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Client>()
            .copied()
            .unwrap_or(Client(SocketAddr::from(([0, 0, 0, 0], 0)))))
    }
}

/// The access log and the requests' metric: one line and one count per request, by method,
/// route (the pattern it matched, so IDs and tokens in paths and queries stay out of both) and
/// status, with the time it took and the client.
pub async fn access(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let client = request.extensions().get::<Client>().map(|c| c.0.ip());
    // Only the standard methods by name: anyone may send any token.
    let method = match *request.method() {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    tracing::info!(target: "callbackd::access", method, route, status, ms = started.elapsed().as_millis() as u64, client = ?client, "request");
    metrics::counter!(
        "callbackd_http_requests_total",
        "method" => method,
        "route" => route,
        "status" => status.to_string()
    )
    .increment(1);
    response
}

/// The checks every request meets before the routes (see the module's description), and the
/// security headers on every response, refusals included.
pub async fn check(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let mut response = admit(&guard, request, next).await;
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn admit(guard: &Guard, mut request: Request, next: Next) -> Response {
    let headers = request.headers();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let Some(host) = host.filter(|h| guard.answers_to(h)) else {
        return ApiError::Request {
            status: StatusCode::MISDIRECTED_REQUEST,
            code: "unknown_host",
            message: "this server does not answer to that host name; add it to api.hosts".into(),
        }
        .into_response();
    };
    let writes = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        let same_origin = origin
            .split_once("://")
            .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host));
        let chat_allows = request.uri().path().starts_with("/api/v1/chat/")
            && guard.chat_origins.iter().any(|o| o == origin);
        if writes && !same_origin && !chat_allows {
            return ApiError::Request {
                status: StatusCode::FORBIDDEN,
                code: "cross_origin",
                message: format!("requests from pages at {origin} may not change anything here"),
            }
            .into_response();
        }
    }
    let peer = request
        .extensions()
        .get::<Peer>()
        .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |p| p.0);
    let client = guard.client(peer, request.headers());
    request.extensions_mut().insert(Client(client));
    next.run(request).await
}

/// Serves `app` on `listener` until `shutdown`, then gives open connections a little while to
/// finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    connections: Arc<Connections>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD);
    let (mut error_log, mut refused_log) = (
        Throttle::new(Duration::from_secs(10)),
        Throttle::new(Duration::from_secs(10)),
    );
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = next_connection(&listener, "HTTP", &mut error_log) => accepted,
            () = &mut shutdown => break,
        };
        let counted = match connections.admit(peer.ip()) {
            Ok(counted) => counted,
            Err(full) => {
                if refused_log.ready(Instant::now()) {
                    warn!(%peer, total = full.all, from_source = full.from_source, "too many HTTP connections; closing new ones (logged every 10 s)");
                }
                continue;
            }
        };
        let app = app.clone();
        let service = hyper::service::service_fn(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(Peer(peer));
                let mut app = app.clone();
                async move { tower_service::Service::call(&mut app, request).await }
            },
        );
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // An error here is the client's (gone, or too slow with its headers).
            let _ = connection.await;
            drop(counted);
        });
    }
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("HTTP connections still open after {SHUTDOWN_GRACE:?}; closing them");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(proxies: &[&str]) -> Guard {
        Guard {
            hosts: vec!["callbacks.example.com".into()],
            trusted_proxies: proxies.iter().map(|p| (p.parse().unwrap(), 32)).collect(),
            chat_origins: Vec::new(),
        }
    }

    #[test]
    fn only_addresses_localhost_and_named_hosts_are_answered() {
        let g = guard(&[]);
        for host in [
            "127.0.0.1:8080",
            "[::1]:8080",
            "localhost:8080",
            "Callbacks.Example.com",
            "192.0.2.7",
        ] {
            assert!(g.answers_to(host), "{host}");
        }
        for host in ["evil.example:8080", "127.0.0.1.evil.example", "[zz]:80", ""] {
            assert!(!g.answers_to(host), "{host}");
        }
    }

    #[test]
    fn a_forwarded_client_is_believed_only_from_a_trusted_proxy() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 198.51.100.2"),
        );
        let peer: SocketAddr = "127.0.0.1:5555".parse().unwrap();
        assert_eq!(
            guard(&[]).client(peer, &headers),
            peer,
            "not a proxy of ours"
        );
        assert_eq!(
            guard(&["127.0.0.1"]).client(peer, &headers).ip(),
            "198.51.100.2".parse::<IpAddr>().unwrap(),
            "the rightmost address the proxy did not add itself"
        );
        assert_eq!(
            guard(&["127.0.0.1", "198.51.100.2"])
                .client(peer, &headers)
                .ip(),
            "203.0.113.9".parse::<IpAddr>().unwrap(),
            "past a chain of trusted proxies"
        );
        // A Forwarded header is the client's own word: not believed.
        let mut forwarded = HeaderMap::new();
        forwarded.insert(
            header::FORWARDED,
            HeaderValue::from_static("for=203.0.113.50"),
        );
        assert_eq!(guard(&["127.0.0.1"]).client(peer, &forwarded), peer);
    }
}
