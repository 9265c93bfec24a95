//! Client frames (SPEC §4, client → server): `subscribe`, `unsubscribe`, `ack`, `ping`, decoded
//! with precise error kinds. A bad frame is answered with an `error` frame and the session stays
//! up, so decoding keeps the request `id` whenever it can, to echo it in the error.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::{
    ids::ChannelName,
    object::{Fields, Object, parse_object},
    server::ErrorCode,
};

/// The longest request `id` the server echoes, in characters.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// A frame the client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    Subscribe {
        channel: ChannelName,
        /// A channel token, when the session token does not allow the channel.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    Unsubscribe {
        channel: ChannelName,
    },
    /// Every durable message up to and including `seq` is handled.
    Ack {
        seq: u64,
    },
    Ping,
}

/// A client frame with its optional request `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRequest {
    pub id: Option<String>,
    pub frame: ClientFrame,
}

/// A refused client frame: what goes into the `error` frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct FrameError {
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
    /// The request id to echo, when the frame had a valid one.
    pub id: Option<String>,
}

fn bad(message: impl Into<Cow<'static, str>>) -> FrameError {
    FrameError { code: ErrorCode::BadFrame, message: message.into(), id: None }
}

fn string_field<'a>(fields: &Fields<'a>, name: &'static str) -> Result<Option<Cow<'a, str>>, FrameError> {
    match fields.get(name) {
        None => Ok(None),
        Some(raw) => match serde_json::from_str::<Cow<'a, str>>(raw.get()) {
            Ok(s) => Ok(Some(s)),
            Err(_) => Err(bad(format!("{name} must be a string"))),
        },
    }
}

fn channel_field(fields: &Fields<'_>) -> Result<ChannelName, FrameError> {
    let name = string_field(fields, "channel")?.ok_or_else(|| bad("channel is required"))?;
    ChannelName::new(&name).map_err(|e| FrameError {
        code: ErrorCode::InvalidChannel,
        message: format!("channel name {e}").into(),
        id: None,
    })
}

impl ClientRequest {
    /// Decodes one client text frame.
    pub fn decode(text: &str) -> Result<Self, FrameError> {
        let Object { fields, duplicate } = parse_object(text).map_err(|e| {
            if e.is_data() { bad("a frame must be a JSON object") } else { bad(format!("not JSON: {e}")) }
        })?;
        let id = match string_field(&fields, "id")? {
            Some(id) if id.chars().count() > MAX_REQUEST_ID_LEN => {
                return Err(bad(format!("id is longer than {MAX_REQUEST_ID_LEN} characters")));
            }
            id => id.map(Cow::into_owned),
        };
        let with_id = |mut e: FrameError| {
            e.id.clone_from(&id);
            e
        };
        if let Some(name) = duplicate {
            // Two ids: neither is echoed.
            let twice = bad(format!("field {name:?} appears more than once"));
            return Err(if name == "id" { twice } else { with_id(twice) });
        }
        let kind = string_field(&fields, "type").map_err(with_id)?.ok_or_else(|| with_id(bad("type is required")))?;
        let frame = match &*kind {
            "subscribe" => ClientFrame::Subscribe {
                channel: channel_field(&fields).map_err(with_id)?,
                token: string_field(&fields, "token").map_err(with_id)?.map(Cow::into_owned),
            },
            "unsubscribe" => ClientFrame::Unsubscribe { channel: channel_field(&fields).map_err(with_id)? },
            "ack" => {
                let raw = fields.get("seq").ok_or_else(|| with_id(bad("seq is required")))?;
                let seq = serde_json::from_str::<u64>(raw.get())
                    .map_err(|_| with_id(bad("seq must be a non-negative integer")))?;
                ClientFrame::Ack { seq }
            }
            "ping" => ClientFrame::Ping,
            other => {
                let shown: String = other.chars().take(32).collect();
                return Err(with_id(FrameError {
                    code: ErrorCode::UnknownType,
                    message: format!("unknown frame type {shown:?}").into(),
                    id: None,
                }));
            }
        };
        Ok(ClientRequest { id, frame })
    }

