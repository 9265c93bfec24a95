//! The durable store (SPEC §6): messages, per-user inboxes with `seq`, idempotency keys, device
//! and user cursors, the session log. One trait, two sqlx implementations — SQLite (standalone,
//! a file in the data dir) and MySQL/MariaDB (cluster) — with migrations applied at start.
//!
//! What both dialects share lives here: the plan of an append (which messages are new, which
//! `seq` each receiver gets), so the SQL modules only move rows.

mod mysql;
mod sqlite;

use std::{collections::HashMap, future::Future, time::Duration};

pub use mysql::MysqlStore;
pub use pushgate_protocol::cluster::{Ack, SessionEvent, SessionEventKind};
use pushgate_protocol::{Target, UserId};
use serde_json::value::RawValue;
pub use sqlite::SqliteStore;
use uuid::Uuid;

use crate::Message;

/// Statements the store refused, by whether they are worth retrying (`transient`).
pub const STORE_ERRORS: &str = "pushgate_store_errors_total";

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Worth retrying: everything but a refusal of the data itself. A dropped connection, a
    /// server shutting down or restarting, a deadlock, a lock timeout, a busy database or pool
    /// all pass; so do a missing table and a missing grant (SQLSTATE class 42: with every value
    /// bound, no data can cause them — the store is broken, and envelopes wait for it instead of
    /// being dead-lettered). A constraint violation or data that does not fit do not.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Database(sqlx::Error::Database(db)) => {
                if db.kind() != sqlx::error::ErrorKind::Other {
                    return false;
                }
                let code = db.code();
                let code = code.as_deref().unwrap_or("");
                // MySQL: SQLSTATE classes 22 (data), 23 (integrity).
                // SQLite: 18 too big, 20 type mismatch, 25 out of range.
                !(code.starts_with("22") || code.starts_with("23") || matches!(code, "18" | "20" | "25"))
            }
            Self::Database(
                sqlx::Error::ColumnDecode { .. }
                | sqlx::Error::ColumnNotFound(_)
                | sqlx::Error::ColumnIndexOutOfBounds { .. }
                | sqlx::Error::TypeNotFound { .. }
                | sqlx::Error::Encode(_)
                | sqlx::Error::Decode(_)
                | sqlx::Error::Configuration(_),
            ) => false,
            Self::Database(_) => true,
            Self::Migrate(_) | Self::Corrupt(_) => false,
        }
    }

    /// Counts the error in `pushgate_store_errors_total`; returns it.
    pub fn counted(self) -> Self {
        metrics::counter!(STORE_ERRORS, "transient" => self.is_transient().to_string()).increment(1);
        self
    }
}

/// What the store did with one message of an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The message id (the publisher's, or the one assigned at ingest).
    pub id: String,
    /// Already stored within the idempotency window: not stored again.
    pub duplicate: bool,
    /// The `seq` each receiver got, in the envelope's order — for a duplicate, the ones the first
    /// copy got (still in the inbox), so that a redelivered message can be routed again.
    pub seqs: Vec<(UserId, u64)>,
}

/// Ids already stored within the idempotency window, with the seqs their receivers got.
pub(crate) type Seen = HashMap<String, Vec<(UserId, u64)>>;

/// One inbox row, ready to become a `message` frame.
#[derive(Debug, Clone)]
pub struct InboxEntry {
    pub seq: u64,
    pub id: String,
    pub ts: u64,
    pub data: Box<RawValue>,
}

/// Where a session's replay can start (SPEC §6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursors {
    /// This device's last acked `seq`, if it ever acked.
    pub device: Option<u64>,
    /// The highest `seq` acked by any device of the user.
    pub user_acked: u64,
    /// The newest `seq` of the user's inbox.
    pub last_seq: u64,
}

/// Sessions whose cursors one query looks up (each binds its user and device).
pub const LOOKUP_CHUNK: usize = 500;

/// A session whose cursors are looked up: its user and, if it has one, its device.
pub type CursorKey<'a> = (&'a str, Option<&'a str>);

