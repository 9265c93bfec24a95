//! The dispatcher's events consumer: acks and session events from gateways (`pushgate.events`)
//! are written to MySQL in batches — acks merged to the highest per device — then session
//! lifecycle events are republished on `pushgate.lifecycle` (topic, routing keys `session.open`
//! and `session.close`, JSON bodies) for backends that bind a queue to it, and only then are the
//! event messages acked. A malformed event message is dead-lettered (`bad_event: …`).

use std::time::Duration;

use futures_util::future::join_all;
use lapin::{BasicProperties, options::BasicAckOptions, types::FieldTable};
use pushgate_protocol::cluster::{EventBatch, names};
use tokio_util::sync::CancellationToken;

use crate::{
    amqp::Amqp,
    backoff::retry,
    dead_letter,
    store::{AnyStore, Store, StoreError},
};

/// Event messages gathered before writing.
const BATCH: u16 = 500;
/// How long a batch of events waits to fill.
const LINGER: Duration = Duration::from_millis(200);

/// Consumes events until `stop`.
pub async fn run(amqp: Amqp, store: AnyStore, stop: CancellationToken) {
    let mut deliveries = amqp.consume(names::EVENTS_QUEUE.to_owned(), BATCH, FieldTable::default(), None);
    loop {
        let first = tokio::select! {
            d = deliveries.recv() => match d { Some(d) => d, None => return },
            () = stop.cancelled() => return,
        };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < usize::from(BATCH) {
            match tokio::time::timeout_at(deadline, deliveries.recv()).await {
                Ok(Some(d)) => batch.push(d),
                _ => break,
            }
        }
        // A malformed message (not from a gateway of this version) is set aside at once.
        let mut merged = EventBatch::default();
        let mut taken = Vec::with_capacity(batch.len());
        for delivery in &batch {
            match EventBatch::decode(&delivery.data) {
                Ok(events) => {
                    merged.acks.extend(events.acks);
                    merged.sessions.extend(events.sessions);
                    taken.push(delivery);
                }
                Err(e) => {
                    if !dead_letter::publish(&amqp, delivery, &dead_letter::Reason::new("bad_event", e), &stop).await {
                        return;
                    }
                    let _ = delivery.acker.ack(BasicAckOptions::default()).await;
                }
            }
        }
        let (store, merged) = (&store, &merged);
        let written = retry("writing events", &stop, || async move {
            store.save_acks(&merged.acks, pushgate_protocol::now_ms()).await.map_err(StoreError::counted)?;
            store.log_sessions(&merged.sessions).await.map_err(StoreError::counted)
        })
        .await;
        if written.is_none() {
            return; // stopping: the batch is redelivered
        }
        let amqp = &amqp;
        join_all(merged.sessions.iter().map(|event| async move {
            let key = format!("session.{}", event.kind.name());
            let body = serde_json::to_vec(event).unwrap_or_default();
            let properties = BasicProperties::default().with_content_type("application/json".into());
            if let Err(e) =
                amqp.publish(names::LIFECYCLE_EXCHANGE, &key, &body, properties, false, Duration::from_secs(5)).await
            {
                tracing::warn!(error = %e, "republishing a lifecycle event failed");
            }
        }))
        .await;
        for delivery in taken {
            let _ = delivery.acker.ack(BasicAckOptions::default()).await;
        }
    }
}
