//! The MySQL/MariaDB store (cluster mode): one pool; an append locks its receivers' head rows
//! (`FOR UPDATE`, in user-id order so two writers cannot deadlock on each other) for the length
//! of its transaction, which is what keeps `seq` gap-free with several dispatchers.

use std::{collections::HashMap, str::FromStr, time::Duration};

use sqlx::{
    MySql, MySqlPool, QueryBuilder, Row,
    mysql::{MySqlConnectOptions, MySqlPoolOptions},
};

use uuid::Uuid;

use super::{
    Ack, AnyStore, Appended, CursorKey, Cursors, INSERT_CHUNK, INSERT_DATA_BYTES, InboxEntry, LOG_ROWS_PER_INSERT,
    LOOKUP_CHUNK, MergedAcks, PURGE_CHUNK, Purged, Seen, SessionEvent, Store, StoreError, cursor_key_lists, entry,
    keyed_ids, merge_acks, message_runs, plan, receivers, runs_of, seqs_by_key, to_i64,
};
use crate::Message;

/// The cursor lookup of a batch of sessions (see [`cursor_key_lists`]; the users' list is
/// bound twice): one statement text for any batch, prepared once per connection and cached, not
/// prepared and closed on the server for every batch.
const CURSOR_LOOKUP: &str = "SELECT user_id, device_id, acked_seq, 0 FROM device_cursors \
     WHERE user_id IN (SELECT v FROM JSON_TABLE(?, '$[*]' COLUMNS (v VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin PATH '$')) AS users) \
     AND device_id IN (SELECT v FROM JSON_TABLE(?, '$[*]' COLUMNS (v VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin PATH '$')) AS devices) \
     UNION ALL SELECT user_id, NULL, last_seq, acked_seq FROM user_heads \
     WHERE user_id IN (SELECT v FROM JSON_TABLE(?, '$[*]' COLUMNS (v VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin PATH '$')) AS users)";

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/mysql");

#[derive(Debug, Clone)]
pub struct MysqlStore {
    pool: MySqlPool,
    /// The server's `max_allowed_packet`: no statement may be larger.
    max_packet: usize,
}

impl MysqlStore {
    /// Connects to `url` (`mysql://user:pass@host:port/database`) with a pool of `pool_size`
    /// connections and applies the migrations.
    pub async fn open(url: &str, pool_size: u32) -> Result<Self, StoreError> {
        let options = MySqlConnectOptions::from_str(url)?.charset("utf8mb4");
        let pool = MySqlPoolOptions::new()
            .max_connections(pool_size.max(2))
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        migrate(&pool).await?;
        let max_packet: u64 = sqlx::query_scalar("SELECT @@max_allowed_packet").fetch_one(&pool).await?;
        Ok(Self { pool, max_packet: usize::try_from(max_packet).unwrap_or(usize::MAX) })
    }

    /// The server's `max_allowed_packet` (read at open): a message whose data comes near it
    /// cannot be stored.
    pub fn max_packet(&self) -> usize {
        self.max_packet
    }

    /// Message data per INSERT: [`INSERT_DATA_BYTES`], or half the server's packet limit where
    /// that is smaller.
    fn insert_budget(&self) -> usize {
        INSERT_DATA_BYTES.min(self.max_packet / 2)
    }

    /// The store as [`AnyStore`].
    pub fn into_any(self) -> AnyStore {
        AnyStore::Mysql(self)
    }

    /// The pool, for tests and administration.
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }
}

/// How long a process waits for another one's migrations before it gives up.
const MIGRATION_LOCK_WAIT_S: u32 = 120;

/// Applies the migrations under a named lock of our own: several gateways and dispatchers start
/// at once against a new database, and sqlx's own lock (`GET_LOCK(name, -1)`) does not wait on
/// MariaDB, where a negative timeout fails at once — the second process then finds the first
/// one's migration half done and refuses to start.
async fn migrate(pool: &MySqlPool) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await?;
    let got: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(CONCAT('pushgate_migrate.', DATABASE()), ?)")
        .bind(MIGRATION_LOCK_WAIT_S)
        .fetch_one(&mut *conn)
        .await?;
    if got != Some(1) {
        return Err(StoreError::Migrate(sqlx::migrate::MigrateError::Execute(sqlx::Error::Protocol(format!(
            "another process held the migration lock for {MIGRATION_LOCK_WAIT_S} s"
        )))));
    }
    let applied = MIGRATIONS.run_direct(&mut *conn).await;
    sqlx::query("SELECT RELEASE_LOCK(CONCAT('pushgate_migrate.', DATABASE()))").execute(&mut *conn).await?;
    Ok(applied?)
}

