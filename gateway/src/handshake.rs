//! The upgrade of a client connection (SPEC §3): read the request — waiting, holding no buffer,
//! when it has not arrived by the accept — under a size limit (the caller bounds the time);
//! refuse it with the right status and JSON body in the SPEC's order — 404 path, 400 not an
//! upgrade or bad query, 503 full, draining or a backend a session needs down, 403 origin, 401
//! token — or accept it with `101 Switching Protocols`, which the caller writes together with the
//! session's first frame.

use std::borrow::Cow;

use metrics::counter;
use pushgate_protocol::{
    SessionClaims,
    handshake::{Refusal, Request, accept_response, parse_request},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, Interest},
    net::TcpStream,
};

use std::{net::SocketAddr, os::fd::AsFd, sync::Arc};

use crate::{auth::TokenError, conn::Conn, metrics::HANDSHAKE_REFUSALS, node::Node, pages};

/// Largest request head accepted; a long token in the query still fits several times over.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// `Retry-After` of a 503: long enough for the load balancer to pick another node.
pub const RETRY_AFTER_S: u32 = 5;

/// What the client upgraded to, with its `101 Switching Protocols` answer.
#[derive(Debug)]
pub enum Upgrade {
    /// A pushgate session (`/ws`). `response` is not yet written: the caller sends it in one
    /// write with the session's first frame (`welcome`), one segment instead of two.
    Client { claims: SessionClaims, last_seq: Option<u64>, response: Vec<u8> },
    /// The conformance echo endpoint (`/echo`). It has no welcome to carry its `response`: the
    /// handshake has written it.
    Echo { response: Vec<u8> },
}

/// A completed upgrade.
#[derive(Debug)]
pub struct Upgraded {
    pub upgrade: Upgrade,
    /// The connection, bare or registered (see [`Conn`]).
    pub conn: Conn,
    /// Bytes the client sent behind its request head (its first frames, if it did not wait).
    pub pipelined: Vec<u8>,
}

