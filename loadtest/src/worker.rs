//! One worker process: reads its [`WorkerSpec`] from stdin, opens its share of sessions from its
//! source addresses at the ramp rate (round-robin over the gateway nodes), keeps them open
//! (polling each socket answers the server's Pings), checks durable `seq`s, acks, timestamps every
//! delivery carrying `data.sent_us`, obeys storm commands, and reports JSON lines on stdout. It
//! stops on `finish`, when stdin closes (the orchestrator is gone) or when its lifetime is over.
//! Against a peer server ([`ServerKind::Peer`]) a session is a plain WebSocket, open once upgraded,
//! and every data frame is a broadcast's bare payload, timestamped the same way.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap, HashSet},
    io::Write as _,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use anyhow::Context as _;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::{TcpSocket, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, watch},
    task::JoinHandle,
    time::Instant,
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        self, Message,
        client::IntoClientRequest,
        protocol::{CloseFrame, WebSocketConfig, frame::coding::CloseCode},
    },
};

use crate::{
    Minter, now_us,
    seq::{SeqEvent, observe},
    stats::Histogram,
    wire::{
        Command, Event, Final, LatencyDelta, Progress, ServerKind, StormMethod, StormProgress, TrackedDelta, WorkerSpec,
    },
};

type Ws = WebSocketStream<TcpStream>;

/// Read and write buffers of a load session: small, so that one process holds ~18,000 sessions
/// without being what runs out of memory.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0).max_write_buffer_size(64 * 1024)
}

/// The address of a `ws://host:port/path` endpoint.
pub fn server_addr(url: &str) -> anyhow::Result<SocketAddr> {
    use std::net::ToSocketAddrs as _;
    let rest = url.strip_prefix("ws://").context("the url must start with ws://")?;
    let host_port = rest.split('/').next().unwrap_or(rest);
    host_port
        .to_socket_addrs()
        .with_context(|| format!("{host_port} is not a host:port"))?
        .find(SocketAddr::is_ipv4)
        .or_else(|| host_port.to_socket_addrs().ok()?.next())
        .with_context(|| format!("{host_port} resolves to no address"))
}

// Storm phase of a slot.
const CALM: u8 = 0;
const ARMED: u8 = 1;
const DOWN: u8 = 2;
const BACK: u8 = 3;
const RESUMED: u8 = 4;

#[derive(Default)]
struct Slot {
    /// Highest in-order `seq`: the session's resume cursor.
    last_seq: AtomicU64,
    /// `seq`s skipped (received ahead of the next one).
    missing: AtomicU64,
    /// Storm this session takes part in, and where it stands in it.
    storm: AtomicU64,
    phase: AtomicU8,
    /// In-order `seq` that counts as resumed (`u64::MAX`: not known yet).
    target: AtomicU64,
}

struct StormOrder {
    id: u64,
    method: StormMethod,
    members: HashSet<usize>,
    jitter_ms: u64,
    deadline: Instant,
}

#[derive(Clone, Default)]
struct Control {
    stop: bool,
    storm: Option<Arc<StormOrder>>,
}

struct StormState {
    t0_us: u64,
    progress: StormProgress,
    reconnect: Histogram,
    resume: Histogram,
}

#[derive(Default)]
struct Counters {
    open: AtomicU64,
    ever_opened: AtomicU64,
    given_up: AtomicU64,
    connects: AtomicU64,
    reconnects: AtomicU64,
    connect_errors: AtomicU64,
    unexpected_closes: AtomicU64,
    received: AtomicU64,
    durable_in_order: AtomicU64,
    duplicates: AtomicU64,
    seq_gaps: AtomicU64,
    seq_missing: AtomicU64,
    cursor_mismatches: AtomicU64,
    gap_frames: AtomicU64,
    gap_dropped: AtomicU64,
    error_frames: AtomicU64,
    acks_sent: AtomicU64,
    ramp_started_all: AtomicBool,
    ramp_ms: AtomicU64,
    connect_error_kinds: Mutex<BTreeMap<String, u64>>,
    close_codes: Mutex<BTreeMap<String, u64>>,
    error_codes: Mutex<BTreeMap<String, u64>>,
}

