//! The SQLite store (standalone mode): a file in the data dir, in WAL mode. All writes go
//! through one connection, so writers never wait on each other's locks; replays read through a
//! separate pool of read connections, which WAL lets run beside the writer.

use std::{collections::HashMap, str::FromStr, time::Duration};

use sqlx::{
    Connection as _, QueryBuilder, Row, Sqlite, SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use uuid::Uuid;

use super::{
    Ack, AnyStore, Appended, CursorKey, Cursors, INSERT_CHUNK, InboxEntry, LOG_ROWS_PER_INSERT, LOOKUP_CHUNK,
    MergedAcks, PURGE_CHUNK, Purged, Seen, SessionEvent, Store, StoreError, cursor_key_lists, entry, keyed_ids,
    merge_acks, plan, receivers, runs_of, seqs_by_key, to_i64,
};
use crate::Message;

/// Page cache bounds, in KiB (negative: SQLite's unit for KiB).
const WRITER_CACHE: &str = "-512";
const READER_CACHE: &str = "-256";

/// The cursor lookup of a batch of sessions (see [`cursor_key_lists`]; `?1` users, `?2`
/// devices): one statement text for any batch, prepared once per connection and cached. A text
/// that grew with the batch was parsed and planned anew for every batch of connects.
const CURSOR_LOOKUP: &str = "SELECT user_id, device_id, acked_seq, 0 FROM device_cursors \
     WHERE user_id IN (SELECT value FROM json_each(?1)) AND device_id IN (SELECT value FROM json_each(?2)) \
     UNION ALL SELECT user_id, NULL, last_seq, acked_seq FROM user_heads WHERE user_id IN (SELECT value FROM json_each(?1))";

/// Where the session log's old lines end (`?1` the time before which lines go): the id of the
/// first recent line, or past the last line when all are old. There is no index by time: lines
/// are appended in time order, so the old ones are at the front, and a scan from the front finds
/// the first recent one after reading only the old ones (at once when there are none). Looked up
/// once per purge; the chunks then delete by id, each a range of the table's own order. A line
/// written a moment out of order (threads racing, a clock stepped back) goes with a later purge.
const SESSION_LOG_OLD_END: &str = "SELECT COALESCE((SELECT id FROM session_log WHERE at >= ?1 ORDER BY id LIMIT 1), \
     (SELECT MAX(id) FROM session_log) + 1, 0)";
/// One chunk of the session log's purge: the first lines before the id [`SESSION_LOG_OLD_END`] found.
const PURGE_SESSION_LOG: &str =
    "DELETE FROM session_log WHERE id IN (SELECT id FROM session_log WHERE id < ? ORDER BY id LIMIT ?)";

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    readers: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating it if needed) the database at `url` (`sqlite://path/inbox.db`).
    /// `readers` is the size of the read pool.
    pub async fn open(url: &str, readers: u32) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk before the publisher hears 202, even across power loss.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(false);
        // Small page caches (SQLite's default is 2 MiB per connection) keep a gateway's memory
        // for sessions rather than for copies of the database, which the OS caches anyway: the
        // writer appends (its hot pages are the right edges of its trees), and readers serve
        // short inbox pages and cursor lookups. No ping before each use (sqlx's default): a file
        // has no server to drop the connection, and each ping is a round trip to the
        // connection's thread — as costly as the cursor lookup it would precede.
        let writer = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(1)
            .min_connections(1)
            .connect_with(options.clone().pragma("cache_size", WRITER_CACHE))
            .await?;
        MIGRATIONS.run(&writer).await?;
        // Opened up front, all of them: a connection's memory (its thread, its cache) is a cost of
        // the node, not of the sessions whose connect happens to open it.
        let readers = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(readers.max(1))
            .min_connections(readers.max(1))
            .connect_with(options.read_only(true).pragma("cache_size", READER_CACHE))
            .await?;
        Ok(Self { writer, readers })
    }

    /// The store as [`AnyStore`].
    pub fn into_any(self) -> AnyStore {
        AnyStore::Sqlite(self)
    }
}

