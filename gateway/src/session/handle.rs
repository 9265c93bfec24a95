//! A session's shared half, [`SessionHandle`]: the bounded outbound queue (the outbox) that
//! deliveries push into, close requests, and the liveness clocks the heartbeat wheel reads. The
//! session task owns the other half, its socket.
//!
//! The outbox is a `VecDeque` behind a short mutex with the session task's waker beside it,
//! rather than a channel: an idle session then holds no queue allocation at all (a tokio mpsc
//! channel allocates a block of slots up front), and the task takes the whole queue in one swap.

use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, Waker},
};

use bytes::Bytes;
use parking_lot::Mutex;
use pushgate_protocol::{ChannelName, CloseCode, DeviceId, ServerFrame, UserId};

/// Unique within a node run: a random boot prefix and a counter.
pub type SessionId = u64;

/// One frame waiting to be written.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// A complete WebSocket frame, usually shared with many other sessions.
    pub frame: Bytes,
    /// The durable `seq` it carries, 0 for anything else.
    pub seq: u64,
    /// When the message entered the node (node clock, ms), for the delivery latency histogram;
    /// 0 for frames that are not deliveries.
    pub born_ms: u64,
}

impl Outbound {
    /// A frame that is not a delivery (replies, control frames).
    pub fn control(frame: Bytes) -> Self {
        Self { frame, seq: 0, born_ms: 0 }
    }
}

/// Why and how a session is asked to close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRequest {
    pub code: CloseCode,
    pub reason: &'static str,
    /// Send `reconnect {after_ms}` before the Close frame (drain).
    pub reconnect_after_ms: Option<u64>,
}

impl CloseRequest {
    pub fn new(code: CloseCode, reason: &'static str) -> Self {
        Self { code, reason, reconnect_after_ms: None }
    }
}

/// Bounds of a session's outbox.
#[derive(Debug, Clone, Copy)]
pub struct OutboxLimits {
    pub max_frames: usize,
    pub max_bytes: usize,
}

/// What became of a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// A non-durable frame was dropped because the outbox is full; a `gap` will say so.
    Dropped,
    /// A durable frame did not fit: the session is being closed with 4001 and will resume
    /// from its cursor.
    Overflow,
    /// The session is closing; nothing more is queued.
    Closed,
    /// A durable frame did not fit while the session replays its inbox: it is left in the
    /// store, where the replay will read it.
    Deferred,
}

/// What the session task found in its outbox.
#[derive(Debug)]
pub enum OutboxEvent {
    /// This many queued frames were moved into the task's write queue (plus any `gap` frames).
    Frames(usize),
    /// Close as asked.
    Close(CloseRequest),
    /// Re-read the inbox after the cursor (deliveries may have been missed).
    CatchUp,
}

#[derive(Debug, Default)]
struct Outbox {
    queue: VecDeque<Outbound>,
    bytes: usize,
    /// Non-durable frames dropped since the task last took the queue, per channel (`None`:
    /// user or broadcast messages).
    gaps: Vec<(Option<ChannelName>, u64)>,
    close: Option<CloseRequest>,
    close_taken: bool,
    /// The session is replaying its inbox: durable frames that do not fit are deferred.
    replaying: bool,
    /// A durable frame was deferred during this replay round: another round is needed.
    missed: bool,
    /// The node asked the session to re-read its inbox.
    catch_up: bool,
    waker: Option<Waker>,
}

/// The shared half of a session; cheap to clone.
#[derive(Debug, Clone)]
pub struct SessionHandle(Arc<Shared>);

#[derive(Debug)]
pub struct Shared {
    pub id: SessionId,
    pub user: UserId,
    pub device: Option<DeviceId>,
    /// Connect time, ms since the Unix epoch (presence `since`).
    pub since_ms: u64,
    /// Token expiry, seconds since the Unix epoch.
    pub token_exp: u64,
    outbox: Mutex<Outbox>,
    /// Node clock (ms) when the client was last heard from.
    heard_ms: AtomicU64,
    /// Node clock (ms) since when a write has been waiting on the socket; 0 when not stalled.
    stalled_ms: AtomicU64,
}

impl SessionHandle {
    pub fn new(
        id: SessionId,
        user: UserId,
        device: Option<DeviceId>,
        since_ms: u64,
        token_exp: u64,
        now_ms: u64,
    ) -> Self {
        Self(Arc::new(Shared {
            id,
            user,
            device,
            since_ms,
            token_exp,
            outbox: Mutex::new(Outbox::default()),
            heard_ms: AtomicU64::new(now_ms),
            stalled_ms: AtomicU64::new(0),
        }))
    }

