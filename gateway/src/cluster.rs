//! Cluster mode on a gateway node (DESIGN "The picture"): the node-side bus clients.
//! - Presence: the node's sessions are written to the Redis directory in batches; a session's
//!   replay starts only once its entry is visible, so a message committed before that is read by
//!   the replay and one committed after it is routed here — none falls between. A lease in
//!   Redis marks the node alive; if Redis lost the node's entries (a restart), the node writes
//!   them again and every session re-reads its inbox once, for what was routed during the gap.
//! - Deliveries: the node consumes its queue on RabbitMQ and acks a delivery after its frames are
//!   queued to the sessions.
//! - Fan-out: the Redis bus carries channel and broadcast messages; the node subscribes to a
//!   channel only while it has a local subscriber. Admin disconnects travel the same bus.
//! - Events: acks and session events go to the dispatchers over RabbitMQ, in batches.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use lapin::{BasicProperties, options::BasicAckOptions, types::FieldTable};
use pushgate_dispatcher::{
    amqp::Amqp,
    bus::{BusEvent, OnSubscribed, Subscriber},
    presence::{self, Change, Directory, Keys, Seat},
    topology,
};
use pushgate_protocol::{
    ChannelName, CloseCode, UserId,
    cluster::{Control, EventBatch, NodeDelivery, names},
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    delivery::{self, Audience, Content},
    node::Node,
    session::{CloseRequest, Outbound, SessionHandle},
};

/// How long a node's lease lasts without renewal: a crashed node's sessions leave the
/// directory within this (plus a sweep period).
pub const LEASE: Duration = Duration::from_secs(10);
/// Presence changes are written at least this often (and a waiting session is written at once).
const PRESENCE_FLUSH: Duration = Duration::from_millis(10);
/// How long a new session waits for its presence entry before giving up (1013).
const PRESENCE_WAIT: Duration = Duration::from_secs(5);
/// Unacked node deliveries the node takes at once.
const NODE_PREFETCH: u16 = 256;

enum PresenceOp {
    Change(Change),
    /// Answer once everything queued before this is written.
    Flushed(oneshot::Sender<()>),
}

/// The node's cluster connections.
pub struct Cluster {
    pub amqp: Amqp,
    pub directory: Directory,
    pub bus: Subscriber,
    redis_up: Arc<AtomicBool>,
    presence: mpsc::UnboundedSender<PresenceOp>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("amqp", &self.amqp).field("redis_up", &self.redis_up).finish()
    }
}

/// What the node's tasks consume, handed to [`run`].
pub struct Inputs {
    bus: mpsc::Receiver<BusEvent>,
    presence: mpsc::UnboundedReceiver<PresenceOp>,
}

impl Cluster {
    /// Opens the connections (they connect in the background and reconnect by themselves).
    pub fn connect(
        config: &Config,
        node_id: &str,
        redis_url: &str,
        amqp_url: &str,
    ) -> Result<(Arc<Self>, Inputs), String> {
        let node = node_id.to_owned();
        let amqp = Amqp::start(
            amqp_url.to_owned(),
            node_id.to_owned(),
            Arc::new(move |channel| {
                let node = node.clone();
                Box::pin(async move {
                    topology::declare_common(&channel).await?;
                    topology::declare_node_queue(&channel, &node).await
                })
            }),
        );
        let keys = Keys::new(&config.cluster_name);
        let redis = presence::connect(redis_url).map_err(|e| format!("redis url: {e}"))?;
        let redis_up = Arc::new(AtomicBool::new(false));
        // The node needs Redis to take its writes (presence, lease): its health check is a write.
        let mut probe = redis::cmd("SET");
        probe.arg(keys.health(node_id)).arg(1).arg("PX").arg(5_000);
        tokio::spawn(presence::watch_health(redis.clone(), redis_up.clone(), probe, Duration::from_secs(1)));
        let (bus, bus_events) = Subscriber::start(redis_url.to_owned(), redis.clone(), keys.clone(), node_id);
        let (presence, presence_rx) = mpsc::unbounded_channel();
        let cluster = Arc::new(Self { amqp, directory: Directory::new(redis, keys), bus, redis_up, presence });
        Ok((cluster, Inputs { bus: bus_events, presence: presence_rx }))
    }

    /// Whether Redis takes this node's writes (its health check, every second).
    pub fn redis_up(&self) -> bool {
        self.redis_up.load(Ordering::Relaxed)
    }

    /// Registers a session in the directory and waits until the entry is written (false after
    /// [`PRESENCE_WAIT`]).
    pub async fn join(&self, user: &UserId, session: String, seat: Seat) -> bool {
        let (done, written) = oneshot::channel();
        let _ = self.presence.send(PresenceOp::Change(Change::Join { user: user.clone(), session, seat }));
        let _ = self.presence.send(PresenceOp::Flushed(done));
        matches!(tokio::time::timeout(PRESENCE_WAIT, written).await, Ok(Ok(())))
    }

