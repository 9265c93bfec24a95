//! The gateway's configuration: one typed tree with documented defaults, read from (later wins)
//! built-in defaults, a TOML file, the environment and command-line settings (SPEC §2).
//!
//! The environment is read through [`Env`] so tests hand in a map instead of calling `set_var`.
//! Every setting has one key: `heartbeat` in TOML, `PUSHGATE_HEARTBEAT` in the environment and
//! `--set heartbeat=...` on the command line. A bad configuration is an error that names the
//! setting; the binary exits with code 64 on it.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use pushgate_dispatcher::settings::{self, Kind, SettingsError};
pub use pushgate_dispatcher::settings::{Env, ProcessEnv};
use pushgate_protocol::EnvelopeLimits;
use serde::Deserialize;

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("cluster mode needs MySQL, Redis and AMQP URLs; missing: {}", .0.join(", "))]
    PartialCluster(Vec<&'static str>),
    #[error("{0}")]
    Invalid(String),
}

/// Every setting: its key and how its text is read. The environment name is
/// `PUSHGATE_` + the key in upper case.
const SETTINGS: &[(&str, Kind)] = &[
    ("listen", Kind::Text),
    ("admin_listen", Kind::Text),
    ("jwt_secret", Kind::Text),
    ("api_key", Kind::Text),
    ("node_id", Kind::Text),
    ("max_connections", Kind::Value),
    ("data_dir", Kind::Text),
    ("mysql_url", Kind::Text),
    ("redis_url", Kind::Text),
    ("amqp_url", Kind::Text),
    ("log", Kind::Text),
    ("log_format", Kind::Text),
    ("allowed_origins", Kind::List),
    ("heartbeat", Kind::Value),
    ("handshake_timeout", Kind::Value),
    ("setup_concurrency", Kind::Value),
    ("park_idle_sessions", Kind::Value),
    ("drain_window", Kind::Value),
    ("reconnect_jitter", Kind::Value),
    ("close_timeout", Kind::Value),
    ("max_frame_bytes", Kind::Value),
    ("max_channels_per_session", Kind::Value),
    ("client_rate_per_s", Kind::Value),
    ("client_rate_burst", Kind::Value),
    ("outbox_max_frames", Kind::Value),
    ("outbox_max_bytes", Kind::Value),
    ("slow_consumer_timeout", Kind::Value),
    ("max_data_bytes", Kind::Value),
    ("max_data_depth", Kind::Value),
    ("close_on_token_expiry", Kind::Value),
    ("echo_route", Kind::Value),
    ("echo_max_message_bytes", Kind::Value),
    ("token_leeway", Kind::Value),
    ("demo_page", Kind::Value),
    ("cluster_name", Kind::Text),
    ("store_url", Kind::Text),
    ("store_pool_size", Kind::Value),
    ("store_batch_max", Kind::Value),
    ("store_batch_linger", Kind::Value),
    ("idempotency_window", Kind::Value),
    ("replay_page", Kind::Value),
    ("replay_concurrency", Kind::Value),
    ("ack_flush_interval", Kind::Value),
    ("purge_interval", Kind::Value),
    ("session_log_retention", Kind::Value),
];

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The whole configuration. Field docs give the defaults and why they are what they are.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Client listener (`GET /ws`). Default `0.0.0.0:8080`.
    pub listen: SocketAddr,
    /// Admin listener (metrics, health, publish, presence, drain). Default `127.0.0.1:9090`:
    /// loopback, because in standalone mode it needs no API key from loopback.
    pub admin_listen: SocketAddr,
    /// HS256 secret of client tokens. Standalone: generated once into the data dir.
    pub jwt_secret: Option<String>,
    /// Bearer key for the admin API. Standalone: none needed from loopback.
    pub api_key: Option<String>,
    /// This node's id. Default: hostname + a short random suffix.
    pub node_id: Option<String>,
    /// Admission limit: sessions plus handshakes in progress. Lowered at start, with a warning,
    /// to what `RLIMIT_NOFILE` allows.
    pub max_connections: usize,
    /// Standalone data (the generated secret; the SQLite inbox).
    pub data_dir: PathBuf,
    pub mysql_url: Option<String>,
    pub redis_url: Option<String>,
    pub amqp_url: Option<String>,
    /// `tracing` filter.
    pub log: String,
    pub log_format: LogFormat,
    /// Origins allowed to open sessions (`https://app.example`, `https://*.example.com`).
    /// Empty: any origin. Requests without `Origin` (non-browser clients) always pass.
    pub allowed_origins: Vec<String>,
    /// Server Ping interval; a session silent for 2.5 intervals is closed with 4002. 25 s keeps
    /// NAT and proxy idle timers (often 30–60 s) from dropping idle sessions.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// Time for a client to send its whole upgrade request, so half-open handshakes cannot
    /// hold a slot for long.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Connections set up at once: their request answered, their token checked, their cursor
    /// read, their session registered. The others wait, holding only their socket, until their
    /// whole request has arrived and a set-up ends — so a reconnect storm cannot fill the heap
    /// with half-done set-ups (whose freed memory stays behind as fragments), and a client that
    /// sends its request slowly holds no set-up slot. Default 256.
    pub setup_concurrency: usize,
    /// Idle sessions park: their task ends and their socket leaves the runtime for the node's
    /// parking lot (one epoll set and one thread), which spawns the task again when the socket
    /// turns readable or the outbox has work. Deliveries write to a parked session's socket
    /// directly, as to a running one's, and the lot reads heartbeat Pongs itself. Saves the task
    /// and the runtime's I/O registration per idle session (about 30 % of its memory); costs a
    /// re-spawn per client request of a session that was idle. Default true.
    pub park_idle_sessions: bool,
    /// Drain spreads the sessions' reconnects over this window so other nodes are not stampeded.
    #[serde(with = "humantime_serde")]
    pub drain_window: Duration,
    /// Upper bound of the random `after_ms` of a `reconnect` frame.
    #[serde(with = "humantime_serde")]
    pub reconnect_jitter: Duration,
    /// How long a closing session waits for the client's Close before dropping the socket.
    #[serde(with = "humantime_serde")]
    pub close_timeout: Duration,
    /// Inbound frame and message limit (1009 above it). Client frames are small JSON; 64 KiB
    /// leaves room for long channel tokens.
    pub max_frame_bytes: usize,
    /// Channels one session may hold.
    pub max_channels_per_session: usize,
    /// Client frames per second a session may send on average…
    pub client_rate_per_s: u32,
    /// …and in a burst (a reconnect re-subscribing to many channels). Frames beyond the bucket
    /// get `error rate_limited`; a client that keeps going past another full bucket is closed
    /// with 4008.
    pub client_rate_burst: u32,
    /// Outbound queue bound, in frames, per session.
    pub outbox_max_frames: usize,
    /// Outbound queue bound, in bytes, per session.
    pub outbox_max_bytes: usize,
    /// A session whose socket accepts no bytes for this long while frames wait is closed with
    /// 4001 (it reconnects and resumes from its cursor).
    #[serde(with = "humantime_serde")]
    pub slow_consumer_timeout: Duration,
    /// Largest `data` of a published envelope (413 above it).
    pub max_data_bytes: usize,
    /// Deepest nesting of arrays and objects in a published `data` (400 above it): deeper than
    /// clients' JSON parsers read, a message could never be delivered.
    pub max_data_depth: usize,
    /// Close sessions with 1008 when their token expires. Off by default: clients fetch a fresh
    /// token when they reconnect, and most deployments would rather not cut live sessions.
    pub close_on_token_expiry: bool,
    /// Serve `/echo`, an echo endpoint for WebSocket conformance suites. Off by default.
    pub echo_route: bool,
    /// Largest message `/echo` accepts (conformance suites send up to 16 MiB).
    pub echo_max_message_bytes: usize,
    /// Serve the demo page at `/` on the client listener. Default: on in standalone mode, off
    /// in cluster mode.
    pub demo_page: Option<bool>,
    /// Cluster mode: the prefix of Redis keys and channels, shared by the cluster's gateways and
    /// dispatchers (so several clusters can share one Redis).
    pub cluster_name: String,
    /// Clock skew allowed when checking a token's `exp`.
    #[serde(with = "humantime_serde")]
    pub token_leeway: Duration,
    /// The durable store of a standalone node. Default: `sqlite://DATA_DIR/inbox.db`; a
    /// `mysql://…` URL keeps a single node's inboxes in MySQL/MariaDB instead.
    pub store_url: Option<String>,
    /// Store connections (SQLite: read connections beside the one writer).
    pub store_pool_size: u32,
    /// Durable messages per write transaction.
    pub store_batch_max: usize,
    /// How long a write batch waits to fill once its first message is in. Batches also grow by
    /// themselves while the previous one commits.
    #[serde(with = "humantime_serde")]
    pub store_batch_linger: Duration,
    /// A durable message published again with the same `id` within this window is stored and
    /// delivered once.
    #[serde(with = "humantime_serde")]
    pub idempotency_window: Duration,
    /// Inbox rows per replay page: a session holds at most one page while replaying a backlog.
    pub replay_page: u32,
    /// Inbox reads (cursor lookups, replay pages) in flight at once, so a reconnect storm does
    /// not open a query per session.
    pub replay_concurrency: usize,
    /// Acks and session events are written at least this often (SPEC: within 1 s).
    #[serde(with = "humantime_serde")]
    pub ack_flush_interval: Duration,
    /// How often expired inbox rows, old idempotency keys and old session log lines are deleted.
    #[serde(with = "humantime_serde")]
    pub purge_interval: Duration,
    /// How long session log lines are kept.
    #[serde(with = "humantime_serde")]
    pub session_log_retention: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            jwt_secret: None,
            api_key: None,
            node_id: None,
            max_connections: 100_000,
            data_dir: PathBuf::from("./data"),
            mysql_url: None,
            redis_url: None,
            amqp_url: None,
            log: "info".into(),
            log_format: LogFormat::Text,
            allowed_origins: Vec::new(),
            heartbeat: Duration::from_secs(25),
            handshake_timeout: Duration::from_secs(10),
            setup_concurrency: 256,
            park_idle_sessions: true,
            drain_window: Duration::from_secs(30),
            reconnect_jitter: Duration::from_secs(2),
            close_timeout: Duration::from_secs(5),
            max_frame_bytes: 64 * 1024,
            max_channels_per_session: 128,
            client_rate_per_s: 50,
            client_rate_burst: 200,
            outbox_max_frames: 1024,
            outbox_max_bytes: 1024 * 1024,
            slow_consumer_timeout: Duration::from_secs(30),
            max_data_bytes: EnvelopeLimits::default().max_data_bytes,
            max_data_depth: EnvelopeLimits::default().max_data_depth,
            close_on_token_expiry: false,
            echo_route: false,
            echo_max_message_bytes: 16 * 1024 * 1024,
            demo_page: None,
            cluster_name: "pushgate".into(),
            token_leeway: Duration::from_secs(30),
            store_url: None,
            store_pool_size: 8,
            store_batch_max: 1000,
            store_batch_linger: Duration::from_millis(1),
            idempotency_window: Duration::from_secs(24 * 3600),
            replay_page: 256,
            replay_concurrency: 32,
            ack_flush_interval: Duration::from_millis(500),
            purge_interval: Duration::from_secs(60),
            session_log_retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Which mode the settings select (SPEC §1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Standalone,
    Cluster { mysql_url: String, redis_url: String, amqp_url: String },
}

