-- The session log keeps its lines in rowid order only (standalone mode). AUTOINCREMENT kept a
-- counter row of its own up to date at every insert, and the index by time took another write:
-- together ~1 µs of a ~3 µs line, two lines per session (BENCHMARKS.md, "Connects: the session
-- log in rowid order"). Lines are appended in time order, so the purge finds the old ones at the
-- front of the table without an index (`SqliteStore::purge`). Ids stay increasing: a new line
-- takes the largest id plus one, and the purge removes the smallest.
CREATE TABLE session_log_in_rowid_order (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    event TEXT NOT NULL,
    session_id TEXT NOT NULL,
    node TEXT NOT NULL,
    user_id TEXT NOT NULL,
    device_id TEXT,
    code INTEGER
);
INSERT INTO session_log_in_rowid_order (id, at, event, session_id, node, user_id, device_id, code)
    SELECT id, at, event, session_id, node, user_id, device_id, code FROM session_log ORDER BY id;
DROP TABLE session_log;
ALTER TABLE session_log_in_rowid_order RENAME TO session_log;
