//! Serving HTTP: binding a configured address, and running a router until shutdown with the
//! layers every service wants (request id and trace context, request metrics, request
//! tracing, `X-Content-Type-Options: nosniff` on every answer).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;
use tracing::Instrument;
use uuid::Uuid;

use crate::startup::StartupError;

/// The request id header, read from the caller and echoed on every answer.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// One id per HTTP request: the caller's `X-Request-Id` when it is a UUID, else the trace id of
/// the caller's W3C `traceparent`, else a new UUIDv7. It is the `request_id` of the request's
/// span (so of every log line the request causes), it is echoed in `X-Request-Id`, and the api
/// makes it the `correlationId` of every event and request it sends for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(pub Uuid);

impl RequestId {
    /// The id for a request with `headers`, whose extracted trace context is `parent`.
    fn choose(headers: &HeaderMap, parent: &opentelemetry::Context) -> Self {
        if let Some(id) = headers
            .get(&REQUEST_ID_HEADER)
            .and_then(|value| value.to_str().ok())
            .filter(|value| value.len() <= 45)
            .and_then(|value| Uuid::try_parse(value.trim()).ok())
            .filter(|id| !id.is_nil())
        {
            return Self(id);
        }
        let span = parent.span();
        let remote = span.span_context();
        if remote.is_valid() {
            return Self(Uuid::from_bytes(remote.trace_id().to_bytes()));
        }
        Self(Uuid::now_v7())
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The request's id, as [`request_context`] chose it (outside it, chosen from the headers).
impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(match parts.extensions.get::<RequestId>() {
            Some(id) => *id,
            None => {
                let parent = TraceContextPropagator::new()
                    .extract(&crate::telemetry::HttpHeaders(&parts.headers));
                RequestId::choose(&parts.headers, &parent)
            }
        })
    }
}

/// axum middleware, outermost on every service: chooses the [`RequestId`], opens the
/// request's span (`request_id`, `trace_id`, method, path — never the query, which can hold
/// OAuth codes), continuing the caller's trace when it sent a `traceparent`, and echoes the id
/// in `X-Request-Id`.
pub async fn request_context(mut request: Request, next: Next) -> Response {
    let headers = request.headers();
    let parent = if headers.contains_key(crate::telemetry::TRACEPARENT) {
        TraceContextPropagator::new().extract(&crate::telemetry::HttpHeaders(headers))
    } else {
        opentelemetry::Context::new()
    };
    let request_id = RequestId::choose(headers, &parent);
    let span = tracing::info_span!("request", %request_id, method = %request.method(),
        path = %request.uri().path(), trace_id = tracing::field::Empty);
    crate::telemetry::continue_trace_with(&span, parent);
    request.extensions_mut().insert(request_id);
    let mut response = next.run(request).instrument(span).await;
    let mut text = Uuid::encode_buffer();
    if let Ok(value) = HeaderValue::from_str(request_id.0.hyphenated().encode_lower(&mut text)) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// `X-Content-Type-Options: nosniff` on every answer (404s, 405s, 401s, probes and metrics
/// included): a browser renders a body only as its declared type, so a JSON error that echoes
/// input can never be sniffed into HTML or script.
pub async fn no_sniffing(mut response: Response) -> Response {
    response.headers_mut().insert(
        axum::http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Binds `addr`; a failure names the setting it came from.
pub async fn bind(setting: &'static str, addr: SocketAddr) -> Result<TcpListener, StartupError> {
    Listen::at(setting, addr, false).bind().await
}

/// Where a service's HTTP server listens.
#[derive(Debug)]
pub enum Listen {
    /// A listener bound already (a test picks a free port before the service starts).
    Bound(TcpListener),
    /// An address bound by [`Listen::bind`], which the service calls once its dependencies are
    /// connected: until then nothing listens, so a client is refused at once instead of waiting
    /// in the backlog of a process that cannot answer yet.
    At {
        /// The setting the address came from, for errors.
        setting: &'static str,
        addr: SocketAddr,
        /// `SO_REUSEPORT`: several replicas on one machine share `addr` and the kernel spreads
        /// new connections across the ones listening. A replica that dies takes only the
        /// connections it had accepted (and those queued on its own socket) with it; the next
        /// connections go to the others. Only processes of the same user can join the group.
        reuse_port: bool,
    },
}

impl From<TcpListener> for Listen {
    fn from(listener: TcpListener) -> Self {
        Self::Bound(listener)
    }
}

impl Listen {
    pub fn at(setting: &'static str, addr: SocketAddr, reuse_port: bool) -> Self {
        Self::At {
            setting,
            addr,
            reuse_port,
        }
    }

    /// The listener; a failure names the setting the address came from.
    pub async fn bind(self) -> Result<TcpListener, StartupError> {
        let (setting, addr, reuse_port) = match self {
            Self::Bound(listener) => return Ok(listener),
            Self::At {
                setting,
                addr,
                reuse_port,
            } => (setting, addr, reuse_port),
        };
        let error = |cause| StartupError::Bind {
            setting,
            addr: addr.to_string(),
            cause,
        };
        if !reuse_port {
            return TcpListener::bind(addr).await.map_err(error);
        }
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(error)?;
        // As `TcpListener::bind` does on Unix: a restarted replica may bind while connections
        // of its predecessor linger in TIME_WAIT.
        socket.set_reuseaddr(true).map_err(error)?;
        socket.set_reuseport(true).map_err(error)?;
        socket.bind(addr).map_err(error)?;
        socket.listen(1024).map_err(error)
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then stops accepting
/// connections and waits for in-flight requests to finish — at most `grace`
/// (`SHUTDOWN_GRACE`), after which they are dropped.
pub async fn serve(
    service: &'static str,
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    grace: Duration,
) -> Result<(), StartupError> {
    let router = router
        .layer(axum::middleware::from_fn(move |req, next| {
            crate::metrics::track_http(service, req, next)
        }))
        // The request's span is `request_context`'s: the trace layer only logs in it.
        .layer(TraceLayer::new_for_http().make_span_with(|_: &Request| tracing::Span::current()))
        .layer(axum::middleware::from_fn(request_context))
        .layer(axum::middleware::map_response(no_sniffing));
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(service, %addr, "listening");
    }
    // The peer address reaches handlers as `ConnectInfo<SocketAddr>` (per-client limits).
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let grace_expired = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        served = server => served.map_err(|e| StartupError::Failed {
            what: "HTTP server",
            cause: e.to_string(),
        }),
        () = grace_expired => {
            tracing::warn!(service, ?grace, "in-flight requests outlived SHUTDOWN_GRACE; dropping them");
            Ok(())
        }
    }
}
