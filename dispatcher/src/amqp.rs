//! RabbitMQ as an actor (STYLE habit 3): one owner task holds the connection, declares the
//! topology on every connect, and reconnects with jittered exponential backoff when the
//! connection drops; everyone else holds a cheap [`Amqp`] handle to publish with confirms or to
//! consume. Consumers survive reconnects: each is a task that opens a fresh channel on every new
//! connection and forwards deliveries; deliveries not acked when a connection dies are redelivered
//! by the broker, so nothing in flight is lost. While the broker blocks publishers (a memory or
//! disk alarm: `connection.blocked`), publishes wait for it to lift, within their bound, rather than
//! queue unseen behind it.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::StreamExt;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Event,
    message::Delivery,
    options::{BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions},
    types::FieldTable,
};
use metrics::gauge;
use tokio::sync::{mpsc, watch};

use crate::backoff::Backoff;

pub const BACKEND_UP: &str = "pushgate_backend_up";
/// 1 while the broker blocks this process's publishers (a resource alarm), else 0.
pub const BROKER_BLOCKED: &str = "pushgate_broker_blocked";

/// Why a publish did not go through.
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    #[error("the broker is unreachable (waited {0:?})")]
    Unavailable(Duration),
    #[error("the broker is blocking publishers: {reason} (waited {waited:?})")]
    Blocked { reason: String, waited: Duration },
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("the message could not be routed to any queue")]
    Unroutable,
    /// The connection failed with the message sent (or while sending it): the broker may have it.
    #[error("amqp: {0}")]
    Protocol(#[from] lapin::Error),
}

/// Declares what a process needs (exchanges, queues, bindings) on a fresh channel.
pub type Declare = Arc<dyn Fn(Channel) -> Pin<Box<dyn Future<Output = Result<(), lapin::Error>> + Send>> + Send + Sync>;

#[derive(Clone)]
struct Link {
    connection: Arc<Connection>,
    /// A channel in confirm mode shared by all publishers.
    publisher: Channel,
    generation: u64,
}

struct Shared {
    current: watch::Sender<Option<Link>>,
    /// The broker's reason while it blocks the current connection's publishers.
    blocked: watch::Sender<Option<String>>,
    /// Generations reported broken by users; the owner reconnects when it sees its own.
    broken: AtomicU64,
    wake: tokio::sync::Notify,
}

/// A handle to the broker connection.
#[derive(Clone)]
pub struct Amqp {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Amqp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Amqp").field("up", &self.is_up()).finish()
    }
}

impl Amqp {
    /// Starts the owner task for `url`; `declare` runs on every (re)connect before the
    /// connection is handed out.
    pub fn start(url: String, name: String, declare: Declare) -> Self {
        let (current, _) = watch::channel(None);
        let (blocked, _) = watch::channel(None);
        let shared = Arc::new(Shared { current, blocked, broken: AtomicU64::new(0), wake: tokio::sync::Notify::new() });
        tokio::spawn(own(shared.clone(), url, name, declare));
        Self { shared }
    }

    /// Whether a connection is up now.
    pub fn is_up(&self) -> bool {
        self.shared.current.borrow().is_some()
    }

    /// Waits until connected, at most `within`.
    async fn link(&self, within: Duration) -> Option<Link> {
        let mut rx = self.shared.current.subscribe();
        let wait = rx.wait_for(Option::is_some);
        match tokio::time::timeout(within, wait).await {
            Ok(Ok(link)) => link.clone(),
            _ => None,
        }
    }

    /// Waits until connected, however long it takes.
    pub async fn connected(&self) {
        let mut rx = self.shared.current.subscribe();
        let _ = rx.wait_for(Option::is_some).await;
    }

    fn report_broken(&self, generation: u64) {
        self.shared.broken.fetch_max(generation, Ordering::SeqCst);
        self.shared.wake.notify_one();
    }

    /// Waits until the broker takes publishes (it blocks them during a resource alarm), at most
    /// until `deadline`; the broker's reason when it still blocks them then.
    async fn unblocked(&self, deadline: tokio::time::Instant) -> Result<(), String> {
        let mut blocked = self.shared.blocked.subscribe();
        if tokio::time::timeout_at(deadline, blocked.wait_for(Option::is_none)).await.is_ok() {
            return Ok(());
        }
        Err(self.shared.blocked.borrow().clone().unwrap_or_default())
    }

