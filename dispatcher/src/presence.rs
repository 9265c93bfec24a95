//! The presence directory in Redis (DESIGN "Redis carries what must be fast"): which sessions
//! of a user are open on which gateway node, each node's lease, and the sweep that removes a dead
//! node's entries once its lease has expired. Gateways write it (in batches); dispatchers read it
//! to route a user's messages to exactly the nodes that hold the user's sessions.
//!
//! Keys, under a cluster prefix (`cluster_name`, default `pushgate`), so several clusters or test
//! runs can share one Redis:
//! - `{p}:presence:{user}` — hash: session id → `{"node","device","since"}`;
//! - `{p}:node:{node}:sessions` — set of `user session` pairs on a node (what a sweep removes);
//! - `{p}:nodes` — sorted set: node id → lease expiry (ms since the Unix epoch);
//! - `{p}:health:{node}` — a gateway's health-check write, expiring in seconds;
//! - `{p}:ch:{channel}`, `{p}:all` — each bus topic's count of messages published (the key has the
//!   name of the pub/sub channel it counts; it expires a day after the topic's last message).

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use metrics::gauge;
use pushgate_protocol::{ChannelName, DeviceId, UserId};
use redis::{AsyncCommands as _, aio::ConnectionManager};
use serde::{Deserialize, Serialize};

use crate::amqp::BACKEND_UP;

/// Redis keys and pub/sub channel names of one cluster.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(cluster: &str) -> Self {
        Self { prefix: cluster.to_owned() }
    }

    pub fn presence(&self, user: &str) -> String {
        format!("{}:presence:{user}", self.prefix)
    }

    pub fn node_sessions(&self, node: &str) -> String {
        format!("{}:node:{node}:sessions", self.prefix)
    }

    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// A key a node writes to check that Redis takes its writes (expires by itself).
    pub fn health(&self, node: &str) -> String {
        format!("{}:health:{node}", self.prefix)
    }

    fn sweep_lock(&self, node: &str) -> String {
        format!("{}:sweep:{node}", self.prefix)
    }

    /// The pub/sub channel of a pushgate channel.
    pub fn channel(&self, channel: &ChannelName) -> String {
        format!("{}:ch:{channel}", self.prefix)
    }

    /// The pub/sub channel of broadcasts.
    pub fn all(&self) -> String {
        format!("{}:all", self.prefix)
    }

    /// The pub/sub channel where a node receives its bus checkpoints (see `bus`).
    pub fn checkpoint(&self, node: &str) -> String {
        format!("{}:checkpoint:{node}", self.prefix)
    }

    /// The pub/sub channel of cluster-wide admin actions.
    pub fn control(&self) -> String {
        format!("{}:control", self.prefix)
    }

    /// The pushgate channel a pub/sub channel name stands for, if it is one.
    pub fn channel_of(&self, pubsub: &str) -> Option<ChannelName> {
        pubsub.strip_prefix(&format!("{}:ch:", self.prefix)).and_then(|c| ChannelName::new(c).ok())
    }
}

/// Where one session is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seat {
    pub node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceId>,
    /// Connect time, ms since the Unix epoch.
    pub since: u64,
}

/// A change to the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Join { user: UserId, session: String, seat: Seat },
    Leave { user: UserId, session: String, node: String },
}

/// A connection to the directory; cheap to clone.
#[derive(Clone)]
pub struct Directory {
    redis: ConnectionManager,
    pub keys: Keys,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory").field("keys", &self.keys).finish()
    }
}

/// A Redis connection manager that connects on first use and reconnects with backoff by
/// itself; commands fail fast (2 s) while Redis is down.
pub fn connect(url: &str) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2));
    ConnectionManager::new_lazy_with_config(client, config)
}

/// Runs `probe` against Redis every `every` and keeps `pushgate_backend_up{backend="redis"}` and
/// `up` current; logs each change, with Redis's own words. A process that only reads and
/// publishes probes with `PING`; one that must write probes with a write, because Redis out of
/// memory (or a read-only replica) refuses writes and still answers `PING`.
pub async fn watch_health(
    mut redis: ConnectionManager,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    probe: redis::Cmd,
    every: Duration,
) {
    let mut was = None;
    loop {
        let result = probe.query_async::<()>(&mut redis).await;
        let ok = result.is_ok();
        match result {
            Err(e) if was != Some(false) => {
                tracing::warn!(error = %e, "Redis fails its health check: reporting it down")
            }
            Ok(()) if was == Some(false) => tracing::info!("Redis passes its health check again"),
            _ => {}
        }
        was = Some(ok);
        up.store(ok, std::sync::atomic::Ordering::Relaxed);
        gauge!(BACKEND_UP, "backend" => "redis").set(if ok { 1.0 } else { 0.0 });
        tokio::time::sleep(every).await;
    }
}

impl Directory {
    pub fn new(redis: ConnectionManager, keys: Keys) -> Self {
        Self { redis, keys }
    }

