//! The fan-out bus over Redis pub/sub (DESIGN): channel and broadcast messages go from a
//! dispatcher to every gateway node that needs them — a node subscribes to a channel only while
//! it has a local subscriber — and cluster-wide admin actions go from one gateway to all.
//!
//! The subscriber is an actor: one task owns the pub/sub connection, keeps the set of wanted
//! channels, and on every reconnect subscribes to all of them again. Messages published while it
//! was disconnected are lost — channel and broadcast messages are best effort (SPEC §6).

use std::{collections::HashMap, time::Duration};

use futures_util::StreamExt;
use metrics::counter;
use pushgate_protocol::{
    ChannelName,
    cluster::{BusMessage, Control},
};
use redis::{AsyncCommands as _, aio::ConnectionManager};
use tokio::sync::mpsc;

use crate::{backoff::Backoff, presence::Keys};

/// Messages on the bus that no pushgate process wrote (they cannot be decoded), dropped.
pub const BUS_MALFORMED: &str = "pushgate_bus_malformed_total";

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

/// Runs once the node is subscribed to a channel (to answer the client's `subscribe`).
pub type OnSubscribed = Box<dyn FnOnce() + Send>;

enum Command {
    Subscribe(ChannelName, Option<OnSubscribed>),
    /// Runs the callback once the channel's subscription is in place.
    Confirm(ChannelName, OnSubscribed),
    Unsubscribe(ChannelName),
}

/// A wanted channel: subscribed on the current connection, or waiting for it.
enum Wanted {
    Active,
    Pending(Vec<OnSubscribed>),
}

/// A handle to the subscriber actor.
#[derive(Debug, Clone)]
pub struct Subscriber {
    commands: mpsc::UnboundedSender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Subscribe(c, _) => write!(f, "Subscribe({c})"),
            Self::Confirm(c, _) => write!(f, "Confirm({c})"),
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

    /// Starts listening to `channel` (its first local subscriber arrived); `then` runs once
    /// Redis has confirmed the subscription.
    pub fn subscribe(&self, channel: ChannelName, then: Option<OnSubscribed>) {
        let _ = self.commands.send(Command::Subscribe(channel, then));
    }

    /// Runs `then` once the node's subscription to `channel` is in place (another local
    /// subscriber may have asked for it a moment ago).
    pub fn confirm(&self, channel: ChannelName, then: OnSubscribed) {
        let _ = self.commands.send(Command::Confirm(channel, then));
    }

    /// Stops listening to `channel` (its last local subscriber left).
    pub fn unsubscribe(&self, channel: ChannelName) {
        let _ = self.commands.send(Command::Unsubscribe(channel));
    }
}

async fn own(url: String, keys: Keys, mut commands: mpsc::UnboundedReceiver<Command>, events: mpsc::Sender<BusEvent>) {
    let mut wanted: HashMap<ChannelName, Wanted> = HashMap::new();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let channels: Vec<ChannelName> = wanted.keys().cloned().collect();
        let connected = async {
            let client = redis::Client::open(url.as_str())?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(keys.all()).await?;
            pubsub.subscribe(keys.control()).await?;
            for channel in &channels {
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
        for state in wanted.values_mut() {
            if let Wanted::Pending(waiting) = std::mem::replace(state, Wanted::Active) {
                waiting.into_iter().for_each(|then| then());
            }
        }
        if events.send(BusEvent::Connected).await.is_err() {
            return;
        }
        let (mut sink, mut stream) = pubsub.split();
        loop {
            tokio::select! {
                command = commands.recv() => {
                    let Some(command) = command else { return };
                    let result = match command {
                        Command::Subscribe(channel, then) => {
                            let topic = keys.channel(&channel);
                            let waiting = match wanted.remove(&channel) {
                                Some(Wanted::Pending(waiting)) => waiting,
                                _ => Vec::new(),
                            };
                            wanted.insert(channel.clone(), Wanted::Pending(waiting.into_iter().chain(then).collect()));
                            let result = sink.subscribe(topic).await;
                            if result.is_ok()
                                && let Some(Wanted::Pending(waiting)) = wanted.insert(channel, Wanted::Active)
                            {
                                waiting.into_iter().for_each(|then| then());
                            }
                            result
                        }
                        Command::Confirm(channel, then) => {
                            match wanted.get_mut(&channel) {
                                Some(Wanted::Pending(waiting)) => waiting.push(then),
                                _ => then(),
                            }
                            Ok(())
                        }
                        Command::Unsubscribe(channel) => {
                            let topic = keys.channel(&channel);
                            if let Some(Wanted::Pending(waiting)) = wanted.remove(&channel) {
                                waiting.into_iter().for_each(|then| then());
                            }
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
                        Control::decode(message.get_payload_bytes()).map(BusEvent::Control)
                    } else {
                        BusMessage::decode(message.get_payload_bytes()).map(BusEvent::Message)
                    };
                    match event {
                        Ok(event) => {
                            if events.send(event).await.is_err() {
                                return;
                            }
                        }
                        // Not from a pushgate process of this version: nothing to deliver, so it
                        // is counted and logged with why.
                        Err(e) => {
                            counter!(BUS_MALFORMED).increment(1);
                            tracing::warn!(topic = %message.get_channel_name(), error = %e, "dropping a malformed bus message");
                        }
                    }
                }
            }
        }
        // Until the next connection, every wanted channel waits again.
        for state in wanted.values_mut() {
            if matches!(state, Wanted::Active) {
                *state = Wanted::Pending(Vec::new());
            }
        }
        backoff.wait().await;
    }
}
