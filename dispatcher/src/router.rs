//! The dispatcher's ingest (DESIGN "Durable delivery, end to end"). Per partition, a batch of
//! envelopes is validated — a bad one goes to `pushgate.dead` with the reason — durable messages
//! are committed to MySQL, then everything is routed: user messages to the nodes that hold the
//! users' sessions (one delivery per node, publisher confirms), channel and broadcast messages
//! over the Redis bus. Only then are the envelopes acked, so a crash at any point means
//! redelivery, never loss; a redelivered durable message is a duplicate by its id and is routed
//! again with the seqs it already has.
//!
//! A backend that is down makes the batch wait and retry (with backoff) rather than drop
//! anything: RabbitMQ holds the rest of the partition meanwhile.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use lapin::{BasicProperties, message::Delivery, options::BasicAckOptions, types::FieldTable};
use metrics::counter;
use pushgate_protocol::{
    ChannelName, Envelope, EnvelopeLimits, Target, UserId,
    cluster::{BusMessage, NodeDelivery, NodeMessage, names},
    envelope::MAX_ENVELOPE_ID_LEN,
    now_ms,
};
use tokio_util::sync::CancellationToken;

use crate::{
    Message,
    amqp::{Amqp, AmqpError},
    backoff::{Backoff, retry},
    bus,
    dead_letter::{self, Reason},
    presence::Directory,
    store::{AnyStore, Appended, Store, StoreError},
};

pub const INGESTED: &str = "pushgate_ingest_messages_total";
pub const ROUTED: &str = "pushgate_routed_deliveries_total";
/// The dead-letter kind of a durable message the store refused for good.
const STORE: &str = "store";
/// Channel and broadcast messages published on the bus in one round trip (each up to 64 KiB
/// of data by default).
const BUS_PART: usize = 64;

/// Named bounds of the ingest.
#[derive(Debug, Clone, Copy)]
pub struct IngestConfig {
    /// Unacked envelopes per partition (RabbitMQ prefetch); also the largest batch.
    pub prefetch: u16,
    /// How long a batch waits to fill once its first envelope is in.
    pub linger: Duration,
    pub idempotency_window: Duration,
}

/// Everything a partition consumer needs.
pub struct Router {
    pub amqp: Amqp,
    pub store: AnyStore,
    pub directory: Directory,
    pub limits: EnvelopeLimits,
    pub config: IngestConfig,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").field("config", &self.config).finish()
    }
}

/// One envelope of a batch, decoded or refused.
enum Item {
    Accepted(Message),
    Dead(Reason),
}

impl Router {
    /// Consumes partition `p` until `stop`; a batch under way is finished first.
    pub async fn run_partition(self: Arc<Self>, p: u16, stop: CancellationToken) {
        let mut deliveries =
            self.amqp.consume(names::ingest_queue(p), self.config.prefetch, FieldTable::default(), None);
        loop {
            let first = tokio::select! {
                d = deliveries.recv() => match d { Some(d) => d, None => return },
                () = stop.cancelled() => return,
            };
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + self.config.linger;
            while batch.len() < usize::from(self.config.prefetch) {
                match tokio::time::timeout_at(deadline, deliveries.recv()).await {
                    Ok(Some(d)) => batch.push(d),
                    _ => break,
                }
            }
            self.handle(batch, &stop).await;
        }
    }

    fn decode(&self, delivery: &Delivery) -> Item {
        match Envelope::decode(&delivery.data, &self.limits) {
            Ok(mut envelope) => {
                // An AMQP message-id makes a publish idempotent like an envelope id does.
                if envelope.id.is_none()
                    && let Some(id) = delivery.properties.message_id()
                {
                    let id = id.as_str();
                    if !id.is_empty() && id.chars().count() <= MAX_ENVELOPE_ID_LEN && !id.chars().any(char::is_control)
                    {
                        envelope.id = Some(id.to_owned());
                    }
                }
                Item::Accepted(Message::accept(envelope, now_ms()))
            }
            Err(e) => Item::Dead(Reason::new(e.kind(), e)),
        }
    }