    /// Publishes persistently and waits for the broker's confirm, retrying across reconnects
    /// until `within` has passed. `mandatory` makes an unroutable message an error. While the
    /// broker blocks publishers, nothing is sent: a message sent then would wait in the
    /// connection, unconfirmed, for as long as the alarm lasts. (The broker says it blocks only
    /// once the connection has published into the alarm, so that first message is sent, and
    /// waits for its confirm.)
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
        mandatory: bool,
        within: Duration,
    ) -> Result<(), AmqpError> {
        let deadline = tokio::time::Instant::now() + within;
        // Why an earlier try failed after sending: the broker may have the message, so giving up
        // later says that, not only why the last try could not send.
        let mut sent_and_failed: Option<lapin::Error> = None;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(link) = self.link(left).await else {
                return Err(sent_and_failed.map_or(AmqpError::Unavailable(within), AmqpError::Protocol));
            };
            if let Err(reason) = self.unblocked(deadline).await {
                return Err(sent_and_failed.map_or(AmqpError::Blocked { reason, waited: within }, AmqpError::Protocol));
            }
            let options = BasicPublishOptions { mandatory, ..BasicPublishOptions::default() };
            let sent = link
                .publisher
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    options,
                    body,
                    properties.clone().with_delivery_mode(2),
                )
                .await;
            let confirmed = match sent {
                Ok(confirm) => confirm.await,
                Err(e) => Err(e),
            };
            match confirmed {
                Ok(Confirmation::Ack(None) | Confirmation::NotRequested) => return Ok(()),
                Ok(Confirmation::Ack(Some(_))) => return Err(AmqpError::Unroutable),
                Ok(Confirmation::Nack(_)) => return Err(AmqpError::Nacked),
                Err(e) => {
                    tracing::debug!(error = %e, "publish failed; waiting for the connection");
                    self.report_broken(link.generation);
                    if tokio::time::Instant::now() >= deadline {
                        return Err(AmqpError::Protocol(e));
                    }
                    sent_and_failed = Some(e);
                    // Let the owner notice before trying again.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// Consumes `queue` with manual acks and at most `prefetch` unacked deliveries, across
    /// reconnects. `prepare` runs on the consumer's channel before each `basic.consume` (to
    /// declare a queue that may have expired). The stream ends only when the receiver is dropped.
    pub fn consume(
        &self,
        queue: String,
        prefetch: u16,
        arguments: FieldTable,
        prepare: Option<Declare>,
    ) -> mpsc::Receiver<Delivery> {
        let (tx, rx) = mpsc::channel(usize::from(prefetch.max(1)));
        let amqp = self.clone();
        tokio::spawn(async move {
            let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
            loop {
                amqp.connected().await;
                let Some(link) = amqp.link(Duration::from_secs(1)).await else { continue };
                match consume_once(&link, &queue, prefetch, &arguments, prepare.as_ref(), &tx).await {
                    Ok(Ended::ReceiverGone) => return,
                    Ok(Ended::Stream) => tracing::warn!(queue = %queue, "consumer ended; restarting"),
                    Err(e) => tracing::warn!(queue = %queue, error = %e, "consumer failed; restarting"),
                }
                if !link.connection.status().connected() {
                    amqp.report_broken(link.generation);
                }
                backoff.wait().await;
            }
        });
        rx
    }
}

/// How a consumer's run ended.
enum Ended {
    ReceiverGone,
    /// The broker ended the stream (connection lost, consumer cancelled).
    Stream,
}

async fn consume_once(
    link: &Link,
    queue: &str,
    prefetch: u16,
    arguments: &FieldTable,
    prepare: Option<&Declare>,
    tx: &mpsc::Sender<Delivery>,
) -> Result<Ended, lapin::Error> {
    let channel = link.connection.create_channel().await?;
    if let Some(prepare) = prepare {
        prepare(channel.clone()).await?;
    }
    channel.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let mut consumer =
        channel.basic_consume(queue.into(), "".into(), BasicConsumeOptions::default(), arguments.clone()).await?;
    while let Some(delivery) = consumer.next().await {
        if tx.send(delivery?).await.is_err() {
            let _ = channel.close(200, "consumer done".into()).await;
            return Ok(Ended::ReceiverGone);
        }
    }
    Ok(Ended::Stream)
}

fn set_blocked(shared: &Shared, reason: Option<String>) {
    gauge!(BROKER_BLOCKED).set(if reason.is_some() { 1.0 } else { 0.0 });
    shared.blocked.send_replace(reason);
}

/// The owner task: connect, declare, hand out, wait for breakage, reconnect.
async fn own(shared: Arc<Shared>, url: String, name: String, declare: Declare) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    let mut generation = 0u64;
    loop {
        let properties = ConnectionProperties::default().with_connection_name(name.clone().into());
        let connected = async {
            let connection = Connection::connect(&url, properties).await?;
            declare(connection.create_channel().await?).await?;
            let publisher = connection.create_channel().await?;
            publisher.confirm_select(ConfirmSelectOptions::default()).await?;
            Ok::<_, lapin::Error>((connection, publisher))
        };
        match tokio::time::timeout(Duration::from_secs(10), connected).await {
            Ok(Ok((connection, publisher))) => {
                generation += 1;
                let connection = Arc::new(connection);
                let mut events = connection.events_listener();
                // The broker may have blocked it before the listener was there to hear it.
                set_blocked(&shared, connection.status().blocked().then(|| "a resource alarm".to_owned()));
                shared.current.send_replace(Some(Link { connection: connection.clone(), publisher, generation }));
                gauge!(BACKEND_UP, "backend" => "amqp").set(1.0);
                tracing::info!(generation, "connected to RabbitMQ");
                backoff.reset();
                loop {
                    tokio::select! {
                        event = events.next() => match event {
                            Some(Event::Error(e)) => {
                                tracing::warn!(error = %e, "RabbitMQ connection failed");
                                break;
                            }
                            Some(Event::ConnectionBlocked(reason)) => {
                                tracing::warn!(reason = %reason, "RabbitMQ blocks publishing (a resource alarm); publishes wait");
                                set_blocked(&shared, Some(reason));
                            }
                            Some(Event::ConnectionUnblocked) => {
                                tracing::info!("RabbitMQ takes publishes again");
                                set_blocked(&shared, None);
                            }
                            Some(_) => {}
                            None => break,
                        },
                        () = shared.wake.notified() => {
                            // A user saw this connection (or its publishing channel) fail.
                            if shared.broken.load(Ordering::SeqCst) >= generation {
                                break;
                            }
                        }
                    }
                }
                shared.current.send_replace(None);
                gauge!(BACKEND_UP, "backend" => "amqp").set(0.0);
                // A new connection starts unblocked; the broker says so again if the alarm lasts.
                set_blocked(&shared, None);
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), connection.close(200, "reconnecting".into())).await;
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot connect to RabbitMQ"),
            Err(_) => tracing::warn!("connecting to RabbitMQ timed out"),
        }
        backoff.wait().await;
    }
}
