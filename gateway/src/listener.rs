//! The client listener: accepting connections under admission control, backing off on accept
//! errors such as EMFILE instead of spinning, bounding the handshake in time, and setting up each
//! admitted connection in a short-lived task — small while it waits for its request and a set-up
//! slot — that answers it and hands the session to a task of its own.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use metrics::counter;
use pushgate_dispatcher::{
    presence::Seat,
    store::{SessionEvent, SessionEventKind},
};
use pushgate_protocol::{CloseCode, ServerFrame, SessionClaims, UserId, now_ms};
use tokio::{
    net::{TcpListener, TcpSocket},
    sync::OwnedSemaphorePermit,
    time::Instant,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    conn::{Acceptor, Conn},
    durable::ResumePoint,
    handshake::{Upgrade, Upgraded, handshake, read_request},
    metrics::{ACCEPT_ERRORS, HANDSHAKE_FAILURES},
    node::{Entry, Node, Permit},
    session::{ClientState, CloseRequest, Ended, Finish, Role, Session, SessionHandle},
};

/// Pending connections the kernel queues before `accept` (capped by `net.core.somaxconn`);
/// reconnect storms arrive faster than one accept loop drains them.
pub const LISTEN_BACKLOG: u32 = 4096;
/// File descriptors kept out of the connection budget: listeners, the data dir, backend
/// connections, stdio.
pub const RESERVED_FDS: u64 = 128;

/// Binds a listener with `SO_REUSEADDR` and a deep backlog. `TCP_NODELAY` is set on the
/// listener: accepted sockets inherit it (Linux), one system call per connect saved — frames
/// go out when written, not held back by Nagle's algorithm.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns how many client connections
/// the limit leaves room for.
pub fn raise_file_limit() -> u64 {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    limit.saturating_sub(RESERVED_FDS)
}

/// Splits a socket budget into admitted sessions and the overflow band answered with 503.
pub fn connection_budget(configured: usize, sockets: u64) -> (usize, usize) {
    let sockets = usize::try_from(sockets).unwrap_or(usize::MAX);
    let overflow = (sockets / 50).clamp(8, 1024);
    let max = configured.min(sockets.saturating_sub(overflow)).max(1);
    (max, overflow)
}

fn is_resource_exhaustion(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

/// Accepts until `stop` is cancelled.
pub async fn accept_loop(node: Arc<Node>, listener: TcpListener, stop: CancellationToken, tasks: TaskTracker) {
    let acceptor = match Acceptor::new(listener) {
        Ok(acceptor) => acceptor,
        Err(e) => {
            tracing::error!(error = %e, "the client listener cannot be watched; accepting nothing");
            return;
        }
    };
    let mut backoff = Duration::ZERO;
    loop {
        let accepted = tokio::select! {
            accepted = acceptor.accept() => accepted,
            () = stop.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::ZERO;
                let entry = node.admit();
                if matches!(entry, Entry::Shed) {
                    counter!(ACCEPT_ERRORS, "kind" => "shed").increment(1);
                    continue;
                }
                tasks.spawn(serve(node.clone(), stream, peer, entry, tasks.clone()));
            }
            Err(e) if is_resource_exhaustion(&e) => {
                backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                counter!(ACCEPT_ERRORS, "kind" => "resources").increment(1);
                tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed; backing off");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stop.cancelled() => return,
                }
            }
            Err(e) => {
                counter!(ACCEPT_ERRORS, "kind" => "other").increment(1);
                tracing::debug!(error = %e, "accept failed");
            }
        }
    }
}

