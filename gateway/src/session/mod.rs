//! The session task: one per connection while the session has something to do, owning its
//! socket, reading and writing in one poll loop (no split, no second task, no lock across an
//! await). While it has nothing to write it lends the socket to its outbox, where deliveries
//! write non-durable frames at once (see `handle`); it takes the socket back before writing
//! anything itself. While it has nothing to do at all it parks (see `park`): the task ends, the
//! socket leaves the runtime, and the task is spawned again when the socket turns readable or
//! the outbox has work. A new session whose first turn leaves it idle parks straight from it,
//! its socket never having joined the runtime (see `crate::conn`).
//!
//! Memory is the design constraint (100k sessions per node): an idle session holds its socket,
//! this struct and its [`SessionHandle`] — no task and no runtime I/O registration (parked), no
//! read buffer (reads land in a per-thread scratch buffer and only an incomplete frame is
//! copied out), no write buffer (queued frames are shared `Bytes`, written with one vectored
//! write, and the queue's allocation is released once it is empty), no timer (the heartbeat
//! wheel watches liveness from outside; a session holds a timer only while closing), no tracing
//! span.

mod handle;
mod inbound;
mod park;
mod rate;
mod resume;

use std::{
    borrow::Cow,
    cell::RefCell,
    collections::VecDeque,
    future::Future,
    io::{self, IoSlice},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker},
};

use bytes::Bytes;
pub use handle::{CloseRequest, Outbound, OutboxEvent, OutboxLimits, Pushed, SessionHandle, SessionId};
pub use park::ParkingLot;
use pushgate_protocol::{
    ChannelName, ChannelPattern, CloseCode, ErrorCode, ServerFrame,
    ws::{self, Assembler, Violation},
};
use rate::RateBucket;
use resume::CatchUp;
use tokio::{net::TcpStream, time::Sleep};
use tokio_util::task::TaskTracker;

use crate::{
    conn::Conn,
    durable::ResumePoint,
    node::{Node, Permit},
};

/// Per-thread buffer that socket reads land in; only the bytes of an incomplete frame are
/// copied out of it into the session. 16 KiB holds a burst of small client frames.
const SCRATCH_BYTES: usize = 16 * 1024;
/// Frames handed to one vectored write (Linux takes up to 1024; 64 covers a busy batch).
const MAX_IOV: usize = 64;
/// Poll rounds before the task yields to others.
const ROUNDS_PER_POLL: usize = 32;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_BYTES].into_boxed_slice());
}

/// What the session does with client messages.
#[derive(Debug)]
pub enum Role {
    /// A pushgate client (`/ws`).
    Client(ClientState),
    /// The conformance echo endpoint (`/echo`): every data message is sent back.
    Echo,
}

/// State of a `/ws` session beyond its handle.
#[derive(Debug)]
pub struct ClientState {
    /// Channel patterns of the session token.
    patterns: Box<[ChannelPattern]>,
    subscriptions: Vec<ChannelName>,
    /// Highest durable `seq` queued to this client, starting at its resume cursor: acks above
    /// it are refused, durable frames at or below it are duplicates.
    cursor: u64,
    /// Whether this session ever acked (its cursor must be written when it closes).
    acked: bool,
    /// Reading the inbox — the replay after connecting, or a gap before a live frame. Boxed:
    /// live sessions carry only a null pointer for it.
    catch_up: Option<Box<CatchUp>>,
}

