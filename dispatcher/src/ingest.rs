//! The durable write path: messages are appended to the store in batches — up to
//! `max_messages` per transaction, waiting at most `linger` for a batch to fill once its first
//! message is in — and each submitter hears back only after its batch committed. While one batch
//! commits, the next one gathers (group commit), so a higher load makes bigger batches rather
//! than a longer queue.
//!
//! A batch that fails with a transient error (lost connection, deadlock, busy database) is
//! retried whole: the store assigns `seq`s inside the transaction, so a retry leaves no holes. A
//! batch that fails otherwise is split and its messages appended one by one, so one bad message
//! cannot fail its neighbours.

use std::time::{Duration, Instant};

use metrics::{counter, histogram};
use tokio::sync::{mpsc, oneshot};

use crate::{
    Message,
    store::{Appended, Store, StoreError},
};

pub const STORE_BATCH_SECONDS: &str = "pushgate_store_batch_seconds";
pub const STORE_MESSAGES: &str = "pushgate_store_messages_total";

/// Named bounds of the write path.
#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    /// Messages per transaction.
    pub max_messages: usize,
    /// How long a batch waits to fill after its first message.
    pub linger: Duration,
    /// A publisher-given id seen within this window is a duplicate.
    pub idempotency_window: Duration,
    /// Attempts of a batch that fails with transient errors.
    pub max_attempts: u32,
    /// Submissions waiting for the writer; beyond it `append` waits (back-pressure).
    pub queue: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_messages: 1000,
            linger: Duration::from_millis(1),
            idempotency_window: Duration::from_secs(24 * 3600),
            max_attempts: 5,
            queue: 10_000,
        }
    }
}

/// Why a message was not stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IngestError {
    #[error("store unavailable: {0}")]
    Store(String),
    #[error("the writer has stopped")]
    Stopped,
}

struct Job {
    message: Message,
    reply: oneshot::Sender<Result<Appended, IngestError>>,
}

/// A handle to the writer task.
#[derive(Debug, Clone)]
pub struct Ingest {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("id", &self.message.id).finish()
    }
}

impl Ingest {
    /// Starts the writer task over `store`.
    pub fn start<S: Store>(store: S, config: BatchConfig) -> Self {
        let (jobs, rx) = mpsc::channel(config.queue.max(1));
        tokio::spawn(writer(store, rx, config));
        Self { jobs }
    }

    /// Appends one durable message; returns once it is committed (or refused).
    pub async fn append(&self, message: Message) -> Result<Appended, IngestError> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job { message, reply }).await.map_err(|_| IngestError::Stopped)?;
        answer.await.map_err(|_| IngestError::Stopped)?
    }
}

async fn writer<S: Store>(store: S, mut rx: mpsc::Receiver<Job>, config: BatchConfig) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        let deadline = tokio::time::Instant::now() + config.linger;
        while jobs.len() < config.max_messages {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(job)) => jobs.push(job),
                    _ => break,
                },
            }
        }
        let (messages, replies): (Vec<Message>, Vec<_>) = jobs.into_iter().map(|j| (j.message, j.reply)).unzip();
        let results = append_batch(&store, &messages, &config).await;
        for (reply, result) in replies.into_iter().zip(results) {
            let _ = reply.send(result);
        }
    }
}

/// Appends a batch with retries; one result per message.
async fn append_batch<S: Store>(
    store: &S,
    messages: &[Message],
    config: &BatchConfig,
) -> Vec<Result<Appended, IngestError>> {
    match append_retrying(store, messages, config).await {
        Ok(appended) => appended.into_iter().map(Ok).collect(),
        Err(e) if messages.len() > 1 && !e.is_transient() => {
            tracing::warn!(error = %e, messages = messages.len(), "batch failed; appending its messages one by one");
            let mut results = Vec::with_capacity(messages.len());
            for message in messages {
                results.push(match append_retrying(store, std::slice::from_ref(message), config).await {
                    Ok(mut one) => one.pop().ok_or_else(|| IngestError::Store("empty result".into())),
                    Err(e) => Err(IngestError::Store(e.to_string())),
                });
            }
            results
        }
        Err(e) => {
            let message = e.to_string();
            messages.iter().map(|_| Err(IngestError::Store(message.clone()))).collect()
        }
    }
}

async fn append_retrying<S: Store>(
    store: &S,
    messages: &[Message],
    config: &BatchConfig,
) -> Result<Vec<Appended>, StoreError> {
    let mut backoff = Duration::from_millis(50);
    let mut attempt = 1;
    loop {
        let started = Instant::now();
        match store.append(messages, pushgate_protocol::now_ms(), config.idempotency_window).await {
            Ok(appended) => {
                histogram!(STORE_BATCH_SECONDS).record(started.elapsed().as_secs_f64());
                counter!(STORE_MESSAGES).increment(messages.len() as u64);
                return Ok(appended);
            }
            Err(e) => {
                let e = e.counted();
                if !e.is_transient() || attempt >= config.max_attempts {
                    return Err(e);
                }
                tracing::warn!(error = %e, attempt, "append failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                attempt += 1;
            }
        }
    }
}