/// One row of a cursor lookup: (user, device, seq, acked) — a user's head (no device; its
/// newest `seq` and the user's acked cursor) or a device cursor (its acked `seq`; no acked).
pub(crate) type CursorRow = (String, Option<String>, i64, i64);

/// The binds of a cursor lookup: the keys' users and their devices (`""` for none), each list a
/// JSON array of strings, so that one statement text serves any batch. The lookup returns the
/// device cursors of those users and devices (a superset, sorted out by [`Cursors::for_keys`]),
/// then the users' heads, as [`CursorRow`]s.
pub(crate) fn cursor_key_lists(keys: &[CursorKey<'_>]) -> (String, String) {
    let json = |values: Vec<&str>| serde_json::to_string(&values).expect("a list of strings always serializes");
    (
        json(keys.iter().map(|(user, _)| *user).collect()),
        json(keys.iter().map(|(_, device)| device.unwrap_or("")).collect()),
    )
}

impl Cursors {
    /// Each key's cursors, in the keys' order, from the rows of a lookup.
    pub(crate) fn for_keys(keys: &[CursorKey<'_>], rows: Vec<CursorRow>) -> Vec<Self> {
        let unsigned = |v: i64| u64::try_from(v).unwrap_or(0);
        let mut heads: HashMap<String, (u64, u64)> = HashMap::new();
        let mut devices: HashMap<(String, String), u64> = HashMap::new();
        for (user, device, seq, acked) in rows {
            match device {
                Some(device) => devices.insert((user, device), unsigned(seq)),
                None => heads.insert(user, (unsigned(seq), unsigned(acked))).map(|(seq, _)| seq),
            };
        }
        keys.iter()
            .map(|(user, device)| {
                let (last_seq, user_acked) = heads.get(*user).copied().unwrap_or((0, 0));
                let device = device.and_then(|d| devices.get(&((*user).to_owned(), d.to_owned())).copied());
                Self { device, user_acked, last_seq }
            })
            .collect()
    }

    /// The cursor replay starts after: the client's `last_seq`, else the device's cursor, else
    /// the user's.
    pub fn resume_from(&self, last_seq: Option<u64>) -> u64 {
        last_seq.or(self.device).unwrap_or(self.user_acked)
    }
}

/// What a purge removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub inbox: u64,
    pub messages: u64,
    pub idempotency: u64,
    pub session_log: u64,
}

/// Rows deleted per purge statement, so a purge never holds locks for long.
pub const PURGE_CHUNK: u32 = 5_000;
/// Rows per multi-row INSERT: well under both dialects' placeholder limits (5 columns × 2000).
pub const INSERT_CHUNK: usize = 2_000;
/// Most message data per multi-row INSERT of messages, where the server allows that much. A
/// MySQL statement travels as one packet, and a packet above the server's `max_allowed_packet`
/// is refused and drops the connection: a batch cut by rows only (2,000 rows of up to 64 KiB)
/// failed the same way at every retry, and stalled its ingest partition for good.
pub const INSERT_DATA_BYTES: usize = 4 * 1024 * 1024;
/// What a message row adds to its statement besides its data (ids, times, framing), counted
/// generously.
pub const INSERT_ROW_OVERHEAD: usize = 256;

/// `messages` cut into runs of at most [`INSERT_CHUNK`] rows whose data and row overhead
/// together stay within `budget` bytes; a message larger than that goes alone.
pub(crate) fn message_runs<'a, 'm>(
    messages: &'a [NewMessage<'m>],
    budget: usize,
) -> impl Iterator<Item = &'a [NewMessage<'m>]> + 'a {
    let mut rest = messages;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let len = rest
            .iter()
            .take(INSERT_CHUNK)
            .take_while(|m| {
                bytes += m.data.len() + INSERT_ROW_OVERHEAD;
                bytes <= budget
            })
            .count()
            .max(1);
        let (run, after) = rest.split_at(len);
        rest = after;
        Some(run)
    })
}

/// Rows per INSERT of the session log. A batch is written in statements of these sizes, largest
/// first, in one transaction: a handful of statement texts serve every batch, each prepared once
/// per connection and cached, where a text of the batch's own length (up to 2,000 rows of 7
/// values) was parsed and planned anew at every flush of a connect flood (`BENCHMARKS.md`,
/// "Connects: the session log's statements, the token check, set-up futures under 1 KiB").
pub const LOG_ROWS_PER_INSERT: [usize; 4] = [250, 50, 10, 1];

