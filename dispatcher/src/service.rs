//! The `pushgate-dispatcher` process as a library (the binary only reads the command line): its
//! configuration, its start — the store, RabbitMQ and Redis connections, one consumer per ingest
//! partition, the events consumer, the purge and the presence sweep — and its small admin
//! listener (`/metrics`, `/healthz`, `/readyz`).

use std::{
    net::SocketAddr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{Json, Router as Http, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use metrics::gauge;
use metrics_exporter_prometheus::PrometheusHandle;
use pushgate_protocol::EnvelopeLimits;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    amqp::{Amqp, BACKEND_UP},
    backoff::Backoff,
    bookkeeping, events,
    presence::{self, Directory, Keys},
    router::{IngestConfig, Router},
    settings::{self, Env, Kind, SettingsError},
    store::{AnyStore, Store},
    telemetry, topology,
};

/// Every setting of the dispatcher (environment: `PUSHGATE_` + the key in upper case).
const SETTINGS: &[(&str, Kind)] = &[
    ("admin_listen", Kind::Text),
    ("node_id", Kind::Text),
    ("mysql_url", Kind::Text),
    ("redis_url", Kind::Text),
    ("amqp_url", Kind::Text),
    ("log", Kind::Text),
    ("log_format", Kind::Text),
    ("cluster_name", Kind::Text),
    ("ingest_partitions", Kind::Value),
    ("ingest_prefetch", Kind::Value),
    ("ingest_linger", Kind::Value),
    ("store_pool_size", Kind::Value),
    ("idempotency_window", Kind::Value),
    ("purge_interval", Kind::Value),
    ("session_log_retention", Kind::Value),
    ("max_data_bytes", Kind::Value),
    ("max_data_depth", Kind::Value),
];

/// The dispatcher's configuration, with documented defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DispatcherConfig {
    /// `/metrics`, `/healthz`, `/readyz`. Default `127.0.0.1:9091` (beside a gateway's 9090).
    pub admin_listen: SocketAddr,
    pub node_id: Option<String>,
    pub mysql_url: Option<String>,
    pub redis_url: Option<String>,
    pub amqp_url: Option<String>,
    pub log: String,
    /// `text` or `json`.
    pub log_format: String,
    /// Prefix of Redis keys and channels; gateways and dispatchers of a cluster share it.
    pub cluster_name: String,
    /// Ingest partitions (queues `pushgate.ingest.N`); every dispatcher of a cluster must use
    /// the same number. More partitions spread the ingest over more dispatchers.
    pub ingest_partitions: u16,
    /// Unacked envelopes per partition; also the largest batch.
    pub ingest_prefetch: u16,
    /// How long a batch waits to fill once its first envelope is in.
    #[serde(with = "humantime_serde")]
    pub ingest_linger: Duration,
    /// MySQL connections.
    pub store_pool_size: u32,
    #[serde(with = "humantime_serde")]
    pub idempotency_window: Duration,
    #[serde(with = "humantime_serde")]
    pub purge_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub session_log_retention: Duration,
    /// Largest `data` of an envelope; larger ones are dead-lettered.
    pub max_data_bytes: usize,
    /// Deepest nesting of arrays and objects in `data`; deeper ones are dead-lettered.
    pub max_data_depth: usize,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9091)),
            node_id: None,
            mysql_url: None,
            redis_url: None,
            amqp_url: None,
            log: "info".into(),
            log_format: "text".into(),
            cluster_name: "pushgate".into(),
            ingest_partitions: 8,
            ingest_prefetch: 1000,
            ingest_linger: Duration::from_millis(2),
            store_pool_size: 16,
            idempotency_window: Duration::from_secs(24 * 3600),
            purge_interval: Duration::from_secs(60),
            session_log_retention: Duration::from_secs(7 * 24 * 3600),
            max_data_bytes: EnvelopeLimits::default().max_data_bytes,
            max_data_depth: EnvelopeLimits::default().max_data_depth,
        }
    }
}