    /// The connection, for other commands (publishing on the bus).
    pub fn redis(&self) -> ConnectionManager {
        self.redis.clone()
    }

    /// Applies changes in one pipeline.
    pub async fn apply(&self, changes: &[Change]) -> redis::RedisResult<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for change in changes {
            match change {
                Change::Join { user, session, seat } => {
                    let value = serde_json::to_string(seat).unwrap_or_default();
                    pipe.hset(self.keys.presence(user.as_str()), session, value).ignore();
                    pipe.sadd(self.keys.node_sessions(&seat.node), format!("{user} {session}")).ignore();
                }
                Change::Leave { user, session, node } => {
                    pipe.hdel(self.keys.presence(user.as_str()), session).ignore();
                    pipe.srem(self.keys.node_sessions(node), format!("{user} {session}")).ignore();
                }
            }
        }
        pipe.query_async::<()>(&mut self.redis.clone()).await
    }

    /// Renews `node`'s lease until `until_ms`. Returns true when the node was not in the
    /// directory (first lease, or Redis lost its data: the node must write its sessions again).
    pub async fn renew_lease(&self, node: &str, until_ms: u64) -> redis::RedisResult<bool> {
        let added: i64 = self.redis.clone().zadd(self.keys.nodes(), node, until_ms).await?;
        Ok(added > 0)
    }

    /// Removes a node's sessions and lease (a clean shutdown, or a sweep).
    pub async fn remove_node(&self, node: &str) -> redis::RedisResult<usize> {
        let mut redis = self.redis.clone();
        let members: Vec<String> = redis.smembers(self.keys.node_sessions(node)).await?;
        let mut pipe = redis::pipe();
        for member in &members {
            if let Some((user, session)) = member.split_once(' ') {
                pipe.hdel(self.keys.presence(user), session).ignore();
            }
        }
        pipe.del(self.keys.node_sessions(node)).ignore();
        pipe.zrem(self.keys.nodes(), node).ignore();
        pipe.query_async::<()>(&mut redis).await?;
        Ok(members.len())
    }

    /// Removes every node whose lease expired before `now_ms`; returns how many sessions went.
    /// A lock per dead node keeps two sweepers from doing the same work.
    pub async fn sweep(&self, now_ms: u64) -> redis::RedisResult<usize> {
        let mut redis = self.redis.clone();
        let dead: Vec<String> = redis.zrangebyscore(self.keys.nodes(), "-inf", now_ms).await?;
        let mut removed = 0;
        for node in dead {
            let locked: bool = redis::cmd("SET")
                .arg(self.keys.sweep_lock(&node))
                .arg(1)
                .arg("NX")
                .arg("EX")
                .arg(30)
                .query_async::<Option<String>>(&mut redis)
                .await?
                .is_some();
            if locked {
                let n = self.remove_node(&node).await?;
                tracing::info!(node = %node, sessions = n, "swept a node whose lease expired");
                removed += n;
            }
        }
        Ok(removed)
    }

    /// Nodes whose lease runs at `now_ms`.
    pub async fn live_nodes(&self, now_ms: u64) -> redis::RedisResult<HashSet<String>> {
        let live: Vec<String> = self.redis.clone().zrangebyscore(self.keys.nodes(), now_ms, "+inf").await?;
        Ok(live.into_iter().collect())
    }

    /// The sessions of `user` on live nodes.
    pub async fn seats(&self, user: &str, now_ms: u64) -> redis::RedisResult<Vec<(String, Seat)>> {
        let live = self.live_nodes(now_ms).await?;
        let all: HashMap<String, String> = self.redis.clone().hgetall(self.keys.presence(user)).await?;
        let mut seats: Vec<(String, Seat)> = all
            .into_iter()
            .filter_map(|(session, value)| serde_json::from_str::<Seat>(&value).ok().map(|seat| (session, seat)))
            .filter(|(_, seat)| live.contains(&seat.node))
            .collect();
        seats.sort_by_key(|(_, seat)| seat.since);
        Ok(seats)
    }

    /// For each of `users` (by index), the live nodes holding at least one of its sessions.
    pub async fn nodes_of(&self, users: &[&str], now_ms: u64) -> redis::RedisResult<Vec<Vec<String>>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let live = self.live_nodes(now_ms).await?;
        let mut pipe = redis::pipe();
        for user in users {
            pipe.hvals(self.keys.presence(user));
        }
        let values: Vec<Vec<String>> = pipe.query_async(&mut self.redis.clone()).await?;
        Ok(values
            .into_iter()
            .map(|seats| {
                let mut nodes: Vec<String> = seats
                    .iter()
                    .filter_map(|v| serde_json::from_str::<Seat>(v).ok())
                    .map(|seat| seat.node)
                    .filter(|node| live.contains(node))
                    .collect();
                nodes.sort_unstable();
                nodes.dedup();
                nodes
            })
            .collect())
    }
}
