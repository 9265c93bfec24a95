//! Acks and session events, gathered in memory and written to the store in batches (SPEC §6:
//! an ack moves the cursors within a second), and the periodic purge of expired rows.
//!
//! Acks are cumulative, so only the highest per (user, device) is kept between flushes: a
//! client acking every message costs one row update per flush, not one per ack.

use std::{collections::HashMap, sync::Arc, time::Duration};

use metrics::counter;
use parking_lot::Mutex;
use pushgate_protocol::{DeviceId, UserId};
use tokio::sync::Notify;

use pushgate_protocol::cluster::EventBatch;

use crate::store::{Ack, SessionEvent, Store, StoreError};

/// Session events kept while the store is unreachable; beyond this the oldest are dropped
/// (and counted): the session log is an audit trail, not delivery state.
pub const MAX_PENDING_EVENTS: usize = 100_000;
/// Events dropped at once when the cap is reached: the oldest tenth in one move, not one shift
/// of the whole backlog per event recorded (each connect and close of an outage's storm).
const EVENTS_DROPPED_AT_ONCE: usize = MAX_PENDING_EVENTS / 10;

/// Pending session events that ask for a flush before the interval is up. A connect flood
/// records thousands of events a second; held until the next tick, they are megabytes of
/// short-lived memory that the sessions' own allocations then sit on (`BENCHMARKS.md`, "Session
/// events flushed by count").
pub const FLUSH_EVENTS_AT: usize = 1_000;

pub const EVENTS_DROPPED: &str = "pushgate_session_events_dropped_total";

#[derive(Debug, Default)]
pub struct Bookkeeping {
    acks: Mutex<HashMap<(UserId, Option<DeviceId>), u64>>,
    events: Mutex<Vec<SessionEvent>>,
    wake: Notify,
    /// Held by the flush under way (see [`write_pending`](Self::write_pending)).
    writing: tokio::sync::Mutex<()>,
}

impl Bookkeeping {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Records a cumulative ack.
    pub fn ack(&self, user: &UserId, device: Option<&DeviceId>, seq: u64) {
        let mut acks = self.acks.lock();
        let slot = acks.entry((user.clone(), device.cloned())).or_insert(seq);
        *slot = (*slot).max(seq);
    }

    /// Records a session event; the [`FLUSH_EVENTS_AT`]th pending one asks for a flush.
    pub fn session_event(&self, event: SessionEvent) {
        let mut events = self.events.lock();
        if events.len() >= MAX_PENDING_EVENTS {
            events.drain(..EVENTS_DROPPED_AT_ONCE);
            counter!(EVENTS_DROPPED).increment(EVENTS_DROPPED_AT_ONCE as u64);
        }
        events.push(event);
        if events.len() == FLUSH_EVENTS_AT {
            self.flush_soon();
        }
    }

    /// Asks the flusher to write now (a session closed with an ack pending; events piling up).
    pub fn flush_soon(&self) {
        self.wake.notify_one();
    }

    /// Takes what is pending (to write it somewhere); hand it back with [`restore`](Self::restore)
    /// if writing failed.
    pub fn take(&self) -> EventBatch {
        let acks = std::mem::take(&mut *self.acks.lock())
            .into_iter()
            .map(|((user, device), seq)| Ack { user, device, seq })
            .collect();
        EventBatch { acks, sessions: std::mem::take(&mut *self.events.lock()) }
    }

    /// Puts back what could not be written, ahead of anything recorded since.
    pub fn restore(&self, batch: EventBatch) {
        for ack in &batch.acks {
            self.ack(&ack.user, ack.device.as_ref(), ack.seq);
        }
        let mut pending = self.events.lock();
        let newer = std::mem::replace(&mut *pending, batch.sessions);
        pending.extend(newer);
        let excess = pending.len().saturating_sub(MAX_PENDING_EVENTS);
        if excess > 0 {
            pending.drain(..excess);
            counter!(EVENTS_DROPPED).increment(excess as u64);
        }
    }

    /// Writes what is pending to the store. On failure it stays pending for the next flush.
    pub async fn flush<S: Store>(&self, store: &S) -> Result<(), StoreError> {
        self.write_pending(async |batch: &EventBatch| {
            store.save_acks(&batch.acks, pushgate_protocol::now_ms()).await?;
            store.log_sessions(&batch.sessions).await
        })
        .await
    }