/// Why the dispatcher cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("the dispatcher needs {}", .0.join(", "))]
    Missing(Vec<&'static str>),
    #[error("{0}")]
    Invalid(String),
}

/// The three backend URLs, once checked.
#[derive(Debug, Clone)]
pub struct Backends {
    pub mysql: String,
    pub redis: String,
    pub amqp: String,
}

impl DispatcherConfig {
    pub fn load(file: Option<&Path>, env: &dyn Env, overrides: &[(String, String)]) -> Result<Self, StartError> {
        let config: Self = settings::load(file, env, overrides, SETTINGS)?;
        config.backends()?;
        if config.ingest_partitions == 0 || config.ingest_prefetch == 0 {
            return Err(StartError::Invalid("ingest_partitions and ingest_prefetch must be positive".into()));
        }
        Ok(config)
    }

    /// The backend URLs, or the names of the missing ones.
    pub fn backends(&self) -> Result<Backends, StartError> {
        match (&self.mysql_url, &self.redis_url, &self.amqp_url) {
            (Some(mysql), Some(redis), Some(amqp)) => {
                Ok(Backends { mysql: mysql.clone(), redis: redis.clone(), amqp: amqp.clone() })
            }
            (m, r, a) => {
                let names = [
                    ("PUSHGATE_MYSQL_URL", m.is_none()),
                    ("PUSHGATE_REDIS_URL", r.is_none()),
                    ("PUSHGATE_AMQP_URL", a.is_none()),
                ];
                Err(StartError::Missing(names.iter().filter(|(_, missing)| *missing).map(|(n, _)| *n).collect()))
            }
        }
    }
}

/// Backend health, for readiness.
#[derive(Debug, Default)]
pub struct Health {
    pub redis: Arc<AtomicBool>,
    pub mysql: AtomicBool,
}

/// A running dispatcher.
#[derive(Debug)]
pub struct Dispatcher {
    pub node_id: String,
    pub admin_addr: SocketAddr,
    stop: CancellationToken,
    tasks: TaskTracker,
}

#[derive(Clone)]
struct AdminState {
    amqp: Amqp,
    health: Arc<Health>,
    metrics: PrometheusHandle,
}

