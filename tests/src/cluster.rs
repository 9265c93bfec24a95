//! A whole pushgate cluster on loopback for one test: its own RabbitMQ vhost, MariaDB database
//! and Redis key prefix, some dispatchers and some gateway nodes, all real processes.

use futures_util::future::join_all;

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
}
