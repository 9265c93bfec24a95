#!/usr/bin/env python3
"""The SQLite session log's insert cost with and without an index by user, as the log grows.

Builds the standalone schema (dispatcher/migrations/sqlite, the first migration), adds the index
`session_log_user (user_id, at)` or not, fills the log with N rows of random users, then times
15 inserts of 1,000 rows each (the gateway's flush: one multi-row INSERT, WAL, synchronous=FULL,
the writer's 512 KiB page cache). Prints microseconds per row.

    python3 ops/bench/session-log-index.py [ROWS...]   # default: 0 20000 1000000
"""
import os
import random
import sqlite3
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA = os.path.join(HERE, "../../dispatcher/migrations/sqlite/20261125000001_inbox.sql")
BATCH = 1000
COLUMNS = "(at, event, session_id, node, user_id, device_id, code)"


def rows(n, t):
    return [(t + i, "open", "0192f0a0-aaaa-7bbb-8ccc-%012d" % random.randrange(10**12), "node-1",
             "user-%d" % random.randrange(10**7), None, None) for i in range(n)]


def per_row_us(existing, user_index):
    with tempfile.TemporaryDirectory() as d:
        db = sqlite3.connect(os.path.join(d, "inbox.db"), isolation_level=None)
        db.execute("pragma journal_mode=wal")
        db.execute("pragma synchronous=full")
        db.execute("pragma cache_size=-512")
        db.executescript(open(SCHEMA).read())
        db.execute("drop index if exists session_log_user")
        if user_index:
            db.execute("create index session_log_user on session_log (user_id, at)")
        sql = f"INSERT INTO session_log {COLUMNS} VALUES " + ",".join(["(?,?,?,?,?,?,?)"] * BATCH)
        t0 = int(time.time() * 1000)
        for k in range(existing // BATCH):
            db.execute(sql, [x for r in rows(BATCH, t0 + k * BATCH) for x in r])
        spent = 0.0
        for k in range(15):
            args = [x for r in rows(BATCH, t0 + existing + k * BATCH) for x in r]
            began = time.perf_counter()
            db.execute(sql, args)
            spent += time.perf_counter() - began
        db.close()
        return spent / (15 * BATCH) * 1e6


for existing in [int(a) for a in sys.argv[1:]] or [0, 20000, 1000000]:
    print(f"{existing:>9} rows in the log: with the index by user {per_row_us(existing, True):6.2f} µs per row, "
          f"without {per_row_us(existing, False):6.2f} µs per row", flush=True)
