//! The demo page on the client listener (standalone mode, on by default; off in cluster mode):
//! `/` is a page that uses the browser SDK, `/pushgate.js` is the SDK itself, and — for loopback
//! callers of a standalone node only — `/dev/token` mints a session token and `/dev/publish`
//! publishes, so a new user sees pushgate working without writing a line of code.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use pushgate_protocol::{
    ChannelPattern, DeviceId, SessionClaims, UserId,
    handshake::{Request, query_param},
    now_ms,
};
use serde_json::json;

use crate::{
    node::Node,
    publish::{self, PublishError},
};

const INDEX_HTML: &str = include_str!("../../clients/js/demo/index.html");
const SDK_JS: &str = include_str!("../../clients/js/dist/pushgate.js");

/// How long a dev token lives.
const DEV_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// Whether `request` is for a page rather than a WebSocket upgrade.
pub fn is_page(node: &Node, request: &Request<'_>) -> bool {
    node.demo_page()
        && !request.upgrade_websocket
        && matches!(request.path, "/" | "/index.html" | "/pushgate.js" | "/dev/token" | "/dev/publish")
}

/// The complete HTTP response for a page request (`body` is the request body, for POSTs).
pub async fn respond(
    node: &Arc<Node>,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
    peer: SocketAddr,
) -> Vec<u8> {
    let dev_allowed = node.config.mode().is_ok_and(|m| m == crate::Mode::Standalone) && peer.ip().is_loopback();
    match (method, path) {
        ("GET", "/" | "/index.html") => response(200, "text/html; charset=utf-8", INDEX_HTML.as_bytes()),
        ("GET", "/pushgate.js") => response(200, "text/javascript; charset=utf-8", SDK_JS.as_bytes()),
        ("GET", "/dev/token") if dev_allowed => dev_token(node, query),
        ("POST", "/dev/publish") if dev_allowed => match publish::publish(node, body).await {
            Ok(p) => json_response(202, &p.answer()),
            Err(PublishError::Envelope(e)) => {
                let (status, error) = publish::envelope_refusal(&e);
                json_response(status.as_u16(), &json!({ "error": error, "message": e.to_string(), "field": e.field() }))
            }
            Err(PublishError::Unavailable(why)) => {
                json_response(503, &json!({ "error": "unavailable", "message": why }))
            }
            Err(e @ PublishError::Unconfirmed { .. }) => {
                json_response(503, &json!({ "error": "unavailable", "message": e.to_string(), "id": e.pending_id() }))
            }
        },
        ("GET" | "POST", "/dev/token" | "/dev/publish") => json_response(
            403,
            &json!({ "error": "forbidden", "message": "dev endpoints answer loopback callers of a standalone node only" }),
        ),
        _ => json_response(405, &json!({ "error": "method_not_allowed", "message": "method not allowed" })),
    }
}

fn dev_token(node: &Node, query: &str) -> Vec<u8> {
    let param = |name: &str| query_param(query, name).ok().flatten();
    let Some(Ok(user)) = param("user").map(|u| UserId::new(&u)) else {
        return json_response(400, &json!({ "error": "bad_request", "message": "user must be a valid user id" }));
    };
    let device = match param("device").filter(|d| !d.is_empty()).map(|d| DeviceId::new(&d)).transpose() {
        Ok(device) => device,
        Err(e) => return json_response(400, &json!({ "error": "bad_request", "message": format!("device {e}") })),
    };
    let claims = SessionClaims {
        sub: user,
        exp: now_ms() / 1000 + DEV_TOKEN_TTL.as_secs(),
        dev: device,
        chs: ChannelPattern::parse("*").into_iter().collect(),
    };
    json_response(200, &json!({ "token": node.auth.mint_session(&claims), "expires_in": DEV_TOKEN_TTL.as_secs() }))
}

fn json_response(status: u16, body: &serde_json::Value) -> Vec<u8> {
    response(status, "application/json", body.to_string().as_bytes())
}

fn response(status: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        403 => "Forbidden",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}
