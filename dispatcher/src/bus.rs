//! The fan-out bus over Redis pub/sub (DESIGN): channel and broadcast messages go from a
//! dispatcher to every gateway node that needs them — a node subscribes to a channel only while
//! it has a local subscriber — and cluster-wide admin actions go from one gateway to all.
//!
//! The subscriber is an actor: one task owns the pub/sub connection, keeps the set of wanted
//! channels, and on every reconnect subscribes to all of them again. Messages published while it
//! was disconnected are lost — channel and broadcast messages are best effort (SPEC §6).

use std::{collections::HashSet, time::Duration};

use futures_util::StreamExt;
use pushgate_protocol::{
    ChannelName,
    cluster::{BusMessage, Control},
};
use redis::{AsyncCommands as _, aio::ConnectionManager};
use tokio::sync::mpsc;

use crate::{backoff::Backoff, presence::Keys};

/// Publishes a channel or broadcast message.
pub async fn publish(redis: &mut ConnectionManager, keys: &Keys, message: &BusMessage) -> redis::RedisResult<()> {
    let topic = match &message.channel {
        Some(channel) => keys.channel(channel),
        None => keys.all(),
    };
    redis.publish::<_, _, ()>(topic, message.encode()).await
}

/// Publishes a cluster-wide admin action.
pub async fn publish_control(redis: &mut ConnectionManager, keys: &Keys, control: &Control) -> redis::RedisResult<()> {
    redis.publish::<_, _, ()>(keys.control(), control.encode()).await
}

/// What the subscriber hands to its node.
#[derive(Debug)]
pub enum BusEvent {
    Message(BusMessage),
    Control(Control),
    /// (Re)connected and subscribed: anything published during the gap was missed.
    Connected,
}

enum Command {
    Subscribe(ChannelName),
    Unsubscribe(ChannelName),
}

/// A handle to the subscriber actor.
#[derive(Debug, Clone)]
pub struct Subscriber {
    commands: mpsc::UnboundedSender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Subscribe(c) => write!(f, "Subscribe({c})"),
            Self::Unsubscribe(c) => write!(f, "Unsubscribe({c})"),
        }
    }
}

impl Subscriber {
    /// Starts the actor on `url`; it always listens to broadcasts and admin actions.
    pub fn start(url: String, keys: Keys) -> (Self, mpsc::Receiver<BusEvent>) {
        let (commands, rx) = mpsc::unbounded_channel();
        // Bounded: a node that cannot keep up with the bus slows its own subscriber, not memory.
        let (events, out) = mpsc::channel(4096);
        tokio::spawn(own(url, keys, rx, events));
        (Self { commands }, out)
    }

    /// Starts listening to `channel` (its first local subscriber arrived).
    pub fn subscribe(&self, channel: ChannelName) {
        let _ = self.commands.send(Command::Subscribe(channel));
    }

    /// Stops listening to `channel` (its last local subscriber left).
    pub fn unsubscribe(&self, channel: ChannelName) {
        let _ = self.commands.send(Command::Unsubscribe(channel));
    }
}

async fn own(url: String, keys: Keys, mut commands: mpsc::UnboundedReceiver<Command>, events: mpsc::Sender<BusEvent>) {
    let mut wanted: HashSet<ChannelName> = HashSet::new();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let connected = async {
            let client = redis::Client::open(url.as_str())?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(keys.all()).await?;
            pubsub.subscribe(keys.control()).await?;
            for channel in &wanted {
                pubsub.subscribe(keys.channel(channel)).await?;
            }
            redis::RedisResult::Ok(pubsub)
        };
        let pubsub = match tokio::time::timeout(Duration::from_secs(5), connected).await {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot subscribe to the Redis bus");
                backoff.wait().await;
                continue;
            }
            Err(_) => {
                tracing::warn!("subscribing to the Redis bus timed out");
                backoff.wait().await;
                continue;
            }
        };
        backoff.reset();
        if events.send(BusEvent::Connected).await.is_err() {
            return;
        }
        let (mut sink, mut stream) = pubsub.split();
        loop {
            tokio::select! {
                command = commands.recv() => {
                    let Some(command) = command else { return };
                    let result = match command {
                        Command::Subscribe(channel) => {
                            let topic = keys.channel(&channel);
                            wanted.insert(channel);
                            sink.subscribe(topic).await
                        }
                        Command::Unsubscribe(channel) => {
                            let topic = keys.channel(&channel);
                            wanted.remove(&channel);
                            sink.unsubscribe(topic).await
                        }
                    };
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "Redis bus command failed; reconnecting");
                        break;
                    }
                }
                message = stream.next() => {
                    let Some(message) = message else {
                        tracing::warn!("the Redis bus connection ended; reconnecting");
                        break;
                    };
                    let event = if message.get_channel_name() == keys.control() {
                        Control::decode(message.get_payload_bytes()).map(BusEvent::Control).ok()
                    } else {
                        BusMessage::decode(message.get_payload_bytes()).map(BusEvent::Message).ok()
                    };
                    match event {
                        Some(event) => {
                            if events.send(event).await.is_err() {
                                return;
                            }
                        }
                        None => tracing::warn!(topic = %message.get_channel_name(), "dropping a malformed bus message"),
                    }
                }
            }
        }
        backoff.wait().await;
    }
}
