//! The fan-out bus over Redis pub/sub (DESIGN): channel and broadcast messages go from a
//! dispatcher to every gateway node that needs them — a node subscribes to a channel only while
//! it has a local subscriber — and cluster-wide admin actions go from one gateway to all.
//!
//! The subscriber is an actor: one task owns the pub/sub connection, keeps the set of wanted
//! channels, and on every reconnect subscribes to all of them again. Redis does not keep what
//! was published while a subscriber's connection was down, so the bus counts instead: each
//! message is numbered on its topic as it is published ([`BusMessage::topic_seq`], within the
//! count's [`BusMessage::topic_epoch`]), and after each reconnect the node asks Redis for a
//! checkpoint of its topics' counts. A number that skips, or a checkpoint ahead of the last
//! number seen, tells the node how many messages it missed on that topic; it hands that on
//! ([`BusEvent::Missed`]) so its sessions get a `gap` frame rather than silent loss (SPEC §6:
//! channel and broadcast messages are best effort).

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
/// Messages a node missed on the bus while its connection was cut (`target`: channel, all).
pub const BUS_MISSED: &str = "pushgate_bus_missed_total";

/// How long a topic's count outlives its last message.
const COUNT_TTL_MS: u64 = 24 * 60 * 60 * 1000;

/// Publishes a message on a topic, numbered: the topic's count (a hash under the key of the
/// same name: `n`, and `epoch`, the µs since the Unix epoch when the count began) goes up by one
/// and the message carries both, in one step, so the numbers on a topic come in the order its
/// subscribers receive them. A count that begins again (Redis lost it in a restart, or it expired
/// after a quiet day) has a new epoch. `allow-oom`: Redis out of memory still carries the bus, as
/// a plain PUBLISH did (the count is a few bytes). A key that is not a count (something else wrote
/// it) leaves the message unnumbered rather than unpublished.
const PUBLISH_SCRIPT: &str = r#"#!lua flags=allow-oom
local n = redis.pcall('HINCRBY', KEYS[1], 'n', 1)
if type(n) == 'table' then
  redis.call('PUBLISH', KEYS[1], ARGV[1])
  return 0