impl Store for SqliteStore {
    async fn append(&self, batch: &[Message], now_ms: u64, window: Duration) -> Result<Vec<Appended>, StoreError> {
        let mut conn = self.writer.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;

        let ids = keyed_ids(batch);
        // Publisher ids already stored within the window, and the seqs their receivers got.
        let mut seen_keys: Vec<(String, Uuid)> = Vec::new();
        let since = to_i64(now_ms.saturating_sub(window.as_millis() as u64));
        for chunk in ids.chunks(INSERT_CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new("SELECT msg_id, message FROM idempotency WHERE created_at >= ");
            q.push_bind(since).push(" AND msg_id IN (");
            let mut list = q.separated(", ");
            chunk.iter().for_each(|id| {
                list.push_bind(*id);
            });
            q.push(")");
            for row in q.build().persistent(false).fetch_all(&mut *tx).await? {
                seen_keys.push((row.try_get::<String, _>(0)?, row.try_get(1)?));
            }
        }
        let mut rows = Vec::new();
        for chunk in seen_keys.chunks(INSERT_CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new("SELECT message, user_id, seq FROM inbox WHERE message IN (");
            let mut list = q.separated(", ");
            chunk.iter().for_each(|(_, key)| {
                list.push_bind(*key);
            });
            q.push(") ORDER BY seq");
            for row in q.build().persistent(false).fetch_all(&mut *tx).await? {
                rows.push((row.try_get(0)?, row.try_get::<String, _>(1)?, row.try_get(2)?));
            }
        }
        let mut by_key = seqs_by_key(rows)?;
        let seen: Seen = seen_keys.into_iter().map(|(id, key)| (id, by_key.remove(&key).unwrap_or_default())).collect();

        let users = receivers(batch);
        let mut heads: HashMap<&str, i64> = HashMap::new();
        for chunk in users.chunks(INSERT_CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new("SELECT user_id, last_seq FROM user_heads WHERE user_id IN (");
            let mut list = q.separated(", ");
            chunk.iter().for_each(|u| {
                list.push_bind(*u);
            });
            q.push(")");
            for row in q.build().persistent(false).fetch_all(&mut *tx).await? {
                let user: String = row.try_get(0)?;
                if let Some(u) = chunk.iter().find(|u| **u == user) {
                    heads.insert(u, row.try_get(1)?);
                }
            }
        }

        let plan = plan(batch, &seen, heads);
        for chunk in plan.messages.chunks(INSERT_CHUNK) {
            QueryBuilder::<Sqlite>::new("INSERT INTO messages (id, msg_id, ts, expires_at, data) ")
                .push_values(chunk, |mut b, m| {
                    b.push_bind(m.key).push_bind(m.msg_id).push_bind(m.ts).push_bind(m.expires_at).push_bind(m.data);
                })
                .build()
                .persistent(false)
                .execute(&mut *tx)
                .await?;
        }
        for chunk in plan.keys.chunks(INSERT_CHUNK) {
            QueryBuilder::<Sqlite>::new("INSERT INTO idempotency (msg_id, message, created_at) ")
                .push_values(chunk, |mut b, (id, key)| {
                    b.push_bind(*id).push_bind(*key).push_bind(to_i64(now_ms));
                })
                .push(
                    " ON CONFLICT (msg_id) DO UPDATE SET message = excluded.message, created_at = excluded.created_at",
                )
                .build()
                .persistent(false)
                .execute(&mut *tx)
                .await?;
        }
        for chunk in plan.inbox.chunks(INSERT_CHUNK) {
            QueryBuilder::<Sqlite>::new("INSERT INTO inbox (user_id, seq, message, expires_at) ")
                .push_values(chunk, |mut b, (user, seq, key, expires)| {
                    b.push_bind(*user).push_bind(*seq).push_bind(*key).push_bind(*expires);
                })
                .build()
                .persistent(false)
                .execute(&mut *tx)
                .await?;
        }
        for chunk in plan.heads.chunks(INSERT_CHUNK) {
            QueryBuilder::<Sqlite>::new("INSERT INTO user_heads (user_id, last_seq) ")
                .push_values(chunk, |mut b, (user, last)| {
                    b.push_bind(*user).push_bind(*last);
                })
                .push(" ON CONFLICT (user_id) DO UPDATE SET last_seq = excluded.last_seq")
                .build()
                .persistent(false)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(plan.results)
    }

    async fn inbox(
        &self,
        user: &str,
        after: u64,
        before: Option<u64>,
        limit: u32,
        now_ms: u64,
    ) -> Result<Vec<InboxEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT i.seq, m.msg_id, m.ts, m.data FROM inbox i JOIN messages m ON m.id = i.message \
             WHERE i.user_id = ? AND i.seq > ? AND i.seq < ? AND i.expires_at > ? ORDER BY i.seq LIMIT ?",
        )
        .bind(user)
        .bind(to_i64(after))
        .bind(before.map_or(i64::MAX, to_i64))
        .bind(to_i64(now_ms))
        .bind(i64::from(limit))
        .fetch_all(&self.readers)
        .await?;
        rows.into_iter().map(|r| entry(r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)).collect()
    }

    async fn cursors(&self, keys: &[CursorKey<'_>]) -> Result<Vec<Cursors>, StoreError> {
        let mut found = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(LOOKUP_CHUNK) {
            let (users, devices) = cursor_key_lists(chunk);
            let rows = sqlx::query(CURSOR_LOOKUP).bind(users).bind(devices).fetch_all(&self.readers).await?;
            let rows = rows
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()?;
            found.extend(Cursors::for_keys(chunk, rows));
        }
        Ok(found)
    }

    async fn save_acks(&self, acks: &[Ack], now_ms: u64) -> Result<(), StoreError> {
        if acks.is_empty() {
            return Ok(());
        }
        let MergedAcks { devices, users } = merge_acks(acks);
        let mut conn = self.writer.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        for chunk in devices.chunks(INSERT_CHUNK) {
            QueryBuilder::<Sqlite>::new("INSERT INTO device_cursors (user_id, device_id, acked_seq, updated_at) ")
                .push_values(chunk, |mut b, (user, device, seq)| {
                    b.push_bind(*user).push_bind(*device).push_bind(*seq).push_bind(to_i64(now_ms));
                })
                .push(
                    " ON CONFLICT (user_id, device_id) DO UPDATE SET acked_seq = MAX(acked_seq, excluded.acked_seq), \
                     updated_at = excluded.updated_at",
                )
                .build()
                .persistent(false)
                .execute(&mut *tx)
                .await?;
        }
        for (user, seq) in users {
            sqlx::query("UPDATE user_heads SET acked_seq = MAX(acked_seq, ?) WHERE user_id = ?")
                .bind(seq)
                .bind(user)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn log_sessions(&self, events: &[SessionEvent]) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        for run in runs_of(events, &LOG_ROWS_PER_INSERT) {
            QueryBuilder::<Sqlite>::new(
                "INSERT INTO session_log (at, event, session_id, node, user_id, device_id, code) ",
            )
            .push_values(run, |mut b, e| {
                b.push_bind(to_i64(e.at_ms))
                    .push_bind(e.kind.name())
                    .push_bind(&e.session)
                    .push_bind(&e.node)
                    .push_bind(e.user.as_str())
                    .push_bind(e.device.as_ref().map(|d| d.as_str()))
                    .push_bind(e.kind.code().map(i32::from));
            })
            .build()
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.readers).await?;
        Ok(())
    }

    async fn purge(&self, now_ms: u64, idempotency_before_ms: u64, log_before_ms: u64) -> Result<Purged, StoreError> {
        let mut purged = Purged::default();
        let log_old_end: i64 =
            sqlx::query_scalar(SESSION_LOG_OLD_END).bind(to_i64(log_before_ms)).fetch_one(&self.writer).await?;
        let chunks: [(&str, i64, &mut u64); 4] = [
            (
                "DELETE FROM inbox WHERE (user_id, seq) IN (SELECT user_id, seq FROM inbox WHERE expires_at <= ? LIMIT ?)",
                to_i64(now_ms),
                &mut purged.inbox,
            ),
            (
                "DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE expires_at <= ? LIMIT ?)",
                to_i64(now_ms),
                &mut purged.messages,
            ),
            (
                "DELETE FROM idempotency WHERE msg_id IN (SELECT msg_id FROM idempotency WHERE created_at < ? LIMIT ?)",
                to_i64(idempotency_before_ms),
                &mut purged.idempotency,
            ),
            (PURGE_SESSION_LOG, log_old_end, &mut purged.session_log),
        ];
        for (sql, before, count) in chunks {
            loop {
                let done = sqlx::query(sql).bind(before).bind(i64::from(PURGE_CHUNK)).execute(&self.writer).await?;
                *count += done.rows_affected();
                if done.rows_affected() < u64::from(PURGE_CHUNK) {
                    break;
                }
            }
        }
        Ok(purged)
    }
}