/// `items` cut into runs whose lengths come from `sizes` (largest first, ending in 1): as many
/// of the largest as fit, then of the next, and so on.
pub fn runs_of<'a, T>(items: &'a [T], sizes: &'a [usize]) -> impl Iterator<Item = &'a [T]> + 'a {
    let mut rest = items;
    std::iter::from_fn(move || {
        let size = sizes.iter().copied().find(|&size| size <= rest.len())?;
        let (run, after) = rest.split_at(size);
        rest = after;
        Some(run)
    })
}

/// The durable store. Implementations are cheap to clone handles over a pool.
pub trait Store: Send + Sync + 'static {
    /// Stores a batch of durable user messages in one transaction: each receiver gets the next
    /// `seq` of its inbox (strictly +1, no holes: a failed transaction assigns nothing), and a
    /// publisher-given id already seen within `idempotency_window` is not stored again.
    fn append(
        &self,
        batch: &[Message],
        now_ms: u64,
        idempotency_window: Duration,
    ) -> impl Future<Output = Result<Vec<Appended>, StoreError>> + Send;

    /// Unexpired inbox entries of `user` with `after < seq < before`, oldest first, at most `limit`.
    fn inbox(
        &self,
        user: &str,
        after: u64,
        before: Option<u64>,
        limit: u32,
        now_ms: u64,
    ) -> impl Future<Output = Result<Vec<InboxEntry>, StoreError>> + Send;

    /// The cursors of sessions (a user, and a device if it has one), in their order: one query
    /// per [`LOOKUP_CHUNK`] of them, so that the connects of a reconnect storm share queries.
    fn cursors(&self, keys: &[CursorKey<'_>]) -> impl Future<Output = Result<Vec<Cursors>, StoreError>> + Send;

    /// Moves device and user cursors forward (never back).
    fn save_acks(&self, acks: &[Ack], now_ms: u64) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Appends session lifecycle events to the session log.
    fn log_sessions(&self, events: &[SessionEvent]) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Checks the connection (readiness).
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes expired inbox rows and messages, idempotency keys older than
    /// `idempotency_before_ms`, and session log lines older than `log_before_ms`.
    fn purge(
        &self,
        now_ms: u64,
        idempotency_before_ms: u64,
        log_before_ms: u64,
    ) -> impl Future<Output = Result<Purged, StoreError>> + Send;
}

/// Either store, chosen by mode at start.
#[derive(Debug, Clone)]
pub enum AnyStore {
    Sqlite(SqliteStore),
    Mysql(MysqlStore),
}

impl AnyStore {
    /// Opens the store named by `url` (`sqlite://…` or `mysql://…`) and applies its migrations.
    pub async fn open(url: &str, pool_size: u32) -> Result<Self, StoreError> {
        if url.starts_with("mysql:") || url.starts_with("mariadb:") {
            Ok(Self::Mysql(MysqlStore::open(&url.replacen("mariadb:", "mysql:", 1), pool_size).await?))
        } else {
            Ok(Self::Sqlite(SqliteStore::open(url, pool_size).await?))
        }
    }

    /// The largest message data the store can take in one statement, where it has a limit
    /// (MySQL's `max_allowed_packet`, less a margin for the rest of the statement).
    pub fn largest_data(&self) -> Option<usize> {
        match self {
            Self::Sqlite(_) => None,
            Self::Mysql(store) => Some(store.max_packet().saturating_sub(4 * INSERT_ROW_OVERHEAD)),
        }
    }

    /// A label for logs and metrics.
    pub fn dialect(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Mysql(_) => "mysql",
        }
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            AnyStore::Sqlite($s) => $call.await,
            AnyStore::Mysql($s) => $call.await,
        }
    };
}

impl Store for AnyStore {
    async fn append(&self, batch: &[Message], now_ms: u64, window: Duration) -> Result<Vec<Appended>, StoreError> {
        delegate!(self, s => s.append(batch, now_ms, window))
    }