/// Why a connection did not become a session.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("refused with {status}: {error}")]
    Refused { status: u16, error: &'static str },
    #[error("connection closed during the handshake")]
    Closed,
    #[error("served a page")]
    Page,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

thread_local! {
    /// Where [`read_request`] reads: one buffer per thread, not per connection.
    static LANDING: std::cell::RefCell<Box<[u8]>> = std::cell::RefCell::new(vec![0; MAX_REQUEST_BYTES].into_boxed_slice());
}

/// Reads the client's request — its head, and its body when that fits in
/// [`MAX_REQUEST_BYTES`], or the first [`MAX_REQUEST_BYTES`] of it — from a socket just
/// accepted. Reads land in a per-thread buffer and are kept at their size. A request that has
/// arrived whole by the accept (the usual case) is one read and one allocation of its length,
/// and the socket stays bare (see [`Conn`]); otherwise the socket is registered with the
/// runtime and waited on — holding no buffer until bytes come, then only what came. `None` when
/// the client closed first. A request that cannot be parsed counts as whole: answering it
/// refuses it.
pub async fn read_request(socket: std::net::TcpStream) -> std::io::Result<Option<(Conn, Vec<u8>)>> {
    let mut request = Vec::new();
    let mut whole = false;
    match read_more(&socket, &mut request, &mut whole) {
        _ if whole => return Ok(Some((Conn::Bare(socket), request))),
        Ok(()) => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    let stream = TcpStream::from_std(socket)?;
    loop {
        stream.ready(Interest::READABLE).await?;
        let read = stream.try_io(Interest::READABLE, || read_more(&stream, &mut request, &mut whole));
        match read {
            _ if whole => return Ok(Some((Conn::Registered(stream), request))),
            Ok(()) => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reads what has arrived behind `request`; `whole` is set once the request is (see
/// [`read_request`]). `Ok` at EOF, or when the read filled all the room left under the limit.
/// A read that came short of the room drained the socket: it answers `WouldBlock`, which (inside
/// `try_io`) clears tokio's readiness of a registered socket — so that [`read_request`] sleeps
/// until more bytes come, and the session's first turn does not read a socket known to be
/// empty (one system call per connect). The readiness is cleared only if no new bytes arrived
/// since it was read.
fn read_more(socket: impl AsFd, request: &mut Vec<u8>, whole: &mut bool) -> std::io::Result<()> {
    LANDING.with_borrow_mut(|landing| {
        let room = MAX_REQUEST_BYTES - request.len();
        let (n, _) = rustix::net::recv(socket, &mut landing[..room], rustix::net::RecvFlags::empty())?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&landing[..n]);
        *whole = match parse_request(request) {
            Ok(None) => request.len() == MAX_REQUEST_BYTES,
            Ok(Some(head)) => {
                let length = head.head_len.saturating_add(head.content_length.unwrap_or(0));
                length <= request.len() || length > MAX_REQUEST_BYTES
            }
            Err(_) => true,
        };
        if n == room { Ok(()) } else { Err(std::io::ErrorKind::WouldBlock.into()) }
    })
}

/// Answers the request [`read_request`] read on `conn`. `full` says admission is over its
/// limit. Only an upgrade to a client session leaves its socket as it came (bare, usually): the
/// caller writes its `101`; the other answers are written here, on the registered socket.
pub async fn handshake(
    node: &Arc<Node>,
    conn: Conn,
    buf: Vec<u8>,
    peer: SocketAddr,
    full: bool,
) -> Result<Upgraded, HandshakeError> {
    let decision = match parse_request(&buf) {
        // A head that is not whole in what was read is longer than the limit.
        Ok(None) => Err(Refusal::bad_request("request head too large")),
        Ok(Some(request)) if pages::is_page(node, &request) => {
            let length = request.content_length.unwrap_or(0);
            if length > node.config.max_data_bytes + 64 * 1024 {
                Err(Refusal::new(413, "too_large", "request body too large"))
            } else {
                let page = PageRequest {
                    method: request.method.to_owned(),
                    path: request.path.to_owned(),
                    query: request.query.to_owned(),
                    head_len: request.head_len,
                    length,
                };
                // Boxed: a page's state is large, and every connection's set-up would carry it.
                return Box::pin(serve_page(node, conn, buf, page, peer)).await;
            }
        }
        Ok(Some(request)) => decide(node, &request, full).map(|upgrade| (upgrade, request.head_len)),
        Err(refusal) => Err(refusal),
    };
    match decision {
        Ok((upgrade, head_len)) => {
            let conn = match &upgrade {
                Upgrade::Echo { response } => {
                    let mut stream = conn.into_registered()?;
                    stream.write_all(response).await?;
                    node.metrics.bytes_out.increment(response.len() as u64);
                    Conn::Registered(stream)
                }
                Upgrade::Client { .. } => conn,
            };
            Ok(Upgraded { upgrade, conn, pipelined: buf[head_len..].to_vec() })
        }
        Err(refusal) => {
            counter!(HANDSHAKE_REFUSALS, "status" => refusal.status.to_string(), "error" => refusal.error).increment(1);
            let mut stream = conn.into_registered()?;
            stream.write_all(&refusal.to_response()).await?;
            let _ = stream.shutdown().await;
            Err(HandshakeError::Refused { status: refusal.status, error: refusal.error })
        }
    }
}

/// A request for a page on the client port (see [`pages`]), its body not yet read whole.
struct PageRequest {
    method: String,
    path: String,
    query: String,
    head_len: usize,
    /// The body's length.
    length: usize,
}

/// Reads a page request's body and answers it; the connection then ends.
async fn serve_page(
    node: &Arc<Node>,
    conn: Conn,
    mut buf: Vec<u8>,
    page: PageRequest,
    peer: SocketAddr,
) -> Result<Upgraded, HandshakeError> {
    let mut stream = conn.into_registered()?;
    let end = page.head_len + page.length;
    while buf.len() < end {
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(HandshakeError::Closed);
        }
    }
    let response = pages::respond(node, &page.method, &page.path, &page.query, &buf[page.head_len..end], peer).await;
    stream.write_all(&response).await?;
    let _ = stream.shutdown().await;
    Err(HandshakeError::Page)
}

/// The checks of SPEC §3, in its order.
fn decide(node: &Node, request: &Request<'_>, full: bool) -> Result<Upgrade, Refusal> {
    let echo = match request.path {
        "/ws" => false,
        "/echo" if node.config.echo_route => true,
        _ => return Err(Refusal::not_found()),
    };
    let key = request.websocket_key()?;
    let last_seq = request.last_seq()?;
    let token = request.token()?;
    if node.lifecycle.is_draining() {
        return Err(Refusal::unavailable("draining", "node is draining; reconnect to another node", RETRY_AFTER_S));
    }
    if full {
        return Err(Refusal::unavailable("node_full", "node is at its connection limit", RETRY_AFTER_S));
    }
    if let Some(why) = node.sessions_refused_because().filter(|_| !echo) {
        return Err(Refusal::unavailable("backend_down", why, RETRY_AFTER_S));
    }
    if !origin_allowed(&node.config.allowed_origins, request.origin) {
        return Err(Refusal::forbidden_origin());
    }
    if echo {
        return Ok(Upgrade::Echo { response: accept_response(key) });
    }
    let token = token.ok_or_else(|| Refusal::unauthorized("missing token"))?;
    let claims = node.auth.verify_session(&token).map_err(|e| {
        Refusal::unauthorized(match e {
            TokenError::Expired => Cow::Borrowed("token expired"),
            other => Cow::Owned(other.to_string()),
        })
    })?;
    Ok(Upgrade::Client { claims, last_seq, response: accept_response(key) })
}

/// Browsers send `Origin`; other clients usually do not and are not subject to the list. An
/// empty list allows every origin. Patterns are exact origins or `scheme://*.domain`.
pub fn origin_allowed(allowed: &[String], origin: Option<&str>) -> bool {
    let Some(origin) = origin else { return true };
    allowed.is_empty() || allowed.iter().any(|pattern| origin_matches(pattern, origin))
}

fn origin_matches(pattern: &str, origin: &str) -> bool {
    if pattern.eq_ignore_ascii_case(origin) {
        return true;
    }
    let (Some((p_scheme, p_host)), Some((o_scheme, o_host))) = (pattern.split_once("://"), origin.split_once("://"))
    else {
        return false;
    };
    let Some(suffix) = p_host.strip_prefix("*.") else {
        return false;
    };
    let o_host = o_host.to_ascii_lowercase();
    let suffix = suffix.to_ascii_lowercase();
    p_scheme.eq_ignore_ascii_case(o_scheme)
        && o_host.len() > suffix.len() + 1
        && o_host.ends_with(&format!(".{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_exactly_or_by_subdomain() {
        let list = vec!["https://app.example".to_owned(), "https://*.example.org".to_owned()];
        assert!(origin_allowed(&list, None));
        assert!(origin_allowed(&[], Some("https://evil.example")));
        assert!(origin_allowed(&list, Some("https://app.example")));
        assert!(origin_allowed(&list, Some("HTTPS://APP.EXAMPLE")));
        assert!(origin_allowed(&list, Some("https://a.b.example.org")));
        assert!(!origin_allowed(&list, Some("https://example.org")));
        assert!(!origin_allowed(&list, Some("http://a.example.org")));
        assert!(!origin_allowed(&list, Some("https://badexample.org")));
        assert!(!origin_allowed(&list, Some("https://evil.example")));
        assert!(!origin_allowed(&list, Some("null")));
    }
}
