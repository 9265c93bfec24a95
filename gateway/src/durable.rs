//! The node's durable side (SPEC §6): the store, the batched write path, acks and session
//! events, and the bounded inbox reads that sessions use to resume — a cursor lookup when a
//! session starts (batched with the other connects' lookups), then replay pages.
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
    time::Duration,
};

use metrics::counter;
use pushgate_dispatcher::{
    bookkeeping::{self, Bookkeeping},
    ingest::{BatchConfig, Ingest},
    store::{AnyStore, CursorKey, Cursors, InboxEntry, LOOKUP_CHUNK, Store, StoreError},
};
use pushgate_protocol::{DeviceId, UserId, now_ms};
use tokio::{
    sync::{Semaphore, mpsc, oneshot},
    time::{Instant, timeout_at},
};

use crate::{
    config::{Config, Mode},
    metrics::{CURSOR_LOOKUP_QUERIES, CURSOR_LOOKUPS},
};

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
    reads: Arc<Semaphore>,
    /// Cursor lookups, to the task that batches them.
    lookups: mpsc::UnboundedSender<Lookup>,
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
        let reads = Arc::new(Semaphore::new(config.replay_concurrency));
        let (lookups, queue) = mpsc::unbounded_channel();
        tokio::spawn(look_up_cursors(store.clone(), reads.clone(), queue));
        Ok(Arc::new(Self { store, ingest, book, reads, lookups, page: config.replay_page, up }))
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
    ) -> Result<ResumePoint, Arc<StoreError>> {
        let (reply, answer) = oneshot::channel();
        let lookup = Lookup { user: user.clone(), device: device.cloned(), reply };
        let closed = || Arc::new(StoreError::Corrupt("cursor lookups stopped".into()));
        self.lookups.send(lookup).map_err(|_| closed())?;
        let cursors = answer.await.map_err(|_| closed())??;
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

/// A session's cursor lookup, on its way to the batch it joins.
struct Lookup {
    user: UserId,
    device: Option<DeviceId>,
    reply: oneshot::Sender<Result<Cursors, Arc<StoreError>>>,
}

/// How long a batch of cursor lookups waits for more when the last batch had company (connects
/// are arriving together). At a connect flood the batches grow from ~20 sessions to ~60 and the
/// gateway's CPU per session falls by ~8 % (`BENCHMARKS.md`, "Cursor lookups in larger batches").
const LOOKUP_LINGER: Duration = Duration::from_millis(1);

/// Looks cursors up in batches: the lookups that queued while the last query ran go in the
/// next one, so the connects of a reconnect storm share queries (a query is a round trip to a
/// connection's thread or the database, costlier than the rows). When the last batch had more
/// than one session, the next also waits up to [`LOOKUP_LINGER`] for others to join; a lone
/// connect after a quiet spell waits for nothing but its own query.
async fn look_up_cursors(store: AnyStore, reads: Arc<Semaphore>, mut queue: mpsc::UnboundedReceiver<Lookup>) {
    let mut batch = Vec::with_capacity(LOOKUP_CHUNK);
    let (looked_up, queries) = (counter!(CURSOR_LOOKUPS), counter!(CURSOR_LOOKUP_QUERIES));
    let mut busy = false;
    while queue.recv_many(&mut batch, LOOKUP_CHUNK).await > 0 {
        if busy {
            let deadline = Instant::now() + LOOKUP_LINGER;
            while batch.len() < LOOKUP_CHUNK {
                let room = LOOKUP_CHUNK - batch.len();
                let more = queue.recv_many(&mut batch, room);
                if !matches!(timeout_at(deadline, more).await, Ok(n) if n > 0) {
                    break;
                }
            }
        }
        busy = batch.len() > 1;
        looked_up.increment(batch.len() as u64);
        queries.increment(1);
        let found = match reads.acquire().await {
            Ok(_permit) => {
                let keys: Vec<CursorKey<'_>> =
                    batch.iter().map(|l| (l.user.as_str(), l.device.as_ref().map(DeviceId::as_str))).collect();
                store.cursors(&keys).await.map_err(Arc::new)
            }
            Err(_) => Err(Arc::new(StoreError::Corrupt("reads closed".into()))),
        };
        for (i, lookup) in batch.drain(..).enumerate() {
            let answer = match &found {
                Ok(cursors) => {
                    cursors.get(i).copied().ok_or_else(|| Arc::new(StoreError::Corrupt("lookup lost a row".into())))
                }
                Err(e) => Err(e.clone()),
            };
            // A connect whose task ended meanwhile (the node shutting down) no longer listens.
            let _ = lookup.reply.send(answer);
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
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