#[derive(Default)]
struct Latencies {
    kinds: HashMap<String, Histogram>,
    tracked: HashMap<String, (String, Histogram)>,
}

struct Worker {
    spec: WorkerSpec,
    addrs: Vec<SocketAddr>,
    mint: Minter,
    slots: Vec<Slot>,
    c: Counters,
    lat: Mutex<Latencies>,
    storm: Mutex<Option<StormState>>,
    control: watch::Sender<Control>,
    started: Instant,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn emit(event: &Event) {
    if let Ok(line) = serde_json::to_string(event) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// The `worker` subcommand: the spec on the first line of stdin, then commands.
pub async fn run() -> anyhow::Result<()> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let first = stdin.next_line().await?.context("no worker spec on stdin")?;
    let spec: WorkerSpec = serde_json::from_str(&first).context("reading the worker spec")?;
    let addrs = spec.nodes.iter().map(|u| server_addr(u)).collect::<anyhow::Result<Vec<_>>>()?;
    let mint = crate::token_minter_ttl(&spec.secret, spec.token_ttl_s);
    let slots = (0..spec.count)
        .map(|_| Slot { target: AtomicU64::new(u64::MAX), phase: AtomicU8::new(CALM), ..Slot::default() })
        .collect();
    let worker = Arc::new(Worker {
        addrs,
        mint,
        slots,
        c: Counters::default(),
        lat: Mutex::new(Latencies::default()),
        storm: Mutex::new(None),
        control: watch::Sender::new(Control::default()),
        started: Instant::now(),
        tasks: Mutex::new(Vec::with_capacity(spec.count)),
        spec,
    });

    // Ctrl-C on a terminal reaches the whole process group: the orchestrator decides when
    // workers finish, so they ignore it (stdin closing still ends them).
    tokio::spawn(async { while tokio::signal::ctrl_c().await.is_ok() {} });
    let reporter = tokio::spawn(report_loop(worker.clone()));
    let ramp = tokio::spawn(ramp(worker.clone()));
    let lifetime = tokio::time::sleep(Duration::from_millis(worker.spec.max_lifetime_ms));
    tokio::pin!(lifetime);
    loop {
        tokio::select! {
            line = stdin.next_line() => match line {
                Ok(Some(line)) => match serde_json::from_str::<Command>(&line) {
                    Ok(Command::Finish) => break,
                    Ok(command) => obey(&worker, command),
                    Err(e) => eprintln!("worker {}: bad command {line:?}: {e}", worker.spec.worker),
                },
                // The orchestrator is gone.
                _ => break,
            },
            () = &mut lifetime => break,
        }
    }

    // Close every session normally, wait a little for them, report, exit.
    ramp.abort();
    worker.control.send_modify(|c| c.stop = true);
    let tasks = std::mem::take(&mut *lock(&worker.tasks));
    let deadline = Instant::now() + Duration::from_secs(10);
    for task in tasks {
        // Past the deadline, the process exit ends what is left.
        let _ = tokio::time::timeout_at(deadline, task).await;
    }
    reporter.abort();
    report(&worker);
    let fin = Final {
        first: worker.spec.first,
        last_seq: worker.slots.iter().map(|s| s.last_seq.load(Relaxed)).collect(),
        missing: worker
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let m = s.missing.load(Relaxed);
                (m > 0).then_some((worker.spec.first + i, m))
            })
            .collect(),
    };
    emit(&Event::Final(fin));
    Ok(())
}

