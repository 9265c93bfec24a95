//! A session's shared half, [`SessionHandle`]: the bounded outbound queue (the outbox) that
//! deliveries push into, close requests, and the liveness clocks the heartbeat wheel reads. The
//! session task owns the other half, its socket.
//!
//! The outbox is a `VecDeque` behind a short mutex with the session task's waker beside it,
//! rather than a channel: an idle session then holds no queue allocation at all (a tokio mpsc
//! channel allocates a block of slots up front), and the task takes the whole queue in one swap.
//!
//! Direct writes: while the task has nothing to write, it lends its socket to the outbox
//! ([`SessionHandle::lend_socket`]), and a non-durable frame pushed into an empty outbox is
//! written to the socket right there, under the outbox lock, without waking the task (a
//! broadcast then costs one `send` per session instead of a wake-up, a poll and a `writev`).
//! Whatever does not go out at once (the socket is full, part of the frame was written) is
//! queued and the task woken, and the task takes the socket back under the same lock before it
//! writes anything itself, so frames never interleave. The loan ends with the session task
//! ([`SessionHandle::reclaim_socket`]), so the outbox never keeps a finished session's socket
//! open.

use std::{
    collections::VecDeque,
    io::{self, Write},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, Waker},
};

use bytes::Bytes;
use parking_lot::Mutex;
use pushgate_protocol::{ChannelName, CloseCode, DeviceId, ServerFrame, UserId};
use tokio::net::TcpStream;

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
    /// Written to the socket at once (a direct write), whole.
    Sent,
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

/// Dropped frames per channel, for `gap` frames.
type Gaps = Vec<(Option<ChannelName>, u64)>;

#[derive(Debug, Default)]
struct Outbox {
    queue: VecDeque<Outbound>,
    bytes: usize,
    /// Non-durable frames dropped since the task last took the queue, per channel (`None`:
    /// user or broadcast messages). Boxed: an outbox that never overflowed carries a null
    /// pointer for it.
    gaps: Option<Box<Gaps>>,
    /// Boxed: an open session carries a null pointer for it.
    close: Option<Box<CloseRequest>>,
    close_taken: bool,
    /// The session is replaying its inbox: durable frames that do not fit are deferred.
    replaying: bool,
    /// A durable frame was deferred during this replay round: another round is needed.
    missed: bool,
    /// The node asked the session to re-read its inbox.
    catch_up: bool,
    /// The socket, while the task lends it for direct writes (it has nothing to write), or
    /// while the session is parked.
    lent: Option<Lent>,
    /// Bytes of the queue's head that a direct write already sent (0: none): the task writes
    /// the rest before anything of its own. A frame is at most the outbox's byte limit.
    head_written: u32,
    waker: Option<Waker>,
}

impl Outbox {
    /// Writes `out` to the lent socket when that keeps the order of frames: non-durable (a
    /// durable frame's `seq` is checked by the task), nothing queued, no inbox read under way.
    fn write_direct(&mut self, out: &Outbound) -> Direct {
        let Some(stream) = &self.lent else { return Direct::NotSent };
        if out.seq != 0 || !self.queue.is_empty() || self.gaps.is_some() || self.replaying || self.catch_up {
            return Direct::NotSent;
        }
        let written = stream.try_write(&out.frame);
        if matches!(written, Ok(n) if n == out.frame.len()) {
            return Direct::Sent;
        }
        // A full socket, an error (the task meets it on its next read or write) or a partial
        // write: the task takes over. A parked session's socket stays here until the lot takes
        // it back; the frame queued (or the gap counted) stops any direct write meanwhile.
        if let Some(Lent::Running(_)) = self.lent {
            self.lent = None;
        }
        match written {
            Ok(n) if n > 0 => {
                self.head_written = u32::try_from(n).unwrap_or(u32::MAX);
                Direct::Partly
            }
            _ => Direct::NotSent,
        }
    }

    /// Queues a frame and takes the task's waker.
    fn enqueue(&mut self, out: Outbound) -> Option<Waker> {
        self.bytes += out.frame.len();
        self.queue.push_back(out);
        self.waker.take()
    }
}

