-- The session log's index by user goes (standalone mode). Every session open and close inserted
-- a random key into it; once the index outgrew the writer's page cache each insert read and
-- rewrote a page of its own: ~30 µs per event at a million rows, against ~2 µs without it
-- (`ops/bench/session-log-index.py`, BENCHMARKS.md "The session log without its index by user").
-- A lookup of one user's opens and closes scans the log instead (retention bounds it).
DROP INDEX IF EXISTS session_log_user;