impl ClientState {
    /// A client session resuming at `start`; it replays its inbox (if it had a backlog) before
    /// going live.
    pub fn new(patterns: Vec<ChannelPattern>, start: ResumePoint) -> Self {
        Self {
            patterns: patterns.into_boxed_slice(),
            subscriptions: Vec::new(),
            cursor: start.cursor,
            acked: false,
            catch_up: Some(Box::new(CatchUp::resume(start.backlog))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    /// Our Close frame is queued or sent; `peer_closed` once the client's Close arrived.
    Closing {
        peer_closed: bool,
    },
    Done,
}

/// What is left of a session once it ended.
#[derive(Debug)]
pub struct Ended {
    pub handle: SessionHandle,
    /// Its channels, to unregister.
    pub channels: Vec<ChannelName>,
    /// It acked durable messages (its cursor should be written now).
    pub acked: bool,
    pub ending: Ending,
}

/// How a session ended, for metrics and logs.
#[derive(Debug, Default, Clone, Copy)]
pub struct Ending {
    /// The code the server closed with.
    pub server_code: Option<CloseCode>,
    /// The code the client closed with, when it closed first.
    pub client_code: Option<u16>,
}

/// What runs when a session ends: the node's bookkeeping for it, then its admission slot is
/// given back.
pub struct Finish {
    then: fn(&Arc<Node>, Ended),
    permit: Permit,
}

impl Finish {
    pub fn new(then: fn(&Arc<Node>, Ended), permit: Permit) -> Self {
        Self { then, permit }
    }

    fn run(self, session: Session) {
        let node = session.node.clone();
        (self.then)(&node, session.into_ended());
        drop(self.permit);
    }
}

/// A session with its task: the state, the socket (registered with the runtime), what runs at
/// its end, and the tracker its task runs on.
pub(crate) struct Running {
    session: Session,
    stream: Arc<TcpStream>,
    finish: Finish,
    tasks: TaskTracker,
    /// The session has parked before: its socket has an entry in the parking lot's epoll set.
    parked_before: bool,
}

/// A session's task: the whole state of a session that is not parked (see [`Session::live`]).
/// It ends when the session ends, or when the session parks (see `park`).
pub struct Live {
    running: Option<Running>,
    /// Read the socket before waiting for its readiness: an unparked session whose socket turned
    /// readable (the runtime, which has just taken the socket back, may not know yet, and the
    /// session would park again unread), or that holds bytes the parking lot read for it.
    read_first: bool,
}

impl Live {
    fn new(running: Running, read_first: bool) -> Self {
        Self { running: Some(running), read_first }
    }

    /// Runs a new session's first turn on the calling task (the set-up's) — it writes its
    /// welcome and, idle, parks — and spawns the session a task of its own on `tasks` only when
    /// it goes on: most sessions park at once, so a connect then costs one task, not two.
    async fn first_turn(mut self, tasks: &TaskTracker) {
        // The wakers this turn leaves (readiness, outbox) are the set-up task's; the spawned
        // task's first poll registers its own before waiting on anything.
        let ended_or_parked = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut self).poll(cx).is_ready())).await;
        if !ended_or_parked {
            tasks.spawn(self);
        }
    }
}

impl Future for Live {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let Some(running) = this.running.as_mut() else { return Poll::Ready(()) };
        if std::mem::take(&mut this.read_first) {
            running.session.read_now(&running.stream);
        }
        match running.session.turn(cx, &running.stream) {
            Turn::Busy => Poll::Pending,
            Turn::Idle => match running.session.parking_lot() {
                Some(lot) => {
                    let lot = lot.clone();
                    let running = this.running.take().expect("checked above");
                    match lot.park(running) {
                        None => Poll::Ready(()),
                        Some(running) => {
                            running.session.lend_socket_if_idle(&running.stream);
                            this.running = Some(running);
                            Poll::Pending
                        }
                    }
                }
                None => {
                    running.session.lend_socket_if_idle(&running.stream);
                    Poll::Pending
                }
            },
            Turn::Ended => {
                let running = this.running.take().expect("checked above");
                running.session.handle.reclaim_socket();
                running.finish.run(running.session);
                Poll::Ready(())
            }
        }
    }
}

/// A session task dropped before its end (the runtime shutting down) takes its socket back, so
/// that the socket closes with it.
impl Drop for Live {
    fn drop(&mut self) {
        if let Some(running) = &self.running {
            running.session.handle.reclaim_socket();
        }
    }
}

/// What one turn of a session's task came to.
enum Turn {
    /// Waiting, with nothing under way: it may lend its socket, or park.
    Idle,
    /// Waiting for its writes, its inbox read or its close, or yielding to other tasks.
    Busy,
    Ended,
}

pub struct Session {
    node: Arc<Node>,
    handle: SessionHandle,
    role: Role,
    /// Frames being written; `written` bytes of the front one are already out.
    writing: VecDeque<Outbound>,
    written: usize,
    /// Bytes of an incomplete inbound frame; empty (unallocated) between frames.
    leftover: Vec<u8>,
    assembler: Assembler,
    rate: RateBucket,
    phase: Phase,
    /// Set when closing begins: the one timer a session ever holds, and only while closing.
    close_deadline: Option<Pin<Box<Sleep>>>,
    ending: Ending,
    max_message: usize,
}