/// The socket as lent to the outbox.
#[derive(Debug)]
enum Lent {
    /// The running task's (registered with the runtime), shared with it.
    Running(Arc<TcpStream>),
    /// A parked session's, owned here until the parking lot takes it back.
    Parked(std::net::TcpStream),
}

impl Lent {
    fn try_write(&self, frame: &[u8]) -> io::Result<usize> {
        match self {
            Self::Running(stream) => stream.try_write(frame),
            // Non-blocking since it left the runtime.
            Self::Parked(socket) => (&*socket).write(frame),
        }
    }
}

/// What a direct write did.
enum Direct {
    Sent,
    /// Part of it was written; it must be queued (whatever the limits) for the task to finish.
    Partly,
    NotSent,
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

    /// The session's user id.
    pub fn user(&self) -> &str {
        self.0.user.as_str()
    }

    pub fn shared(&self) -> &Shared {
        &self.0
    }

    /// The session id as shown on the wire.
    pub fn id_string(&self) -> String {
        format!("{:016x}", self.0.id)
    }

    /// Writes a frame to the lent socket or queues it (a clone: the frame is shared) unless the
    /// outbox is full. Full: a non-durable frame is dropped and counted for a `gap` frame (on
    /// `channel`), a durable one closes the session with 4001.
    pub fn push(&self, out: &Outbound, channel: Option<&ChannelName>, limits: OutboxLimits) -> Pushed {
        let mut outbox = self.0.outbox.lock();
        if outbox.close.is_some() {
            return Pushed::Closed;
        }
        match outbox.write_direct(out) {
            Direct::Sent => return Pushed::Sent,
            Direct::Partly => {
                let waker = outbox.enqueue(out.clone());
                drop(outbox);
                if let Some(w) = waker {
                    w.wake();
                }
                return Pushed::Queued;
            }
            Direct::NotSent => {}
        }
        let len = out.frame.len();
        if outbox.queue.len() >= limits.max_frames || outbox.bytes + len > limits.max_bytes {
            let pushed = if out.seq > 0 && outbox.replaying {
                outbox.missed = true;
                return Pushed::Deferred;
            } else if out.seq > 0 {
                outbox.close = Some(Box::new(CloseRequest::new(CloseCode::SlowConsumer, "slow consumer")));
                Pushed::Overflow
            } else {
                let gaps = outbox.gaps.get_or_insert_default();
                match gaps.iter_mut().find(|(c, _)| c.as_ref() == channel) {
                    Some((_, n)) => *n += 1,
                    None => gaps.push((channel.cloned(), 1)),
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
        let waker = outbox.enqueue(out.clone());
        drop(outbox);
        if let Some(w) = waker {
            w.wake();
        }
        Pushed::Queued
    }

    /// Announces `dropped` non-durable messages on `channel` (`None`: broadcasts) that never
    /// reached the session (the node missed them): a `gap` frame, in its place among the
    /// frames — after those pushed before, before those pushed after. It is queued even past
    /// the outbox's limits: it is small, and comes at most once per topic per reconnect of the
    /// node's bus. Returns false when the session is closing.
    pub fn announce_gap(&self, channel: Option<&ChannelName>, dropped: u64) -> bool {
        let gap = ServerFrame::Gap { dropped, channel: channel.map(|c| c.as_str().into()) };
        let out = Outbound::control(gap.encode());
        let mut outbox = self.0.outbox.lock();
        if outbox.close.is_some() {
            return false;
        }
        if let Direct::Sent = outbox.write_direct(&out) {
            return true;
        }
        let waker = outbox.enqueue(out);
        drop(outbox);
        if let Some(w) = waker {
            w.wake();
        }
        true
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
        outbox.close = Some(Box::new(request));
        let waker = outbox.waker.take();
        drop(outbox);
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    /// Lends the session's socket for direct writes: called by the session task when it has
    /// nothing to write, is live and open. Not lent when frames wait (the task is woken).
    pub(crate) fn lend_socket(&self, stream: &Arc<TcpStream>) {
        let mut outbox = self.0.outbox.lock();
        if outbox.queue.is_empty() && outbox.close.is_none() {
            outbox.lent = Some(Lent::Running(stream.clone()));
        }
    }

    /// Takes the socket back (no direct write runs or starts after this returns).
    pub(crate) fn reclaim_socket(&self) {
        self.0.outbox.lock().lent = None;
    }

    /// Parks the session: its socket (out of the runtime) is lent for direct writes until the
    /// parking lot takes it back, and `unpark` is the waker. Returns whether there is work
    /// already (the session must be unparked at once).
    pub(crate) fn park(&self, socket: std::net::TcpStream, unpark: Waker) -> bool {
        let mut outbox = self.0.outbox.lock();
        outbox.lent = Some(Lent::Parked(socket));
        outbox.waker = Some(unpark);
        outbox.head_written > 0
            || (outbox.close.is_some() && !outbox.close_taken)
            || outbox.catch_up
            || !outbox.queue.is_empty()
            || outbox.gaps.is_some()
    }

    /// Runs `f` on a parked session's socket under the outbox lock (no direct write meanwhile),
    /// telling it whether the outbox is clear — no frame partly written or queued, no close
    /// asked — so that what `f` writes follows all that was meant to go before. When `f` also
    /// answers true, the socket is taken out of the outbox in the same hold, so nothing is
    /// written after what `f` wrote (a delivery then queues, for a session that is ending), and
    /// closed. `None` when the session is not parked.
    pub(crate) fn with_parked_socket<T>(&self, f: impl FnOnce(&std::net::TcpStream, bool) -> (T, bool)) -> Option<T> {
        let mut outbox = self.0.outbox.lock();
        let clear = outbox.head_written == 0 && outbox.queue.is_empty() && outbox.close.is_none();
        let Some(Lent::Parked(socket)) = &outbox.lent else { return None };
        let (value, release) = f(socket, clear);
        let released = if release { outbox.lent.take() } else { None };
        drop(outbox);
        drop(released);
        Some(value)
    }

    /// Takes a parked session's socket back (to register it with the runtime again).
    pub(crate) fn reclaim_parked_socket(&self) -> Option<std::net::TcpStream> {
        match self.0.outbox.lock().lent.take() {
            Some(Lent::Parked(socket)) => Some(socket),
            _ => None,
        }
    }

    /// Called by the session task: takes its socket back first — a frame a direct write left
    /// partly sent moves to the front of `into`, with `written` set to what was sent — then a
    /// close request, then (when `take` is set and `into` is empty) every queued frame
    /// followed by any `gap` frames. Registers the task's waker when there is nothing to do.
    pub(crate) fn poll_outbox(
        &self,
        cx: &mut Context<'_>,
        into: &mut VecDeque<Outbound>,
        written: &mut usize,
        take: bool,
    ) -> Poll<OutboxEvent> {
        let mut outbox = self.0.outbox.lock();
        outbox.lent = None;
        let sent = std::mem::take(&mut outbox.head_written) as usize;
        if sent > 0
            && let Some(head) = outbox.queue.pop_front()
        {
            // Lent only while the task had nothing to write: `written` is 0 here.
            outbox.bytes -= head.frame.len();
            into.push_front(head);
            *written = sent;
            return Poll::Ready(OutboxEvent::Frames(1));
        }
        if !outbox.close_taken
            && let Some(request) = outbox.close.as_deref().cloned()
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
        if take && !outbox.close_taken && (!outbox.queue.is_empty() || outbox.gaps.is_some()) {
            debug_assert!(into.is_empty());
            std::mem::swap(into, &mut outbox.queue);
            outbox.bytes = 0;
            let taken = into.len();
            for (channel, dropped) in outbox.gaps.take().map(|gaps| *gaps).unwrap_or_default() {
                let gap = ServerFrame::Gap { dropped, channel: channel.as_ref().map(|c| c.as_str().into()) };
                into.push_back(Outbound::control(gap.encode()));
            }
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
        assert_eq!(h.push(&frame(0), Some(&news), LIMITS), Pushed::Queued);
        assert_eq!(h.push(&frame(0), Some(&news), LIMITS), Pushed::Queued);
        assert_eq!(h.push(&frame(0), Some(&news), LIMITS), Pushed::Dropped);
        assert_eq!(h.push(&frame(0), None, LIMITS), Pushed::Dropped);
        let mut cx = Context::from_waker(Waker::noop());
        let (mut into, mut written) = (VecDeque::new(), 0);
        assert!(matches!(h.poll_outbox(&mut cx, &mut into, &mut written, true), Poll::Ready(OutboxEvent::Frames(2))));
        assert_eq!(into.len(), 4);
        let gap = &into[2].frame;
        assert!(std::str::from_utf8(&gap[2..]).unwrap().contains(r#""type":"gap","dropped":1,"channel":"news""#));
        assert!(matches!(h.poll_outbox(&mut cx, &mut VecDeque::new(), &mut written, true), Poll::Pending));
    }

    #[test]
    fn a_gap_the_node_announces_takes_its_place_among_the_frames_even_in_a_full_outbox() {
        let h = handle();
        let news = ChannelName::new("news").unwrap();
        assert_eq!(h.push(&frame(0), Some(&news), LIMITS), Pushed::Queued);
        assert!(h.announce_gap(Some(&news), 3));
        assert!(h.announce_gap(None, 2));
        assert_eq!(h.push(&frame(0), Some(&news), LIMITS), Pushed::Dropped, "full: two frames queued");
        let mut cx = Context::from_waker(Waker::noop());
        let (mut into, mut written) = (VecDeque::new(), 0);
        assert!(matches!(h.poll_outbox(&mut cx, &mut into, &mut written, true), Poll::Ready(OutboxEvent::Frames(3))));
        let text: Vec<&str> = into.iter().map(|out| std::str::from_utf8(&out.frame[2..]).unwrap_or("abcd")).collect();
        assert_eq!(text[0], "cd", "the frame pushed first stays first");
        assert_eq!(text[1], r#"{"type":"gap","dropped":3,"channel":"news"}"#);
        assert_eq!(text[2], r#"{"type":"gap","dropped":2}"#);
        assert!(text[3].contains(r#""type":"gap","dropped":1,"channel":"news""#), "the outbox's own drop");
        h.request_close(CloseRequest::new(CloseCode::Normal, "bye"));
        assert!(!h.announce_gap(None, 1), "a closing session is not told");
    }

    #[test]
    fn a_full_outbox_closes_on_durable_frames() {
        let h = handle();
        h.push(&frame(1), None, LIMITS);
        h.push(&frame(2), None, LIMITS);
        assert_eq!(h.push(&frame(3), None, LIMITS), Pushed::Overflow);
        assert_eq!(h.push(&frame(0), None, LIMITS), Pushed::Closed);
        let mut cx = Context::from_waker(Waker::noop());
        match h.poll_outbox(&mut cx, &mut VecDeque::new(), &mut 0, true) {
            Poll::Ready(OutboxEvent::Close(r)) => assert_eq!(r.code, CloseCode::SlowConsumer),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn durable_frames_that_do_not_fit_during_a_replay_are_deferred() {
        let h = handle();
        h.begin_replay();
        h.push(&frame(1), None, LIMITS);
        h.push(&frame(2), None, LIMITS);
        assert_eq!(h.push(&frame(3), None, LIMITS), Pushed::Deferred);
        assert!(!h.finish_replay(), "a deferred frame asks for another round");
        assert!(h.finish_replay());
        // Live again, the outbox still full: a durable frame that does not fit closes.
        assert_eq!(h.push(&frame(4), None, LIMITS), Pushed::Overflow);
    }

    /// A loopback connection: the session's end (lent to the outbox) and the client's end.
    async fn socket_pair() -> (Arc<TcpStream>, std::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (ours, _) = listener.accept().await.unwrap();
        ours.writable().await.unwrap();
        (Arc::new(ours), peer)
    }

    /// What the client end can read within 50 ms.
    fn read_now(peer: &mut std::net::TcpStream) -> Vec<u8> {
        use std::io::Read;
        peer.set_read_timeout(Some(std::time::Duration::from_millis(50))).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 64 * 1024];
        while let Ok(n) = peer.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    #[tokio::test]
    async fn a_lent_socket_takes_non_durable_frames_directly_and_durable_ones_are_queued() {
        let (ours, mut peer) = socket_pair().await;
        let h = handle();
        h.lend_socket(&ours);
        assert_eq!(h.push(&frame(0), None, LIMITS), Pushed::Sent);
        assert_eq!(read_now(&mut peer), b"abcd");
        // A durable frame goes through the task (it checks the seq), and whatever follows it
        // waits behind it.
        assert_eq!(h.push(&frame(7), None, LIMITS), Pushed::Queued);
        assert_eq!(h.push(&frame(0), None, LIMITS), Pushed::Queued);
        assert!(read_now(&mut peer).is_empty());
        let mut cx = Context::from_waker(Waker::noop());
        let (mut into, mut written) = (VecDeque::new(), 0);
        assert!(matches!(h.poll_outbox(&mut cx, &mut into, &mut written, true), Poll::Ready(OutboxEvent::Frames(2))));
        // The task took the socket back: nothing is written directly until it lends it again.
        assert_eq!(h.push(&frame(0), None, LIMITS), Pushed::Queued);
        // Not lent while frames wait, nor during a replay, nor once closing.
        h.lend_socket(&ours);
        assert_eq!(h.push(&frame(0), None, LIMITS), Pushed::Queued, "not lent while frames wait");
        assert!(read_now(&mut peer).is_empty());
        let mut into = VecDeque::new();
        assert!(matches!(h.poll_outbox(&mut cx, &mut into, &mut written, true), Poll::Ready(OutboxEvent::Frames(2))));
        h.begin_replay();
        h.lend_socket(&ours);
        assert_eq!(h.push(&frame(0), None, LIMITS), Pushed::Queued);
        assert!(read_now(&mut peer).is_empty());
    }

    #[tokio::test]
    async fn a_partly_written_direct_frame_is_finished_by_the_task_before_anything_else() {
        let (ours, mut peer) = socket_pair().await;
        let h = handle();
        h.lend_socket(&ours);
        // Larger than the socket buffers: only part of it goes out at once.
        let big = Outbound { frame: Bytes::from(vec![7u8; 64 << 20]), seq: 0, born_ms: 0 };
        let limits = OutboxLimits { max_frames: 8, max_bytes: 1 << 10 };
        assert_eq!(h.push(&big, None, limits), Pushed::Queued, "queued whatever the limits: part of it is out");
        let sent = read_now(&mut peer).len();
        assert!(sent > 0 && sent < 64 << 20, "{sent}");
        let mut cx = Context::from_waker(Waker::noop());
        let mut into = VecDeque::from([Outbound::control(Bytes::from_static(b"reply"))]);
        let mut written = 0;
        assert!(matches!(h.poll_outbox(&mut cx, &mut into, &mut written, false), Poll::Ready(OutboxEvent::Frames(1))));
        assert_eq!(into.len(), 2);
        assert_eq!(into[0].frame.len(), 64 << 20, "the partly written frame comes first");
        assert_eq!(written, sent, "with what is already out");
        assert_eq!(&into[1].frame[..], b"reply");
    }

    #[tokio::test]
    async fn a_reclaimed_socket_is_written_no_more() {
        let (ours, mut peer) = socket_pair().await;
        let h = handle();
        h.lend_socket(&ours);
        h.reclaim_socket();
        assert_eq!(h.push(&frame(0), None, LIMITS), Pushed::Queued);
        assert!(read_now(&mut peer).is_empty());
    }

    #[test]
    fn the_first_close_request_wins() {
        let h = handle();
        assert!(h.request_close(CloseRequest::new(CloseCode::AdminDisconnect, "admin")));
        assert!(!h.request_close(CloseRequest::new(CloseCode::Restarting, "drain")));
    }
}