    async fn inbox(
        &self,
        user: &str,
        after: u64,
        before: Option<u64>,
        limit: u32,
        now_ms: u64,
    ) -> Result<Vec<InboxEntry>, StoreError> {
        delegate!(self, s => s.inbox(user, after, before, limit, now_ms))
    }

    async fn cursors(&self, keys: &[CursorKey<'_>]) -> Result<Vec<Cursors>, StoreError> {
        delegate!(self, s => s.cursors(keys))
    }

    async fn save_acks(&self, acks: &[Ack], now_ms: u64) -> Result<(), StoreError> {
        delegate!(self, s => s.save_acks(acks, now_ms))
    }

    async fn log_sessions(&self, events: &[SessionEvent]) -> Result<(), StoreError> {
        delegate!(self, s => s.log_sessions(events))
    }

    async fn purge(&self, now_ms: u64, idempotency_before_ms: u64, log_before_ms: u64) -> Result<Purged, StoreError> {
        delegate!(self, s => s.purge(now_ms, idempotency_before_ms, log_before_ms))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        delegate!(self, s => s.ping())
    }
}

// -------------------------------------------------------------------------------------------
// The plan of an append, shared by both dialects.
// -------------------------------------------------------------------------------------------

/// A message row to insert.
#[derive(Debug)]
pub(crate) struct NewMessage<'a> {
    pub key: Uuid,
    pub msg_id: &'a str,
    pub ts: i64,
    pub expires_at: i64,
    pub data: &'a str,
}