    /// Removes a session from the directory (written with the next batch).
    pub fn leave(&self, user: &UserId, session: String, node: &str) {
        let _ = self.presence.send(PresenceOp::Change(Change::Leave {
            user: user.clone(),
            session,
            node: node.to_owned(),
        }));
    }
}

/// Starts the node's cluster tasks.
pub fn run(node: &Arc<Node>, inputs: Inputs, stop: &CancellationToken, tasks: &tokio_util::task::TaskTracker) {
    let Some(cluster) = node.cluster.clone() else { return };
    tasks.spawn(write_presence(cluster.directory.clone(), inputs.presence, stop.clone()));
    tasks.spawn(keep_lease(node.clone(), stop.clone()));
    tasks.spawn(follow_bus(node.clone(), inputs.bus, stop.clone()));
    tasks.spawn(consume_deliveries(node.clone(), stop.clone()));
    tasks.spawn(publish_events(node.clone(), stop.clone()));
}

/// Writes presence changes in batches; answers flush requests once their batch is written.
async fn write_presence(directory: Directory, mut ops: mpsc::UnboundedReceiver<PresenceOp>, stop: CancellationToken) {
    let mut changes = Vec::new();
    let mut waiters = Vec::new();
    loop {
        let op = tokio::select! {
            op = ops.recv() => match op { Some(op) => op, None => return },
            () = stop.cancelled() => return,
        };
        let take = |op, changes: &mut Vec<Change>, waiters: &mut Vec<oneshot::Sender<()>>| match op {
            PresenceOp::Change(change) => changes.push(change),
            PresenceOp::Flushed(done) => waiters.push(done),
        };
        take(op, &mut changes, &mut waiters);
        let deadline = tokio::time::Instant::now() + PRESENCE_FLUSH;
        while changes.len() < 5_000 {
            match tokio::time::timeout_at(deadline, ops.recv()).await {
                Ok(Some(op)) => take(op, &mut changes, &mut waiters),
                _ => break,
            }
        }
        let mut backoff = pushgate_dispatcher::backoff::Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        // A batch's first failure is a warning, its retries are not (Redis's health check has
        // said it is down).
        let mut failures = 0u32;
        loop {
            match directory.apply(&changes).await {
                Ok(()) => {
                    if failures > 0 {
                        tracing::info!(failures, changes = changes.len(), "presence written after retries");
                    }
                    break;
                }
                Err(e) => {
                    if failures == 0 {
                        tracing::warn!(error = %e, changes = changes.len(), "writing presence failed; retrying");
                    } else {
                        tracing::debug!(error = %e, changes = changes.len(), "writing presence failed again");
                    }
                    failures += 1;
                    tokio::select! {
                        () = backoff.wait() => {}
                        () = stop.cancelled() => return,
                    }
                }
            }
        }
        changes.clear();
        for done in waiters.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Renews the node's lease; when Redis has forgotten the node, or the lease lapsed before a
/// renewal got through (Redis refused or missed the writes for longer than [`LEASE`]: meanwhile
/// dispatchers routed this node's users to no node, and their messages wait in the inboxes),
/// writes every local session again and asks every session to re-read its inbox. Also sweeps
/// nodes whose lease expired.
async fn keep_lease(node: Arc<Node>, stop: CancellationToken) {
    let Some(cluster) = node.cluster.clone() else { return };
    // Until when the last renewal that got through holds the lease (none before the first).
    let mut held_until: Option<u64> = None;
    loop {
        let until = pushgate_protocol::now_ms() + LEASE.as_millis() as u64;
        match cluster.directory.renew_lease(&node.node_id, until).await {
            Ok(missing) => {
                let now = pushgate_protocol::now_ms();
                match held_until {
                    Some(_) if missing => {
                        tracing::warn!(
                            "Redis lost this node's presence: writing it again, sessions re-read their inboxes"
                        );
                        resync(&node, &cluster);
                    }
                    Some(held) if held < now => {
                        let lapsed_ms = now - held;
                        tracing::warn!(
                            lapsed_ms,
                            "this node's lease lapsed before Redis took a renewal: writing presence again, sessions re-read their inboxes"
                        );
                        resync(&node, &cluster);
                    }
                    _ => {}
                }
                held_until = Some(until);
            }
            Err(e) => tracing::debug!(error = %e, "renewing the lease failed"),
        }
        if let Err(e) = cluster.directory.sweep(pushgate_protocol::now_ms()).await {
            tracing::debug!(error = %e, "presence sweep failed");
        }
        tokio::select! {
            () = tokio::time::sleep(LEASE / 4) => {}
            () = stop.cancelled() => return,
        }
    }
}

fn resync(node: &Node, cluster: &Cluster) {
    node.registry.for_each(|session| {
        let shared = session.shared();
        let seat = Seat { node: node.node_id.clone(), device: shared.device.clone(), since: shared.since_ms };
        let change = Change::Join { user: shared.user.clone(), session: session.id_string(), seat };
        let _ = cluster.presence.send(PresenceOp::Change(change));
        session.request_catch_up();
    });
}

/// Delivers channel and broadcast messages from the bus; carries out admin actions.
async fn follow_bus(node: Arc<Node>, mut events: mpsc::Receiver<BusEvent>, stop: CancellationToken) {
    loop {
        let event = tokio::select! {
            event = events.recv() => match event { Some(e) => e, None => return },
            () = stop.cancelled() => return,
        };
        match event {
            BusEvent::Message(m) => {
                let content = Content { id: &m.id, ts: m.ts, data: &m.data };
                let audience = match &m.channel {
                    Some(channel) => Audience::Channel(channel),
                    None => Audience::All,
                };
                delivery::deliver(&node, content, audience);
            }
            BusEvent::Control(Control::Disconnect { user }) => {
                for session in node.registry.user_sessions(user.as_str()) {
                    session
                        .request_close(CloseRequest::new(CloseCode::AdminDisconnect, "disconnected by the admin API"));
                }
            }
            BusEvent::Connected => tracing::info!("subscribed to the Redis bus"),
            BusEvent::Missed { channel, count } => {
                delivery::announce_gap(&node, channel.as_ref(), count);
            }
        }
    }
}

/// Consumes the node's delivery queue; acks each delivery once its frames are queued.
async fn consume_deliveries(node: Arc<Node>, stop: CancellationToken) {
    let Some(cluster) = node.cluster.clone() else { return };
    let node_id = node.node_id.clone();
    let prepare: pushgate_dispatcher::amqp::Declare = Arc::new(move |channel| {
        let node = node_id.clone();
        Box::pin(async move { topology::declare_node_queue(&channel, &node).await })
    });
    let mut deliveries =
        cluster.amqp.consume(names::node_queue(&node.node_id), NODE_PREFETCH, FieldTable::default(), Some(prepare));
    loop {
        let delivery = tokio::select! {
            d = deliveries.recv() => match d { Some(d) => d, None => return },
            () = stop.cancelled() => return,
        };
        match NodeDelivery::decode(&delivery.data) {
            Ok(batch) => {
                for message in &batch.messages {
                    let content = Content { id: &message.id, ts: message.ts, data: &message.data };
                    delivery::deliver(&node, content, Audience::Users(&message.users));
                }
            }
            Err(e) => tracing::warn!(error = %e, "dropping a malformed node delivery"),
        }
        if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
            tracing::debug!(error = %e, "acking a node delivery failed (it will be redelivered)");
        }
    }
}

/// Sends acks and session events to the dispatchers in batches (at least every
/// `ack_flush_interval`); what cannot be sent stays pending.
async fn publish_events(node: Arc<Node>, stop: CancellationToken) {
    let Some(cluster) = node.cluster.clone() else { return };
    let book = node.durable.book.clone();
    loop {
        tokio::select! {
            () = book.due(node.config.ack_flush_interval) => {}
            () = stop.cancelled() => return,
        }
        flush_events(&node, &cluster).await;
    }
}

/// One batch of acks and session events to the dispatchers; restored if the broker refuses it.
pub async fn flush_events(node: &Node, cluster: &Cluster) {
    let properties = BasicProperties::default().with_content_type("application/json".into());
    let sent = node
        .durable
        .book
        .write_pending(async |batch: &EventBatch| {
            let body = batch.encode();
            let timeout = Duration::from_secs(5);
            cluster.amqp.publish(names::EVENTS_EXCHANGE, topology::EVENTS_KEY, &body, properties, true, timeout).await
        })
        .await;
    if let Err(e) = sent {
        tracing::warn!(error = %e, "sending acks and session events failed; will retry");
    }
}

/// Answers a client's `subscribe` with `reply` once the node hears the channel: at once in
/// standalone mode (the reply is handed back), in cluster mode once the node's bus subscription
/// is in place (subscribing it when `first` — the channel's first local subscriber), through
/// the session's outbox. So a message published after the client saw `subscribed` reaches it.
#[must_use]
pub fn channel_subscribed(
    node: &Node,
    session: &SessionHandle,
    channel: &ChannelName,
    first: bool,
    reply: Bytes,
) -> Option<Bytes> {
    let Some(cluster) = &node.cluster else { return Some(reply) };
    let (session, limits) = (session.clone(), node.outbox_limits);
    let then: OnSubscribed = Box::new(move || {
        session.push(&Outbound::control(reply), None, limits);
    });
    if first {
        cluster.bus.subscribe(channel.clone(), Some(then));
    } else {
        cluster.bus.confirm(channel.clone(), then);
    }
    None
}

/// Unsubscribes the node from a channel's bus topic (its last local subscriber left).
pub fn channel_closed(node: &Node, channel: &ChannelName) {
    if let Some(cluster) = &node.cluster {
        cluster.bus.unsubscribe(channel.clone());
    }
}
