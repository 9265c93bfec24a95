//! The HTTP side of `GET /ws` (SPEC §3): parsing the upgrade request, the refusals before the
//! upgrade with their JSON bodies, and the `101 Switching Protocols` answer.

use std::borrow::Cow;

use base64::Engine as _;
use sha1::{Digest, Sha1};

/// The most headers a request may carry.
pub const MAX_HEADERS: usize = 48;

/// An upgrade request, borrowed from the bytes it was parsed from.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The raw query string, without `?` (empty when absent).
    pub query: &'a str,
    /// `Upgrade: websocket` is present.
    pub upgrade_websocket: bool,
    /// `Connection` lists `upgrade`.
    pub connection_upgrade: bool,
    pub version: Option<&'a str>,
    pub key: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub authorization: Option<&'a str>,
    /// `Content-Length`, when given (page requests with a body).
    pub content_length: Option<usize>,
    /// Length of the request head in the buffer; a client may not send more before the answer.
    pub head_len: usize,
}

/// A refusal before the upgrade: status, a stable `error` code, a human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub error: &'static str,
    pub message: Cow<'static, str>,
    /// `Retry-After` in seconds (503).
    pub retry_after_s: Option<u32>,
}

impl Refusal {
    pub fn new(status: u16, error: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self { status, error, message: message.into(), retry_after_s: None }
    }

    pub fn not_found() -> Self {
        Self::new(404, "not_found", "unknown path")
    }

    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(400, "bad_request", message)
    }

    pub fn unavailable(error: &'static str, message: &'static str, retry_after_s: u32) -> Self {
        Self { retry_after_s: Some(retry_after_s), ..Self::new(503, error, message) }
    }

    pub fn forbidden_origin() -> Self {
        Self::new(403, "origin_not_allowed", "origin not allowed")
    }

    pub fn unauthorized(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(401, "unauthorized", message)
    }

    /// The JSON body `{"error","message"}`.
    pub fn body(&self) -> String {
        serde_json::json!({ "error": self.error, "message": self.message }).to_string()
    }

    /// The complete HTTP/1.1 response; the connection closes after it.
    pub fn to_response(&self) -> Vec<u8> {
        let body = self.body();
        let mut out = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
            self.status,
            reason_phrase(self.status),
            body.len()
        );
        if let Some(secs) = self.retry_after_s {
            out.push_str(&format!("retry-after: {secs}\r\n"));
        }
        if self.status == 400 && self.error == "unsupported_version" {
            out.push_str("sec-websocket-version: 13\r\n");
        }
        out.push_str("\r\n");
        out.push_str(&body);
        out.into_bytes()
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

fn header_has_token(value: &str, token: &str) -> bool {
    value.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Parses a request head from `buf`. `Ok(None)` means it is not complete yet.
pub fn parse_request(buf: &[u8]) -> Result<Option<Request<'_>>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Refusal::bad_request("too many headers"));
        }
        Err(e) => return Err(Refusal::bad_request(format!("malformed HTTP request: {e}"))),
    };
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Err(Refusal::bad_request("malformed HTTP request"));
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut out = Request {
        method,
        path,
        query,
        upgrade_websocket: false,
        connection_upgrade: false,
        version: None,
        key: None,
        origin: None,
        authorization: None,
        content_length: None,
        head_len,
    };
    for h in req.headers.iter() {
        let Ok(value) = std::str::from_utf8(h.value) else {
            continue;
        };
        let value = value.trim();
        let name = h.name;
        if name.eq_ignore_ascii_case("upgrade") {
            out.upgrade_websocket |= header_has_token(value, "websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            out.connection_upgrade |= header_has_token(value, "upgrade");
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            out.version = Some(value);
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            out.key = Some(value);
        } else if name.eq_ignore_ascii_case("origin") {
            out.origin = Some(value);
        } else if name.eq_ignore_ascii_case("authorization") {
            out.authorization = Some(value);
        } else if name.eq_ignore_ascii_case("content-length") {
            out.content_length = value.parse().ok();
        }
    }
    Ok(Some(out))
}

