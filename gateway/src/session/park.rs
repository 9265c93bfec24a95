//! The parking lot: idle client sessions held without a task and without a runtime I/O
//! registration — the two 128-byte-aligned blocks (the task cell and tokio's `ScheduledIo`) that
//! were most of an idle session's memory.
//!
//! A session parks when its task has nothing to do: its state moves, boxed, into the lot's map;
//! its socket leaves the runtime and is lent to its outbox, where deliveries go on writing to it
//! directly (see `handle`), and is armed once (`EPOLLONESHOT`) for reading in the lot's own epoll
//! set. Two things unpark it: the socket turning readable with anything but heartbeat Pongs (a
//! client frame, EOF — the lot's one thread waits for that) or a wake from the outbox (a frame
//! that did not go out at once, a close or catch-up request). Unparking registers the socket with
//! the runtime again and spawns the session's task again, on the same task tracker, so a drain or
//! shutdown still waits for it.
//!
//! Pongs are read by the lot's thread itself: a heartbeat is then one read and one re-arm, not a
//! task spawned and parked again (measured: `BENCHMARKS.md`, "Parked sessions"). So is the end
//! of a parked session whose client closes — a valid Close frame (answered as the task would)
//! or EOF: the session ends on the lot's thread, without its socket ever rejoining the runtime
//! ("Connects: sockets the runtime never sees"). Whatever else it reads — any other frame, a
//! Close it must not answer itself — it hands to the session's task, which takes it in before
//! reading the socket ("The parking lot reads once").

use std::{
    hash::BuildHasher,
    io,
    os::fd::OwnedFd,
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Wake, Waker},
    thread,
};

use hashbrown::{DefaultHashBuilder, HashTable};
use metrics::{Counter, Gauge};
use parking_lot::Mutex;
use rustix::{
    buffer::spare_capacity,
    event::{Timespec, epoll},
};
use tokio::{net::TcpStream, runtime::Handle};
use tokio_util::task::{TaskTracker, task_tracker::TaskTrackerToken};

use super::{Finish, Live, Resting, Running, answer_to_close};

/// Bytes read at once from a readable parked socket: room for a few Pongs (one is at most 131
/// bytes); a longer read is the session task's to finish.
const READ_BYTES: usize = 512;
/// Readiness events taken from the epoll set per wait.
const EVENTS_PER_WAIT: usize = 256;
/// Shards of the lot's map (a token picks its shard), so parks and unparks on different threads
/// seldom wait for one another.
const SLOT_SHARDS: usize = 64;
/// A parked socket's readiness interest: readable or hung up, reported once until armed again.
const ARMED: epoll::EventFlags =
    epoll::EventFlags::IN.union(epoll::EventFlags::RDHUP).union(epoll::EventFlags::ONESHOT);
/// How often the lot's thread looks whether its node is gone.
const WAIT_TIMEOUT: Timespec = Timespec { tv_sec: 1, tv_nsec: 0 };

/// The parked sessions of one node and the thread that unparks them.
pub struct ParkingLot {
    epoll: OwnedFd,
    parked: Slots,
    next_token: AtomicU64,
    runtime: Handle,
    /// Cleared when the epoll set refuses a socket: sessions then stay running.
    working: AtomicBool,
    /// `pushgate_sessions_parked`.
    gauge: Gauge,
    /// `pushgate_unparks_total`.
    unparks: Counter,
}

/// What a parked session's task held, but its socket (in the outbox while parked).
struct Parked {
    session: Resting,
    finish: Finish,
    /// Keeps the node's task tracker waiting for this session as if its task still ran.
    tracker: TaskTrackerToken,
}

/// What the lot made of a parked session's readable socket.
#[derive(Debug, Clone, Copy)]
enum Read {
    /// Nothing left for the session to do: it waits on, armed again; `heard` when Pongs came.
    Waiting { heard: bool },
    /// The client closed — with this code in its Close frame (1005 for none), or without a Close
    /// (`None`): the session ends.
    Ended(Option<u16>),
    /// Anything else: the session's task must run (and take in what the lot read for it).
    Unpark,
}

/// Why a session is unparked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// Its socket turned readable with more than Pongs (or EOF): the task reads first.
    Readable,
    /// Its outbox has work the direct writes cannot do.
    Outbox,
}

