//! Delivery of a message to this node's sessions: to every device of some users, to a channel's
//! subscribers, or to everyone. The `message` frame is encoded once (once per user when it
//! carries that user's `seq`) and the same `Bytes` is pushed to every receiving session — written
//! to its socket right away when the session is idle (a direct write), queued otherwise.
//!
//! Messages the node itself missed (its bus connection was cut) are announced to the same
//! audience as a `gap` frame.
//!
//! With direct writes the walk over the audience is where a broadcast's CPU goes (one `send`
//! per session), so a large audience is walked by several threads at once, one part each.

use std::{borrow::Cow, num::NonZeroUsize};

use metrics::counter;
use pushgate_protocol::{ChannelName, ServerFrame, UserId};
use serde_json::value::RawValue;

use crate::{
    metrics::{DELIVERIES, DROPS},
    node::Node,
    registry::SESSION_SHARDS,
    session::{Outbound, Pushed, SessionHandle},
};

/// Audiences at least this large are walked by several threads (one per core, at most
/// [`MAX_WALKERS`]); a thread costs tens of microseconds to start, a session's `send` several.
pub const PARALLEL_WALK_FROM: usize = 2048;
const MAX_WALKERS: usize = 8;
/// Frames written at once between two latency records of a channel walk (a broadcast records
/// once per registry shard).
const RECORD_EVERY: usize = 64;

/// Who receives a delivery on this node.
#[derive(Debug, Clone, Copy)]
pub enum Audience<'a> {
    /// Every device of each user, with the user's `seq` (0: not durable).
    Users(&'a [(UserId, u64)]),
    Channel(&'a ChannelName),
    All,
}

/// What one delivery did on this node.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Sessions the message was handed to: queued, or written at once.
    pub queued: usize,
    /// Of those, sessions it was written to at once (a direct write).
    pub sent: usize,
    /// Sessions that dropped it (non-durable, outbox full); they get a `gap` frame.
    pub dropped: usize,
    /// Sessions closed with 4001 because a durable message did not fit.
    pub overflowed: usize,
}

impl std::ops::AddAssign for Delivered {
    fn add_assign(&mut self, other: Self) {
        self.queued += other.queued;
        self.sent += other.sent;
        self.dropped += other.dropped;
        self.overflowed += other.overflowed;
    }
}

impl Delivered {
    fn count(&mut self, pushed: Pushed) {
        match pushed {
            Pushed::Queued => self.queued += 1,
            Pushed::Sent => {
                self.queued += 1;
                self.sent += 1;
            }
            Pushed::Dropped => self.dropped += 1,
            Pushed::Overflow => self.overflowed += 1,
            Pushed::Closed | Pushed::Deferred => {}
        }
    }
}

/// One message's `id`, `ts` and `data`.
#[derive(Debug, Clone, Copy)]
pub struct Content<'a> {
    pub id: &'a str,
    pub ts: u64,
    pub data: &'a RawValue,
}

fn frame(content: Content<'_>, seq: Option<u64>, channel: Option<&ChannelName>) -> bytes::Bytes {
    ServerFrame::Message {
        id: content.id.into(),
        ts: content.ts,
        data: Cow::Borrowed(content.data),
        seq,
        channel: channel.map(|c| c.as_str().into()),
    }
    .encode()
}

/// Pushes one frame to the sessions of a walk (or a part of one): counts what became of it, and
/// records the delivery latency of the frames written at once in batches (one clock reading and
/// one histogram update per batch rather than per session; the node clock counts milliseconds).
struct Walk<'a> {
    node: &'a Node,
    out: &'a Outbound,
    channel: Option<&'a ChannelName>,
    done: Delivered,
    unrecorded: usize,
}

impl<'a> Walk<'a> {
    fn new(node: &'a Node, out: &'a Outbound, channel: Option<&'a ChannelName>) -> Self {
        Self { node, out, channel, done: Delivered::default(), unrecorded: 0 }
    }

    fn push(&mut self, session: &SessionHandle) {
        let pushed = session.push(self.out, self.channel, self.node.outbox_limits);
        if pushed == Pushed::Sent {
            self.unrecorded += 1;
        }
        self.done.count(pushed);
    }

    /// Records the latency of the frames written at once since the last call.
    fn record(&mut self) {
        if self.unrecorded > 0 {
            let age = self.node.clock.now_ms().saturating_sub(self.out.born_ms);
            self.node.metrics.delivery_seconds.record_many(age as f64 / 1000.0, self.unrecorded);
            self.unrecorded = 0;
        }
    }

    fn finish(mut self) -> Delivered {
        self.record();
        self.done
    }
}

/// Threads to walk an audience of `size` sessions with.
fn walkers(size: usize) -> usize {
    if size < PARALLEL_WALK_FROM {
        return 1;
    }
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get).min(MAX_WALKERS)
}