async fn ramp(worker: Arc<Worker>) {
    let pace = Duration::from_secs_f64(1.0 / worker.spec.ramp_per_s.max(0.001));
    let connecting = (worker.spec.max_connecting > 0).then(|| Arc::new(Semaphore::new(worker.spec.max_connecting)));
    for local in 0..worker.spec.count {
        tokio::time::sleep_until(worker.started + pace.mul_f64(local as f64)).await;
        // Bounded: the next session waits for a connection being set up to finish.
        let permit = match &connecting {
            Some(s) => Some(s.clone().acquire_owned().await.expect("the semaphore is never closed")),
            None => None,
        };
        let task = tokio::spawn(session(worker.clone(), local, permit));
        lock(&worker.tasks).push(task);
    }
    worker.c.ramp_started_all.store(true, Relaxed);
}

async fn report_loop(worker: Arc<Worker>) {
    let mut tick = tokio::time::interval(Duration::from_millis(worker.spec.report_interval_ms.max(50)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        report(&worker);
    }
}

fn report(worker: &Worker) {
    let c = &worker.c;
    let done = c.ever_opened.load(Relaxed) + c.given_up.load(Relaxed);
    let ramp_done = c.ramp_started_all.load(Relaxed) && done >= worker.spec.count as u64;
    if ramp_done {
        settled(worker);
    }
    let progress = Progress {
        ramp_done,
        ramp_ms: c.ramp_ms.load(Relaxed),
        open: c.open.load(Relaxed),
        ever_opened: c.ever_opened.load(Relaxed),
        given_up: c.given_up.load(Relaxed),
        connects: c.connects.load(Relaxed),
        reconnects: c.reconnects.load(Relaxed),
        connect_errors: c.connect_errors.load(Relaxed),
        connect_error_kinds: lock(&c.connect_error_kinds).clone(),
        unexpected_closes: c.unexpected_closes.load(Relaxed),
        close_codes: lock(&c.close_codes).clone(),
        received: c.received.load(Relaxed),
        durable_in_order: c.durable_in_order.load(Relaxed),
        duplicates: c.duplicates.load(Relaxed),
        seq_gaps: c.seq_gaps.load(Relaxed),
        seq_missing: c.seq_missing.load(Relaxed),
        cursor_mismatches: c.cursor_mismatches.load(Relaxed),
        gap_frames: c.gap_frames.load(Relaxed),
        gap_dropped: c.gap_dropped.load(Relaxed),
        error_frames: c.error_frames.load(Relaxed),
        error_codes: lock(&c.error_codes).clone(),
        acks_sent: c.acks_sent.load(Relaxed),
    };
    let latencies = std::mem::take(&mut *lock(&worker.lat));
    let storm = lock(&worker.storm).as_ref().map(|s| {
        let mut p = s.progress.clone();
        p.reconnect_us = s.reconnect.to_sparse();
        p.resume_us = s.resume.to_sparse();
        p
    });
    emit(&Event::Progress(progress));
    if !latencies.kinds.is_empty() || !latencies.tracked.is_empty() {
        let delta = LatencyDelta {
            kinds: latencies.kinds.iter().map(|(k, h)| (k.clone(), h.to_sparse())).collect(),
            tracked: latencies
                .tracked
                .into_iter()
                .map(|(key, (kind, h))| TrackedDelta { key, kind, hist: h.to_sparse() })
                .collect(),
        };
        emit(&Event::Latency(delta));
    }
    if let Some(storm) = storm {
        emit(&Event::Storm(storm));
    }
}

fn obey(worker: &Arc<Worker>, command: Command) {
    match command {
        Command::Storm { id, method, sessions, t0_us, jitter_ms, timeout_ms } => {
            let first = worker.spec.first;
            let members: HashSet<usize> = sessions
                .into_iter()
                .filter(|g| (first..first + worker.spec.count).contains(g))
                .map(|g| g - first)
                .collect();
            for &local in &members {
                let slot = &worker.slots[local];
                slot.target.store(u64::MAX, Relaxed);
                slot.storm.store(id, Relaxed);
                slot.phase.store(ARMED, Relaxed);
            }
            let progress = StormProgress { id, sessions: members.len() as u64, ..StormProgress::default() };
            *lock(&worker.storm) = Some(StormState {
                t0_us,
                progress: progress.clone(),
                reconnect: Histogram::new(),
                resume: Histogram::new(),
            });
            let order = Arc::new(StormOrder {
                id,
                method,
                members,
                jitter_ms,
                deadline: Instant::now() + Duration::from_millis(timeout_ms),
            });
            worker.control.send_modify(|c| c.storm = Some(order));
            // Armed: the orchestrator waits for this before it asks the gateway to disconnect.
            emit(&Event::Storm(progress));
        }
        Command::Expect { id, targets } => {
            let first = worker.spec.first;
            for (g, target) in targets {
                if let Some(slot) = g.checked_sub(first).and_then(|l| worker.slots.get(l))
                    && slot.storm.load(Relaxed) == id
                {
                    slot.target.store(target, Relaxed);
                    check_resumed(worker, slot);
                }
            }
        }
        Command::Finish => {}
    }
}

/// Marks a stormed session resumed once it is back and its cursor reached the target.
fn check_resumed(worker: &Worker, slot: &Slot) {
    if slot.phase.load(Relaxed) == BACK
        && slot.last_seq.load(Relaxed) >= slot.target.load(Relaxed)
        && slot.phase.compare_exchange(BACK, RESUMED, Relaxed, Relaxed).is_ok()
        && let Some(storm) = lock(&worker.storm).as_mut()
        && storm.progress.id == slot.storm.load(Relaxed)
    {
        storm.progress.resumed += 1;
        storm.resume.record(now_us().saturating_sub(storm.t0_us));
    }
}

fn storm_event(worker: &Worker, slot: &Slot, f: impl FnOnce(&mut StormState)) {
    if let Some(storm) = lock(&worker.storm).as_mut()
        && storm.progress.id == slot.storm.load(Relaxed)
    {
        f(storm);
    }
}

/// How a held connection ended.
enum Ended {
    Stop,
    /// Taken down by a storm (ours, or the gateway's 4000 when armed for it).
    Storm(Arc<StormOrder>),
    /// The server closed it (code) or it broke (1006).
    Unexpected(u16),
}

/// Per-connection state of a session.
struct Conn {
    pending_ack: Option<u64>,
    ack_at: Option<Instant>,
}

/// The life of one session: connect, hold, reconnect as told, until stop.
/// One session, reconnecting as told. `connecting`, when the ramp is bounded, is held until the
/// first connection attempt ends.
async fn session(worker: Arc<Worker>, local: usize, mut connecting: Option<OwnedSemaphorePermit>) {
    let global = worker.spec.first + local;
    let slot = &worker.slots[local];
    let mut control = worker.control.subscribe();
    let mut seen_storm = 0u64;
    let mut ever_open = false;
    let mut storm: Option<Arc<StormOrder>> = None;
    let mut failures = 0u32;
    loop {
        if control.borrow().stop {
            return;
        }
        let resume = ever_open.then(|| slot.last_seq.load(Relaxed));
        let established = establish(&worker, local, global, resume).await;
        connecting.take();
        let ws = match established {
            Ok(ws) => ws,
            Err(kind) => {
                worker.c.connect_errors.fetch_add(1, Relaxed);
                *lock(&worker.c.connect_error_kinds).entry(kind).or_default() += 1;
                failures += 1;
                let pause = if let Some(order) = &storm {
                    storm_event(&worker, slot, |s| s.progress.connect_errors += 1);
                    if Instant::now() > order.deadline {
                        return;
                    }
                    Duration::from_millis(100 * (1 << failures.min(4)))
                } else if !ever_open {
                    if failures >= worker.spec.connect_attempts.max(1) {
                        worker.c.given_up.fetch_add(1, Relaxed);
                        settled(&worker);
                        return;
                    }
                    Duration::from_secs(1)
                } else {
                    Duration::from_millis(500 * (1 << failures.min(4)))
                };
                if wait_or_stop(&mut control, pause).await {
                    return;
                }
                continue;
            }
        };
        failures = 0;
        worker.c.connects.fetch_add(1, Relaxed);
        worker.c.open.fetch_add(1, Relaxed);
        if ever_open {
            worker.c.reconnects.fetch_add(1, Relaxed);
        } else {
            worker.c.ever_opened.fetch_add(1, Relaxed);
            ever_open = true;
            settled(&worker);
        }
        if storm.take().is_some() && slot.phase.compare_exchange(DOWN, BACK, Relaxed, Relaxed).is_ok() {
            storm_event(&worker, slot, |s| {
                s.progress.reconnected += 1;
                s.reconnect.record(now_us().saturating_sub(s.t0_us));
            });
            check_resumed(&worker, slot);
        }
        let ended = hold(&worker, local, ws, &mut control, &mut seen_storm).await;
        worker.c.open.fetch_sub(1, Relaxed);
        match ended {
            Ended::Stop => return,
            Ended::Storm(order) => {
                slot.phase.store(DOWN, Relaxed);
                storm_event(&worker, slot, |s| s.progress.down += 1);
                let jitter = if order.jitter_ms > 0 { rand::random_range(0..=order.jitter_ms) } else { 0 };
                storm = Some(order);
                if jitter > 0 && wait_or_stop(&mut control, Duration::from_millis(jitter)).await {
                    return;
                }
            }
            Ended::Unexpected(code) => {
                worker.c.unexpected_closes.fetch_add(1, Relaxed);
                *lock(&worker.c.close_codes).entry(code.to_string()).or_default() += 1;
                if !worker.spec.reconnect {
                    return;
                }
                let pause = Duration::from_millis(500 + rand::random_range(0..500));
                if wait_or_stop(&mut control, pause).await {
                    return;
                }
            }
        }
    }
}

/// Records the ramp's length when the last session is open or given up.
fn settled(worker: &Worker) {
    let c = &worker.c;
    if c.ever_opened.load(Relaxed) + c.given_up.load(Relaxed) >= worker.spec.count as u64 {
        let ms = (worker.started.elapsed().as_millis() as u64).max(1);
        let _ = c.ramp_ms.compare_exchange(0, ms, Relaxed, Relaxed);
    }
}

/// Sleeps, unless told to stop first (then true).
async fn wait_or_stop(control: &mut watch::Receiver<Control>, pause: Duration) -> bool {
    let sleep = tokio::time::sleep(pause);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            () = &mut sleep => return false,
            changed = control.changed() => if changed.is_err() || control.borrow().stop { return true },
        }
    }
}