impl Config {
    /// Loads the layers: defaults, the TOML file (if any), the environment, then `overrides`
    /// (command-line `key=value` settings, in order).
    pub fn load(file: Option<&Path>, env: &dyn Env, overrides: &[(String, String)]) -> Result<Config, ConfigError> {
        let config: Config = settings::load(file, env, overrides, SETTINGS)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.heartbeat < Duration::from_millis(100) {
            return invalid("heartbeat must be at least 100ms");
        }
        if self.max_connections == 0 {
            return invalid("max_connections must be at least 1");
        }
        if self.max_frame_bytes < 128 {
            return invalid("max_frame_bytes must be at least 128");
        }
        if self.outbox_max_frames == 0 || self.outbox_max_bytes == 0 {
            return invalid("outbox_max_frames and outbox_max_bytes must be positive");
        }
        if self.replay_page == 0
            || self.replay_concurrency == 0
            || self.store_batch_max == 0
            || self.setup_concurrency == 0
        {
            return invalid("replay_page, replay_concurrency, setup_concurrency and store_batch_max must be positive");
        }
        if self.ack_flush_interval > Duration::from_secs(1) {
            return invalid("ack_flush_interval must be at most 1s (acks move cursors within a second)");
        }
        if self.client_rate_per_s == 0 || self.client_rate_burst == 0 {
            return invalid("client_rate_per_s and client_rate_burst must be positive");
        }
        if matches!(&self.jwt_secret, Some(s) if s.len() < 16) {
            return invalid("jwt_secret must be at least 16 bytes");
        }
        for origin in &self.allowed_origins {
            if !origin.contains("://") {
                return Err(SettingsError::Setting {
                    key: "allowed_origins".into(),
                    message: format!("{origin:?} is not an origin like https://app.example"),
                }
                .into());
            }
        }
        self.mode().map(|_| ())
    }

