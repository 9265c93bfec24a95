//! The admin listener (SPEC §7): `/metrics`, `/healthz`, `/readyz`, `POST /v1/publish`, presence
//! and disconnect of this node's users, `POST /v1/drain`. Every `/v1` route needs the API key
//! when one is configured; without one (standalone) only loopback peers may call them.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::{ConnectInfo, FromRequestParts, Path, Request, State},
    http::{HeaderMap, StatusCode, header, request::Parts},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use futures_util::StreamExt as _;
use metrics::counter;
use metrics_exporter_prometheus::PrometheusHandle;
use pushgate_protocol::{CloseCode, EnvelopeError, UserId};
use serde_json::json;

use crate::{
    drain,
    metrics::PUBLISH_REFUSALS,
    node::Node,
    publish::{self, PublishError},
    session::CloseRequest,
};

/// Room in a publish body beyond `data`: 1000 user ids of 128 characters and the envelope keys.
const ENVELOPE_OVERHEAD_BYTES: usize = 160 * 1024;

/// What is still read, and thrown away, of a publish body refused for its size: a socket closed
/// with bytes unread sends a reset, which can make the client, still sending, lose the `413`
/// (a write error instead, or a reset before the answer is read). Beyond this much, or this
/// long, the connection is closed all the same.
const DRAIN_REFUSED_BYTES: usize = 16 << 20;
const DRAIN_REFUSED_TIME: Duration = Duration::from_secs(2);

#[derive(Clone)]
struct AdminState {
    node: Arc<Node>,
    metrics: PrometheusHandle,
    /// The largest publish body read (`read_body`; no other route reads a body).
    body_limit: usize,
}

/// An error answer: status and `{"error","message"}` (plus `field` for envelopes, and `id` for a
/// publish the broker may still take).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: &'static str,
    message: String,
    field: Option<String>,
    id: Option<String>,
    /// The request body was left unread, so the connection cannot carry another request.
    closes_connection: bool,
}

impl ApiError {
    fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        Self { status, error, message: message.into(), field: None, id: None, closes_connection: false }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.error, "message": self.message });
        if let Some(field) = self.field {
            body["field"] = field.into();
        }
        if let Some(id) = self.id {
            body["id"] = id.into();
        }
        let mut response = (self.status, Json(body)).into_response();
        if self.closes_connection {
            // Said out loud so a pooling client does not send its next request down a
            // connection the server is about to close (RFC 9112 §9.6).
            response.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
        }
        response
    }
}

impl From<EnvelopeError> for ApiError {
    fn from(e: EnvelopeError) -> Self {
        let (status, error) = publish::envelope_refusal(&e);
        let field = e.field().map(str::to_owned);
        Self { status, error, message: e.to_string(), field, id: None, closes_connection: false }
    }
}

/// The admin router.
pub fn router(node: Arc<Node>, metrics: PrometheusHandle) -> Router {
    let body_limit = node.config.max_data_bytes + ENVELOPE_OVERHEAD_BYTES;
    let state = AdminState { node, metrics, body_limit };
    let api = Router::new()
        .route("/v1/publish", post(publish))
        .route("/v1/users/{user}/presence", get(presence))
        .route("/v1/users/{user}/disconnect", post(disconnect))
        .route("/v1/drain", post(start_drain))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/readyz", get(ready))
        .merge(api)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "unknown path") })
        .method_not_allowed_fallback(|| async {
            // axum adds the `Allow` header naming the methods the path takes.
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this path takes another method (see Allow)",
            )
        })
        .with_state(state)
}

/// Serves the router until `stop`.
pub async fn serve(listener: tokio::net::TcpListener, router: Router, stop: tokio_util::sync::CancellationToken) {
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, service).with_graceful_shutdown(async move { stop.cancelled().await }).await {
        tracing::error!(error = %e, "admin listener failed");
    }
}

async fn require_key(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    match &state.node.config.api_key {
        Some(key) => {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
            if given.map(str::trim) != Some(key.as_str()) {
                return Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "missing or wrong API key"));
            }
        }
        None if !peer.ip().is_loopback() => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "no API key is configured; the admin API answers loopback only",
            ));
        }
        None => {}
    }
    Ok(next.run(request).await)
}

async fn render_metrics(State(state): State<AdminState>) -> impl IntoResponse {
    let node = &state.node;
    node.metrics.sessions.set(node.registry.len() as f64);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}

async fn ready(State(state): State<AdminState>) -> Response {
    let node = &state.node;
    if node.lifecycle.is_draining() {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "draining", "node is draining").into_response();
    }
    let down = node.backends_down();
    if !down.is_empty() {
        let message = format!("backend down: {}", down.join(", "));
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "backend_down", message).into_response();
    }
    Json(json!({ "status": "ready", "sessions": node.registry.len() })).into_response()
}