/// A session's state while parked: a [`Session`] less what is empty while it waits — its write
/// queue and its close timer — and less what its role gives back.
pub(crate) struct Resting {
    node: Arc<Node>,
    handle: SessionHandle,
    /// Always a client's (only those park).
    role: Role,
    /// An incomplete inbound frame may wait parked.
    leftover: Vec<u8>,
    assembler: Assembler,
    rate: RateBucket,
    ending: Ending,
}

impl Resting {
    /// The session again, to run.
    fn wake(self) -> Session {
        let Self { node, handle, role, leftover, assembler, rate, ending } = self;
        let max_message = max_message(&node, &role);
        Session {
            node,
            handle,
            role,
            writing: VecDeque::new(),
            written: 0,
            leftover,
            assembler,
            rate,
            phase: Phase::Open,
            close_deadline: None,
            ending,
            max_message,
        }
    }
}

/// The largest message a session of `role` takes.
fn max_message(node: &Node, role: &Role) -> usize {
    match role {
        Role::Client(_) => node.config.max_frame_bytes,
        Role::Echo => node.config.echo_max_message_bytes,
    }
}

impl Session {
    /// A session that starts by writing `first` (a client's `101` answer and welcome frame, in
    /// one write).
    pub fn new(node: Arc<Node>, handle: SessionHandle, role: Role, first: Option<Bytes>) -> Self {
        let now = node.clock.now_ms();
        let max_message = max_message(&node, &role);
        let rate = RateBucket::full(node.config.client_rate_burst, now);
        let mut writing = VecDeque::new();
        if let Some(frame) = first {
            writing.push_back(Outbound::control(frame));
        }
        Self {
            node,
            handle,
            role,
            writing,
            written: 0,
            leftover: Vec::new(),
            assembler: Assembler::default(),
            rate,
            phase: Phase::Open,
            close_deadline: None,
            ending: Ending::default(),
            max_message,
        }
    }

    pub fn handle(&self) -> &SessionHandle {
        &self.handle
    }