/// One connection, its socket bare (see [`Conn`]): waits — holding its socket and no buffer
/// until bytes come, then only the request — until its whole request has arrived and a set-up
/// slot is free, then sets it up. The set-up's state is allocated only then, so the thousands of
/// connections a reconnect storm leaves waiting are small tasks; a client that sends its request
/// slowly holds no slot. A connection over the limit is only refused (503), which is quick, and
/// such connections are few (the overflow band): it takes no slot.
async fn serve(node: Arc<Node>, socket: std::net::TcpStream, peer: SocketAddr, entry: Entry, tasks: TaskTracker) {
    let started = Instant::now();
    let deadline = started + node.config.handshake_timeout;
    let admitted = matches!(entry, Entry::Admitted(_));
    let waited = tokio::time::timeout_at(deadline, async {
        let Some((conn, request)) = read_request(socket).await? else { return Ok(None) };
        let slot = if admitted { Some(node.setup_slot().await) } else { None };
        Ok::<_, std::io::Error>(Some((conn, request, slot)))
    })
    .await;
    match waited {
        // Boxed, so that this task is only as large as its waiting while it waits; the same
        // task goes on (another task would mean another wake-up per connection).
        Ok(Ok(Some((conn, request, slot)))) => {
            Box::pin(set_up(node, conn, request, peer, entry, SetUp { slot, started, deadline }, tasks)).await
        }
        Ok(Ok(None)) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "connection failed before its request arrived"),
        Err(_) => counter!(HANDSHAKE_FAILURES, "reason" => "timeout").increment(1),
    }
}

/// A connection's set-up slot and its clock.
struct SetUp {
    /// Given back when the set-up ends (the session's task has been spawned, or it failed); none
    /// for a connection that is only refused.
    slot: Option<OwnedSemaphorePermit>,
    started: Instant,
    /// The handshake ends by then (`handshake_timeout` after the accept).
    deadline: Instant,
}

/// One connection holding a set-up slot: the handshake and the session's set-up; the session
/// then runs as a task of its own (on `tasks`), and the slot is given back.
async fn set_up(
    node: Arc<Node>,
    conn: Conn,
    request: Vec<u8>,
    peer: SocketAddr,
    entry: Entry,
    setup: SetUp,
    tasks: TaskTracker,
) {
    let (permit, full) = match entry {
        Entry::Admitted(permit) => (permit, false),
        Entry::Full(permit) => (permit, true),
        Entry::Shed => return,
    };
    let upgraded = match tokio::time::timeout_at(setup.deadline, handshake(&node, conn, request, peer, full)).await {
        Ok(Ok(upgraded)) => upgraded,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "handshake did not complete");
            return;
        }
        Err(_) => {
            counter!(HANDSHAKE_FAILURES, "reason" => "timeout").increment(1);
            return;
        }
    };
    node.metrics.handshake_seconds.record(setup.started.elapsed().as_secs_f64());
    // Boxed apart from the handshake: each part stays under 1 KiB, a size glibc serves from its
    // per-thread cache — one future of both took its slower path for larger blocks at every
    // connect (`BENCHMARKS.md`, "Connects: the session log's statements, the token check, set-up
    // futures under 1 KiB").
    Box::pin(open(node, upgraded, setup.slot, permit, tasks)).await;
}

/// The session of an upgraded connection: set up, then started (its set-up slot given back
/// between the two).
async fn open(
    node: Arc<Node>,
    upgraded: Upgraded,
    slot: Option<OwnedSemaphorePermit>,
    permit: Permit,
    tasks: TaskTracker,
) {
    let Upgraded { upgrade, conn, pipelined } = upgraded;
    let (session, finish) = match upgrade {
        Upgrade::Client { claims, last_seq, response } => {
            (start_client(&node, claims, last_seq, response).await, Finish::new(finish_client, permit))
        }
        Upgrade::Echo { .. } => (echo_session(&node), Finish::new(finish_echo, permit)),
    };
    drop(slot);
    session.start(conn, &pipelined, finish, &tasks).await;
}

/// A session of the conformance echo endpoint.
fn echo_session(node: &Arc<Node>) -> Session {
    let user = UserId::new("echo").expect("a valid user id");
    let handle = SessionHandle::new(node.registry.next_id(), user, None, now_ms(), 0, node.clock.now_ms());
    Session::new(node.clone(), handle, Role::Echo, None)
}

