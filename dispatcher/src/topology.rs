//! The AMQP topology (exchanges, queues, bindings) — declared by every process that uses it, on
//! every connect; declarations are idempotent. Names are in `pushgate_protocol::cluster::names`.
//!
//! Ingest is partitioned by routing key: `pushgate.publish` (fanout, the contract) feeds
//! `pushgate.ingest` (`x-consistent-hash`, from the `rabbitmq_consistent_hash_exchange` plugin),
//! which spreads routing keys over `pushgate.ingest.0 … N-1`. Each partition queue has a single
//! active consumer, so with several dispatchers one user's messages are still handled by one of
//! them at a time, in order.

use lapin::{
    Channel, ExchangeKind,
    options::{ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, ShortString},
};
use pushgate_protocol::cluster::names;

/// Routing key of event messages on `pushgate.events`.
pub const EVENTS_KEY: &str = "events";
/// A node queue nobody consumed for this long is deleted (a node that is gone for good).
pub const NODE_QUEUE_EXPIRES_MS: i64 = 10 * 60 * 1000;

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() }
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() }
}

fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert(ShortString::from(*k), v.clone());
    }
    t
}

/// What gateways and dispatchers both use: the publish exchange, node deliveries, events and
/// the dead-letter queue.
pub async fn declare_common(channel: &Channel) -> Result<(), lapin::Error> {
    channel
        .exchange_declare(
            names::PUBLISH_EXCHANGE.into(),
            ExchangeKind::Fanout,
            durable_exchange(),
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(names::NODES_EXCHANGE.into(), ExchangeKind::Direct, durable_exchange(), FieldTable::default())
        .await?;
    channel
        .exchange_declare(
            names::EVENTS_EXCHANGE.into(),
            ExchangeKind::Direct,
            durable_exchange(),
            FieldTable::default(),
        )
        .await?;
    channel.queue_declare(names::EVENTS_QUEUE.into(), durable_queue(), FieldTable::default()).await?;
    channel
        .queue_bind(
            names::EVENTS_QUEUE.into(),
            names::EVENTS_EXCHANGE.into(),
            EVENTS_KEY.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    channel.queue_declare(names::DEAD_QUEUE.into(), durable_queue(), FieldTable::default()).await?;
    Ok(())
}

/// What dispatchers use besides: the partitioned ingest and the lifecycle exchange.
pub async fn declare_dispatcher(channel: &Channel, partitions: u16) -> Result<(), lapin::Error> {
    declare_common(channel).await?;
    channel
        .exchange_declare(
            names::INGEST_EXCHANGE.into(),
            ExchangeKind::Custom("x-consistent-hash".into()),
            durable_exchange(),
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_bind(
            names::INGEST_EXCHANGE.into(),
            names::PUBLISH_EXCHANGE.into(),
            "".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let sac = table(&[("x-single-active-consumer", AMQPValue::Boolean(true))]);
    for p in 0..partitions {
        let queue = names::ingest_queue(p);
        channel.queue_declare(queue.as_str().into(), durable_queue(), sac.clone()).await?;
        // The routing key of a consistent-hash binding is its weight.
        channel
            .queue_bind(
                queue.as_str().into(),
                names::INGEST_EXCHANGE.into(),
                "1".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    channel
        .exchange_declare(
            names::LIFECYCLE_EXCHANGE.into(),
            ExchangeKind::Topic,
            durable_exchange(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// A gateway node's delivery queue, bound to `pushgate.nodes` by the node id. It is durable (a
/// broker restart keeps pending deliveries) and expires once unused for ten minutes.
pub async fn declare_node_queue(channel: &Channel, node: &str) -> Result<(), lapin::Error> {
    let queue = names::node_queue(node);
    let args = table(&[("x-expires", AMQPValue::LongLongInt(NODE_QUEUE_EXPIRES_MS))]);
    channel.queue_declare(queue.as_str().into(), durable_queue(), args).await?;
    channel
        .queue_bind(
            queue.as_str().into(),
            names::NODES_EXCHANGE.into(),
            node.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}