/// Runs `walk(part, parts)` for each of `parts` parts, the first on this thread and the others
/// on scoped threads, and adds up what they did. A part whose thread cannot be started (the
/// process is out of threads or memory) is walked on this thread instead.
fn walk_in_parts(parts: usize, walk: impl Fn(usize, usize) -> Delivered + Sync) -> Delivered {
    if parts <= 1 {
        return walk(0, 1);
    }
    std::thread::scope(|scope| {
        let walk = &walk;
        let mut done = Delivered::default();
        let mut others = Vec::with_capacity(parts - 1);
        for part in 1..parts {
            match std::thread::Builder::new()
                .name("delivery-walk".into())
                .spawn_scoped(scope, move || walk(part, parts))
            {
                Ok(other) => others.push(other),
                Err(e) => {
                    tracing::warn!(error = %e, "could not start a delivery walk thread; walking its part here");
                    done += walk(part, parts);
                }
            }
        }
        done += walk(0, parts);
        for other in others {
            done += other.join().expect("a delivery walk panicked");
        }
        done
    })
}

/// Queues a message to its audience on this node (or writes it at once, see the module doc).
pub fn deliver(node: &Node, content: Content<'_>, audience: Audience<'_>) -> Delivered {
    let born_ms = node.clock.now_ms();
    // What was delivered, and the length of the one frame a direct write can have sent (only
    // non-durable frames are written at once, and each delivery has at most one).
    let (target, done, sent_len) = match audience {
        Audience::All => {
            let out = Outbound { frame: frame(content, None, None), seq: 0, born_ms };
            // Part `p` of `n` walks the registry shards p, p + n, p + 2n, ...
            let done = walk_in_parts(walkers(node.registry.len()), |part, parts| {
                let mut walk = Walk::new(node, &out, None);
                for shard in (part..SESSION_SHARDS).step_by(parts) {
                    node.registry.for_each_in_shard(shard, |s| walk.push(s));
                    walk.record();
                }
                walk.finish()
            });
            ("all", done, out.frame.len())
        }
        Audience::Channel(channel) => {
            let out = Outbound { frame: frame(content, None, Some(channel)), seq: 0, born_ms };
            let subscribers = node.registry.subscribers(channel);
            let parts = walkers(subscribers.len());
            let chunk = subscribers.len().div_ceil(parts).max(1);
            let done = walk_in_parts(parts, |part, _| {
                let mut walk = Walk::new(node, &out, Some(channel));
                for batch in subscribers.chunks(chunk).nth(part).unwrap_or_default().chunks(RECORD_EVERY) {
                    batch.iter().for_each(|s| walk.push(s));
                    walk.record();
                }
                walk.finish()
            });
            ("channel", done, out.frame.len())
        }
        Audience::Users(users) => {
            // Non-durable: one frame for every user; durable: one per user, with its seq.
            let mut shared: Option<Outbound> = None;
            let mut done = Delivered::default();
            for (user, seq) in users {
                let sessions = node.registry.user_sessions(user.as_str());
                if sessions.is_empty() {
                    continue;
                }
                let durable;
                let out = if *seq == 0 {
                    &*shared.get_or_insert_with(|| Outbound { frame: frame(content, None, None), seq: 0, born_ms })
                } else {
                    durable = Outbound { frame: frame(content, Some(*seq), None), seq: *seq, born_ms };
                    &durable
                };
                let mut walk = Walk::new(node, out, None);
                sessions.iter().for_each(|s| walk.push(s));
                done += walk.finish();
            }
            ("users", done, shared.map_or(0, |out| out.frame.len()))
        }
    };
    node.metrics.outbox_frames.increment((done.queued - done.sent) as f64);
    node.metrics.frames_out.increment(done.sent as u64);
    node.metrics.bytes_out.increment((done.sent * sent_len) as u64);
    counter!(DELIVERIES, "target" => target).increment(done.queued as u64);
    if done.dropped > 0 {
        node.metrics.drops_overflow.increment(done.dropped as u64);
    }
    if done.overflowed > 0 {
        counter!(DROPS, "reason" => "slow_consumer_closed").increment(done.overflowed as u64);
    }
    done
}

/// Tells a channel's subscribers (`None`: every session) that the node missed `missed` of the
/// channel's (or broadcast) messages: each gets a `gap` frame.
pub fn announce_gap(node: &Node, channel: Option<&ChannelName>, missed: u64) {
    let tell = |session: &SessionHandle| {
        session.announce_gap(channel, missed);
    };
    match channel {
        Some(channel) => node.registry.subscribers(channel).iter().for_each(tell),
        None => node.registry.for_each(tell),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn a_walk_in_parts_runs_every_part_once_and_adds_them_up() {
        let seen = Mutex::new(Vec::new());
        let done = walk_in_parts(3, |part, parts| {
            assert_eq!(parts, 3);
            seen.lock().unwrap().push((part, std::thread::current().id()));
            Delivered { queued: part + 1, sent: 1, dropped: 0, overflowed: part }
        });
        assert_eq!(done, Delivered { queued: 6, sent: 3, dropped: 0, overflowed: 3 });
        let mut seen = seen.into_inner().unwrap();
        seen.sort_by_key(|(part, _)| *part);
        assert_eq!(seen.iter().map(|(p, _)| *p).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(seen[0].1, std::thread::current().id(), "the first part runs on the caller's thread");
        assert_ne!(seen[1].1, seen[2].1, "the others on threads of their own");
    }

    #[test]
    fn small_audiences_are_walked_by_one_thread() {
        assert_eq!(walkers(PARALLEL_WALK_FROM - 1), 1);
        assert!(walkers(PARALLEL_WALK_FROM) >= 1);
        assert!(walkers(usize::MAX) <= MAX_WALKERS);
    }
}