    /// Handles one batch of one partition, in order.
    async fn handle(&self, batch: Vec<Delivery>, stop: &CancellationToken) {
        let items: Vec<Item> = batch.iter().map(|d| self.decode(d)).collect();

        // Refused envelopes: into the dead-letter queue, with the reason.
        for (delivery, item) in batch.iter().zip(&items) {
            if let Item::Dead(reason) = item
                && !self.refuse(delivery, reason, stop).await
            {
                return;
            }
        }

        // Durable messages: committed before anything else happens to them.
        let durable: Vec<&Message> = items
            .iter()
            .filter_map(|i| match i {
                Item::Accepted(m) if m.persist => Some(m),
                _ => None,
            })
            .collect();
        let mut appended = match self.append(&durable, stop).await {
            Some(appended) => appended.into_iter(),
            None => return, // stopping: the batch is redelivered
        };

        // Route, in order.
        let mut per_node: BTreeMap<String, Vec<NodeMessage>> = BTreeMap::new();
        let mut bus_messages = Vec::new();
        let mut user_messages: Vec<(&Message, Vec<(UserId, u64)>)> = Vec::new();
        for (delivery, item) in batch.iter().zip(&items) {
            let Item::Accepted(message) = item else { continue };
            match &message.to {
                Target::Users(users) => {
                    let seqs = if message.persist {
                        match appended.next() {
                            Some(Ok(a)) => a.seqs,
                            Some(Err(reason)) => {
                                if !self.refuse(delivery, &reason, stop).await {
                                    return;
                                }
                                continue;
                            }
                            None => continue,
                        }
                    } else {
                        users.iter().map(|u| (u.clone(), 0)).collect()
                    };
                    user_messages.push((message, seqs));
                }
                Target::Channel(channel) => bus_messages.push(bus_message(message, Some(channel))),
                Target::All => bus_messages.push(bus_message(message, None)),
            }
        }
        if !user_messages.is_empty() {
            let mut users: Vec<&str> =
                user_messages.iter().flat_map(|(_, s)| s.iter().map(|(u, _)| u.as_str())).collect();
            users.sort_unstable();
            users.dedup();
            let Some(nodes) = retry("reading presence", stop, || self.directory.nodes_of(&users, now_ms())).await
            else {
                return;
            };
            let nodes_of: std::collections::HashMap<&str, &Vec<String>> =
                users.iter().copied().zip(nodes.iter()).collect();
            for (message, seqs) in &user_messages {
                let mut by_node: BTreeMap<&str, Vec<(UserId, u64)>> = BTreeMap::new();
                for (user, seq) in seqs {
                    for node in nodes_of.get(user.as_str()).into_iter().flat_map(|n| n.iter()) {
                        by_node.entry(node).or_default().push((user.clone(), *seq));
                    }
                }
                for (node, users) in by_node {
                    per_node.entry(node.to_owned()).or_default().push(NodeMessage {
                        id: message.id.clone(),
                        ts: message.ts,
                        data: message.data.clone(),
                        users,
                    });
                }
            }
        }
        // One batched delivery per node, published to all nodes at once; each waits for its
        // confirm (retried until it has it, or until stopping).
        let sends = per_node.into_iter().map(|(node, messages)| async move {
            let count = messages.len();
            let body = NodeDelivery { messages }.encode();
            let sent = retry("publishing to a node", stop, || async {
                match self
                    .amqp
                    .publish(
                        names::NODES_EXCHANGE,
                        &node,
                        &body,
                        BasicProperties::default(),
                        true,
                        Duration::from_secs(5),
                    )
                    .await
                {
                    // The node's queue is gone (the node is gone): its users resume from the store.
                    Err(AmqpError::Unroutable) => Ok(()),
                    other => other,
                }
            })
            .await;
            if sent.is_some() {
                counter!(ROUTED, "to" => "node").increment(count as u64);
            }
            sent.is_some()
        });
        if !futures_util::future::join_all(sends).await.into_iter().all(|sent| sent) {
            return;
        }
        // In order, a round trip per part (an error retries the part: a message may go twice).
        for part in bus_messages.chunks(BUS_PART) {
            let keys = &self.directory.keys;
            let publish = || {
                let mut redis = self.directory.redis();
                async move { bus::publish(&mut redis, keys, part).await }
            };
            if retry("publishing on the bus", stop, publish).await.is_none() {
                return;
            }
            counter!(ROUTED, "to" => "bus").increment(part.len() as u64);
        }

        // Only now: the envelopes are done.
        counter!(INGESTED, "result" => "accepted")
            .increment(items.iter().filter(|i| matches!(i, Item::Accepted(_))).count() as u64);
        // One ack for the batch: its deliveries are the channel's oldest unacked ones, in order
        // (a batch is handled whole before the next is taken). Deliveries from a channel that
        // has since closed are redelivered by the broker whatever happens here.
        if let Some(last) = batch.last()
            && let Err(e) = last.acker.ack(BasicAckOptions { multiple: true }).await
        {
            tracing::debug!(error = %e, "ack failed (the channel is gone; the batch will be redelivered)");
        }
    }

    /// Appends the durable messages of a batch: retried while the store is unreachable; a
    /// message the store refuses for good becomes a dead letter (`Err(reason)`).
    async fn append(&self, durable: &[&Message], stop: &CancellationToken) -> Option<Vec<Result<Appended, Reason>>> {
        if durable.is_empty() {
            return Some(Vec::new());
        }
        let owned: Vec<Message> = durable.iter().map(|m| (*m).clone()).collect();
        let window = self.config.idempotency_window;
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        loop {
            match self.store.append(&owned, now_ms(), window).await.map_err(StoreError::counted) {
                Ok(appended) => return Some(appended.into_iter().map(Ok).collect()),
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, "storing a batch failed; retrying");
                    tokio::select! {
                        () = backoff.wait() => {}
                        () = stop.cancelled() => return None,
                    }
                }
                Err(e) if owned.len() > 1 => {
                    tracing::warn!(error = %e, "a batch failed; storing its messages one by one");
                    let mut results = Vec::with_capacity(owned.len());
                    for message in &owned {
                        let one = self.store.append(std::slice::from_ref(message), now_ms(), window).await;
                        results.push(match one.map_err(StoreError::counted) {
                            Ok(mut one) => one.pop().ok_or_else(|| Reason::new(STORE, "empty result")),
                            Err(e) => Err(Reason::new(STORE, e)),
                        });
                    }
                    return Some(results);
                }
                Err(e) => return Some(vec![Err(Reason::new(STORE, e))]),
            }
        }
    }

    /// Dead-letters a refused envelope (counted as ingested, "dead"); false when stopping first.
    async fn refuse(&self, delivery: &Delivery, reason: &Reason, stop: &CancellationToken) -> bool {
        let sent = dead_letter::publish(&self.amqp, delivery, reason, stop).await;
        if sent {
            counter!(INGESTED, "result" => "dead").increment(1);
        }
        sent
    }
}

/// A channel (`None`: broadcast) message as it goes on the bus; Redis numbers it there.
fn bus_message(message: &Message, channel: Option<&ChannelName>) -> BusMessage {
    BusMessage {
        id: message.id.clone(),
        ts: message.ts,
        data: message.data.clone(),
        channel: channel.cloned(),
        topic_seq: None,
        topic_epoch: None,
    }
}