impl<'a> Request<'a> {
    /// Checks that this is a WebSocket upgrade (RFC 6455 §4.2.1) and returns its key.
    pub fn websocket_key(&self) -> Result<&'a str, Refusal> {
        if self.method != "GET" {
            return Err(Refusal::bad_request("a WebSocket upgrade must use GET"));
        }
        if !self.upgrade_websocket || !self.connection_upgrade {
            return Err(Refusal::bad_request("not a WebSocket upgrade"));
        }
        if self.version != Some("13") {
            return Err(Refusal::new(400, "unsupported_version", "Sec-WebSocket-Version must be 13"));
        }
        let key = self.key.ok_or_else(|| Refusal::bad_request("Sec-WebSocket-Key is missing"))?;
        match base64::engine::general_purpose::STANDARD.decode(key) {
            Ok(raw) if raw.len() == 16 => Ok(key),
            _ => Err(Refusal::bad_request("Sec-WebSocket-Key must be 16 bytes in base64")),
        }
    }

    /// The first value of query parameter `name`, percent-decoded. `Err` when it is not valid
    /// percent-encoding.
    pub fn query_param(&self, name: &str) -> Result<Option<Cow<'a, str>>, Refusal> {
        for pair in self.query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if k == name {
                return percent_decode(v).map(Some).ok_or_else(|| {
                    Refusal::bad_request(format!("query parameter {name} is not valid percent-encoding"))
                });
            }
        }
        Ok(None)
    }

    /// The `last_seq` query parameter: absent, or a non-negative integer (else 400).
    pub fn last_seq(&self) -> Result<Option<u64>, Refusal> {
        match self.query_param("last_seq")? {
            None => Ok(None),
            Some(v) => {
                v.parse::<u64>().map(Some).map_err(|_| Refusal::bad_request("last_seq must be a non-negative integer"))
            }
        }
    }

    /// The token from `?token=` or `Authorization: Bearer`.
    pub fn token(&self) -> Result<Option<Cow<'a, str>>, Refusal> {
        if let Some(t) = self.query_param("token")? {
            return Ok(Some(t));
        }
        Ok(self.authorization.and_then(|h| {
            let (scheme, rest) = h.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| Cow::Borrowed(rest.trim()))
        }))
    }
}

/// The first value of parameter `name` in a query string, percent-decoded (`+` is a space).
/// `Err` when it is not valid percent-encoding.
pub fn query_param<'q>(query: &'q str, name: &str) -> Result<Option<Cow<'q, str>>, Refusal> {
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == name {
            return percent_decode(v)
                .map(Some)
                .ok_or_else(|| Refusal::bad_request(format!("query parameter {name} is not valid percent-encoding")));
        }
    }
    Ok(None)
}

fn percent_decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Some(Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// `Sec-WebSocket-Accept` for a key (RFC 6455 §4.2.2).
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// The `101 Switching Protocols` answer.
pub fn accept_response(key: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {}\r\n\r\n",
        accept_key(key)
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "GET /ws?token=abc%2Edef&last_seq=5 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: https://app.example\r\n\r\n";

    #[test]
    fn the_rfc_example_key_is_accepted() {
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn a_good_request_parses() {
        let req = parse_request(GOOD.as_bytes()).unwrap().unwrap();
        assert_eq!(req.path, "/ws");
        assert_eq!(req.websocket_key().unwrap(), "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(req.token().unwrap().as_deref(), Some("abc.def"));
        assert_eq!(req.last_seq().unwrap(), Some(5));
        assert_eq!(req.origin, Some("https://app.example"));
        assert_eq!(req.head_len, GOOD.len());
        assert!(parse_request(&GOOD.as_bytes()[..40]).unwrap().is_none());
    }

    #[test]
    fn bad_requests_are_refused_with_400() {
        let with = |from: &str, to: &str| GOOD.replace(from, to);
        let refuse =
            |text: String| parse_request(text.as_bytes()).unwrap().unwrap().websocket_key().unwrap_err().status;
        assert_eq!(refuse(with("Upgrade: websocket\r\n", "")), 400);
        assert_eq!(refuse(with("GET", "POST")), 400);
        assert_eq!(refuse(with("Version: 13", "Version: 8")), 400);
        assert_eq!(refuse(with("dGhlIHNhbXBsZSBub25jZQ==", "short")), 400);
        let bad_seq = with("last_seq=5", "last_seq=-1");
        assert_eq!(parse_request(bad_seq.as_bytes()).unwrap().unwrap().last_seq().unwrap_err().status, 400);
        let bad_seq = with("last_seq=5", "last_seq=abc");
        assert_eq!(parse_request(bad_seq.as_bytes()).unwrap().unwrap().last_seq().unwrap_err().status, 400);
        assert_eq!(parse_request(b"\x00\x01 garbage\r\n\r\n").unwrap_err().status, 400);
    }

    #[test]
    fn bearer_tokens_are_read() {
        let text = GOOD.replace("token=abc%2Edef&", "").replace("Host: x", "Authorization: Bearer t.o.k");
        let req = parse_request(text.as_bytes()).unwrap().unwrap();
        assert_eq!(req.token().unwrap().as_deref(), Some("t.o.k"));
    }

    #[test]
    fn refusals_have_json_bodies_and_retry_after() {
        let r = Refusal::unavailable("node_full", "node is full", 5).to_response();
        let text = String::from_utf8(r).unwrap();
        assert!(text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(text.contains("retry-after: 5\r\n"));
        assert!(text.ends_with(r#"{"error":"node_full","message":"node is full"}"#));
    }
}
