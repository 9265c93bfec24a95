//! Publishing through this node (SPEC §5, HTTP). Standalone: durable user messages are
//! committed to the store before the answer and delivered after the commit; everything else is
//! delivered at once. Cluster: the envelope goes to RabbitMQ's `pushgate.publish` with a publisher
//! confirm, and the dispatchers take it from there (the answer means the broker has it on disk).
//! The admin API and the demo page both publish through here.

use std::{sync::Arc, time::Duration};

use lapin::BasicProperties;
use metrics::counter;
use pushgate_dispatcher::{Message, amqp::AmqpError};
use pushgate_protocol::{Envelope, EnvelopeError, Target, UserId, cluster::names, now_ms};

use crate::{
    delivery::{self, Audience, Content},
    metrics::PUBLISHED,
    node::Node,
};

/// How long an HTTP publish waits for the broker to take it (a reconnect in progress, or a
/// resource alarm blocking publishers) before answering 503, having sent nothing.
pub const BROKER_WAIT: Duration = Duration::from_secs(5);
/// How long it then waits for the broker's confirm of what it sent before answering 503 with the
/// id (the broker may still take the envelope).
pub const CONFIRM_WAIT: Duration = Duration::from_secs(5);

/// A publish that was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub id: String,
    /// The id was already stored within the idempotency window: not stored or delivered again.
    pub duplicate: bool,
}

impl Published {
    /// The 202 answer's body (SPEC §5): the id, and `duplicate: true` only when it was one.
    pub fn answer(&self) -> serde_json::Value {
        let mut answer = serde_json::json!({ "id": self.id });
        if self.duplicate {
            answer["duplicate"] = true.into();
        }
        answer
    }
}

/// How a refused envelope is answered over HTTP (SPEC §5): 413 `too_large` for oversized data,
/// else 400 `bad_envelope`.
pub fn envelope_refusal(e: &EnvelopeError) -> (axum::http::StatusCode, &'static str) {
    match e {
        EnvelopeError::DataTooLarge { .. } => (axum::http::StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        _ => (axum::http::StatusCode::BAD_REQUEST, "bad_envelope"),
    }
}

/// Why a publish was refused.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// The store (or, in cluster mode, the broker) could not take it; nothing was accepted.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Sent to the broker, which did not confirm it (in time, or before the connection broke):
    /// it may still be delivered, and a durable message published again with this `id` is stored
    /// once.
    #[error(
        "the broker did not confirm the envelope ({why}): it may still be delivered \
         (publishing it again with id {id:?} stores a durable message once)"
    )]
    Unconfirmed { id: String, why: String },
}

impl PublishError {
    /// The id of an envelope the broker may still take, for the answer.
    pub fn pending_id(&self) -> Option<&str> {
        match self {
            Self::Unconfirmed { id, .. } => Some(id),
            _ => None,
        }
    }
}

/// Publishes one envelope from its JSON bytes.
pub async fn publish(node: &Arc<Node>, body: &[u8]) -> Result<Published, PublishError> {
    let envelope = Envelope::decode(body, &node.envelope_limits)?;
    let target = match envelope.to {
        Target::Users(_) => "users",
        Target::Channel(_) => "channel",
        Target::All => "all",
    };
    let published = match &node.cluster {
        Some(cluster) => to_broker(&cluster.amqp, envelope).await?,
        None => locally(node, Message::accept(envelope, now_ms())).await?,
    };
    counter!(PUBLISHED, "target" => if published.duplicate { "duplicate" } else { target }).increment(1);
    Ok(published)
}

async fn locally(node: &Arc<Node>, message: Message) -> Result<Published, PublishError> {
    let seqs: Vec<(UserId, u64)> = match (&message.to, message.persist) {
        (Target::Users(_), true) => {
            let ingest =
                node.durable.ingest.as_ref().ok_or_else(|| PublishError::Unavailable("no store writer".into()))?;
            let appended =
                ingest.append(message.clone()).await.map_err(|e| PublishError::Unavailable(e.to_string()))?;
            if appended.duplicate {
                return Ok(Published { id: message.id, duplicate: true });
            }
            appended.seqs
        }
        (Target::Users(users), false) => users.iter().map(|u| (u.clone(), 0)).collect(),
        _ => Vec::new(),
    };
    let audience = match &message.to {
        Target::Users(_) => Audience::Users(&seqs),
        Target::Channel(channel) => Audience::Channel(channel),
        Target::All => Audience::All,
    };
    let content = Content { id: &message.id, ts: message.ts, data: &message.data };
    let delivered = delivery::deliver(node, content, audience);
    tracing::debug!(id = %message.id, queued = delivered.queued, "published");
    Ok(Published { id: message.id, duplicate: false })
}

/// Cluster mode: hands the envelope to the broker. It always carries an id (assigned here when
/// the publisher gave none), so that a redelivery after a dispatcher crash is a duplicate, not a
/// second message.
async fn to_broker(amqp: &pushgate_dispatcher::amqp::Amqp, mut envelope: Envelope) -> Result<Published, PublishError> {
    let id = envelope.id.get_or_insert_with(|| uuid::Uuid::now_v7().to_string()).clone();
    let routing_key = match &envelope.to {
        Target::Users(users) => users.first().map(|u| u.as_str().to_owned()).unwrap_or_default(),
        Target::Channel(channel) => channel.as_str().to_owned(),
        Target::All => "all".to_owned(),
    };
    let properties =
        BasicProperties::default().with_content_type("application/json".into()).with_message_id(id.as_str().into());
    let body = envelope.encode();
    let sent = amqp.publish(names::PUBLISH_EXCHANGE, &routing_key, &body, properties, true, BROKER_WAIT);
    let waited = BROKER_WAIT + CONFIRM_WAIT;
    match tokio::time::timeout(waited, sent).await {
        Ok(Ok(())) => Ok(Published { id, duplicate: false }),
        Ok(Err(AmqpError::Unroutable)) => {
            Err(PublishError::Unavailable("no dispatcher has declared the ingest queues yet".into()))
        }
        // Sent, perhaps more than once, before the connection failed.
        Ok(Err(e @ AmqpError::Protocol(_))) => Err(PublishError::Unconfirmed { id, why: e.to_string() }),
        // Unreachable, blocking publishers, or refused: nothing was taken.
        Ok(Err(e)) => Err(PublishError::Unavailable(e.to_string())),
        Err(_) => Err(PublishError::Unconfirmed { id, why: format!("no confirm within {waited:?}") }),
    }
}
