//! Publishing on this node (SPEC §5, HTTP): validate the envelope, then — durable user
//! messages — commit to the store before answering and deliver after the commit, or — everything
//! else — deliver at once. The admin API and the demo page both publish through here.

use std::sync::Arc;

use metrics::counter;
use pushgate_dispatcher::Message;
use pushgate_protocol::{Envelope, EnvelopeError, Target, now_ms};

use crate::{delivery, metrics::PUBLISHED, node::Node};

/// A publish that was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub id: String,
    /// The id was already stored within the idempotency window: not stored or delivered again.
    pub duplicate: bool,
}

/// Why a publish was refused.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// The store (or, in cluster mode, the broker) could not take it; nothing was accepted.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// Publishes one envelope from its JSON bytes.
pub async fn publish(node: &Arc<Node>, body: &[u8]) -> Result<Published, PublishError> {
    let envelope = Envelope::decode(body, &node.envelope_limits)?;
    let message = Message::accept(envelope, now_ms());
    let target = match message.to {
        Target::Users(_) => "users",
        Target::Channel(_) => "channel",
        Target::All => "all",
    };
    let delivered = if message.persist {
        let appended =
            node.durable.ingest.append(message.clone()).await.map_err(|e| PublishError::Unavailable(e.to_string()))?;
        if appended.duplicate {
            counter!(PUBLISHED, "target" => "duplicate").increment(1);
            return Ok(Published { id: message.id, duplicate: true });
        }
        delivery::deliver(node, &message, Some(&appended.seqs))
    } else {
        delivery::deliver(node, &message, None)
    };
    counter!(PUBLISHED, "target" => target).increment(1);
    tracing::debug!(id = %message.id, target, queued = delivered.queued, "published");
    Ok(Published { id: message.id, duplicate: false })
}