/// Starts everything; returns once the admin listener runs (backends connect in the background).
pub async fn start(config: DispatcherConfig, admin: TcpListener) -> Result<Dispatcher, StartError> {
    let backends = config.backends()?;
    let metrics = telemetry::install_metrics();
    let node_id = config.node_id.clone().unwrap_or_else(|| format!("dispatcher-{:04x}", rand::random::<u16>()));
    let admin_addr = admin.local_addr().map_err(|e| StartError::Invalid(e.to_string()))?;
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let health = Arc::new(Health::default());

    let partitions = config.ingest_partitions;
    let amqp = Amqp::start(
        backends.amqp.clone(),
        node_id.clone(),
        Arc::new(move |channel| Box::pin(async move { topology::declare_dispatcher(&channel, partitions).await })),
    );
    let redis = presence::connect(&backends.redis).map_err(|e| StartError::Invalid(format!("redis url: {e}")))?;
    // The dispatcher routes with reads and publishes on the bus, which Redis out of memory still
    // serves: a PING is its health check.
    let ping = redis::cmd("PING");
    tasks.spawn(presence::watch_health(redis.clone(), health.redis.clone(), ping, Duration::from_secs(1)));
    let directory = Directory::new(redis, Keys::new(&config.cluster_name));

    let state = AdminState { amqp: amqp.clone(), health: health.clone(), metrics: metrics.clone() };
    let http = Http::new()
        .route("/metrics", get(|State(s): State<AdminState>| async move { s.metrics.render() }))
        .route("/healthz", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/readyz", get(ready))
        .with_state(state);
    let admin_stop = stop.clone();
    tasks.spawn(async move {
        let _ = axum::serve(admin, http).with_graceful_shutdown(async move { admin_stop.cancelled().await }).await;
    });
    let upkeep_stop = stop.clone();
    tasks.spawn(async move {
        tokio::select! {
            () = telemetry::upkeep(metrics, Duration::from_secs(5)) => {}
            () = upkeep_stop.cancelled() => {}
        }
    });

    // The store: retried until MySQL answers (readiness says 503 meanwhile).
    let starter = {
        let (stop, tasks, health, directory, amqp) =
            (stop.clone(), tasks.clone(), health.clone(), directory.clone(), amqp.clone());
        let config = config.clone();
        async move {
            let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
            let store = loop {
                match AnyStore::open(&backends.mysql, config.store_pool_size).await {
                    Ok(store) => break store,
                    Err(e) => {
                        tracing::warn!(error = %e, url = %crate::redact(&backends.mysql), "cannot open the store; retrying");
                        tokio::select! {
                            () = backoff.wait() => {}
                            () = stop.cancelled() => return,
                        }
                    }
                }
            };
            tracing::info!("store open");
            tasks.spawn(watch_store(store.clone(), health));
            let max_data_bytes = match store.largest_data() {
                Some(allowed) if allowed < config.max_data_bytes => {
                    tracing::warn!(
                        configured = config.max_data_bytes,
                        allowed,
                        "max_data_bytes lowered to fit MySQL's max_allowed_packet: larger data is dead-lettered"
                    );
                    allowed
                }
                _ => config.max_data_bytes,
            };
            let router = Arc::new(Router {
                amqp: amqp.clone(),
                store: store.clone(),
                directory: directory.clone(),
                limits: EnvelopeLimits {
                    max_data_bytes,
                    max_data_depth: config.max_data_depth,
                    ..EnvelopeLimits::default()
                },
                config: IngestConfig {
                    prefetch: config.ingest_prefetch,
                    linger: config.ingest_linger,
                    idempotency_window: config.idempotency_window,
                },
            });
            for p in 0..config.ingest_partitions {
                tasks.spawn(router.clone().run_partition(p, stop.clone()));
            }
            tasks.spawn(events::run(amqp, store.clone(), stop.clone()));
            let purge = bookkeeping::run_purge(
                store,
                config.purge_interval,
                config.idempotency_window,
                config.session_log_retention,
            );
            let purge_stop = stop.clone();
            tasks.spawn(async move {
                tokio::select! {
                    () = purge => {}
                    () = purge_stop.cancelled() => {}
                }
            });
            tasks.spawn(sweep(directory, stop));
        }
    };
    tasks.spawn(starter);
    tracing::info!(node = %node_id, admin = %admin_addr, partitions, "dispatcher started");
    Ok(Dispatcher { node_id, admin_addr, stop, tasks })
}

async fn ready(State(s): State<AdminState>) -> impl IntoResponse {
    let (amqp, redis, mysql) =
        (s.amqp.is_up(), s.health.redis.load(Ordering::Relaxed), s.health.mysql.load(Ordering::Relaxed));
    let body = json!({ "amqp": amqp, "redis": redis, "mysql": mysql });
    if amqp && redis && mysql { (StatusCode::OK, Json(body)) } else { (StatusCode::SERVICE_UNAVAILABLE, Json(body)) }
}

async fn watch_store(store: AnyStore, health: Arc<Health>) {
    loop {
        let ok = store.ping().await.is_ok();
        health.mysql.store(ok, Ordering::Relaxed);
        gauge!(BACKEND_UP, "backend" => "mysql").set(if ok { 1.0 } else { 0.0 });
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Removes the entries of gateway nodes whose lease expired (any process may; a lock per node
/// keeps them from doing it twice).
async fn sweep(directory: Directory, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
            () = stop.cancelled() => return,
        }
        if let Err(e) = directory.sweep(pushgate_protocol::now_ms()).await {
            tracing::debug!(error = %e, "presence sweep failed");
        }
    }
}

impl Dispatcher {
    /// Stops consuming (a batch under way is finished, unacked envelopes go back to the broker)
    /// and waits for the tasks, at most `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        self.stop.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(grace, self.tasks.wait()).await;
    }
}
