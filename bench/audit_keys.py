"""`audit list --name K` on a long trail: one page through the key index vs a scan of the events' own
`secret_name` column (what a filter without the index must do, and it would still miss bulk reads).

Run by hand: ``.venv/bin/python bench/audit_keys.py [--events 200000]`` (SQLite in a temporary
directory, migrated to head). It writes N single-read events with their key rows straight in SQL: one
in five reads the frequent key, one in a thousand a rare one, the rest spread over 500 names. Then it
times, best of several runs, the first page (100 events, newest first) of:

  a) index:  the statement `audit list --name` runs (`broker.repositories.audit.search_statement`
             with a key), for the frequent and the rare key;
  b) scan:   the same page filtered on `audit_events.secret_name` without the index, for the rare key.

It prints each time and the ratio b/a for the rare key: the index must make a page cost its own size,
so the ratio grows with N.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine

from broker.db import migrate
from broker.repositories import audit as audit_repo

FILL = """
WITH RECURSIVE i(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM i WHERE n < :n)
INSERT INTO audit_events (occurred_at, request_id, method, route, action, outcome, status, seq, project,
                          environment, secret_name)
SELECT '2026-12-04 12:00:00', 'r' || n, 'GET', '/x', 'secret.read', 'ok', 200, n, 'microblog', 'production',
       CASE WHEN n % 5 = 0 THEN 'DATABASE_URL' WHEN n % 1000 = 1 THEN 'RARE' ELSE 'N' || (n % 500) END
FROM i
"""
KEYS = """
INSERT INTO audit_event_keys (event_id, seq, project, environment, name)
SELECT id, seq, project, environment, secret_name FROM audit_events
"""


def best_ms(conn: Any, stmt: Any, runs: int) -> tuple[float, int]:
    """(best time in ms, rows) of `runs` executions."""
    best, rows = float("inf"), 0
    for _ in range(runs):
        start = time.perf_counter()
        rows = len(conn.execute(stmt).all())
        best = min(best, time.perf_counter() - start)
    return best * 1000, rows


def main() -> int:
    """Fill a trail, time the pages, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trail.db"
        migrate.upgrade(f"sqlite+aiosqlite:///{path}")
        with sqlite3.connect(path) as raw:
            raw.execute(FILL.replace(":n", str(args.events)))
            raw.execute(KEYS)
        engine = create_engine(f"sqlite:///{path}")
        page = {"cursor": None, "newest_first": True, "limit": 100}
        with engine.connect() as conn:
            frequent = best_ms(
                conn, audit_repo.search_statement([], key=audit_repo.KeyFilter("DATABASE_URL"), **page), 20
            )
            rare = best_ms(
                conn, audit_repo.search_statement([], key=audit_repo.KeyFilter("RARE"), **page), 20
            )
            scan = best_ms(
                conn,
                audit_repo.search_statement([audit_repo.column("secret_name") == "RARE"], key=None, **page),
                5,
            )
        engine.dispose()
    print(f"{args.events} events, first page of 100, best of several runs (SQLite)")
    print(f"a) index, frequent key (1 in 5):   {frequent[0]:8.2f} ms  ({frequent[1]} rows)")
    print(f"a) index, rare key (1 in 1000):    {rare[0]:8.2f} ms  ({rare[1]} rows)")
    print(f"b) column scan, rare key:          {scan[0]:8.2f} ms  ({scan[1]} rows)")
    print(f"ratio b/a (rare key): {scan[0] / rare[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
