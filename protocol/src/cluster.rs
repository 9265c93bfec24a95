//! The cluster's internal wire, between gateways and dispatchers (DESIGN "The picture"): the
//! names of exchanges, queues and Redis keys, and the JSON bodies that cross them. Decoders
//! ignore unknown fields, so nodes of two versions can run side by side in a rolling upgrade.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::ids::{ChannelName, DeviceId, UserId};

/// AMQP names. `pushgate.publish` and `pushgate.dead` are the contract (SPEC §5); the rest
/// belong to pushgate and are declared by its processes.
pub mod names {
    /// Backends publish envelopes here (fanout, durable), with the target user or channel as
    /// the routing key.
    pub const PUBLISH_EXCHANGE: &str = "pushgate.publish";
    /// Partitions ingest by routing key (`x-consistent-hash`), so one user's messages stay in
    /// one queue and keep their order.
    pub const INGEST_EXCHANGE: &str = "pushgate.ingest";
    /// Envelopes that cannot be accepted, with the reason in [`ERROR_HEADER`].
    pub const DEAD_QUEUE: &str = "pushgate.dead";
    /// The header of a dead letter saying why.
    pub const ERROR_HEADER: &str = "x-pushgate-error";
    /// Durable user deliveries to gateway nodes (direct; the routing key is the node id).
    pub const NODES_EXCHANGE: &str = "pushgate.nodes";
    /// Acks and session events from gateways to dispatchers.
    pub const EVENTS_EXCHANGE: &str = "pushgate.events";
    /// The queue dispatchers consume events from.
    pub const EVENTS_QUEUE: &str = "pushgate.events";
    /// Session lifecycle events for backends (topic; `session.open`, `session.close`).
    pub const LIFECYCLE_EXCHANGE: &str = "pushgate.lifecycle";

    /// Ingest partition `p`.
    pub fn ingest_queue(p: u16) -> String {
        format!("pushgate.ingest.{p}")
    }

    /// The delivery queue of a gateway node.
    pub fn node_queue(node: &str) -> String {
        format!("pushgate.node.{node}")
    }
}

/// Dispatcher → gateway node: user deliveries for that node's sessions, in `seq` order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeDelivery {
    pub messages: Vec<NodeMessage>,
}

/// One message of a [`NodeDelivery`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeMessage {
    pub id: String,
    pub ts: u64,
    pub data: Box<RawValue>,
    /// Receivers on the node and each one's `seq` (0: not durable).
    pub users: Vec<(UserId, u64)>,
}

/// Dispatcher → gateways over Redis pub/sub: a channel or broadcast message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BusMessage {
    pub id: String,
    pub ts: u64,
    pub data: Box<RawValue>,
    /// The channel; `None` for a broadcast.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<ChannelName>,
    /// Its number on its topic (1, 2, 3, …), stamped by Redis as it is published: a publisher
    /// sends `None` and the bus's publish script adds it. A node that sees the numbers skip has
    /// missed messages (its bus connection was cut). `None` on receipt: an unnumbered publisher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_seq: Option<u64>,
    /// When the topic's count began (µs since the Unix epoch), stamped with `topic_seq`: a new
    /// epoch means the numbering began again (Redis lost the count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_epoch: Option<u64>,
}

/// Gateway → gateways over Redis pub/sub: an admin action on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "control", rename_all = "snake_case")]
pub enum Control {
    /// Close the user's sessions with 4000.
    Disconnect { user: UserId },
}

/// A cumulative ack: the device's cursor (when the session names a device) and the user's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ack {
    pub user: UserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceId>,
    pub seq: u64,
}

/// One line of the session log, and of the lifecycle events backends receive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEvent {
    /// ms since the Unix epoch.
    pub at_ms: u64,
    #[serde(flatten)]
    pub kind: SessionEventKind,
    pub session: String,
    pub node: String,
    pub user: UserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum SessionEventKind {
    Open,
    /// Closed with this code (1006 when the connection just ended).
    Close {
        code: u16,
    },
}

impl SessionEventKind {
    /// `open` or `close`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Close { .. } => "close",
        }
    }

    /// The close code, for a close.
    pub fn code(self) -> Option<u16> {
        match self {
            Self::Open => None,
            Self::Close { code } => Some(code),
        }
    }
}

/// Gateway → dispatchers: acks and session events gathered since the last batch.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EventBatch {
    #[serde(default)]
    pub acks: Vec<Ack>,
    #[serde(default)]
    pub sessions: Vec<SessionEvent>,
}

/// Why a cluster body could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("malformed cluster message: {0}")]
pub struct ClusterDecodeError(#[from] serde_json::Error);

macro_rules! json_body {
    ($($ty:ty),*) => {
        $(impl $ty {
            /// The JSON body.
            pub fn encode(&self) -> Vec<u8> {
                serde_json::to_vec(self).unwrap_or_default()
            }

            /// Decodes a body, validating every id in it.
            pub fn decode(bytes: &[u8]) -> Result<Self, ClusterDecodeError> {
                Ok(serde_json::from_slice(bytes)?)
            }
        })*
    };
}

json_body!(NodeDelivery, BusMessage, Control, EventBatch);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip() {
        let raw = RawValue::from_string(r#"{"a":[1,2]}"#.into()).unwrap();
        let delivery = NodeDelivery {
            messages: vec![NodeMessage {
                id: "m".into(),
                ts: 5,
                data: raw.clone(),
                users: vec![(UserId::new("u").unwrap(), 7)],
            }],
        };
        let back = NodeDelivery::decode(&delivery.encode()).unwrap();
        assert_eq!(back.messages[0].users, delivery.messages[0].users);
        assert_eq!(back.messages[0].data.get(), r#"{"a":[1,2]}"#);
        let events = EventBatch {
            acks: vec![Ack { user: UserId::new("u").unwrap(), device: None, seq: 3 }],
            sessions: vec![SessionEvent {
                at_ms: 1,
                kind: SessionEventKind::Close { code: 4001 },
                session: "s".into(),
                node: "n".into(),
                user: UserId::new("u").unwrap(),
                device: Some(DeviceId::new("d").unwrap()),
            }],
        };
        let text = String::from_utf8(events.encode()).unwrap();
        assert!(text.contains(r#""event":"close","code":4001"#), "{text}");
        let back = EventBatch::decode(text.as_bytes()).unwrap();
        assert_eq!(back.sessions, events.sessions);
        assert_eq!(
            Control::decode(br#"{"control":"disconnect","user":"u"}"#).unwrap(),
            Control::Disconnect { user: UserId::new("u").unwrap() }
        );
    }

    #[test]
    fn bad_ids_are_refused() {
        assert!(NodeDelivery::decode(br#"{"messages":[{"id":"m","ts":1,"data":1,"users":[["bad id",1]]}]}"#).is_err());
        assert!(BusMessage::decode(br#"{"id":"m","ts":1,"data":1,"channel":"no spaces"}"#).is_err());
        assert!(BusMessage::decode(br#"{"id":"m","ts":1,"data":null}"#).is_ok());
    }
}