/// Connects and waits for `welcome` (and `subscribed`), handling whatever arrives before; a peer
/// session is open once upgraded.
async fn establish(worker: &Worker, local: usize, global: usize, resume: Option<u64>) -> Result<Ws, String> {
    let spec = &worker.spec;
    let node = spec.node(global);
    let url = match spec.server {
        ServerKind::Pushgate => {
            let mut url = format!("{}?token={}", spec.nodes[node], (worker.mint)(&spec.user(global)));
            if let Some(seq) = resume {
                url.push_str(&format!("&last_seq={seq}"));
            }
            url
        }
        ServerKind::Peer => spec.nodes[node].clone(),
    };
    let source = (!spec.source_ips.is_empty()).then(|| spec.source_ips[local % spec.source_ips.len()]);
    let attempt = async {
        let mut ws = upgrade(&url, worker.addrs[node], source).await?;
        if spec.server == ServerKind::Peer {
            return Ok(ws);
        }
        let mut welcomed = false;
        loop {
            let text = match ws.next().await {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(_))) | None => return Err("closed_before_welcome".to_owned()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(ws_error_kind(&e)),
            };
            match handle_text(worker, local, text.as_str()) {
                Frame::Welcome(cursor) if !welcomed => {
                    welcomed = true;
                    if cursor != resume.unwrap_or(0) {
                        worker.c.cursor_mismatches.fetch_add(1, Relaxed);
                    }
                    match spec.channel(global) {
                        None => return Ok(ws),
                        Some(channel) => {
                            let subscribe = serde_json::json!({"type": "subscribe", "channel": channel});
                            ws.send(Message::text(subscribe.to_string())).await.map_err(|e| ws_error_kind(&e))?;
                        }
                    }
                }
                Frame::Subscribed if welcomed => return Ok(ws),
                _ if !welcomed => return Err("no_welcome".to_owned()),
                _ => {}
            }
        }
    };
    match tokio::time::timeout(Duration::from_millis(spec.connect_timeout_ms), attempt).await {
        Ok(result) => result,
        Err(_) => Err("timeout".to_owned()),
    }
}

