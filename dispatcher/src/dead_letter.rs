//! Dead letters: a message the dispatcher refuses for good — a bad envelope, one the store
//! refuses, a malformed event message from a gateway — goes to `pushgate.dead` with its body
//! and headers unchanged plus `x-pushgate-error` saying why (SPEC §5), and is counted by the
//! reason's kind (the part before the first `:`). Nothing refused is dropped.

use std::time::Duration;

use lapin::{
    BasicProperties,
    message::Delivery,
    types::{AMQPValue, FieldTable, LongString},
};
use metrics::counter;
use pushgate_protocol::cluster::names;
use tokio_util::sync::CancellationToken;

use crate::{amqp::Amqp, backoff::retry};

pub const DEAD_LETTERS: &str = "pushgate_dead_letters_total";

/// Publishes `delivery` to `pushgate.dead` with `reason` (retrying while RabbitMQ is away);
/// false when `stop` came first, so the caller leaves the delivery unacked.
pub async fn publish(amqp: &Amqp, delivery: &Delivery, reason: &str, stop: &CancellationToken) -> bool {
    let mut properties =
        BasicProperties::default().with_headers(headers(delivery.properties.headers().as_ref(), reason));
    if let Some(content_type) = delivery.properties.content_type() {
        properties = properties.with_content_type(content_type.clone());
    }
    let sent = retry("dead-lettering", stop, || {
        amqp.publish("", names::DEAD_QUEUE, &delivery.data, properties.clone(), true, Duration::from_secs(5))
    })
    .await;
    if sent.is_some() {
        let kind = reason.split(':').next().unwrap_or("unknown").to_owned();
        counter!(DEAD_LETTERS, "reason" => kind).increment(1);
        tracing::info!(reason, "dead-lettered a message");
    }
    sent.is_some()
}

/// Headers of a dead letter: why, plus the original headers.
fn headers(original: Option<&FieldTable>, reason: &str) -> FieldTable {
    let mut headers = original.cloned().unwrap_or_default();
    headers.insert(names::ERROR_HEADER.into(), AMQPValue::LongString(LongString::from(reason)));
    headers
}
