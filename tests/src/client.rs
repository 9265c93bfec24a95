//! A WebSocket client as an application would use one (tokio-tungstenite), with helpers to send
//! client frames and to wait for server frames by type.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{
        Message,
        client::IntoClientRequest,
        http::HeaderValue,
        protocol::{CloseFrame, frame::coding::CloseCode},
    },
};

use crate::WAIT;

/// What the client saw next.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// A JSON text frame.
    Frame(Value),
    /// The server's Close frame (code, reason).
    Close(u16, String),
    /// The connection ended without a Close frame (or with an error).
    Ended(String),
    /// Nothing arrived in time.
    Timeout,
}

impl Received {
    pub fn json(&self) -> Option<&Value> {
        match self {
            Self::Frame(v) => Some(v),
            _ => None,
        }
    }

    pub fn frame_type(&self) -> Option<&str> {
        self.json()?.get("type")?.as_str()
    }

    pub fn close_code(&self) -> Option<u16> {
        match self {
            Self::Close(code, _) => Some(*code),
            _ => None,
        }
    }
}

pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The welcome frame (filled by `Gateway::connect*`).
    pub welcome: Option<Value>,
    next_id: u64,
}

impl Client {
    pub async fn connect(url: &str) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        Self::connect_with_origin(url, None).await
    }

    pub async fn connect_with_origin(
        url: &str,
        origin: Option<&str>,
    ) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        let mut request = url.into_client_request()?;
        if let Some(origin) = origin {
            request.headers_mut().insert("origin", HeaderValue::from_str(origin).expect("origin header"));
        }
        let (ws, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(Self { ws, welcome: None, next_id: 0 })
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws.send(Message::text(text.into())).await.expect("send text");
    }

    pub async fn send_json(&mut self, value: &Value) {
        self.send_text(value.to_string()).await;
    }

    pub async fn send_binary(&mut self, data: Vec<u8>) {
        self.ws.send(Message::binary(data)).await.expect("send binary");
    }

    /// Sends a Close frame with 1000 (normal).
    pub async fn close(&mut self) {
        let frame = CloseFrame { code: CloseCode::Normal, reason: "bye".into() };
        let _ = self.ws.close(Some(frame)).await;
    }

    /// The next server frame within [`WAIT`]; WebSocket Pings are answered and skipped.
    pub async fn next(&mut self) -> Received {
        self.next_within(WAIT).await
    }

    pub async fn next_within(&mut self, within: Duration) -> Received {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let item = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Received::Timeout,
                Ok(None) => return Received::Ended("stream ended".into()),
                Ok(Some(Err(e))) => return Received::Ended(e.to_string()),
                Ok(Some(Ok(message))) => message,
            };
            match item {
                Message::Text(text) => {
                    return Received::Frame(serde_json::from_str(text.as_str()).expect("server frames are JSON"));
                }
                Message::Close(frame) => {
                    return match frame {
                        Some(f) => Received::Close(u16::from(f.code), f.reason.to_string()),
                        None => Received::Close(1005, String::new()),
                    };
                }
                Message::Binary(_) => panic!("the server sent a binary frame"),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    /// The next frame, which must be of type `ty`.
    pub async fn expect(&mut self, ty: &str) -> Value {
        let got = self.next().await;
        assert_eq!(got.frame_type(), Some(ty), "expected a {ty} frame, got {got:?}");
        got.json().cloned().unwrap_or_default()
    }

    /// Skips frames until one of type `ty` (or fails on close/timeout).
    pub async fn next_of_type(&mut self, ty: &str) -> Value {
        loop {
            let got = self.next().await;
            match got.frame_type() {
                Some(t) if t == ty => return got.json().cloned().unwrap_or_default(),
                Some(_) => continue,
                None => panic!("expected a {ty} frame, got {got:?}"),
            }
        }
    }

    /// Reads until the server's Close frame and returns its code.
    pub async fn expect_close(&mut self) -> u16 {
        loop {
            match self.next().await {
                Received::Frame(_) => continue,
                Received::Close(code, _) => return code,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }

    fn request_id(&mut self) -> String {
        self.next_id += 1;
        format!("r{}", self.next_id)
    }

    /// Subscribes and returns the reply (`subscribed` or `error`), matched by request id.
    pub async fn subscribe(&mut self, channel: &str, token: Option<&str>) -> Value {
        let id = self.request_id();
        let mut frame = json!({"type": "subscribe", "channel": channel, "id": id});
        if let Some(token) = token {
            frame["token"] = token.into();
        }
        self.send_json(&frame).await;
        self.reply_to(&id).await
    }

    pub async fn unsubscribe(&mut self, channel: &str) -> Value {
        let id = self.request_id();
        self.send_json(&json!({"type": "unsubscribe", "channel": channel, "id": id})).await;
        self.reply_to(&id).await
    }

    /// Sends an app-level ping and waits for its pong.
    pub async fn ping(&mut self) -> Value {
        let id = self.request_id();
        self.send_json(&json!({"type": "ping", "id": id})).await;
        self.reply_to(&id).await
    }

    /// Skips frames until the reply carrying request id `id`.
    pub async fn reply_to(&mut self, id: &str) -> Value {
        loop {
            let got = self.next().await;
            match got.json() {
                Some(v) if v.get("id").and_then(Value::as_str) == Some(id) && v["type"] != "message" => {
                    return v.clone();
                }
                Some(_) => continue,
                None => panic!("expected the reply to {id}, got {got:?}"),
            }
        }
    }
}