/// One parked session in the lot's map, and the waker it leaves in its outbox (one allocation).
struct Slot {
    lot: Weak<ParkingLot>,
    token: u64,
    /// Taken by the one unpark; behind a mutex to be `Sync` (a session is only `Send`).
    parked: Mutex<Option<Parked>>,
}

impl Wake for Slot {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(lot) = self.lot.upgrade() {
            lot.unpark(self.token, Cause::Outbox);
        }
    }
}

impl std::fmt::Debug for ParkingLot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParkingLot").field("parked", &self.parked.len()).finish_non_exhaustive()
    }
}

impl ParkingLot {
    /// A lot whose sessions run on `runtime` when unparked, with its thread started.
    pub fn start(runtime: Handle, gauge: Gauge, unparks: Counter) -> io::Result<Arc<Self>> {
        let lot = Arc::new(Self {
            epoll: epoll::create(epoll::CreateFlags::CLOEXEC)?,
            parked: Slots::new(),
            next_token: AtomicU64::new(1),
            runtime,
            working: AtomicBool::new(true),
            gauge,
            unparks,
        });
        let watched = Arc::downgrade(&lot);
        thread::Builder::new().name("pushgate-park".into()).spawn(move || watch(&watched))?;
        Ok(lot)
    }

    /// Sessions parked now.
    pub fn len(&self) -> usize {
        self.parked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parked.is_empty()
    }

    pub(super) fn is_working(&self) -> bool {
        self.working.load(Ordering::Relaxed)
    }

    /// Parks an idle, parkable running session (whose task then ends). Gives it back when its
    /// socket cannot leave the runtime now.
    pub(super) fn park(self: &Arc<Self>, running: Running) -> Option<Running> {
        let Running { session, stream, finish, tasks, parked_before } = running;
        session.handle.reclaim_socket();
        let stream = match Arc::try_unwrap(stream) {
            Ok(stream) => stream,
            Err(stream) => return Some(Running { session, stream, finish, tasks, parked_before }),
        };
        let session = session.rest();
        let socket = match stream.into_std() {
            Ok(socket) => socket,
            Err(e) => {
                // The socket is closed with the failed deregistration: the session ends here.
                tracing::warn!(error = %e, "a session's socket could not leave the runtime");
                finish.run(session.wake());
                return None;
            }
        };
        self.park_socket(session, socket, finish, &tasks, parked_before);
        None
    }

    /// Parks a session's state and its socket, out of the runtime (a new session's may never
    /// have been in it; see `Conn`). `parked_before`: the socket has an entry in the lot's epoll
    /// set from an earlier park.
    pub(super) fn park_socket(
        self: &Arc<Self>,
        session: Resting,
        socket: std::net::TcpStream,
        finish: Finish,
        tasks: &TaskTracker,
        parked_before: bool,
    ) {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let handle = session.handle.clone();
        let parked = Parked { session, finish, tracker: tasks.token() };
        let slot = Arc::new(Slot { lot: Arc::downgrade(self), token, parked: Mutex::new(Some(parked)) });
        // The map's shard stays locked until the socket is armed and lent, so an unpark (a wake
        // from the outbox, or readiness) for this token waits until the session is all here.
        let (armed, pending) = self.parked.insert_while(slot.clone(), || {
            let armed = if parked_before { self.arm(&socket, token) } else { self.arm_first(&socket, token) };
            (armed, handle.park(socket, Waker::from(slot)))
        });
        self.gauge.increment(1.0);
        if let Err(e) = armed {
            tracing::warn!(error = %e, "the parking lot's epoll set refused a socket; sessions stay running");
            self.working.store(false, Ordering::Relaxed);
        }
        if pending || !self.is_working() {
            self.unpark(token, Cause::Outbox);
        }
    }

    /// Arms `socket` for one readiness event in the lot's epoll set (modifying its entry from
    /// an earlier park, or adding it).
    fn arm(&self, socket: &std::net::TcpStream, token: u64) -> io::Result<()> {
        let data = epoll::EventData::new_u64(token);
        match epoll::modify(&self.epoll, socket, data, ARMED) {
            Err(rustix::io::Errno::NOENT) => Ok(epoll::add(&self.epoll, socket, data, ARMED)?),
            other => Ok(other?),
        }
    }

