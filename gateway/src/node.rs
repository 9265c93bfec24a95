//! The state one gateway node shares between its listener, sessions, heartbeat wheel, drain and
//! admin API, behind one `Arc<Node>`: configuration, the registry, tokens, metrics, the node
//! clock, admission and the lifecycle (draining, drained).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use pushgate_protocol::{EnvelopeLimits, now_ms};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::{
    auth::Auth,
    cluster::Cluster,
    config::Config,
    durable::Durable,
    metrics::{GaugeUnit, Metrics},
    registry::Registry,
    session::{OutboxLimits, ParkingLot},
};

/// The node's parking lot, on the current runtime; `None` (sessions stay running) outside a
/// runtime or when the lot cannot start.
fn start_parking(metrics: &Metrics) -> Option<Arc<ParkingLot>> {
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    ParkingLot::start(runtime, metrics.sessions_parked.clone(), metrics.unparks.clone())
        .inspect_err(|e| tracing::warn!(error = %e, "the parking lot did not start; idle sessions stay running"))
        .ok()
}

/// A monotonic millisecond clock for liveness and latency. Cheap to read; starts at 1 so that 0
/// can mean "never" in atomics.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Instant,
}

impl Clock {
    pub fn new() -> Self {
        Self { epoch: Instant::now() - Duration::from_millis(1) }
    }

    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Admission control: counts open client sockets (handshakes and sessions) against the limit.
#[derive(Debug)]
pub struct Admission {
    open: AtomicUsize,
    /// Sessions admitted.
    pub max: usize,
    /// Extra sockets accepted only to answer 503: beyond `max + overflow` a connection is
    /// closed at once, so a flood cannot exhaust file descriptors.
    pub overflow: usize,
}

/// What admission decided for a new socket.
#[derive(Debug)]
pub enum Entry {
    Admitted(Permit),
    /// Over the limit: answer 503.
    Full(Permit),
    /// Far over the limit: close at once.
    Shed,
}

/// Holds one admission slot until dropped.
#[derive(Debug)]
pub struct Permit {
    node: Arc<Node>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.node.admission.open.fetch_sub(1, Ordering::Relaxed);
        self.node.metrics.connections.decrement(1.0);
    }
}

impl Admission {
    pub fn new(max: usize, overflow: usize) -> Self {
        Self { open: AtomicUsize::new(0), max, overflow }
    }

    /// Open client sockets.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// Drain and exit signals.
#[derive(Debug, Default)]
pub struct Lifecycle {
    draining: AtomicBool,
    /// Cancelled when the drain has finished (every session closed, or the deadline passed).
    pub drained: CancellationToken,
}

impl Lifecycle {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Marks the node as draining; returns false if it already was.
    pub fn begin_drain(&self) -> bool {
        !self.draining.swap(true, Ordering::SeqCst)
    }
}

/// Everything a node shares.
#[derive(Debug)]
pub struct Node {
    pub config: Config,
    pub node_id: String,
    pub registry: Registry,
    pub auth: Auth,
    /// The store, the write path, acks and inbox reads.
    pub durable: Arc<Durable>,
    /// Cluster mode: the broker, the presence directory and the bus.
    pub cluster: Option<Arc<Cluster>>,
    pub metrics: Metrics,
    pub clock: Clock,
    pub admission: Admission,
    /// Set-up slots (`setup_concurrency`): a connection whose request has arrived takes one to be
    /// answered and set up; its session gives it back when it starts.
    setups: Arc<Semaphore>,
    pub lifecycle: Lifecycle,
    /// Idle sessions without a task (`park_idle_sessions`); `None` when off.
    pub parking: Option<Arc<ParkingLot>>,
    pub outbox_limits: OutboxLimits,
    pub envelope_limits: EnvelopeLimits,
    /// Wall-clock start, ms since the Unix epoch.
    pub started_ms: u64,
}

impl Node {
    pub fn new(
        config: Config,
        node_id: String,
        auth: Auth,
        durable: Arc<Durable>,
        cluster: Option<Arc<Cluster>>,
        max_connections: usize,
        overflow: usize,
    ) -> Arc<Self> {
        let outbox_limits = OutboxLimits { max_frames: config.outbox_max_frames, max_bytes: config.outbox_max_bytes };
        let setups = Arc::new(Semaphore::new(config.setup_concurrency));
        let envelope_limits = EnvelopeLimits {
            max_data_bytes: config.max_data_bytes,
            max_data_depth: config.max_data_depth,
            ..EnvelopeLimits::default()
        };
        let metrics = Metrics::new();
        let parking = if config.park_idle_sessions { start_parking(&metrics) } else { None };
        Arc::new(Self {
            config,
            node_id,
            registry: Registry::new(),
            auth,
            durable,
            cluster,
            metrics,
            clock: Clock::new(),
            admission: Admission::new(max_connections, overflow),
            setups,
            lifecycle: Lifecycle::default(),
            parking,
            outbox_limits,
            envelope_limits,
            started_ms: now_ms(),
        })
    }

    /// The backends the node needs that are down now, by name (readiness lists them).
    pub fn backends_down(&self) -> Vec<&'static str> {
        let cluster = self.cluster.as_deref();
        [
            ("store", !self.durable.store_up()),
            ("amqp", cluster.is_some_and(|c| !c.amqp.is_up())),
            ("redis", cluster.is_some_and(|c| !c.redis_up())),
        ]
        .into_iter()
        .filter_map(|(name, down)| down.then_some(name))
        .collect()
    }

    /// Why a new session cannot be set up now, if a backend its set-up needs is down: its
    /// presence entry (cluster) or its cursor (the store). Such a session would only be closed
    /// after its upgrade, so it is refused before (503).
    pub fn sessions_refused_because(&self) -> Option<&'static str> {
        if self.cluster.as_ref().is_some_and(|c| !c.redis_up()) {
            Some("the presence directory (Redis) is unavailable; reconnect later")
        } else if !self.durable.store_up() {
            Some("the message store is unavailable; reconnect later")
        } else {
            None
        }
    }

    /// Whether the demo page is served (by default only in standalone mode).
    pub fn demo_page(&self) -> bool {
        self.config.demo_page.unwrap_or_else(|| self.config.mode().is_ok_and(|m| m == crate::Mode::Standalone))
    }

    /// Waits for a set-up slot, counted in `pushgate_setups_waiting` meanwhile (also when the
    /// wait is given up).
    pub async fn setup_slot(&self) -> OwnedSemaphorePermit {
        let _waiting = GaugeUnit::hold(&self.metrics.setups_waiting);
        self.setups.clone().acquire_owned().await.expect("the set-up slots are never closed")
    }

    /// Admits a new client socket, or says it must be refused.
    pub fn admit(self: &Arc<Self>) -> Entry {
        let open = self.admission.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.metrics.connections.increment(1.0);
        let permit = Permit { node: self.clone() };
        if open <= self.admission.max {
            Entry::Admitted(permit)
        } else if open <= self.admission.max + self.admission.overflow {
            Entry::Full(permit)
        } else {
            drop(permit);
            Entry::Shed
        }
    }
}