/// A client session up to its first frame: registered before its cursor is read (so nothing
/// committed after that is missed: it arrives live, or the replay reads it), and welcomed with
/// its cursor — `welcome` written behind `response` (the `101`) in one write — or, when its
/// presence entry or its cursor cannot be had, closed without a `welcome` (1013, 1011).
async fn start_client(node: &Arc<Node>, claims: SessionClaims, last_seq: Option<u64>, response: Vec<u8>) -> Session {
    let now = node.clock.now_ms();
    let handle = SessionHandle::new(node.registry.next_id(), claims.sub, claims.dev, now_ms(), claims.exp, now);
    handle.begin_replay();
    node.registry.insert(&handle);
    node.metrics.sessions.increment(1.0);
    node.metrics.connects.increment(1);
    let shared = handle.shared();
    // Cluster: the replay starts only once the directory shows this session, so that no
    // message committed meanwhile falls between the replay and live routing.
    let present = match &node.cluster {
        Some(cluster) => {
            let seat = Seat { node: node.node_id.clone(), device: shared.device.clone(), since: shared.since_ms };
            cluster.join(&shared.user, handle.id_string(), seat).await
        }
        None => true,
    };
    let resume = node.durable.resume_point(&shared.user, shared.device.as_ref(), last_seq).await;
    let start = *resume.as_ref().unwrap_or(&ResumePoint { cursor: 0, backlog: true });
    let mut first = response;
    if !present {
        tracing::warn!("the presence directory is unreachable; asking the client to come back later");
        handle.request_close(CloseRequest::new(CloseCode::Overloaded, "presence unavailable"));
    } else if let Err(e) = &resume {
        tracing::warn!(error = %e, "cursor lookup failed; closing the session");
        handle.request_close(CloseRequest::new(CloseCode::Internal, "inbox unavailable"));
    } else {
        // A session closed at its set-up gets no `welcome`: it never started.
        let welcome = ServerFrame::Welcome {
            session: handle.id_string().into(),
            node: node.node_id.as_str().into(),
            user: shared.user.as_str().into(),
            heartbeat_s: node.config.heartbeat_s(),
            last_seq: start.cursor,
        };
        first.extend_from_slice(&welcome.encode());
    }
    node.durable.book.session_event(session_event(node, &handle, SessionEventKind::Open));
    let role = Role::Client(ClientState::new(claims.chs, start));
    Session::new(node.clone(), handle, role, Some(first.into()))
}

/// A client session after its end: unregistered, left in presence, counted and logged.
fn finish_client(node: &Arc<Node>, ended: Ended) {
    let handle = &ended.handle;
    let shared = handle.shared();
    for channel in node.registry.remove(handle, &ended.channels) {
        crate::cluster::channel_closed(node, &channel);
    }
    if let Some(cluster) = &node.cluster {
        cluster.leave(&shared.user, handle.id_string(), &node.node_id);
    }
    node.metrics.channels.set(node.registry.channel_count() as f64);
    node.metrics.sessions.decrement(1.0);
    let ending = ended.ending;
    node.metrics.closed(ending.server_code, ending.client_code);
    let code = ending.server_code.map(CloseCode::as_u16).or(ending.client_code).unwrap_or(1006);
    node.durable.book.session_event(session_event(node, handle, SessionEventKind::Close { code }));
    if ended.acked {
        node.durable.book.flush_soon();
    }
    tracing::debug!(session = %handle.id_string(), user = %shared.user, ?ending, "session ended");
}

/// An echo session after its end: counted.
fn finish_echo(node: &Arc<Node>, ended: Ended) {
    node.metrics.closed(ended.ending.server_code, ended.ending.client_code);
}

fn session_event(node: &Node, handle: &SessionHandle, kind: SessionEventKind) -> SessionEvent {
    let shared = handle.shared();
    SessionEvent {
        at_ms: now_ms(),
        kind,
        session: handle.id_string(),
        node: node.node_id.clone(),
        user: shared.user.clone(),
        device: shared.device.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::Read;

    use tokio::net::TcpStream;

    #[tokio::test]
    async fn accepted_sockets_are_bare_non_blocking_and_inherit_nodelay_from_the_listener() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = Acceptor::new(listener).unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (mut accepted, peer) = acceptor.accept().await.unwrap();
        assert_eq!(peer, client.local_addr().unwrap(), "the peer is the client");
        assert!(accepted.nodelay().unwrap(), "the accepted socket has TCP_NODELAY");
        assert!(!client.nodelay().unwrap(), "the client's socket is a control: off by default");
        let read = accepted.read(&mut [0; 16]);
        assert_eq!(read.unwrap_err().kind(), std::io::ErrorKind::WouldBlock, "a read does not wait");
    }
}