    /// Hands what is pending to `write` (the store, or the dispatchers in cluster mode), one
    /// flush at a time: a flush waits for the one under way, so the last flush at shutdown
    /// returns only once everything taken before it is written too — a flush that found nothing
    /// left while another was still writing let the node exit with that batch unwritten. On
    /// failure the batch stays pending for the next flush.
    pub async fn write_pending<E>(&self, write: impl AsyncFnOnce(&EventBatch) -> Result<(), E>) -> Result<(), E> {
        let _one_at_a_time = self.writing.lock().await;
        let batch = self.take();
        if batch.acks.is_empty() && batch.sessions.is_empty() {
            return Ok(());
        }
        if let Err(e) = write(&batch).await {
            self.restore(batch);
            return Err(e);
        }
        Ok(())
    }

    /// Waits until a flush is due: every `every`, or sooner when asked.
    pub async fn due(&self, every: Duration) {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = self.wake.notified() => {}
        }
    }

    /// Flushes every `every`, or sooner when asked; runs until the task is dropped.
    pub async fn run<S: Store>(self: Arc<Self>, store: S, every: Duration) {
        loop {
            self.due(every).await;
            if let Err(e) = self.flush(&store).await {
                tracing::warn!(error = %e, "writing acks and session events failed; will retry");
            }
        }
    }
}

/// Purges expired rows every `every`: inbox rows and messages past their TTL, idempotency keys
/// older than `idempotency_window`, session log lines older than `log_retention`.
pub async fn run_purge<S: Store>(store: S, every: Duration, idempotency_window: Duration, log_retention: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let now = pushgate_protocol::now_ms();
        let before = |d: Duration| now.saturating_sub(d.as_millis() as u64);
        match store.purge(now, before(idempotency_window), before(log_retention)).await {
            Ok(purged) => tracing::debug!(?purged, "purged expired rows"),
            Err(e) => tracing::warn!(error = %e, "purge failed; will retry"),
        }
    }
}

#[cfg(test)]
mod tests {
    use pushgate_protocol::cluster::{SessionEvent, SessionEventKind};

    use super::*;

    fn event(n: u64) -> SessionEvent {
        SessionEvent {
            at_ms: n,
            kind: SessionEventKind::Open,
            session: n.to_string(),
            node: "n1".into(),
            user: UserId::new("u").expect("valid"),
            device: None,
        }
    }

    /// A flood of connects does not wait for the interval: the `FLUSH_EVENTS_AT`th pending event
    /// makes the flush due; one fewer leaves it to the interval.
    #[tokio::test]
    async fn enough_pending_events_make_a_flush_due_before_the_interval() {
        let every = Duration::from_secs(3600);
        let book = Bookkeeping::default();
        for n in 0..FLUSH_EVENTS_AT as u64 - 1 {
            book.session_event(event(n));
        }
        let early = tokio::time::timeout(Duration::from_millis(50), book.due(every)).await;
        assert!(early.is_err(), "one event short of the count, the flush waits for the interval");
        book.session_event(event(FLUSH_EVENTS_AT as u64));
        let due = tokio::time::timeout(Duration::from_secs(5), book.due(every)).await;
        assert!(due.is_ok(), "the count reached makes the flush due at once");
        assert_eq!(book.take().sessions.len(), FLUSH_EVENTS_AT);
    }

    /// An unreachable store: events pile up to the cap, then the oldest go, the newest stay.
    #[test]
    fn past_the_cap_the_oldest_events_are_dropped() {
        let book = Bookkeeping::default();
        let recorded = MAX_PENDING_EVENTS as u64 + 1;
        for n in 0..recorded {
            book.session_event(event(n));
        }
        let pending = book.take().sessions;
        assert_eq!(pending.len(), MAX_PENDING_EVENTS + 1 - EVENTS_DROPPED_AT_ONCE);
        assert_eq!(pending.first().map(|e| e.at_ms), Some(EVENTS_DROPPED_AT_ONCE as u64));
        assert_eq!(pending.last().map(|e| e.at_ms), Some(recorded - 1));
        assert!(pending.windows(2).all(|w| w[0].at_ms + 1 == w[1].at_ms), "in order, none missing after the first");
    }
}