async fn upgrade(url: &str, addr: SocketAddr, source: Option<IpAddr>) -> Result<Ws, String> {
    let io_kind = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "refused".to_owned(),
        std::io::ErrorKind::AddrNotAvailable | std::io::ErrorKind::AddrInUse => "no_source_port".to_owned(),
        std::io::ErrorKind::ConnectionReset => "reset".to_owned(),
        _ if e.raw_os_error() == Some(24) => "too_many_open_files".to_owned(),
        _ => "io".to_owned(),
    };
    let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(io_kind)?;
    if let Some(source) = source {
        socket.bind(SocketAddr::new(source, 0)).map_err(io_kind)?;
    }
    let stream = socket.connect(addr).await.map_err(io_kind)?;
    stream.set_nodelay(true).map_err(io_kind)?;
    let request = url.into_client_request().map_err(|e| ws_error_kind(&e))?;
    let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config()))
        .await
        .map_err(|e| ws_error_kind(&e))?;
    Ok(ws)
}

fn ws_error_kind(e: &tungstenite::Error) -> String {
    match e {
        tungstenite::Error::Http(response) => format!("http_{}", response.status().as_u16()),
        tungstenite::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionReset => "reset".to_owned(),
        tungstenite::Error::Io(_) => "io".to_owned(),
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => "closed".to_owned(),
        tungstenite::Error::Protocol(_) => "protocol".to_owned(),
        _ => "ws".to_owned(),
    }
}