    /// The JSON text of the request (clients use this to send it).
    pub fn to_json(&self) -> String {
        let mut value = serde_json::to_value(&self.frame).unwrap_or_default();
        if let (Some(id), Some(map)) = (&self.id, value.as_object_mut()) {
            map.insert("id".into(), id.clone().into());
        }
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> (ErrorCode, Option<String>) {
        let e = ClientRequest::decode(text).unwrap_err();
        (e.code, e.id)
    }

    #[test]
    fn good_frames_decode() {
        let r = ClientRequest::decode(r#"{"type":"subscribe","channel":"news","id":"r1"}"#).unwrap();
        assert_eq!(r.id.as_deref(), Some("r1"));
        assert_eq!(r.frame, ClientFrame::Subscribe { channel: ChannelName::new("news").unwrap(), token: None });
        assert_eq!(ClientRequest::decode(r#"{"type":"ack","seq":42}"#).unwrap().frame, ClientFrame::Ack { seq: 42 });
        assert_eq!(ClientRequest::decode(r#"{"type":"ping","extra":1}"#).unwrap().frame, ClientFrame::Ping);
    }

    #[test]
    fn a_field_given_twice_is_a_bad_frame() {
        let e = ClientRequest::decode(r#"{"type":"subscribe","channel":"a","channel":"b","id":"r"}"#).unwrap_err();
        assert_eq!(
            (e.code, e.id.as_deref(), &*e.message),
            (ErrorCode::BadFrame, Some("r"), r#"field "channel" appears more than once"#)
        );
        assert_eq!(code(r#"{"type":"subscribe","type":"ack","seq":1}"#).0, ErrorCode::BadFrame);
        // Two ids: neither is echoed.
        assert_eq!(code(r#"{"type":"ping","id":"a","id":"b"}"#), (ErrorCode::BadFrame, None));
    }

    #[test]
    fn bad_frames_get_precise_codes_and_keep_the_id() {
        assert_eq!(code("nope").0, ErrorCode::BadFrame);
        assert_eq!(code("[1,2]").0, ErrorCode::BadFrame);
        assert_eq!(code(r#"{"type":"dance","id":"x"}"#), (ErrorCode::UnknownType, Some("x".into())));
        assert_eq!(
            code(r#"{"type":"subscribe","channel":"a b","id":"y"}"#),
            (ErrorCode::InvalidChannel, Some("y".into()))
        );
        assert_eq!(code(r#"{"type":"subscribe","channel":7}"#).0, ErrorCode::BadFrame);
        assert_eq!(code(r#"{"type":"subscribe"}"#).0, ErrorCode::BadFrame);
        assert_eq!(code(r#"{"type":"ack","seq":-1}"#).0, ErrorCode::BadFrame);
        assert_eq!(code(r#"{"type":"ack","seq":1.5}"#).0, ErrorCode::BadFrame);
        assert_eq!(code(r#"{"type":"ack","seq":"3"}"#).0, ErrorCode::BadFrame);
        assert_eq!(code(r#"{"type":7}"#).0, ErrorCode::BadFrame);
        assert_eq!(code(&format!(r#"{{"type":"ping","id":"{}"}}"#, "i".repeat(65))), (ErrorCode::BadFrame, None));
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(code(&deep).0, ErrorCode::BadFrame);
        assert_eq!(code(&format!(r#"{{"type":"subscribe","channel":{deep}}}"#)).0, ErrorCode::BadFrame);
        // Nesting in a field the server ignores is skipped without recursion, so it is harmless.
        assert!(ClientRequest::decode(&format!(r#"{{"type":"ping","x":{deep}}}"#)).is_ok());
    }

    #[test]
    fn requests_encode_for_clients() {
        let r = ClientRequest { id: Some("q".into()), frame: ClientFrame::Ack { seq: 3 } };
        assert_eq!(ClientRequest::decode(&r.to_json()).unwrap(), r);
    }
}