/// Rows an append writes, and what it answers.
#[derive(Debug, Default)]
pub(crate) struct Plan<'a> {
    pub messages: Vec<NewMessage<'a>>,
    /// Idempotency keys to record (publisher-given ids only).
    pub keys: Vec<(&'a str, Uuid)>,
    /// (user, seq, message key, expires_at)
    pub inbox: Vec<(&'a str, i64, Uuid, i64)>,
    /// (user, new last seq)
    pub heads: Vec<(&'a str, i64)>,
    pub results: Vec<Appended>,
}

/// Publisher-given ids of a batch, to look up in the idempotency table.
pub(crate) fn keyed_ids(batch: &[Message]) -> Vec<&str> {
    let mut ids: Vec<&str> = batch.iter().filter(|m| m.keyed).map(|m| m.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Receivers of the batch's messages, sorted (rows are locked in this order, which keeps two
/// writers from deadlocking on each other).
pub(crate) fn receivers(batch: &[Message]) -> Vec<&str> {
    let mut users: Vec<&str> = batch
        .iter()
        .flat_map(|m| match &m.to {
            Target::Users(users) => users.iter().map(UserId::as_str).collect(),
            _ => Vec::new(),
        })
        .collect();
    users.sort_unstable();
    users.dedup();
    users
}

/// Decides the rows of an append: `seen` holds ids already stored within the window, `heads`
/// each receiver's current last seq (absent: 0).
pub(crate) fn plan<'a>(batch: &'a [Message], seen: &Seen, mut heads: HashMap<&'a str, i64>) -> Plan<'a> {
    let mut plan = Plan::default();
    // Keyed ids of this batch → the index of their first result.
    let mut in_batch: HashMap<&str, usize> = HashMap::new();
    for message in batch {
        if message.keyed {
            let earlier = seen
                .get(&message.id)
                .cloned()
                .or_else(|| in_batch.get(message.id.as_str()).map(|&i| plan.results[i].seqs.clone()));
            if let Some(seqs) = earlier {
                plan.results.push(Appended { id: message.id.clone(), duplicate: true, seqs });
                continue;
            }
            in_batch.insert(message.id.as_str(), plan.results.len());
        }
        let key = Uuid::now_v7();
        let expires_at = (message.ts + message.ttl_s.saturating_mul(1000)).min(i64::MAX as u64) as i64;
        plan.messages.push(NewMessage {
            key,
            msg_id: &message.id,
            ts: message.ts as i64,
            expires_at,
            data: message.data.get(),
        });
        if message.keyed {
            plan.keys.push((&message.id, key));
        }
        let mut seqs = Vec::new();
        if let Target::Users(users) = &message.to {
            for user in users {
                let head = heads.entry(user.as_str()).or_insert(0);
                *head += 1;
                plan.inbox.push((user.as_str(), *head, key, expires_at));
                seqs.push((user.clone(), *head as u64));
            }
        }
        plan.results.push(Appended { id: message.id.clone(), duplicate: false, seqs });
    }
    let mut touched: Vec<(&str, i64)> = plan.inbox.iter().map(|(u, _, _, _)| (*u, heads[u])).collect();
    touched.sort_unstable();
    touched.dedup();
    plan.heads = touched;
    plan
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Acks merged for writing: the highest seq per (user, device), and per user.
pub(crate) struct MergedAcks<'a> {
    pub devices: Vec<(&'a str, &'a str, i64)>,
    pub users: Vec<(&'a str, i64)>,
}

/// Merges acks: the highest seq per (user, device), and per user.
/// Groups (message key, user, seq) rows into the seqs of each message key.
pub(crate) fn seqs_by_key(rows: Vec<(Uuid, String, i64)>) -> Result<HashMap<Uuid, Vec<(UserId, u64)>>, StoreError> {
    let mut by_key: HashMap<Uuid, Vec<(UserId, u64)>> = HashMap::new();
    for (key, user, seq) in rows {
        let user = UserId::new(&user).map_err(|e| StoreError::Corrupt(format!("user id in inbox {e}")))?;
        by_key.entry(key).or_default().push((user, seq as u64));
    }
    Ok(by_key)
}

pub(crate) fn merge_acks(acks: &[Ack]) -> MergedAcks<'_> {
    let mut devices: HashMap<(&str, &str), i64> = HashMap::new();
    let mut users: HashMap<&str, i64> = HashMap::new();
    for ack in acks {
        let seq = to_i64(ack.seq);
        if let Some(device) = &ack.device {
            let e = devices.entry((ack.user.as_str(), device.as_str())).or_insert(seq);
            *e = (*e).max(seq);
        }
        let e = users.entry(ack.user.as_str()).or_insert(seq);
        *e = (*e).max(seq);
    }
    let mut devices: Vec<_> = devices.into_iter().map(|((u, d), s)| (u, d, s)).collect();
    devices.sort_unstable();
    let mut users: Vec<_> = users.into_iter().collect();
    users.sort_unstable();
    MergedAcks { devices, users }
}

fn entry(seq: i64, id: String, ts: i64, data: String) -> Result<InboxEntry, StoreError> {
    let data = RawValue::from_string(data).map_err(|e| StoreError::Corrupt(format!("message {id}: {e}")))?;
    Ok(InboxEntry { seq: seq as u64, id, ts: ts as u64, data })
}

#[cfg(test)]
mod tests {
    use pushgate_protocol::{DeviceId, Envelope, EnvelopeLimits};

    use super::*;

    fn message(json: &str) -> Message {
        Message::accept(Envelope::decode(json.as_bytes(), &EnvelopeLimits::default()).unwrap(), 1_000)
    }

    #[test]
    fn message_runs_stay_within_their_budget_and_cover_every_message_once_in_order() {
        let data: Vec<String> = [10, 3_000, 500, 9_000, 40, 40, 2_000].iter().map(|n| "x".repeat(*n)).collect();
        let messages: Vec<NewMessage<'_>> =
            data.iter().map(|d| NewMessage { key: Uuid::nil(), msg_id: "m", ts: 0, expires_at: 0, data: d }).collect();
        let budget = 4_000;
        let runs: Vec<&[NewMessage<'_>]> = message_runs(&messages, budget).collect();
        let lens: Vec<usize> = runs.iter().map(|r| r.len()).collect();
        // 10+3,000 fit; 500 then 9,000 does not; 9,000 goes alone; 40, 40, 2,000 fit.
        assert_eq!(lens, [2, 1, 1, 3]);
        for run in runs.iter().filter(|r| r.len() > 1) {
            let bytes: usize = run.iter().map(|m| m.data.len() + INSERT_ROW_OVERHEAD).sum();
            assert!(bytes <= budget, "{bytes}");
        }
        let flat: Vec<&str> = runs.iter().flat_map(|r| r.iter().map(|m| m.data)).collect();
        assert_eq!(flat, data.iter().map(String::as_str).collect::<Vec<_>>());
        let many: Vec<NewMessage<'_>> =
            (0..5_000).map(|_| NewMessage { key: Uuid::nil(), msg_id: "m", ts: 0, expires_at: 0, data: "1" }).collect();
        let lens: Vec<usize> = message_runs(&many, usize::MAX).map(<[_]>::len).collect();
        assert_eq!(lens, [INSERT_CHUNK, INSERT_CHUNK, 1_000], "rows are bounded too");
        assert_eq!(message_runs(&[], budget).count(), 0);
    }

    #[test]
    fn runs_take_the_largest_sizes_first_and_cover_every_item_once_in_order() {
        let lengths =
            |n: usize| runs_of(&(0..n).collect::<Vec<_>>(), &LOG_ROWS_PER_INSERT).map(<[_]>::len).collect::<Vec<_>>();
        assert_eq!(lengths(0), Vec::<usize>::new());
        assert_eq!(lengths(1), [1]);
        assert_eq!(lengths(1_000), [250; 4]);
        assert_eq!(lengths(313), [250, 50, 10, 1, 1, 1]);
        for n in [7, 249, 1_234] {
            let items: Vec<usize> = (0..n).collect();
            let joined: Vec<usize> = runs_of(&items, &LOG_ROWS_PER_INSERT).flatten().copied().collect();
            assert_eq!(joined, items);
        }
    }

    #[test]
    fn seqs_continue_each_users_head_and_duplicates_are_skipped() {
        let batch = vec![
            message(r#"{"id":"a","to":{"users":["u1","u2"]},"data":1}"#),
            message(r#"{"id":"b","to":{"users":["u1"]},"data":2}"#),
            message(r#"{"id":"a","to":{"users":["u1"]},"data":3}"#),
            message(r#"{"id":"old","to":{"users":["u1"]},"data":4}"#),
        ];
        let seen = HashMap::from([("old".to_owned(), vec![(UserId::new("u1").unwrap(), 7)])]);
        let heads = HashMap::from([("u1", 41)]);
        let plan = plan(&batch, &seen, heads);
        let seqs: Vec<Vec<(String, u64)>> =
            plan.results.iter().map(|r| r.seqs.iter().map(|(u, s)| (u.to_string(), *s)).collect()).collect();
        // Duplicates carry the seqs of the first copy, so a redelivery can be routed again.
        let first = vec![("u1".to_owned(), 42), ("u2".to_owned(), 1)];
        assert_eq!(seqs, vec![first.clone(), vec![("u1".into(), 43)], first, vec![("u1".into(), 7)]]);
        assert_eq!(plan.results.iter().map(|r| r.duplicate).collect::<Vec<_>>(), vec![false, false, true, true]);
        assert_eq!(plan.messages.len(), 2);
        assert_eq!(plan.keys.len(), 2);
        assert_eq!(plan.heads, vec![("u1", 43), ("u2", 1)]);
        assert_eq!(plan.messages[0].expires_at, 1_000 + 7 * 24 * 3600 * 1000);
    }

    #[test]
    fn acks_merge_to_the_highest() {
        let u = UserId::new("u").unwrap();
        let d = DeviceId::new("d").unwrap();
        let acks = vec![
            Ack { user: u.clone(), device: Some(d.clone()), seq: 5 },
            Ack { user: u.clone(), device: Some(d), seq: 3 },
            Ack { user: u, device: None, seq: 9 },
        ];
        let merged = merge_acks(&acks);
        assert_eq!(merged.devices, vec![("u", "d", 5)]);
        assert_eq!(merged.users, vec![("u", 9)]);
    }

    #[test]
    fn resume_prefers_the_query_then_the_device_then_the_user() {
        let c = Cursors { device: Some(7), user_acked: 9, last_seq: 12 };
        assert_eq!(c.resume_from(Some(3)), 3);
        assert_eq!(c.resume_from(None), 7);
        assert_eq!(Cursors { device: None, ..c }.resume_from(None), 9);
    }
}
