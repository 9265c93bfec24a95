//! The node's durable side (SPEC §6): the store, the batched write path, acks and session
//! events, and the bounded inbox reads that sessions use to resume — a cursor lookup when a
//! session starts, then replay pages.
//!
//! Every read goes through one semaphore (`replay_concurrency`), so a reconnect storm of
//! thousands of sessions queues for a few connections instead of opening a query each.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use pushgate_dispatcher::{
    bookkeeping::{self, Bookkeeping},
    ingest::{BatchConfig, Ingest},
    store::{AnyStore, InboxEntry, Store, StoreError},
};
use pushgate_protocol::{DeviceId, UserId, now_ms};
use tokio::sync::Semaphore;

use crate::config::{Config, Mode};

/// A replay page on its way.
pub type Fetch = Pin<Box<dyn Future<Output = Result<Vec<InboxEntry>, StoreError>> + Send>>;

/// Where a session resumes, from the store's cursors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumePoint {
    /// The replay starts after this `seq`.
    pub cursor: u64,
    /// The inbox held messages after the cursor when it was looked up. Without a backlog the
    /// replay reads nothing: what is committed after the lookup reaches the session live (it
    /// was registered before the lookup).
    pub backlog: bool,
}

#[derive(Debug)]
pub struct Durable {
    pub store: AnyStore,
    /// The batched write path (standalone). In cluster mode the dispatchers write; gateways only
    /// read, to resume sessions.
    pub ingest: Option<Ingest>,
    /// Acks and session events on their way (to the store, or in cluster mode to the
    /// dispatchers).
    pub book: Arc<Bookkeeping>,
    reads: Semaphore,
    /// Rows per replay page.
    pub page: u32,
    up: Arc<AtomicBool>,
}

impl Durable {
    /// Opens the store (applying migrations). Standalone: the node's own store (SQLite, or
    /// `store_url`), with the writer, the ack/event flusher and the purge job. Cluster: MySQL, for
    /// reads only (the dispatchers write, flush and purge).
    pub async fn open(config: &Config) -> Result<Arc<Self>, StoreError> {
        let cluster_url = match config.mode() {
            Ok(Mode::Cluster { mysql_url, .. }) => Some(mysql_url),
            _ => None,
        };
        let store = match &cluster_url {
            Some(url) => AnyStore::open(url, config.store_pool_size).await?,
            None => {
                if config.store_url.is_none() {
                    std::fs::create_dir_all(&config.data_dir).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                }
                AnyStore::open(&config.store_url(), config.store_pool_size).await?
            }
        };
        let book = Bookkeeping::new();
        let ingest = if cluster_url.is_none() {
            let batch = BatchConfig {
                max_messages: config.store_batch_max,
                linger: config.store_batch_linger,
                idempotency_window: config.idempotency_window,
                ..BatchConfig::default()
            };
            tokio::spawn(book.clone().run(store.clone(), config.ack_flush_interval));
            tokio::spawn(bookkeeping::run_purge(
                store.clone(),
                config.purge_interval,
                config.idempotency_window,
                config.session_log_retention,
            ));
            Some(Ingest::start(store.clone(), batch))
        } else {
            None
        };
        let up = Arc::new(AtomicBool::new(true));
        tokio::spawn(watch(store.clone(), up.clone()));
        Ok(Arc::new(Self {
            store,
            ingest,
            book,
            reads: Semaphore::new(config.replay_concurrency),
            page: config.replay_page,
            up,
        }))
    }

    /// Whether the store answered its last check.
    pub fn store_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Where a session's replay starts (SPEC §6): after `last_seq` from the query if given, else
    /// after this device's acked cursor, else the user's. A `last_seq` above the newest `seq`
    /// replays nothing and is lowered to the newest, so that the next message still reaches the
    /// client (the welcome tells it the cursor it got).
    pub async fn resume_point(
        &self,
        user: &UserId,
        device: Option<&DeviceId>,
        last_seq: Option<u64>,
    ) -> Result<ResumePoint, StoreError> {
        let _permit = self.reads.acquire().await.map_err(|_| StoreError::Corrupt("reads closed".into()))?;
        let cursors = self.store.cursors(user.as_str(), device.map(DeviceId::as_str)).await?;
        let cursor = cursors.resume_from(last_seq).min(cursors.last_seq);
        Ok(ResumePoint { cursor, backlog: cursor < cursors.last_seq })
    }

    /// The next page of `user`'s inbox after `after` (and before `before`).
    pub fn fetch(self: &Arc<Self>, user: UserId, after: u64, before: Option<u64>) -> Fetch {
        let durable = self.clone();
        Box::pin(async move {
            let _permit = durable.reads.acquire().await.map_err(|_| StoreError::Corrupt("reads closed".into()))?;
            durable.store.inbox(user.as_str(), after, before, durable.page, now_ms()).await
        })
    }

    /// Writes pending acks and session events to the store now (standalone drain, shutdown).
    pub async fn flush(&self) {
        if let Err(e) = self.book.flush(&self.store).await {
            tracing::warn!(error = %e, "final flush of acks and session events failed");
        }
    }
}

/// Checks the store every second: readiness and `pushgate_backend_up`.
async fn watch(store: AnyStore, up: Arc<AtomicBool>) {
    let backend = store.dialect();
    loop {
        let ok = store.ping().await.is_ok();
        up.store(ok, Ordering::Relaxed);
        metrics::gauge!(pushgate_dispatcher::amqp::BACKEND_UP, "backend" => backend).set(if ok { 1.0 } else { 0.0 });
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}