async fn publish(State(state): State<AdminState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let refuse = |e: ApiError| {
        counter!(PUBLISH_REFUSALS, "error" => e.error).increment(1);
        e
    };
    let body = read_body(body, state.body_limit).await.map_err(refuse)?;
    // A compressed body is not guessed at: read as JSON it would be refused as "not JSON".
    if let Some(encoding) =
        headers.get(header::CONTENT_ENCODING).filter(|e| !e.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        let message = format!("content-encoding {encoding:?} is not supported: send the envelope uncompressed");
        return Err(refuse(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_encoding", message)));
    }
    match publish::publish(&state.node, &body).await {
        Ok(published) => Ok((StatusCode::ACCEPTED, Json(published.answer())).into_response()),
        Err(PublishError::Envelope(e)) => Err(refuse(e.into())),
        Err(PublishError::Unavailable(why)) => {
            Err(refuse(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", why)))
        }
        Err(e @ PublishError::Unconfirmed { .. }) => {
            let id = e.pending_id().map(str::to_owned);
            Err(refuse(ApiError { id, ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string()) }))
        }
    }
}

/// A request body of at most `limit` bytes. A longer one is refused with `413` — after the rest
/// is drained (see [`DRAIN_REFUSED_BYTES`]) — and its connection is closed.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let mut chunks = body.into_data_stream();
    let mut read = Vec::new();
    while let Some(chunk) = chunks.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_envelope", format!("request body: {e}")))?;
        if read.len() + chunk.len() > limit {
            let drained = tokio::time::timeout(DRAIN_REFUSED_TIME, async {
                let mut drained = 0;
                while let Some(Ok(chunk)) = chunks.next().await {
                    drained += chunk.len();
                    if drained > DRAIN_REFUSED_BYTES {
                        break;
                    }
                }
            });
            let _ = drained.await;
            return Err(ApiError {
                closes_connection: true,
                ..ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("request body too large (at most {limit} bytes)"),
                )
            });
        }
        read.extend_from_slice(&chunk);
    }
    Ok(read.into())
}

/// The `{user}` of a path, valid: whatever is wrong with it — percent-encoding that does not
/// decode to UTF-8 included — is answered `400 bad_user` in the API's JSON.
struct UserParam(UserId);

impl<S: Send + Sync> FromRequestParts<S> for UserParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_user", message);
        let Path(user) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| bad("user id is not percent-encoded UTF-8".into()))?;
        UserId::new(&user).map(Self).map_err(|e| bad(format!("user id {e}")))
    }
}

async fn presence(
    State(state): State<AdminState>,
    UserParam(user): UserParam,
) -> Result<Json<serde_json::Value>, ApiError> {
    let node = &state.node;
    if let Some(cluster) = &node.cluster {
        // Across the cluster, from the presence directory.
        let seats = cluster.directory.seats(user.as_str(), pushgate_protocol::now_ms()).await.map_err(|e| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "backend_down", format!("presence directory: {e}"))
        })?;
        let sessions: Vec<_> = seats
            .iter()
            .map(|(session, seat)| {
                json!({ "session": session, "node": seat.node, "device": seat.device, "since": seat.since })
            })
            .collect();
        return Ok(Json(json!({ "user": user.as_str(), "online": !sessions.is_empty(), "sessions": sessions })));
    }
    let sessions: Vec<_> = node
        .registry
        .user_sessions(user.as_str())
        .iter()
        .map(|s| {
            let shared = s.shared();
            json!({
                "session": s.id_string(),
                "node": node.node_id,
                "device": shared.device.as_ref().map(|d| d.as_str()),
                "since": shared.since_ms,
            })
        })
        .collect();
    Ok(Json(json!({ "user": user.as_str(), "online": !sessions.is_empty(), "sessions": sessions })))
}

async fn disconnect(State(state): State<AdminState>, UserParam(user): UserParam) -> Result<Response, ApiError> {
    if let Some(cluster) = &state.node.cluster {
        // Every node closes the user's sessions when the bus brings it this.
        let now = pushgate_protocol::now_ms();
        let unavailable = |e: redis::RedisError| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "backend_down", format!("redis: {e}"))
        };
        let count = cluster.directory.seats(user.as_str(), now).await.map_err(unavailable)?.len();
        let mut redis = cluster.directory.redis();
        let control = pushgate_protocol::cluster::Control::Disconnect { user };
        pushgate_dispatcher::bus::publish_control(&mut redis, &cluster.directory.keys, &control)
            .await
            .map_err(unavailable)?;
        return Ok((StatusCode::ACCEPTED, Json(json!({ "sessions": count }))).into_response());
    }
    let sessions = state.node.registry.user_sessions(user.as_str());
    let closed = sessions
        .iter()
        .filter(|s| s.request_close(CloseRequest::new(CloseCode::AdminDisconnect, "disconnected by the admin API")))
        .count();
    Ok((StatusCode::ACCEPTED, Json(json!({ "sessions": closed }))).into_response())
}

async fn start_drain(State(state): State<AdminState>) -> Response {
    let started = drain::start(&state.node);
    (StatusCode::ACCEPTED, Json(json!({ "draining": true, "started": started }))).into_response()
}