/// Holds an open session until it ends.
async fn hold(
    worker: &Worker,
    local: usize,
    mut ws: Ws,
    control: &mut watch::Receiver<Control>,
    seen_storm: &mut u64,
) -> Ended {
    let slot = &worker.slots[local];
    let ack_every = worker.spec.ack_interval_ms.map(Duration::from_millis);
    let mut conn = Conn { pending_ack: None, ack_at: None };
    // A storm order that arrived while this session was away counts now.
    let mut check_control = true;
    loop {
        if check_control {
            check_control = false;
            let current = control.borrow_and_update().clone();
            if current.stop {
                close(&mut ws).await;
                return Ended::Stop;
            }
            if let Some(order) = current.storm
                && order.id > *seen_storm
            {
                *seen_storm = order.id;
                if order.members.contains(&local) && slot.phase.load(Relaxed) == ARMED {
                    match order.method {
                        StormMethod::Close => {
                            close(&mut ws).await;
                            return Ended::Storm(order);
                        }
                        StormMethod::Drop => {
                            let _ = ws.get_ref().set_zero_linger();
                            drop(ws);
                            return Ended::Storm(order);
                        }
                        // Wait for the gateway's 4000.
                        StormMethod::Admin => {}
                    }
                }
            }
        }
        let ack_at = conn.ack_at;
        tokio::select! {
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(text))) if worker.spec.server == ServerKind::Peer => {
                    handle_payload(worker, text.as_bytes());
                }
                Some(Ok(Message::Binary(payload))) if worker.spec.server == ServerKind::Peer => {
                    handle_payload(worker, &payload);
                }
                Some(Ok(Message::Text(text))) => {
                    if let Frame::Durable = handle_text(worker, local, text.as_str())
                        && let Some(every) = ack_every
                    {
                        conn.pending_ack = Some(slot.last_seq.load(Relaxed));
                        conn.ack_at.get_or_insert_with(|| Instant::now() + every);
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map(|f| u16::from(f.code)).unwrap_or(1005);
                    if code == 4000
                        && slot.phase.load(Relaxed) == ARMED
                        && let Some(order) = control.borrow().storm.clone()
                        && order.method == StormMethod::Admin
                        && order.members.contains(&local)
                    {
                        return Ended::Storm(order);
                    }
                    return Ended::Unexpected(code);
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Ended::Unexpected(1006),
            },
            changed = control.changed() => {
                if changed.is_err() {
                    close(&mut ws).await;
                    return Ended::Stop;
                }
                check_control = true;
            }
            () = async {
                match ack_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                conn.ack_at = None;
                if let Some(seq) = conn.pending_ack.take() {
                    let ack = format!(r#"{{"type":"ack","seq":{seq}}}"#);
                    if ws.send(Message::text(ack)).await.is_ok() {
                        worker.c.acks_sent.fetch_add(1, Relaxed);
                    }
                }
            }
        }
    }
}

