//! Delivery of a message to this node's sessions: to every device of some users, to a channel's
//! subscribers, or to everyone. The `message` frame is encoded once (once per user when it
//! carries that user's `seq`) and the same `Bytes` is queued to every receiving session.

use metrics::counter;
use pushgate_dispatcher::Message;
use pushgate_protocol::{ChannelName, ServerFrame, Target, UserId};

use crate::{
    metrics::{DELIVERIES, DROPS},
    node::Node,
    session::{Outbound, Pushed, SessionHandle},
};

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

/// Pushes one frame to many sessions and keeps count.
struct Fanout<'a> {
    node: &'a Node,
    out: Outbound,
    channel: Option<&'a ChannelName>,
    done: Delivered,
}

impl<'a> Fanout<'a> {
    fn new(node: &'a Node, out: Outbound, channel: Option<&'a ChannelName>) -> Self {
        Self { node, out, channel, done: Delivered::default() }
    }

    fn push(&mut self, session: &SessionHandle) {
        match session.push(self.out.clone(), self.channel, self.node.outbox_limits) {
            Pushed::Queued => self.done.queued += 1,
            Pushed::Dropped => self.done.dropped += 1,
            Pushed::Overflow => self.done.overflowed += 1,
            Pushed::Closed | Pushed::Deferred => {}
        }
    }
}

fn message_frame(message: &Message, seq: Option<u64>, channel: Option<&ChannelName>) -> bytes::Bytes {
    ServerFrame::Message {
        id: message.id.as_str().into(),
        ts: message.ts,
        data: std::borrow::Cow::Borrowed(&message.data),
        seq,
        channel: channel.map(|c| c.as_str().into()),
    }
    .encode()
}

/// Delivers a non-durable message, or a durable one whose users' `seq`s are in `seqs` (the
/// store assigned them; users missing from `seqs` are skipped).
pub fn deliver(node: &Node, message: &Message, seqs: Option<&[(UserId, u64)]>) -> Delivered {
    let born_ms = node.clock.now_ms();
    let mut total = Delivered::default();
    let mut add = |fanout: Fanout<'_>| {
        total.queued += fanout.done.queued;
        total.dropped += fanout.done.dropped;
        total.overflowed += fanout.done.overflowed;
    };
    let target = match &message.to {
        Target::All => {
            let mut fanout =
                Fanout::new(node, Outbound { frame: message_frame(message, None, None), seq: 0, born_ms }, None);
            node.registry.for_each(|s| fanout.push(s));
            add(fanout);
            "all"
        }
        Target::Channel(channel) => {
            let frame = message_frame(message, None, Some(channel));
            let mut fanout = Fanout::new(node, Outbound { frame, seq: 0, born_ms }, Some(channel));
            node.registry.for_channel(channel, |s| fanout.push(s));
            add(fanout);
            "channel"
        }
        Target::Users(users) => {
            match seqs {
                Some(seqs) => {
                    for (user, seq) in seqs {
                        let sessions = node.registry.user_sessions(user.as_str());
                        if sessions.is_empty() {
                            continue;
                        }
                        let frame = message_frame(message, Some(*seq), None);
                        let mut fanout = Fanout::new(node, Outbound { frame, seq: *seq, born_ms }, None);
                        sessions.iter().for_each(|s| fanout.push(s));
                        add(fanout);
                    }
                }
                None => {
                    let frame = message_frame(message, None, None);
                    let mut fanout = Fanout::new(node, Outbound { frame, seq: 0, born_ms }, None);
                    for user in users {
                        node.registry.user_sessions(user.as_str()).iter().for_each(|s| fanout.push(s));
                    }
                    add(fanout);
                }
            }
            "users"
        }
    };
    node.metrics.outbox_frames.increment(total.queued as f64);
    counter!(DELIVERIES, "target" => target).increment(total.queued as u64);
    if total.dropped > 0 {
        node.metrics.drops_overflow.increment(total.dropped as u64);
    }
    if total.overflowed > 0 {
        counter!(DROPS, "reason" => "slow_consumer_closed").increment(total.overflowed as u64);
    }
    total
}
