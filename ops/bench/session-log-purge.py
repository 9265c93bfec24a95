#!/usr/bin/env python3
"""The SQLite session log's purge without an index by time (standalone schema, rowid order).

Fills a log of ROWS lines in time order, of which OLD are older than the cut-off, then purges
them in chunks of 5,000 the way `SqliteStore::purge` does — the end of the old lines looked up
once, then chunks deleted by id — and, for comparison, with that lookup repeated in every chunk.
Prints the milliseconds each purge takes, and the lookup alone when nothing is old.

    python3 ops/bench/session-log-purge.py [ROWS=1000000] [OLD=200000]
"""
import os
import sqlite3
import sys
import tempfile
import time

CHUNK = 5000
SCHEMA = """CREATE TABLE session_log (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, event TEXT NOT NULL,
    session_id TEXT NOT NULL, node TEXT NOT NULL, user_id TEXT NOT NULL, device_id TEXT, code INTEGER)"""
OLD_END = """SELECT COALESCE((SELECT id FROM session_log WHERE at >= ?1 ORDER BY id LIMIT 1),
    (SELECT MAX(id) FROM session_log) + 1, 0)"""
CHUNK_BY_ID = "DELETE FROM session_log WHERE id IN (SELECT id FROM session_log WHERE id < ? ORDER BY id LIMIT ?)"
CHUNK_WITH_LOOKUP = f"DELETE FROM session_log WHERE id IN (SELECT id FROM session_log WHERE id < ({OLD_END}) ORDER BY id LIMIT ?2)"


def log(path, rows):
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(SCHEMA)
    db.execute("BEGIN")
    db.executemany("INSERT INTO session_log (at, event, session_id, node, user_id) VALUES (?, 'open', ?, 'node-1', ?)",
                   ((i, "%016x" % i, "user-%d" % i) for i in range(rows)))
    db.execute("COMMIT")
    return db


def purge(db, cutoff, once):
    started, deleted = time.perf_counter(), 0
    end = db.execute(OLD_END, (cutoff,)).fetchone()[0] if once else None
    while True:
        n = (db.execute(CHUNK_BY_ID, (end, CHUNK)) if once else db.execute(CHUNK_WITH_LOOKUP, (cutoff, CHUNK))).rowcount
        deleted += n
        if n < CHUNK:
            return deleted, (time.perf_counter() - started) * 1000


def main():
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    old = int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
    for once in (True, False):
        with tempfile.TemporaryDirectory() as d:
            db = log(os.path.join(d, "log.db"), rows)
            how = "end looked up once" if once else "end looked up per chunk"
            t = time.perf_counter()
            db.execute(OLD_END, (0,)).fetchone()
            print(f"{rows:,} lines, nothing old: the lookup {(time.perf_counter() - t) * 1000:.2f} ms")
            deleted, ms = purge(db, old, once)
            print(f"{rows:,} lines, {old:,} old, {how}: {deleted:,} deleted in {ms:.0f} ms")


if __name__ == "__main__":
    main()
