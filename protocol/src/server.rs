//! Server frames (SPEC §4, server → client): encoded once into a complete WebSocket text frame
//! that every receiving session shares, and decoded by clients (tests, the load tool).

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::ws::{self, OpCode};

/// The `code` of an `error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, wrong field types, or an `ack` above the highest `seq` sent.
    BadFrame,
    UnknownType,
    Forbidden,
    /// A malformed channel name, whatever the permissions.
    InvalidChannel,
    TooManyChannels,
    RateLimited,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadFrame => "bad_frame",
            Self::UnknownType => "unknown_type",
            Self::Forbidden => "forbidden",
            Self::InvalidChannel => "invalid_channel",
            Self::TooManyChannels => "too_many_channels",
            Self::RateLimited => "rate_limited",
        }
    }
}

/// A frame the server sends. Borrowing (`Cow`) lets the server encode without copying ids.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    Welcome {
        session: Cow<'a, str>,
        node: Cow<'a, str>,
        user: Cow<'a, str>,
        heartbeat_s: u64,
        /// The cursor this session's replay starts after.
        last_seq: u64,
    },
    Message {
        id: Cow<'a, str>,
        /// Ingest time, ms since the Unix epoch.
        ts: u64,
        /// The publisher's JSON, verbatim.
        data: Cow<'a, RawValue>,
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        channel: Option<Cow<'a, str>>,
    },
    Subscribed {
        channel: Cow<'a, str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<Cow<'a, str>>,
    },
    Unsubscribed {
        channel: Cow<'a, str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<Cow<'a, str>>,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<Cow<'a, str>>,
    },
    Gap {
        dropped: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        channel: Option<Cow<'a, str>>,
    },
    Reconnect {
        after_ms: u64,
    },
    Error {
        code: ErrorCode,
        message: Cow<'a, str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<Cow<'a, str>>,
    },
}

/// Why a text is not a server frame.
#[derive(Debug, thiserror::Error)]
pub enum ServerFrameError {
    #[error("not a JSON object: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unknown frame type {0:?}")]
    UnknownType(String),
    #[error("frame {kind:?} lacks field {field:?}")]
    Missing { kind: &'static str, field: &'static str },
}

/// Every field any server frame has, for decoding. (A flat struct rather than a tagged enum:
/// serde cannot borrow a `RawValue` through a tagged enum's buffering.)
#[derive(Deserialize)]
struct Flat<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    session: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    node: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    user: Option<Cow<'a, str>>,
    #[serde(default)]
    heartbeat_s: Option<u64>,
    #[serde(default)]
    last_seq: Option<u64>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default)]
    ts: Option<u64>,
    #[serde(default, borrow, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default, borrow)]
    channel: Option<Cow<'a, str>>,
    #[serde(default)]
    dropped: Option<u64>,
    #[serde(default)]
    after_ms: Option<u64>,
    #[serde(default)]
    code: Option<ErrorCode>,
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
}

/// `data: null` is data, not a missing field.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

impl<'a> ServerFrame<'a> {
    /// Encodes the frame as a complete WebSocket text frame, ready to queue to many sessions.
    pub fn encode(&self) -> Bytes {
        ws::encode_with(OpCode::Text, 128, |buf| {
            // Serializing these types into a Vec cannot fail: no maps with non-string keys.
            let _ = serde_json::to_writer(buf, self);
        })
    }

    /// The JSON text of the frame (the payload of [`encode`](Self::encode)).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Decodes a server frame from its JSON text, borrowing from it.
    pub fn decode(text: &'a str) -> Result<Self, ServerFrameError> {
        let f: Flat<'a> = serde_json::from_str(text)?;
        fn need<T>(v: Option<T>, kind: &'static str, field: &'static str) -> Result<T, ServerFrameError> {
            v.ok_or(ServerFrameError::Missing { kind, field })
        }
        Ok(match &*f.kind {
            "welcome" => ServerFrame::Welcome {
                session: need(f.session, "welcome", "session")?,
                node: need(f.node, "welcome", "node")?,
                user: need(f.user, "welcome", "user")?,
                heartbeat_s: need(f.heartbeat_s, "welcome", "heartbeat_s")?,
                last_seq: need(f.last_seq, "welcome", "last_seq")?,
            },
            "message" => ServerFrame::Message {
                id: need(f.id, "message", "id")?,
                ts: need(f.ts, "message", "ts")?,
                data: Cow::Borrowed(need(f.data, "message", "data")?),
                seq: f.seq,
                channel: f.channel,
            },
            "subscribed" => ServerFrame::Subscribed { channel: need(f.channel, "subscribed", "channel")?, id: f.id },
            "unsubscribed" => {
                ServerFrame::Unsubscribed { channel: need(f.channel, "unsubscribed", "channel")?, id: f.id }
            }
            "pong" => ServerFrame::Pong { id: f.id },
            "gap" => ServerFrame::Gap { dropped: need(f.dropped, "gap", "dropped")?, channel: f.channel },
            "reconnect" => ServerFrame::Reconnect { after_ms: need(f.after_ms, "reconnect", "after_ms")? },
            "error" => ServerFrame::Error {
                code: need(f.code, "error", "code")?,
                message: need(f.message, "error", "message")?,
                id: f.id,
            },
            other => return Err(ServerFrameError::UnknownType(other.to_owned())),
        })
    }

    /// The frame's `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Welcome { .. } => "welcome",
            Self::Message { .. } => "message",
            Self::Subscribed { .. } => "subscribed",
            Self::Unsubscribed { .. } => "unsubscribed",
            Self::Pong { .. } => "pong",
            Self::Gap { .. } => "gap",
            Self::Reconnect { .. } => "reconnect",
            Self::Error { .. } => "error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_a_complete_text_frame_with_data_verbatim() {
        let data = RawValue::from_string(r#"{"b":[1, 2],"a":"x"}"#.to_owned()).unwrap();
        let frame = ServerFrame::Message {
            id: "m1".into(),
            ts: 1700000000000,
            data: Cow::Borrowed(&data),
            seq: Some(7),
            channel: None,
        };
        let bytes = frame.encode();
        let head = ws::decode_head(&bytes, false, usize::MAX).unwrap().unwrap();
        assert_eq!(head.opcode, OpCode::Text);
        let text = std::str::from_utf8(&bytes[head.head_len..]).unwrap();
        assert_eq!(text, r#"{"type":"message","id":"m1","ts":1700000000000,"data":{"b":[1, 2],"a":"x"},"seq":7}"#);
        let back = ServerFrame::decode(text).unwrap();
        assert_eq!(back.encode(), bytes);
    }

    #[test]
    fn null_data_is_data() {
        let back = ServerFrame::decode(r#"{"type":"message","id":"m","ts":1,"data":null}"#).unwrap();
        assert!(matches!(back, ServerFrame::Message { ref data, .. } if data.get() == "null"));
        assert!(matches!(
            ServerFrame::decode(r#"{"type":"message","id":"m","ts":1}"#),
            Err(ServerFrameError::Missing { field: "data", .. })
        ));
    }
}