    /// Runs the session on `conn` until the connection ends — parked while idle, when the node
    /// parks sessions — then hands what is left to `finish`. It first takes in `pipelined`
    /// (bytes the client sent right behind its upgrade request). Its first turn runs on the
    /// calling task (the set-up's) — on a bare socket without the runtime when it can (see
    /// [`first_turn_bare`](Self::first_turn_bare)) — and a session that goes on from there runs
    /// on a task of its own on `tasks` (where an unparked session's task is spawned again too),
    /// which holds this state and nothing of the handshake or the set-up.
    pub async fn start(mut self, conn: Conn, pipelined: &[u8], finish: Finish, tasks: &TaskTracker) {
        if !pipelined.is_empty() {
            let mut bytes = pipelined.to_vec();
            match self.process(&mut bytes) {
                Ok(used) if used < bytes.len() => self.leftover = bytes[used..].to_vec(),
                Ok(_) => {}
                Err(v) => self.violation(v),
            }
        }
        let stream = match conn {
            Conn::Bare(socket) => {
                if self.first_turn_bare(&socket)
                    && let Some(lot) = self.parking_lot().cloned()
                {
                    lot.park_socket(self.rest(), socket, finish, tasks, false);
                    return;
                }
                match TcpStream::from_std(socket) {
                    Ok(stream) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "a session's socket could not join the runtime");
                        finish.run(self);
                        return;
                    }
                }
            }
            Conn::Registered(stream) => stream,
        };
        let running =
            Running { session: self, stream: Arc::new(stream), finish, tasks: tasks.clone(), parked_before: false };
        // Boxed: most sessions park above, and this future is part of every connection's set-up.
        Box::pin(Live::new(running, false).first_turn(tasks)).await;
    }

    /// A new session's first turn on a bare socket, which needs no waker: its replay round when
    /// that reads nothing (the cursor lookup found no backlog), then its first write (the `101`
    /// and the welcome). True when the session is then idle, so it may park with a socket the
    /// runtime never registered. False leaves the rest of the turn to a task on the registered
    /// socket: a replay that reads the store, a write the socket did not take whole, a close.
    fn first_turn_bare(&mut self, socket: &std::net::TcpStream) -> bool {
        if !self.catch_up_reads_nothing() {
            return false;
        }
        self.poll_catch_up(&mut Context::from_waker(Waker::noop()));
        while !self.writing.is_empty() && self.phase == Phase::Open {
            let before = (self.writing.len(), self.written);
            let wrote = self.write_some(|slices| Ok(rustix::io::writev(socket, slices)?));
            if wrote.is_err() || (self.writing.len(), self.written) == before {
                return false;
            }
        }
        self.idle_client()
    }

    fn into_ended(self) -> Ended {
        match self.role {
            Role::Client(state) => {
                Ended { handle: self.handle, channels: state.subscriptions, acked: state.acked, ending: self.ending }
            }
            Role::Echo => Ended { handle: self.handle, channels: Vec::new(), acked: false, ending: self.ending },
        }
    }

    /// Runs the session until it must wait (or yields to other tasks).
    fn turn(&mut self, cx: &mut Context<'_>, stream: &TcpStream) -> Turn {
        for _ in 0..ROUNDS_PER_POLL {
            // 0. Inbox pages being read (replay, or a gap before a live frame).
            let mut progressed = self.phase == Phase::Open && self.poll_catch_up(cx);

            // 1. Close requests always; frames only once the previous batch is written and no
            //    inbox read is under way (live frames wait behind it).
            let take = self.phase == Phase::Open && self.writing.is_empty() && self.is_live();
            if let Poll::Ready(event) = self.handle.poll_outbox(cx, &mut self.writing, &mut self.written, take) {
                progressed = true;
                match event {
                    OutboxEvent::Frames(taken) => {
                        self.node.metrics.outbox_frames.decrement(taken as f64);
                        // A frame the outbox wrote partly at once comes back with its written
                        // prefix (`written` was 0: the socket is lent only while idle).
                        if self.written > 0 {
                            self.node.metrics.bytes_out.increment(self.written as u64);
                        }
                        let frames = std::mem::take(&mut self.writing);
                        self.accept_live(frames);
                    }
                    OutboxEvent::Close(request) => self.begin_close(request),
                    OutboxEvent::CatchUp => self.start_catch_up(),
                }
            }
            // A close handshake that outlives the close timeout ends here.
            if let Some(deadline) = &mut self.close_deadline
                && deadline.as_mut().poll(cx).is_ready()
            {
                self.phase = Phase::Done;
            }

            // 2. Write what is queued.
            if !self.writing.is_empty() && self.phase != Phase::Done {
                match stream.poll_write_ready(cx) {
                    Poll::Ready(Ok(())) => match self.write_some(|slices| stream.try_write_vectored(slices)) {
                        Ok(()) => progressed = true,
                        Err(_) => self.phase = Phase::Done,
                    },
                    Poll::Ready(Err(_)) => self.phase = Phase::Done,
                    Poll::Pending => self.handle.stalled(Some(self.node.clock.now_ms())),
                }
            }
            if self.writing.is_empty() && self.phase == (Phase::Closing { peer_closed: true }) {
                self.phase = Phase::Done;
            }

            // 3. Read, unless replies are piling up behind a client that does not read.
            if self.phase != Phase::Done && self.writing.len() < self.node.outbox_limits.max_frames {
                match stream.poll_read_ready(cx) {
                    Poll::Ready(Ok(())) => match self.read_some(stream) {
                        Ok(()) => progressed = true,
                        Err(_) => self.phase = Phase::Done,
                    },
                    Poll::Ready(Err(_)) => self.phase = Phase::Done,
                    Poll::Pending => {}
                }
            }

            if self.phase == Phase::Done {
                return Turn::Ended;
            }
            if !progressed {
                return Turn::Idle;
            }
        }
        cx.waker().wake_by_ref();
        Turn::Busy
    }

    /// The session's state to park; only for an [`Session::idle_client`] session.
    fn rest(self) -> Resting {
        debug_assert!(self.idle_client() && self.close_deadline.is_none());
        let Self { node, handle, role, leftover, assembler, rate, ending, .. } = self;
        Resting { node, handle, role, leftover, assembler, rate, ending }
    }

    /// Whether the session is idle in the sense that lets it lend its socket to the outbox and
    /// park: a live client session, open, with nothing to write. (An open session has no close
    /// timer: the timer starts only as the phase leaves `Open`. An incomplete inbound frame may
    /// wait parked: it is state, not work.)
    fn idle_client(&self) -> bool {
        matches!(self.role, Role::Client(_)) && self.phase == Phase::Open && self.writing.is_empty() && self.is_live()
    }

    /// Where the session may park now: its node's parking lot, when that works and the session
    /// is an idle client.
    fn parking_lot(&self) -> Option<&Arc<ParkingLot>> {
        self.node.parking.as_ref().filter(|lot| lot.is_working() && self.idle_client())
    }

    /// Reads once without waiting for the socket's readiness (see `read_unprompted`).
    fn read_now(&mut self, stream: &TcpStream) {
        if self.read_unprompted(stream).is_err() {
            self.phase = Phase::Done;
        }
    }

    /// Lends the socket to the outbox for direct writes while a live client session has
    /// nothing to write (see `handle`).
    fn lend_socket_if_idle(&self, stream: &Arc<TcpStream>) {
        if self.idle_client() {
            self.handle.lend_socket(stream);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Writing
    // -----------------------------------------------------------------------------------------

    /// One vectored write of the queued frames with `write` (the runtime's, or a bare socket's
    /// system call). `Ok` also on `WouldBlock` (the runtime's readiness is then cleared and the
    /// next poll registers for it).
    fn write_some(&mut self, write: impl FnOnce(&[IoSlice<'_>]) -> io::Result<usize>) -> io::Result<()> {
        let mut slices = [IoSlice::new(&[]); MAX_IOV];
        let mut count = 0;
        for (i, out) in self.writing.iter().take(MAX_IOV).enumerate() {
            let from = if i == 0 { self.written } else { 0 };
            slices[i] = IoSlice::new(&out.frame[from..]);
            count += 1;
        }
        let mut n = match write(&slices[..count]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        };
        self.handle.stalled(None);
        self.node.metrics.bytes_out.increment(n as u64);
        let mut frames = 0;
        let mut oldest_born = u64::MAX;
        while let Some(front) = self.writing.front() {
            let rest = front.frame.len() - self.written;
            if n < rest {
                self.written += n;
                break;
            }
            n -= rest;
            self.written = 0;
            if front.born_ms > 0 {
                oldest_born = oldest_born.min(front.born_ms);
            }
            self.writing.pop_front();
            frames += 1;
        }
        self.node.metrics.frames_out.increment(frames);
        if oldest_born != u64::MAX {
            let age = self.node.clock.now_ms().saturating_sub(oldest_born);
            self.node.metrics.delivery_seconds.record(age as f64 / 1000.0);
        }
        if self.writing.is_empty() && self.writing.capacity() > 0 {
            // Release the queue's allocation: idle sessions hold none.
            self.writing = VecDeque::new();
        }
        Ok(())
    }

    fn reply(&mut self, frame: Bytes) {
        self.writing.push_back(Outbound::control(frame));
    }

    fn reply_error(&mut self, code: ErrorCode, message: Cow<'_, str>, id: Option<&str>) {
        self.node.metrics.frame_in("refused");
        let frame = ServerFrame::Error { code, message, id: id.map(Cow::Borrowed) };
        self.reply(frame.encode());
    }

    // -----------------------------------------------------------------------------------------
    // Closing
    // -----------------------------------------------------------------------------------------

    fn begin_close(&mut self, request: CloseRequest) {
        if self.phase != Phase::Open {
            return;
        }
        self.ending.server_code = Some(request.code);
        if request.code == CloseCode::SlowConsumer {
            // The socket is not draining: keep only a frame already partly written.
            self.writing.truncate(usize::from(self.written > 0));
        }
        if let Some(after_ms) = request.reconnect_after_ms {
            self.reply(ServerFrame::Reconnect { after_ms }.encode());
        }
        self.reply(ws::close_frame(request.code.as_u16(), request.reason));
        self.phase = Phase::Closing { peer_closed: false };
        self.start_close_timer();
    }

    fn start_close_timer(&mut self) {
        self.close_deadline = Some(Box::pin(tokio::time::sleep(self.node.config.close_timeout)));
    }

    fn violation(&mut self, v: Violation) {
        self.begin_close(CloseRequest::new(v.code, v.reason));
    }

    fn on_client_close(&mut self, frame: Option<(u16, &str)>) {
        match self.phase {
            Phase::Open => {
                let (answer, recorded) = answer_to_close(frame.map(|(code, _)| code));
                self.ending.client_code = Some(recorded);
                self.reply(answer);
                self.phase = Phase::Closing { peer_closed: true };
                self.start_close_timer();
            }
            Phase::Closing { .. } => self.phase = Phase::Closing { peer_closed: true },
            Phase::Done => {}
        }
    }
}

/// The answer to a client's Close whose status code is `code` (none when it carried none): the
/// same code back, 1000 for none; and the code the session's end records, 1005 ("no status
/// received") for none. Shared by the session's task and the parking lot.
fn answer_to_close(code: Option<u16>) -> (Bytes, u16) {
    (ws::close_frame(code.unwrap_or(1000), ""), code.unwrap_or(1005))
}