end
local epoch
if n == 1 then
  local now = redis.call('TIME')
  epoch = now[1] .. string.format('%06d', now[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch)
else
  epoch = redis.call('HGET', KEYS[1], 'epoch')
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PUBLISH', KEYS[1], '{"topic_epoch":' .. epoch .. ',"topic_seq":' .. n .. ',' .. string.sub(ARGV[1], 2))
return n
"#;

/// Reads the counts of topics (`KEYS[2..]`) and publishes them as `epoch:n` (`0:0`: none),
/// after the checkpoint's number (`ARGV[1]`), on a node's checkpoint channel (`KEYS[1]`), in one
/// step: by the time the node receives the checkpoint, it has received every message up to
/// those counts that it will get.
const CHECKPOINT_SCRIPT: &str = r#"
local marks = {}
for i = 2, #KEYS do
  local count = redis.pcall('HMGET', KEYS[i], 'epoch', 'n')
  if count.err then count = {} end
  marks[i - 1] = (count[1] or '0') .. ':' .. (count[2] or '0')
end
redis.call('PUBLISH', KEYS[1], ARGV[1] .. ' ' .. table.concat(marks, ' '))
return #marks
"#;

/// The pub/sub channel of a channel's messages (`None`: of broadcasts).
fn topic(keys: &Keys, channel: Option<&ChannelName>) -> String {
    match channel {
        Some(channel) => keys.channel(channel),
        None => keys.all(),
    }
}

/// The command that publishes a channel or broadcast message on the bus, numbered.
pub fn publish_command(keys: &Keys, message: &BusMessage) -> redis::Cmd {
    let topic = topic(keys, message.channel.as_ref());
    debug_assert!(message.topic_seq.is_none() && message.topic_epoch.is_none(), "the publish script numbers it");
    // A JSON object: the script puts its count's fields after its opening brace.
    let body = message.encode();
    let mut command = redis::cmd("EVAL");
    command.arg(PUBLISH_SCRIPT).arg(1).arg(topic).arg(body).arg(COUNT_TTL_MS);
    command
}

/// Publishes channel and broadcast messages, in order, in one round trip.
pub async fn publish(redis: &mut ConnectionManager, keys: &Keys, messages: &[BusMessage]) -> redis::RedisResult<()> {
    let mut pipeline = redis::pipe();
    for message in messages {
        pipeline.add_command(publish_command(keys, message)).ignore();
    }
    pipeline.query_async::<()>(redis).await
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
    /// (Re)connected and subscribed.
    Connected,
    /// The node missed this many messages on a channel (`None`: broadcasts) while its bus
    /// connection was cut; handed on before the next message of that topic.
    Missed {
        channel: Option<ChannelName>,
        count: u64,
    },
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

/// A point in a topic's numbering: message `n` of the count that began at `epoch`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Mark {
    epoch: u64,
    n: u64,
}

impl Mark {
    /// The mark a message carries, if its publisher numbered it.
    fn of(message: &BusMessage) -> Option<Self> {
        Some(Self { epoch: message.topic_epoch?, n: message.topic_seq? })
    }

    /// `epoch:n`, as a checkpoint lists it.
    fn parse(text: &str) -> Option<Self> {
        let (epoch, n) = text.split_once(':')?;
        Some(Self { epoch: epoch.parse().ok()?, n: n.parse().ok()? })
    }
}

/// Where the node stands on one topic: the last mark it saw (a message's, or a checkpoint's).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Numbering {
    last: Option<Mark>,
}

impl Numbering {
    /// Message `at` arrived; returns how many before it the node missed.
    fn message(&mut self, at: Mark) -> u64 {
        self.advance(at, at.n.saturating_sub(1))
    }

    /// A checkpoint says the topic's count stood at `at`, and the node has got every message
    /// up to it that it will get; returns how many it missed.
    fn checkpoint(&mut self, at: Mark) -> u64 {
        self.advance(at, at.n)
    }

    /// Moves to `at`. `unseen` is how many messages numbered up to `at` the node does not hold:
    /// `n - 1` with message `n` in hand, `n` at a checkpoint.
    fn advance(&mut self, at: Mark, unseen: u64) -> u64 {
        let missed = match self.last {
            // The node has just started to listen: nothing before was meant for it.
            None => 0,
            // A count that began again: every message of it so far, but the one in hand.
            Some(last) if last.epoch != at.epoch => unseen,
            Some(last) => unseen.saturating_sub(last.n),
        };
        self.last = Some(at);
        missed
    }
}

/// A checkpoint asked for after a reconnect: its number and the topics it counts, in order.
struct Checkpoint {
    number: u64,
    topics: Vec<Option<ChannelName>>,
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
    /// Starts the actor of node `node` on `url`; it always listens to broadcasts, admin actions
    /// and its checkpoints, which it asks for through `redis`.
    pub fn start(url: String, redis: ConnectionManager, keys: Keys, node: &str) -> (Self, mpsc::Receiver<BusEvent>) {
        let (commands, rx) = mpsc::unbounded_channel();
        // Bounded: a node that cannot keep up with the bus slows its own subscriber, not memory.
        let (events, out) = mpsc::channel(4096);
        let actor = Actor {
            url,
            redis,
            checkpoints: keys.checkpoint(node),
            control: keys.control(),
            keys,
            wanted: HashMap::new(),
            numbering: HashMap::new(),
            checkpoint: None,
            events,
        };
        tokio::spawn(actor.run(rx));
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

/// The subscriber's task and what it owns.
struct Actor {
    url: String,
    /// For checkpoints (the pub/sub connection takes no other command).
    redis: ConnectionManager,
    keys: Keys,
    /// This node's checkpoint channel.
    checkpoints: String,
    /// The admin actions' channel.
    control: String,
    wanted: HashMap<ChannelName, Wanted>,
    /// Per topic listened to (`None`: broadcasts).
    numbering: HashMap<Option<ChannelName>, Numbering>,
    /// The checkpoint asked for after the last reconnect, until it arrives.
    checkpoint: Option<Checkpoint>,
    events: mpsc::Sender<BusEvent>,
}

/// The actor's node has gone (its event receiver is dropped).
struct Gone;

impl Actor {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut checkpoints = 0;
        loop {
            let Some(pubsub) = self.connect().await else {
                backoff.wait().await;
                continue;
            };
            backoff.reset();
            for state in self.wanted.values_mut() {
                if let Wanted::Pending(waiting) = std::mem::replace(state, Wanted::Active) {
                    waiting.into_iter().for_each(|then| then());
                }
            }
            if self.send(BusEvent::Connected).await.is_err() {
                return;
            }
            checkpoints += 1;
            self.ask_checkpoint(checkpoints).await;
            if self.listen(pubsub, &mut commands).await.is_err() {
                return;
            }
            // Until the next connection, every wanted channel waits again.
            for state in self.wanted.values_mut() {
                if matches!(state, Wanted::Active) {
                    *state = Wanted::Pending(Vec::new());
                }
            }
            backoff.wait().await;
        }
    }

    /// Connects and subscribes to every topic the node listens to.
    async fn connect(&mut self) -> Option<redis::aio::PubSub> {
        let mut topics = vec![self.keys.all(), self.control.clone(), self.checkpoints.clone()];
        topics.extend(self.wanted.keys().map(|channel| self.keys.channel(channel)));
        let connected = async {
            let client = redis::Client::open(self.url.as_str())?;
            let mut pubsub = client.get_async_pubsub().await?;
            for topic in topics {
                pubsub.subscribe(topic).await?;
            }
            redis::RedisResult::Ok(pubsub)
        };
        match tokio::time::timeout(Duration::from_secs(5), connected).await {
            Ok(Ok(pubsub)) => Some(pubsub),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot subscribe to the Redis bus");
                None
            }
            Err(_) => {
                tracing::warn!("subscribing to the Redis bus timed out");
                None
            }
        }
    }

    /// Asks Redis for a checkpoint of every topic the node listens to. When it cannot, a gap
    /// still shows at the topic's next message.
    async fn ask_checkpoint(&mut self, number: u64) {
        let topics: Vec<Option<ChannelName>> =
            std::iter::once(None).chain(self.wanted.keys().cloned().map(Some)).collect();
        let mut command = redis::cmd("EVAL");
        command.arg(CHECKPOINT_SCRIPT).arg(topics.len() + 1).arg(&self.checkpoints);
        for channel in &topics {
            command.arg(topic(&self.keys, channel.as_ref()));
        }
        command.arg(number);
        match command.query_async::<u64>(&mut self.redis).await {
            Ok(_) => self.checkpoint = Some(Checkpoint { number, topics }),
            Err(e) => tracing::warn!(error = %e, "asking Redis for a bus checkpoint failed"),
        }
    }

    /// Carries out commands and hands on what arrives, until the connection ends.
    async fn listen(
        &mut self,
        pubsub: redis::aio::PubSub,
        commands: &mut mpsc::UnboundedReceiver<Command>,
    ) -> Result<(), Gone> {
        let (mut sink, mut stream) = pubsub.split();
        loop {
            tokio::select! {
                command = commands.recv() => {
                    let Some(command) = command else { return Err(Gone) };
                    let result = match command {
                        Command::Subscribe(channel, then) => {
                            let topic = self.keys.channel(&channel);
                            let waiting = match self.wanted.remove(&channel) {
                                Some(Wanted::Pending(waiting)) => waiting,
                                _ => Vec::new(),
                            };
                            self.wanted.insert(channel.clone(), Wanted::Pending(waiting.into_iter().chain(then).collect()));
                            let result = sink.subscribe(topic).await;
                            if result.is_ok()
                                && let Some(Wanted::Pending(waiting)) = self.wanted.insert(channel, Wanted::Active)
                            {
                                waiting.into_iter().for_each(|then| then());
                            }
                            result
                        }
                        Command::Confirm(channel, then) => {
                            match self.wanted.get_mut(&channel) {
                                Some(Wanted::Pending(waiting)) => waiting.push(then),
                                _ => then(),
                            }
                            Ok(())
                        }
                        Command::Unsubscribe(channel) => {
                            let topic = self.keys.channel(&channel);
                            if let Some(Wanted::Pending(waiting)) = self.wanted.remove(&channel) {
                                waiting.into_iter().for_each(|then| then());
                            }
                            self.numbering.remove(&Some(channel));
                            sink.unsubscribe(topic).await
                        }
                    };
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "Redis bus command failed; reconnecting");
                        return Ok(());
                    }
                }
                message = stream.next() => {
                    let Some(message) = message else {
                        tracing::warn!("the Redis bus connection ended; reconnecting");
                        return Ok(());
                    };
                    self.receive(message.get_channel_name(), message.get_payload_bytes()).await?;
                }
            }
        }
    }

    /// Hands on one pub/sub message: an admin action, a checkpoint, or a channel or broadcast
    /// message (after what the node missed before it).
    async fn receive(&mut self, topic: &str, payload: &[u8]) -> Result<(), Gone> {
        if topic == self.checkpoints {
            return self.reached_checkpoint(payload).await;
        }
        let event = if topic == self.control {
            Control::decode(payload).map(BusEvent::Control)
        } else {
            BusMessage::decode(payload).map(BusEvent::Message)
        };
        match event {
            Ok(BusEvent::Message(message)) => {
                if let Some(at) = Mark::of(&message) {
                    let missed = self.numbering_of(&message.channel).map_or(0, |numbering| numbering.message(at));
                    self.missed(message.channel.clone(), missed).await?;
                }
                self.send(BusEvent::Message(message)).await
            }
            Ok(event) => self.send(event).await,
            // Not from a pushgate process of this version: nothing to deliver, so it is counted
            // and logged with why.
            Err(e) => {
                counter!(BUS_MALFORMED).increment(1);
                tracing::warn!(topic, error = %e, "dropping a malformed bus message");
                Ok(())
            }
        }
    }

    /// The checkpoint asked for after the last reconnect arrived: what the node missed on each
    /// topic while the connection was cut.
    async fn reached_checkpoint(&mut self, payload: &[u8]) -> Result<(), Gone> {
        let text = String::from_utf8_lossy(payload);
        let mut fields = text.split(' ');
        let number = fields.next().and_then(|number| number.parse::<u64>().ok());
        let Some(checkpoint) = self.checkpoint.take_if(|asked| Some(asked.number) == number) else {
            return Ok(());
        };
        for (topic, mark) in checkpoint.topics.into_iter().zip(fields) {
            let Some(at) = Mark::parse(mark) else { continue };
            let missed = self.numbering_of(&topic).map_or(0, |numbering| numbering.checkpoint(at));
            self.missed(topic, missed).await?;
        }
        Ok(())
    }

    /// The numbering of a topic the node listens to (`None` for a channel it no longer wants).
    fn numbering_of(&mut self, topic: &Option<ChannelName>) -> Option<&mut Numbering> {
        if let Some(channel) = topic
            && !self.wanted.contains_key(channel)
        {
            return None;
        }
        Some(self.numbering.entry(topic.clone()).or_default())
    }

    async fn missed(&mut self, channel: Option<ChannelName>, count: u64) -> Result<(), Gone> {
        if count == 0 {
            return Ok(());
        }
        let target = if channel.is_some() { "channel" } else { "all" };
        counter!(BUS_MISSED, "target" => target).increment(count);
        tracing::warn!(
            channel = channel.as_ref().map(ChannelName::as_str),
            missed = count,
            "messages were published on the bus while this node's connection was cut; its sessions get a gap frame"
        );
        self.send(BusEvent::Missed { channel, count }).await
    }

    async fn send(&mut self, event: BusEvent) -> Result<(), Gone> {
        self.events.send(event).await.map_err(|_| Gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: u64 = 1_795_881_302_904_707;

    fn at(epoch: u64, n: u64) -> Mark {
        Mark { epoch, n }
    }

    #[test]
    fn a_numbering_counts_what_was_skipped_and_nothing_on_first_sight() {
        let mut numbering = Numbering::default();
        assert_eq!(numbering.message(at(E, 41)), 0, "the first mark seen is where the node starts");
        assert_eq!(numbering.message(at(E, 42)), 0);
        assert_eq!(numbering.message(at(E, 45)), 2, "43 and 44 missed");
        assert_eq!(numbering.checkpoint(at(E, 45)), 0, "a checkpoint at the last number: nothing missed");
        assert_eq!(numbering.checkpoint(at(E, 48)), 3, "46, 47, 48 published and not received");
        assert_eq!(numbering.message(at(E, 49)), 0);
    }

    #[test]
    fn a_count_that_began_again_counts_its_own_messages() {
        let mut numbering = Numbering { last: Some(at(E, 57)) };
        assert_eq!(numbering.message(at(E + 9, 1)), 0, "the count expired and began again: nothing missed");
        let mut numbering = Numbering { last: Some(at(E, 57)) };
        assert_eq!(numbering.message(at(E + 9, 4)), 3, "Redis restarted and 1 to 3 went by: missed");
        let mut numbering = Numbering { last: Some(at(E, 2)) };
        assert_eq!(numbering.checkpoint(at(E + 9, 80)), 80, "restarted, 80 published since, none received");
        let mut numbering = Numbering { last: Some(at(E, 57)) };
        assert_eq!(numbering.checkpoint(Mark::default()), 0, "restarted, nothing published since");
        assert_eq!(numbering.message(at(E + 9, 1)), 0);
    }

    #[test]
    fn a_checkpoint_lists_marks_and_none_as_zero() {
        assert_eq!(Mark::parse("1795881302904707:2"), Some(at(E, 2)));
        assert_eq!(Mark::parse("0:0"), Some(Mark::default()));
        assert_eq!(Mark::parse("12"), None);
    }
}