    pub fn id(&self) -> SessionId {
        self.0.id
    }

    pub fn shared(&self) -> &Shared {
        &self.0
    }

    /// The session id as shown on the wire.
    pub fn id_string(&self) -> String {
        format!("{:016x}", self.0.id)
    }

    /// Queues a frame unless the outbox is full. Full: a non-durable frame is dropped and
    /// counted for a `gap` frame (on `channel`), a durable one closes the session with 4001.
    pub fn push(&self, out: Outbound, channel: Option<&ChannelName>, limits: OutboxLimits) -> Pushed {
        let mut outbox = self.0.outbox.lock();
        if outbox.close.is_some() {
            return Pushed::Closed;
        }
        let len = out.frame.len();
        if outbox.queue.len() >= limits.max_frames || outbox.bytes + len > limits.max_bytes {
            let pushed = if out.seq > 0 && outbox.replaying {
                outbox.missed = true;
                return Pushed::Deferred;
            } else if out.seq > 0 {
                outbox.close = Some(CloseRequest::new(CloseCode::SlowConsumer, "slow consumer"));
                Pushed::Overflow
            } else {
                match outbox.gaps.iter_mut().find(|(c, _)| c.as_ref() == channel) {
                    Some((_, n)) => *n += 1,
                    None => outbox.gaps.push((channel.cloned(), 1)),
                }
                Pushed::Dropped
            };
            let waker = outbox.waker.take();
            drop(outbox);
            if let Some(w) = waker {
                w.wake();
            }
            return pushed;
        }
        outbox.bytes += len;
        outbox.queue.push_back(out);
        let waker = outbox.waker.take();
        drop(outbox);
        if let Some(w) = waker {
            w.wake();
        }
        Pushed::Queued
    }

    /// Marks the session as replaying its inbox (before it is registered).
    pub fn begin_replay(&self) {
        let mut outbox = self.0.outbox.lock();
        outbox.replaying = true;
        outbox.missed = false;
    }

    /// Ends a replay round: returns true when the session is live now, false when a durable
    /// frame was deferred during the round and another round must read it.
    pub fn finish_replay(&self) -> bool {
        let mut outbox = self.0.outbox.lock();
        if std::mem::take(&mut outbox.missed) {
            return false;
        }
        outbox.replaying = false;
        true
    }