/// Closes normally and waits (briefly) for the server's Close.
async fn close(ws: &mut Ws) {
    let frame = CloseFrame { code: CloseCode::Normal, reason: "".into() };
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        if ws.close(Some(frame)).await.is_err() {
            return;
        }
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// The parts of a server frame the worker looks at.
#[derive(Deserialize)]
struct InFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    last_seq: Option<u64>,
    #[serde(default, borrow)]
    channel: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(default)]
    dropped: Option<u64>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

/// The load tool's own fields in `data`.
#[derive(Deserialize)]
struct InData<'a> {
    #[serde(default)]
    sent_us: Option<u64>,
    #[serde(default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    track: Option<Cow<'a, str>>,
}

enum Frame {
    Welcome(u64),
    Subscribed,
    Durable,
    Other,
}

fn handle_text(worker: &Worker, local: usize, text: &str) -> Frame {
    let received = now_us();
    let c = &worker.c;
    let Ok(frame) = serde_json::from_str::<InFrame>(text) else {
        *lock(&c.error_codes).entry("unparsable_frame".to_owned()).or_default() += 1;
        return Frame::Other;
    };
    match frame.kind.as_ref() {
        "welcome" => return Frame::Welcome(frame.last_seq.unwrap_or(0)),
        "subscribed" => return Frame::Subscribed,
        "gap" => {
            c.gap_frames.fetch_add(1, Relaxed);
            c.gap_dropped.fetch_add(frame.dropped.unwrap_or(0), Relaxed);
            return Frame::Other;
        }
        "error" => {
            c.error_frames.fetch_add(1, Relaxed);
            let code = frame.code.as_deref().unwrap_or("unknown").to_owned();
            *lock(&c.error_codes).entry(code).or_default() += 1;
            return Frame::Other;
        }
        "message" => {}
        _ => return Frame::Other,
    }
    c.received.fetch_add(1, Relaxed);
    let mut result = Frame::Other;
    if let Some(seq) = frame.seq {
        let slot = &worker.slots[local];
        let (next, event) = observe(slot.last_seq.load(Relaxed), seq);
        slot.last_seq.store(next, Relaxed);
        match event {
            SeqEvent::InOrder => {
                c.durable_in_order.fetch_add(1, Relaxed);
            }
            SeqEvent::Duplicate => {
                c.duplicates.fetch_add(1, Relaxed);
            }
            SeqEvent::Gap { missing } => {
                c.seq_gaps.fetch_add(1, Relaxed);
                c.seq_missing.fetch_add(missing, Relaxed);
                slot.missing.fetch_add(missing, Relaxed);
            }
        }
        if slot.phase.load(Relaxed) == BACK {
            check_resumed(worker, slot);
        }
        result = Frame::Durable;
    }
    let Some(data) = frame.data.and_then(|raw| serde_json::from_str::<InData>(raw.get()).ok()) else {
        return result;
    };
    let kind = match (frame.seq, &frame.channel) {
        (Some(_), _) => "durable",
        (None, Some(_)) => "channel",
        (None, None) => "broadcast",
    };
    record_latency(worker, data, kind, received);
    result
}