    /// Arms the socket of a session parking for the first time: it has no entry in the lot's
    /// epoll set yet (one system call, where [`arm`](Self::arm) would take two).
    fn arm_first(&self, socket: &std::net::TcpStream, token: u64) -> io::Result<()> {
        let data = epoll::EventData::new_u64(token);
        match epoll::add(&self.epoll, socket, data, ARMED) {
            Err(rustix::io::Errno::EXIST) => Ok(epoll::modify(&self.epoll, socket, data, ARMED)?),
            other => Ok(other?),
        }
    }

    /// A parked session's socket turned readable: reads the heartbeat Pongs there, ends the
    /// session its client closed, or unparks it.
    fn readable(&self, token: u64) {
        if !self.read_parked(token) {
            self.unpark(token, Cause::Readable);
        }
    }

    /// Reads what waits on the socket of the session parked under `token` and handles it when
    /// it can: heartbeat Pongs (the client is marked heard and the socket armed again), then
    /// maybe the client's Close (answered, as the session's task would, and the session ended
    /// here), or EOF (the session ended). False when there is anything else (or an error) for
    /// the task to handle: what was read and not handled is then the session's `leftover`.
    fn read_parked(&self, token: u64) -> bool {
        let Some(slot) = self.parked.get(token) else { return false };
        let mut parked = slot.parked.lock();
        let Some(Parked { session, .. }) = parked.as_mut() else { return false };
        if !session.leftover.is_empty() {
            // Whatever comes is the rest of a frame the task holds part of.
            return false;
        }
        let leftover = &mut session.leftover;
        let read = session.handle.with_parked_socket(|socket, clear| {
            let read = self.read_socket(socket, token, clear, leftover);
            (read, matches!(read, Read::Ended(_)))
        });
        match read {
            Some(Read::Waiting { heard }) => {
                if heard {
                    session.handle.heard(session.node.clock.now_ms());
                }
                true
            }
            Some(Read::Ended(client_code)) => {
                let Parked { session, finish, tracker } = parked.take().expect("checked above");
                drop(parked);
                // (A wake racing this one may have taken the slot out of the map already.)
                self.parked.remove(token);
                self.gauge.decrement(1.0);
                tracing::debug!(session = %session.handle.id_string(), ?client_code, "ended parked");
                let mut session = session.wake();
                session.ending.client_code = client_code;
                // The node's bookkeeping may spawn (presence, the store's batches).
                let _runtime = self.runtime.enter();
                finish.run(session);
                drop(tracker);
                true
            }
            Some(Read::Unpark) | None => false,
        }
    }

    /// The reading of [`read_parked`](Self::read_parked) on the socket, under its outbox's lock;
    /// `clear`: nothing of the outbox's is to be written before an answer to a Close. One read:
    /// what it does not handle goes to `unread`, for the task.
    fn read_socket(&self, socket: &std::net::TcpStream, token: u64, clear: bool, unread: &mut Vec<u8>) -> Read {
        let armed = |heard| if self.arm(socket, token).is_ok() { Read::Waiting { heard } } else { Read::Unpark };
        let mut buf = [0u8; READ_BYTES];
        let n = match rustix::net::recv(socket, &mut buf[..], rustix::net::RecvFlags::empty()) {
            Ok((n, _)) => n,
            // A stale readiness: nothing to read, wait again.
            Err(rustix::io::Errno::AGAIN) => return armed(false),
            Err(_) => return Read::Unpark,
        };
        if n == 0 {
            // The client went away without a Close (the session's task would end it the same).
            return Read::Ended(None);
        }
        let pongs = pushgate_protocol::ws::leading_pongs(&buf[..n]);
        if pongs == n {
            return armed(true);
        }
        // Unmasked on a copy: the bytes go to the task as they came if the lot cannot answer.
        let mut rest = buf;
        match pushgate_protocol::ws::lone_client_close(&mut rest[pongs..n]) {
            Some(frame) if clear => {
                let (answer, recorded) = answer_to_close(frame.map(|(code, _)| code));
                let _ = rustix::net::send(socket, &answer, rustix::net::SendFlags::NOSIGNAL);
                Read::Ended(Some(recorded))
            }
            _ => {
                unread.extend_from_slice(&buf[pongs..n]);
                Read::Unpark
            }
        }
    }