    /// Asks the session to re-read its inbox after its cursor (the node may have missed
    /// deliveries, e.g. while Redis lost its presence).
    pub fn request_catch_up(&self) {
        let mut outbox = self.0.outbox.lock();
        outbox.catch_up = true;
        let waker = outbox.waker.take();
        drop(outbox);
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Asks the session to close. The first request wins; returns whether this one did.
    pub fn request_close(&self, request: CloseRequest) -> bool {
        let mut outbox = self.0.outbox.lock();
        if outbox.close.is_some() {
            return false;
        }
        outbox.close = Some(request);
        let waker = outbox.waker.take();
        drop(outbox);
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    /// Called by the session task: takes a close request first, then (when `take`
    /// is set and `into` is empty) every queued frame followed by any `gap` frames. Registers
    /// the task's waker when there is nothing to do.
    pub(crate) fn poll_outbox(
        &self,
        cx: &mut Context<'_>,
        into: &mut VecDeque<Outbound>,
        take: bool,
    ) -> Poll<OutboxEvent> {
        let mut outbox = self.0.outbox.lock();
        if !outbox.close_taken
            && let Some(request) = outbox.close.clone()
        {
            outbox.close_taken = true;
            return Poll::Ready(OutboxEvent::Close(request));
        }
        if take && outbox.catch_up {
            // Taken only when live (`take`): a replay under way reads the inbox anyway.
            outbox.catch_up = false;
            outbox.replaying = true;
            outbox.missed = false;
            return Poll::Ready(OutboxEvent::CatchUp);
        }
        if take && !outbox.close_taken && (!outbox.queue.is_empty() || !outbox.gaps.is_empty()) {
            debug_assert!(into.is_empty());
            std::mem::swap(into, &mut outbox.queue);
            outbox.bytes = 0;
            let taken = into.len();
            for (channel, dropped) in outbox.gaps.drain(..) {
                let gap = ServerFrame::Gap { dropped, channel: channel.as_ref().map(|c| c.as_str().into()) };
                into.push_back(Outbound::control(gap.encode()));
            }
            outbox.gaps = Vec::new();
            return Poll::Ready(OutboxEvent::Frames(taken));
        }
        match &outbox.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => outbox.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Frames waiting in the outbox (not yet taken by the task).
    pub fn queued(&self) -> usize {
        self.0.outbox.lock().queue.len()
    }

    pub fn heard(&self, now_ms: u64) {
        self.0.heard_ms.store(now_ms, Ordering::Relaxed);
    }

    pub fn heard_ms(&self) -> u64 {
        self.0.heard_ms.load(Ordering::Relaxed)
    }

    /// Marks a write as waiting on the socket (keeps the earliest time) or, with `None`, as done.
    pub fn stalled(&self, since_ms: Option<u64>) {
        match since_ms {
            Some(now) => {
                let _ = self.0.stalled_ms.compare_exchange(0, now.max(1), Ordering::Relaxed, Ordering::Relaxed);
            }
            None => self.0.stalled_ms.store(0, Ordering::Relaxed),
        }
    }

    pub fn stalled_ms(&self) -> u64 {
        self.0.stalled_ms.load(Ordering::Relaxed)
    }

    /// Whether a close was requested (the session is closing or about to).
    pub fn is_closing(&self) -> bool {
        self.0.outbox.lock().close.is_some()
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    fn handle() -> SessionHandle {
        SessionHandle::new(1, UserId::new("u").unwrap(), None, 0, 0, 0)
    }

    fn frame(seq: u64) -> Outbound {
        Outbound { frame: Bytes::from_static(b"abcd"), seq, born_ms: 0 }
    }

    const LIMITS: OutboxLimits = OutboxLimits { max_frames: 2, max_bytes: 1000 };

    #[test]
    fn a_full_outbox_drops_non_durable_frames_and_announces_a_gap() {
        let h = handle();
        let news = ChannelName::new("news").unwrap();
        assert_eq!(h.push(frame(0), Some(&news), LIMITS), Pushed::Queued);
        assert_eq!(h.push(frame(0), Some(&news), LIMITS), Pushed::Queued);
        assert_eq!(h.push(frame(0), Some(&news), LIMITS), Pushed::Dropped);
        assert_eq!(h.push(frame(0), None, LIMITS), Pushed::Dropped);
        let mut cx = Context::from_waker(Waker::noop());
        let mut into = VecDeque::new();
        assert!(matches!(h.poll_outbox(&mut cx, &mut into, true), Poll::Ready(OutboxEvent::Frames(2))));
        assert_eq!(into.len(), 4);
        let gap = &into[2].frame;
        assert!(std::str::from_utf8(&gap[2..]).unwrap().contains(r#""type":"gap","dropped":1,"channel":"news""#));
        assert!(matches!(h.poll_outbox(&mut cx, &mut VecDeque::new(), true), Poll::Pending));
    }

    #[test]
    fn a_full_outbox_closes_on_durable_frames() {
        let h = handle();
        h.push(frame(1), None, LIMITS);
        h.push(frame(2), None, LIMITS);
        assert_eq!(h.push(frame(3), None, LIMITS), Pushed::Overflow);
        assert_eq!(h.push(frame(0), None, LIMITS), Pushed::Closed);
        let mut cx = Context::from_waker(Waker::noop());
        match h.poll_outbox(&mut cx, &mut VecDeque::new(), true) {
            Poll::Ready(OutboxEvent::Close(r)) => assert_eq!(r.code, CloseCode::SlowConsumer),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn durable_frames_that_do_not_fit_during_a_replay_are_deferred() {
        let h = handle();
        h.begin_replay();
        h.push(frame(1), None, LIMITS);
        h.push(frame(2), None, LIMITS);
        assert_eq!(h.push(frame(3), None, LIMITS), Pushed::Deferred);
        assert!(!h.finish_replay(), "a deferred frame asks for another round");
        assert!(h.finish_replay());
        // Live again, the outbox still full: a durable frame that does not fit closes.
        assert_eq!(h.push(frame(4), None, LIMITS), Pushed::Overflow);
    }

    #[test]
    fn the_first_close_request_wins() {
        let h = handle();
        assert!(h.request_close(CloseRequest::new(CloseCode::AdminDisconnect, "admin")));
        assert!(!h.request_close(CloseRequest::new(CloseCode::Restarting, "drain")));
    }
}