/// A peer server's data frame: the payload the load tool published, as it was published.
fn handle_payload(worker: &Worker, payload: &[u8]) {
    let received = now_us();
    let c = &worker.c;
    c.received.fetch_add(1, Relaxed);
    match peer_payload(payload) {
        Some(data) => record_latency(worker, data, "broadcast", received),
        None => *lock(&c.error_codes).entry("unparsable_frame".to_owned()).or_default() += 1,
    }
}

/// The load tool's fields in a peer server's frame, if it is one of the load tool's payloads.
fn peer_payload(payload: &[u8]) -> Option<InData<'_>> {
    serde_json::from_slice::<InData>(payload).ok().filter(|data| data.sent_us.is_some())
}

/// Records a delivery's latency (from `data.sent_us`, when there) under its kind — `data.kind`
/// when it names one, else `kind` — and under its tracked message (`data.track`).
fn record_latency(worker: &Worker, data: InData<'_>, kind: &str, received: u64) {
    let Some(sent) = data.sent_us else { return };
    let latency = received.saturating_sub(sent);
    let kind = data.kind.as_deref().unwrap_or(kind);
    let mut lat = lock(&worker.lat);
    match lat.kinds.get_mut(kind) {
        Some(h) => h.record(latency),
        None => {
            let mut h = Histogram::new();
            h.record(latency);
            lat.kinds.insert(kind.to_owned(), h);
        }
    }
    if let Some(track) = data.track {
        match lat.tracked.get_mut(track.as_ref()) {
            Some((_, h)) => h.record(latency),
            None => {
                let mut h = Histogram::new();
                h.record(latency);
                lat.tracked.insert(track.into_owned(), (kind.to_owned(), h));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_with_any_data() {
        let f: InFrame = serde_json::from_str(
            r#"{"type":"message","id":"x","ts":1,"seq":4,"data":{"sent_us":12,"kind":"durable","n":[1,2]}}"#,
        )
        .unwrap();
        assert_eq!((f.kind.as_ref(), f.seq), ("message", Some(4)));
        let d: InData = serde_json::from_str(f.data.unwrap().get()).unwrap();
        assert_eq!((d.sent_us, d.kind.as_deref(), d.track.as_deref()), (Some(12), Some("durable"), None));
        let f: InFrame = serde_json::from_str(r#"{"type":"message","id":"y","ts":1,"data":"hello"}"#).unwrap();
        assert!(serde_json::from_str::<InData>(f.data.unwrap().get()).is_err());
        let f: InFrame = serde_json::from_str(r#"{"type":"gap","dropped":3,"channel":"a\"b"}"#).unwrap();
        assert_eq!((f.dropped, f.channel.as_deref()), (Some(3), Some("a\"b")));
    }

    #[test]
    fn peer_frames_are_the_published_payload() {
        let d = peer_payload(br#"{"sent_us":12,"kind":"broadcast","track":"b3"}"#).unwrap();
        assert_eq!((d.sent_us, d.kind.as_deref(), d.track.as_deref()), (Some(12), Some("broadcast"), Some("b3")));
        // Escaped strings cannot be borrowed: they still parse.
        let d = peer_payload(br#"{"sent_us":1,"track":"b\u0033"}"#).unwrap();
        assert_eq!((d.kind, d.track.as_deref()), (None, Some("b3")));
        // Not one of ours: a pushgate frame, another server's hello, or not JSON.
        assert!(peer_payload(br#"{"type":"message","data":{"sent_us":1}}"#).is_none());
        assert!(peer_payload(b"hello").is_none());
        assert!(peer_payload(b"").is_none());
    }

    #[test]
    fn server_addresses_resolve() {
        assert_eq!(server_addr("ws://127.0.0.1:8080/ws").unwrap(), "127.0.0.1:8080".parse().unwrap());
        assert_eq!(server_addr("ws://localhost:81/ws").unwrap().port(), 81);
        assert!(server_addr("wss://127.0.0.1:1/ws").is_err());
        assert!(server_addr("ws://127.0.0.1/ws").is_err());
    }
}