impl Store for MysqlStore {
    async fn append(&self, batch: &[Message], now_ms: u64, window: Duration) -> Result<Vec<Appended>, StoreError> {
        let mut tx = self.pool.begin().await?;

        let ids = keyed_ids(batch);
        // Publisher ids already stored within the window, and the seqs their receivers got.
        let mut seen_keys: Vec<(String, Uuid)> = Vec::new();
        let since = to_i64(now_ms.saturating_sub(window.as_millis() as u64));
        for chunk in ids.chunks(INSERT_CHUNK) {
            let mut q = QueryBuilder::<MySql>::new("SELECT msg_id, message FROM idempotency WHERE created_at >= ");
            q.push_bind(since).push(" AND msg_id IN (");
            let mut list = q.separated(", ");
            chunk.iter().for_each(|id| {
                list.push_bind(*id);
            });
            q.push(")");
            for row in q.build().fetch_all(&mut *tx).await? {
                seen_keys.push((text(&row, 0)?, row.try_get(1)?));
            }
        }
        let mut rows = Vec::new();
        for chunk in seen_keys.chunks(INSERT_CHUNK) {
            let mut q = QueryBuilder::<MySql>::new("SELECT message, user_id, seq FROM inbox WHERE message IN (");
            let mut list = q.separated(", ");
            chunk.iter().for_each(|(_, key)| {
                list.push_bind(*key);
            });
            q.push(") ORDER BY seq");
            for row in q.build().fetch_all(&mut *tx).await? {
                rows.push((row.try_get(0)?, text(&row, 1)?, row.try_get(2)?));
            }
        }
        let mut by_key = seqs_by_key(rows)?;
        let seen: Seen = seen_keys.into_iter().map(|(id, key)| (id, by_key.remove(&key).unwrap_or_default())).collect();

        let users = receivers(batch);
        let mut heads: HashMap<&str, i64> = HashMap::new();
        for chunk in users.chunks(INSERT_CHUNK) {
            let mut q = QueryBuilder::<MySql>::new("SELECT user_id, last_seq FROM user_heads WHERE user_id IN (");
            let mut list = q.separated(", ");
            chunk.iter().for_each(|u| {
                list.push_bind(*u);
            });
            q.push(") ORDER BY user_id FOR UPDATE");
            for row in q.build().fetch_all(&mut *tx).await? {
                let user = text(&row, 0)?;
                if let Some(u) = chunk.iter().find(|u| **u == user) {
                    heads.insert(u, row.try_get(1)?);
                }
            }
        }

        let plan = plan(batch, &seen, heads);
        for chunk in message_runs(&plan.messages, self.insert_budget()) {
            QueryBuilder::<MySql>::new("INSERT INTO messages (id, msg_id, ts, expires_at, data) ")
                .push_values(chunk, |mut b, m| {
                    b.push_bind(m.key).push_bind(m.msg_id).push_bind(m.ts).push_bind(m.expires_at).push_bind(m.data);
                })
                .build()
                .execute(&mut *tx)
                .await?;
        }
        for chunk in plan.keys.chunks(INSERT_CHUNK) {
            QueryBuilder::<MySql>::new("INSERT INTO idempotency (msg_id, message, created_at) ")
                .push_values(chunk, |mut b, (id, key)| {
                    b.push_bind(*id).push_bind(*key).push_bind(to_i64(now_ms));
                })
                .push(" ON DUPLICATE KEY UPDATE message = VALUES(message), created_at = VALUES(created_at)")
                .build()
                .execute(&mut *tx)
                .await?;
        }
        for chunk in plan.inbox.chunks(INSERT_CHUNK) {
            QueryBuilder::<MySql>::new("INSERT INTO inbox (user_id, seq, message, expires_at) ")
                .push_values(chunk, |mut b, (user, seq, key, expires)| {
                    b.push_bind(*user).push_bind(*seq).push_bind(*key).push_bind(*expires);
                })
                .build()
                .execute(&mut *tx)
                .await?;
        }
        for chunk in plan.heads.chunks(INSERT_CHUNK) {
            QueryBuilder::<MySql>::new("INSERT INTO user_heads (user_id, last_seq) ")
                .push_values(chunk, |mut b, (user, last)| {
                    b.push_bind(*user).push_bind(*last);
                })
                .push(" ON DUPLICATE KEY UPDATE last_seq = VALUES(last_seq)")
                .build()
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
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(|r| entry(r.try_get(0)?, text(&r, 1)?, r.try_get(2)?, text(&r, 3)?)).collect()
    }

    async fn cursors(&self, keys: &[CursorKey<'_>]) -> Result<Vec<Cursors>, StoreError> {
        let mut found = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(LOOKUP_CHUNK) {
            let (users, devices) = cursor_key_lists(chunk);
            let rows = sqlx::query(CURSOR_LOOKUP).bind(&users).bind(devices).bind(&users).fetch_all(&self.pool).await?;
            let rows = rows
                .iter()
                .map(|r| Ok((text(r, 0)?, optional_text(r, 1)?, r.try_get(2)?, r.try_get(3)?)))
                .collect::<Result<Vec<_>, StoreError>>()?;
            found.extend(Cursors::for_keys(chunk, rows));
        }
        Ok(found)
    }

    async fn save_acks(&self, acks: &[Ack], now_ms: u64) -> Result<(), StoreError> {
        if acks.is_empty() {
            return Ok(());
        }
        let MergedAcks { devices, users } = merge_acks(acks);
        let mut tx = self.pool.begin().await?;
        for chunk in devices.chunks(INSERT_CHUNK) {
            QueryBuilder::<MySql>::new("INSERT INTO device_cursors (user_id, device_id, acked_seq, updated_at) ")
                .push_values(chunk, |mut b, (user, device, seq)| {
                    b.push_bind(*user).push_bind(*device).push_bind(*seq).push_bind(to_i64(now_ms));
                })
                .push(
                    " ON DUPLICATE KEY UPDATE acked_seq = GREATEST(acked_seq, VALUES(acked_seq)), \
                     updated_at = VALUES(updated_at)",
                )
                .build()
                .execute(&mut *tx)
                .await?;
        }
        for (user, seq) in users {
            sqlx::query("UPDATE user_heads SET acked_seq = GREATEST(acked_seq, ?) WHERE user_id = ?")
                .bind(seq)
                .bind(user)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn log_sessions(&self, events: &[SessionEvent]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for run in runs_of(events, &LOG_ROWS_PER_INSERT) {
            QueryBuilder::<MySql>::new(
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
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn purge(&self, now_ms: u64, idempotency_before_ms: u64, log_before_ms: u64) -> Result<Purged, StoreError> {
        let mut purged = Purged::default();
        let chunks: [(&str, i64, &mut u64); 4] = [
            ("DELETE FROM inbox WHERE expires_at <= ? LIMIT ?", to_i64(now_ms), &mut purged.inbox),
            ("DELETE FROM messages WHERE expires_at <= ? LIMIT ?", to_i64(now_ms), &mut purged.messages),
            (
                "DELETE FROM idempotency WHERE created_at < ? LIMIT ?",
                to_i64(idempotency_before_ms),
                &mut purged.idempotency,
            ),
            ("DELETE FROM session_log WHERE at < ? LIMIT ?", to_i64(log_before_ms), &mut purged.session_log),
        ];
        for (sql, before, count) in chunks {
            loop {
                let done = sqlx::query(sql).bind(before).bind(i64::from(PURGE_CHUNK)).execute(&self.pool).await?;
                *count += done.rows_affected();
                if done.rows_affected() < u64::from(PURGE_CHUNK) {
                    break;
                }
            }
        }
        Ok(purged)
    }
}

/// A text column. Columns with a binary collation (`utf8mb4_bin`, which ids need) reach the
/// client flagged as binary, so they are read as bytes and checked as UTF-8.
fn text(row: &sqlx::mysql::MySqlRow, index: usize) -> Result<String, StoreError> {
    optional_text(row, index)?.ok_or_else(|| StoreError::Corrupt(format!("column {index} is NULL")))
}

/// A text column that may be NULL, read as [`text`] reads one.
fn optional_text(row: &sqlx::mysql::MySqlRow, index: usize) -> Result<Option<String>, StoreError> {
    let bytes: Option<Vec<u8>> = row.try_get(index)?;
    bytes
        .map(|b| String::from_utf8(b).map_err(|e| StoreError::Corrupt(format!("column {index} is not UTF-8: {e}"))))
        .transpose()
}
