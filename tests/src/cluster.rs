//! A whole pushgate cluster on loopback for one test: its own RabbitMQ vhost, MariaDB database
//! and Redis key prefix, some dispatchers and some gateway nodes, all real processes.

use futures_util::future::join_all;
use pushgate_dispatcher::{bus, presence::Keys};
use pushgate_protocol::{ChannelName, cluster::BusMessage};

use crate::{Dispatcher, Gateway, GatewayOptions, TestDatabase, TestVhost, gateway::TEST_SECRET};

/// The admin API key of cluster gateways.
pub const API_KEY: &str = "pushgate-test-api-key";
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";

pub struct TestCluster {
    pub gateways: Vec<Gateway>,
    pub dispatchers: Vec<Dispatcher>,
    pub vhost: TestVhost,
    pub db: TestDatabase,
    /// The Redis prefix (`cluster_name`).
    pub name: String,
    settings: Vec<(String, String)>,
}

impl TestCluster {
    pub async fn start(gateways: usize, dispatchers: usize) -> Self {
        Self::start_with(gateways, dispatchers, &[]).await
    }

    /// Starts the cluster; `settings` go to every process that knows them (`--set`).
    pub async fn start_with(gateways: usize, dispatchers: usize, settings: &[(&str, &str)]) -> Self {
        let vhost = TestVhost::create();
        let db = TestDatabase::create().await;
        let name = format!("pgtest{}", vhost.name.trim_start_matches("pushgate_t"));
        let mut cluster = Self {
            gateways: Vec::new(),
            dispatchers: Vec::new(),
            vhost,
            db,
            name,
            settings: settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        let dispatchers = join_all((0..dispatchers).map(|_| cluster.new_dispatcher())).await;
        join_all(dispatchers.iter().map(Dispatcher::wait_ready)).await;
        cluster.dispatchers = dispatchers;
        let gateways = join_all((0..gateways).map(|_| cluster.new_gateway())).await;
        join_all(gateways.iter().map(Gateway::wait_ready)).await;
        cluster.gateways = gateways;
        cluster
    }

    /// The `PUSHGATE_*` variables of every process of this cluster.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("PUSHGATE_MYSQL_URL", self.db.url.clone()),
            ("PUSHGATE_REDIS_URL", REDIS_URL.to_owned()),
            ("PUSHGATE_AMQP_URL", self.vhost.url()),
            ("PUSHGATE_JWT_SECRET", TEST_SECRET.to_owned()),
            ("PUSHGATE_API_KEY", API_KEY.to_owned()),
            ("PUSHGATE_CLUSTER_NAME", self.name.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Starts one more gateway (not yet waited for).
    pub async fn new_gateway(&self) -> Gateway {
        let mut options = GatewayOptions::default();
        for (k, v) in self.env() {
            options = options.env(&k, v);
        }
        for (k, v) in &self.settings {
            if !k.starts_with("ingest_") {
                options = options.set(k, v);
            }
        }
        Gateway::start_with(options).await
    }

    /// Starts one more dispatcher (not yet waited for).
    pub async fn new_dispatcher(&self) -> Dispatcher {
        let settings: Vec<(String, String)> =
            self.settings.iter().filter(|(k, _)| k.starts_with("ingest_")).cloned().collect();
        Dispatcher::start(&self.env(), &settings).await
    }

    /// `ws://…/ws` of every gateway.
    pub fn ws_urls(&self) -> Vec<String> {
        self.gateways.iter().map(Gateway::ws_url).collect()
    }

    /// Cuts gateway `g`'s bus connection (its Redis pub/sub connection), deletes the counts of the
    /// channels in `forget` (as a Redis restart loses them all) and publishes `messages` on the
    /// bus the way a dispatcher does, in one Redis transaction: Redis runs it whole, so the
    /// gateway cannot subscribe again before they are published. Returns the connections cut.
    pub async fn cut_bus_and_publish(&self, g: usize, forget: &[&str], messages: &[BusMessage]) -> usize {
        let client = redis::Client::open(REDIS_URL).unwrap();
        let mut redis = client.get_multiplexed_async_connection().await.unwrap();
        let list: String =
            redis::cmd("CLIENT").arg("LIST").arg("TYPE").arg("pubsub").query_async(&mut redis).await.unwrap();
        let ours = tcp_peers_of(self.gateways[g].pid(), 6379);
        let cut: Vec<&str> = list
            .lines()
            .filter_map(|line| line.split(' ').find_map(|field| field.strip_prefix("addr=")))
            .filter(|addr| ours.iter().any(|o| o == addr))
            .collect();
        let keys = Keys::new(&self.name);
        let mut transaction = redis::pipe();
        transaction.atomic();
        for addr in &cut {
            transaction.cmd("CLIENT").arg("KILL").arg("ADDR").arg(*addr).ignore();
        }
        for channel in forget {
            transaction.del(keys.channel(&ChannelName::new(channel).unwrap())).ignore();
        }
        for message in messages {
            transaction.add_command(bus::publish_command(&keys, message)).ignore();
        }
        transaction.query_async::<()>(&mut redis).await.unwrap();
        cut.len()
    }
}

/// The local addresses (`ip:port`) of process `pid`'s IPv4 TCP connections to `port`.
fn tcp_peers_of(pid: u32, port: u16) -> Vec<String> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| dir.flatten().filter_map(|fd| std::fs::read_link(fd.path()).ok()).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|link| link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_owned))
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    let hex_addr = |field: &str| -> Option<(String, u16)> {
        let (ip, port) = field.split_once(':')?;
        let ip = u32::from_str_radix(ip, 16).ok()?;
        // /proc shows the address in the machine's byte order (little-endian here).
        Some((std::net::Ipv4Addr::from(ip.swap_bytes()).to_string(), u16::from_str_radix(port, 16).ok()?))
    };
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local_ip, local_port) = hex_addr(fields.get(1)?)?;
            let (_, remote_port) = hex_addr(fields.get(2)?)?;
            let inode = *fields.get(9)?;
            (remote_port == port && inodes.iter().any(|i| i == inode)).then(|| format!("{local_ip}:{local_port}"))
        })
        .collect()
}