    /// Standalone, cluster, or an error naming the missing cluster URLs.
    pub fn mode(&self) -> Result<Mode, ConfigError> {
        match (&self.mysql_url, &self.redis_url, &self.amqp_url) {
            (None, None, None) => Ok(Mode::Standalone),
            (Some(m), Some(r), Some(a)) => {
                Ok(Mode::Cluster { mysql_url: m.clone(), redis_url: r.clone(), amqp_url: a.clone() })
            }
            (m, r, a) => {
                let mut missing = Vec::new();
                if m.is_none() {
                    missing.push("PUSHGATE_MYSQL_URL");
                }
                if r.is_none() {
                    missing.push("PUSHGATE_REDIS_URL");
                }
                if a.is_none() {
                    missing.push("PUSHGATE_AMQP_URL");
                }
                Err(ConfigError::PartialCluster(missing))
            }
        }
    }

    /// The store URL: the configured one, else SQLite in the data dir.
    pub fn store_url(&self) -> String {
        self.store_url.clone().unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("inbox.db").display()))
    }

    /// `heartbeat_s` of the welcome frame: whole seconds, at least 1.
    pub fn heartbeat_s(&self) -> u64 {
        self.heartbeat.as_secs_f64().ceil().max(1.0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_are_standalone() {
        let c = Config::load(None, &env(&[]), &[]).unwrap();
        assert_eq!(c.mode().unwrap(), Mode::Standalone);
        assert_eq!(c.heartbeat_s(), 25);
        assert_eq!(c.listen.port(), 8080);
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pushgate.toml");
        std::fs::write(&file, "heartbeat = \"10s\"\nmax_connections = 5\nallowed_origins = [\"https://a.example\"]\n")
            .unwrap();
        let e = env(&[
            ("PUSHGATE_MAX_CONNECTIONS", "7"),
            ("PUSHGATE_ALLOWED_ORIGINS", "https://b.example, https://c.example"),
        ]);
        let c = Config::load(Some(&file), &e, &[("max_connections".into(), "9".into())]).unwrap();
        assert_eq!(c.heartbeat, Duration::from_secs(10));
        assert_eq!(c.max_connections, 9);
        assert_eq!(c.allowed_origins, vec!["https://b.example", "https://c.example"]);
    }

    #[test]
    fn bad_settings_are_named() {
        let err = Config::load(None, &env(&[("PUSHGATE_HEARTBEAT", "soon")]), &[]).unwrap_err();
        assert!(matches!(err, ConfigError::Settings(SettingsError::Setting { .. })), "{err}");
        let err = Config::load(None, &env(&[]), &[("nonsense".into(), "1".into())]).unwrap_err();
        assert!(matches!(err, ConfigError::Settings(SettingsError::UnknownSetting(_))));
    }

    #[test]
    fn partial_cluster_settings_name_what_is_missing() {
        let err = Config::load(None, &env(&[("PUSHGATE_REDIS_URL", "redis://127.0.0.1")]), &[]).unwrap_err();
        match err {
            ConfigError::PartialCluster(missing) => {
                assert_eq!(missing, vec!["PUSHGATE_MYSQL_URL", "PUSHGATE_AMQP_URL"])
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn numeric_text_settings_stay_text() {
        let c = Config::load(None, &env(&[("PUSHGATE_NODE_ID", "123")]), &[]).unwrap();
        assert_eq!(c.node_id.as_deref(), Some("123"));
    }
}
