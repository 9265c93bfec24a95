//! Delivery of a message to this node's sessions: to every device of some users, to a channel's
//! subscribers, or to everyone. The `message` frame is encoded once (once per user when it
//! carries that user's `seq`) and the same `Bytes` is queued to every receiving session.

use std::borrow::Cow;

use metrics::counter;
use pushgate_protocol::{ChannelName, ServerFrame, UserId};
use serde_json::value::RawValue;

use crate::{
    metrics::{DELIVERIES, DROPS},
    node::Node,
    session::{Outbound, Pushed, SessionHandle},
};

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
    /// Sessions the message was queued to.
    pub queued: usize,
    /// Sessions that dropped it (non-durable, outbox full); they get a `gap` frame.
    pub dropped: usize,
    /// Sessions closed with 4001 because a durable message did not fit.
    pub overflowed: usize,
}

impl Delivered {
    fn count(&mut self, pushed: Pushed) {
        match pushed {
            Pushed::Queued => self.queued += 1,
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

/// Queues a message to its audience on this node.
pub fn deliver(node: &Node, content: Content<'_>, audience: Audience<'_>) -> Delivered {
    let born_ms = node.clock.now_ms();
    let limits = node.outbox_limits;
    let mut done = Delivered::default();
    let push_all = |done: &mut Delivered, out: &Outbound, channel: Option<&ChannelName>, session: &SessionHandle| {
        done.count(session.push(out.clone(), channel, limits));
    };
    let target = match audience {
        Audience::All => {
            let out = Outbound { frame: frame(content, None, None), seq: 0, born_ms };
            node.registry.for_each(|s| push_all(&mut done, &out, None, s));
            "all"
        }
        Audience::Channel(channel) => {
            let out = Outbound { frame: frame(content, None, Some(channel)), seq: 0, born_ms };
            node.registry.for_channel(channel, |s| push_all(&mut done, &out, Some(channel), s));
            "channel"
        }
        Audience::Users(users) => {
            // Non-durable: one frame for every user; durable: one per user, with its seq.
            let mut shared: Option<Outbound> = None;
            for (user, seq) in users {
                let sessions = node.registry.user_sessions(user.as_str());
                if sessions.is_empty() {
                    continue;
                }
                let out = if *seq == 0 {
                    shared
                        .get_or_insert_with(|| Outbound { frame: frame(content, None, None), seq: 0, born_ms })
                        .clone()
                } else {
                    Outbound { frame: frame(content, Some(*seq), None), seq: *seq, born_ms }
                };
                sessions.iter().for_each(|s| push_all(&mut done, &out, None, s));
            }
            "users"
        }
    };
    node.metrics.outbox_frames.increment(done.queued as f64);
    counter!(DELIVERIES, "target" => target).increment(done.queued as u64);
    if done.dropped > 0 {
        node.metrics.drops_overflow.increment(done.dropped as u64);
    }
    if done.overflowed > 0 {
        counter!(DROPS, "reason" => "slow_consumer_closed").increment(done.overflowed as u64);
    }
    done
}
