//! The node's durable side (SPEC §6): the store, the batched write path, acks and session
//! events, and the bounded inbox reads that sessions use to resume — a cursor lookup when a
//! session starts, then replay pages.
//!
//! Every read goes through one semaphore (`replay_concurrency`), so a reconnect storm of
//! thousands of sessions queues for a few connections instead of opening a query each.

use std::{future::Future, pin::Pin, sync::Arc};

use pushgate_dispatcher::{
    bookkeeping::{self, Bookkeeping},
    ingest::{BatchConfig, Ingest},
    store::{AnyStore, InboxEntry, Store, StoreError},
};
use pushgate_protocol::{DeviceId, UserId, now_ms};
use tokio::sync::Semaphore;

use crate::config::Config;

/// A replay page on its way.
pub type Fetch = Pin<Box<dyn Future<Output = Result<Vec<InboxEntry>, StoreError>> + Send>>;

#[derive(Debug)]
pub struct Durable {
    pub store: AnyStore,
    pub ingest: Ingest,
    pub book: Arc<Bookkeeping>,
    reads: Semaphore,
    /// Rows per replay page.
    pub page: u32,
}

impl Durable {
    /// Opens the store (applying migrations) and starts the writer, the ack/event flusher and
    /// the purge job.
    pub async fn open(config: &Config) -> Result<Arc<Self>, StoreError> {
        if config.store_url.is_none() {
            std::fs::create_dir_all(&config.data_dir).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        }
        let store = AnyStore::open(&config.store_url(), config.store_pool_size).await?;
        let batch = BatchConfig {
            max_messages: config.store_batch_max,
            linger: config.store_batch_linger,
            idempotency_window: config.idempotency_window,
            ..BatchConfig::default()
        };
        let ingest = Ingest::start(store.clone(), batch);
        let book = Bookkeeping::new();
        tokio::spawn(book.clone().run(store.clone(), config.ack_flush_interval));
        tokio::spawn(bookkeeping::run_purge(
            store.clone(),
            config.purge_interval,
            config.idempotency_window,
            config.session_log_retention,
        ));
        Ok(Arc::new(Self {
            store,
            ingest,
            book,
            reads: Semaphore::new(config.replay_concurrency),
            page: config.replay_page,
        }))
    }

    /// The cursor a session's replay starts after (SPEC §6): `last_seq` from the query if given,
    /// else this device's acked cursor, else the user's. A `last_seq` above the newest `seq`
    /// replays nothing and is lowered to the newest, so that the next message still reaches the
    /// client (the welcome tells it the cursor it got).
    pub async fn resume_cursor(
        &self,
        user: &UserId,
        device: Option<&DeviceId>,
        last_seq: Option<u64>,
    ) -> Result<u64, StoreError> {
        let _permit = self.reads.acquire().await.map_err(|_| StoreError::Corrupt("reads closed".into()))?;
        let cursors = self.store.cursors(user.as_str(), device.map(DeviceId::as_str)).await?;
        Ok(cursors.resume_from(last_seq).min(cursors.last_seq))
    }

    /// The next page of `user`'s inbox after `after` (and before `before`).
    pub fn fetch(self: &Arc<Self>, user: UserId, after: u64, before: Option<u64>) -> Fetch {
        let durable = self.clone();
        Box::pin(async move {
            let _permit = durable.reads.acquire().await.map_err(|_| StoreError::Corrupt("reads closed".into()))?;
            durable.store.inbox(user.as_str(), after, before, durable.page, now_ms()).await
        })
    }

    /// Writes pending acks and session events now (drain, shutdown).
    pub async fn flush(&self) {
        if let Err(e) = self.book.flush(&self.store).await {
            tracing::warn!(error = %e, "final flush of acks and session events failed");
        }
    }
}
