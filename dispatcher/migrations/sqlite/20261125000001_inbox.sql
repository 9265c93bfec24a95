-- The durable inbox, SQLite dialect (standalone mode). Times are ms since the Unix epoch.

-- One row per stored durable message; `id` is a UUIDv7 assigned when it is stored.
CREATE TABLE messages (
    id BLOB PRIMARY KEY,
    msg_id TEXT NOT NULL,
    ts INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    data TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX messages_expiry ON messages (expires_at);

-- Publisher-given ids seen within the idempotency window.
CREATE TABLE idempotency (
    msg_id TEXT PRIMARY KEY,
    message BLOB NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX idempotency_age ON idempotency (created_at);

-- Per-user inbox: seq is strictly +1 per user.
CREATE TABLE inbox (
    user_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    message BLOB NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, seq)
) WITHOUT ROWID;
CREATE INDEX inbox_expiry ON inbox (expires_at);

-- Per-user head (last seq assigned) and user-level acked cursor (highest acked by any device).
CREATE TABLE user_heads (
    user_id TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL,
    acked_seq INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- Per-device acked cursor.
CREATE TABLE device_cursors (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    acked_seq INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_id)
) WITHOUT ROWID;

-- Session lifecycle: opens and closes, with the close code.
CREATE TABLE session_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    event TEXT NOT NULL,
    session_id TEXT NOT NULL,
    node TEXT NOT NULL,
    user_id TEXT NOT NULL,
    device_id TEXT,
    code INTEGER
);
CREATE INDEX session_log_at ON session_log (at);
CREATE INDEX session_log_user ON session_log (user_id, at);