    /// Spawns the task of the session parked under `token` again (nothing when it is not
    /// parked any more: wakes and readiness may both come for one park).
    fn unpark(&self, token: u64, cause: Cause) {
        let Some(slot) = self.parked.remove(token) else { return };
        let Some(Parked { session, finish, tracker }) = slot.parked.lock().take() else { return };
        tracing::debug!(session = %session.handle.id_string(), ?cause, "unparked");
        self.gauge.decrement(1.0);
        self.unparks.increment(1);
        // Bytes the lot read for the task are taken in first, whichever wake came first.
        let read_first = cause == Cause::Readable || !session.leftover.is_empty();
        let session = session.wake();
        let Some(socket) = session.handle.reclaim_parked_socket() else {
            tracing::error!("a parked session's socket was not in its outbox; ending the session");
            finish.run(session);
            return;
        };
        let _runtime = self.runtime.enter();
        match TcpStream::from_std(socket) {
            Ok(stream) => {
                let tasks = tracker.task_tracker().clone();
                let running =
                    Running { session, stream: Arc::new(stream), finish, tasks: tasks.clone(), parked_before: true };
                tasks.spawn_on(Live::new(running, read_first), &self.runtime);
            }
            Err(e) => {
                tracing::warn!(error = %e, "a parked session's socket could not rejoin the runtime");
                finish.run(session);
            }
        }
    }
}

/// The lot's thread: reads Pongs or unparks the sessions whose sockets turn readable, until the
/// lot is gone.
fn watch(lot: &Weak<ParkingLot>) {
    let mut events = Vec::with_capacity(EVENTS_PER_WAIT);
    loop {
        let Some(lot) = lot.upgrade() else { return };
        events.clear();
        match epoll::wait(&lot.epoll, spare_capacity(&mut events), Some(&WAIT_TIMEOUT)) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "the parking lot cannot wait on its epoll set; sessions stay running");
                lot.working.store(false, Ordering::Relaxed);
                for token in lot.parked.tokens() {
                    lot.unpark(token, Cause::Readable);
                }
                return;
            }
        }
        for event in &events {
            lot.readable(event.data.u64());
        }
    }
}

/// The lot's map: parked sessions by token, in mutex-guarded hash tables of the slots themselves
/// (an entry is one pointer; the token is read from the slot).
struct Slots {
    shards: Box<[Mutex<HashTable<Arc<Slot>>>]>,
    hasher: DefaultHashBuilder,
    len: AtomicUsize,
}

impl Slots {
    fn new() -> Self {
        Self {
            shards: (0..SLOT_SHARDS).map(|_| Mutex::new(HashTable::new())).collect(),
            hasher: DefaultHashBuilder::default(),
            len: AtomicUsize::new(0),
        }
    }

    /// The shard of `token` and its hash there.
    fn place(&self, token: u64) -> (&Mutex<HashTable<Arc<Slot>>>, u64) {
        (&self.shards[token as usize % SLOT_SHARDS], self.hasher.hash_one(token))
    }

    /// Inserts `slot` (its token is new) and runs `then` before its shard is unlocked.
    fn insert_while<T>(&self, slot: Arc<Slot>, then: impl FnOnce() -> T) -> T {
        let (shard, hash) = self.place(slot.token);
        let mut table = shard.lock();
        table.insert_unique(hash, slot, |s| self.hasher.hash_one(s.token));
        self.len.fetch_add(1, Ordering::Relaxed);
        then()
    }

    fn get(&self, token: u64) -> Option<Arc<Slot>> {
        let (shard, hash) = self.place(token);
        shard.lock().find(hash, |s| s.token == token).cloned()
    }

    fn remove(&self, token: u64) -> Option<Arc<Slot>> {
        let (shard, hash) = self.place(token);
        let removed = shard.lock().find_entry(hash, |s| s.token == token).ok().map(|e| e.remove().0);
        if removed.is_some() {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn tokens(&self) -> Vec<u64> {
        self.shards.iter().flat_map(|shard| shard.lock().iter().map(|s| s.token).collect::<Vec<_>>()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{super::handle::Shared, Slot};

    /// A parked session is its slot, its handle's shared half and its registry entries: a field
    /// added to either shows here first (the figures in `BENCHMARKS.md` assume these sizes).
    #[test]
    fn a_parked_session_is_small() {
        assert!(size_of::<Slot>() <= 184, "Slot: {} bytes", size_of::<Slot>());
        assert!(size_of::<Shared>() <= 176, "Shared: {} bytes", size_of::<Shared>());
    }
}
