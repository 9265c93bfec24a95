//! `pushgate-gateway` as a library: a gateway node that holds client WebSocket sessions and
//! serves the admin API. The binary (`main.rs`) only reads the command line, installs logging
//! and calls [`start`]; tests call the same [`start`] on `127.0.0.1:0`.
//!
//! Layout:
//! - [`config`]: the typed configuration and its layers (defaults, TOML, environment, flags);
//! - [`node`]: what the node's tasks share (registry, tokens, metrics, admission, lifecycle);
//! - [`listener`]: accept loop, admission, file limit; [`conn`]: a connection's socket, bare
//!   until it must be waited on; [`handshake`]: the HTTP upgrade;
//! - [`session`]: the per-connection task and its shared handle (outbox, close requests);
//! - [`registry`]: sessions by id, user and channel; [`delivery`]: fan-out to sessions;
//! - [`heartbeat`]: the wheel that pings and times out sessions; [`drain`]: graceful exit;
//! - [`admin`]: the admin HTTP API; [`publish`]: publishing; [`pages`]: the demo page;
//! - [`durable`]: store, write path, acks, inbox reads; [`cluster`]: presence, node deliveries,
//!   the bus and events in cluster mode; [`auth`]: tokens; [`metrics`], [`telemetry`];
//!   [`allocator`]: glibc's allocator with one arena.

pub mod admin;
pub mod allocator;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod delivery;
pub mod drain;
pub mod durable;
pub mod handshake;
pub mod heartbeat;
pub mod listener;
pub mod metrics;
pub mod node;
pub mod pages;
pub mod publish;
pub mod registry;
pub mod session;
pub mod telemetry;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use crate::config::{Config, ConfigError, Mode};
use crate::{auth::Auth, node::Node};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot load or create the token secret in {dir}: {source}")]
    Secret { dir: std::path::PathBuf, source: std::io::Error },
    #[error("cannot bind {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot open the store {url}: {source}")]
    Store { url: String, source: pushgate_dispatcher::store::StoreError },
}

impl StartError {
    /// The process exit code: 64 (`EX_USAGE`) for configuration errors, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Config(_) => 64,
            _ => 1,
        }
    }
}

/// The bound client and admin listeners.
#[derive(Debug)]
pub struct Listeners {
    pub client: TcpListener,
    pub admin: TcpListener,
}

impl Listeners {
    pub fn bind(config: &Config) -> Result<Self, StartError> {
        let bind = |addr: SocketAddr| listener::bind(addr).map_err(|source| StartError::Bind { addr, source });
        Ok(Self { client: bind(config.listen)?, admin: bind(config.admin_listen)? })
    }
}

/// A running gateway node.
#[derive(Debug)]
pub struct Gateway {
    node: Arc<Node>,
    pub client_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    stop: CancellationToken,
    tasks: TaskTracker,
}

/// The default node id: hostname plus a short random suffix.
pub fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "pushgate".to_owned());
    format!("{host}-{:04x}", rand::random::<u16>())
}

/// Starts a node on `listeners`. `socket_budget` is how many client sockets the file limit
/// allows (see [`listener::raise_file_limit`]).
pub async fn start(config: Config, listeners: Listeners, socket_budget: u64) -> Result<Gateway, StartError> {
    let mode = config.mode()?;
    if matches!(mode, Mode::Cluster { .. }) && (config.jwt_secret.is_none() || config.api_key.is_none()) {
        return Err(StartError::Config(ConfigError::Invalid(
            "cluster mode needs PUSHGATE_JWT_SECRET and PUSHGATE_API_KEY".into(),
        )));
    }
    let auth = Auth::load(config.jwt_secret.as_deref(), &config.data_dir, config.token_leeway)
        .map_err(|source| StartError::Secret { dir: config.data_dir.clone(), source })?;
    let (max_connections, overflow) = listener::connection_budget(config.max_connections, socket_budget);
    if max_connections < config.max_connections {
        tracing::warn!(
            configured = config.max_connections,
            allowed = max_connections,
            "max_connections lowered to fit the open-file limit"
        );
    }
    let node_id = config.node_id.clone().unwrap_or_else(default_node_id);
    let client_addr =
        listeners.client.local_addr().map_err(|source| StartError::Bind { addr: config.listen, source })?;
    let admin_addr =
        listeners.admin.local_addr().map_err(|source| StartError::Bind { addr: config.admin_listen, source })?;
    // The recorder first: the node's metric handles register with it.
    let prometheus = metrics::install();
    let store_url = match &mode {
        Mode::Cluster { mysql_url, .. } => mysql_url.clone(),
        Mode::Standalone => config.store_url(),
    };
    let durable = durable::Durable::open(&config)
        .await
        .map_err(|source| StartError::Store { url: pushgate_dispatcher::redact(&store_url), source })?;
    let (cluster, inputs) = match &mode {
        Mode::Cluster { redis_url, amqp_url, .. } => {
            let (cluster, inputs) = cluster::Cluster::connect(&config, &node_id, redis_url, amqp_url)
                .map_err(|e| StartError::Config(ConfigError::Invalid(e)))?;
            (Some(cluster), Some(inputs))
        }
        Mode::Standalone => (None, None),
    };
    let node = Node::new(config, node_id, auth, durable, cluster, max_connections, overflow);
    ::metrics::gauge!(metrics::CONNECTION_LIMIT).set(max_connections as f64);
    ::metrics::gauge!(metrics::DRAINING).set(0.0);

    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    tasks.spawn(listener::accept_loop(node.clone(), listeners.client, stop.clone(), tasks.clone()));
    tasks.spawn(heartbeat::run(node.clone(), stop.clone()));
    if let Some(inputs) = inputs {
        cluster::run(&node, inputs, &stop, &tasks);
    }
    tasks.spawn(admin::serve(listeners.admin, admin::router(node.clone(), prometheus.clone()), stop.clone()));
    let upkeep = stop.clone();
    tasks.spawn(async move {
        tokio::select! {
            () = metrics::upkeep(prometheus, Duration::from_secs(5)) => {}
            () = upkeep.cancelled() => {}
        }
    });
    tracing::info!(
        node = %node.node_id,
        client = %client_addr,
        admin = %admin_addr,
        max_connections,
        heartbeat_s = node.config.heartbeat_s(),
        store = node.durable.store.dialect(),
        mode = if node.cluster.is_some() { "cluster" } else { "standalone" },
        "gateway started"
    );
    Ok(Gateway { node, client_addr, admin_addr, stop, tasks })
}

impl Gateway {
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Starts the drain (SIGTERM); returns false when it had already started.
    pub fn drain(&self) -> bool {
        drain::start(&self.node)
    }

    /// Waits until the drain has finished, writes pending acks and session events, then stops
    /// the listeners and background tasks.
    pub async fn drained(&self) {
        self.node.lifecycle.drained.cancelled().await;
        match &self.node.cluster {
            Some(cluster) => {
                cluster::flush_events(&self.node, cluster).await;
                if let Err(e) = cluster.directory.remove_node(&self.node.node_id).await {
                    tracing::warn!(error = %e, "removing this node from the presence directory failed (its lease will expire)");
                }
            }
            None => self.node.durable.flush().await,
        }
        self.stop.cancel();
        self.tasks.close();
    }

    /// Stops accepting and serving at once (tests, fatal errors); sessions are dropped.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}
