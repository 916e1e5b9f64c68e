"""The console's trail pages stay a page's cost on a long trail: EXPLAIN QUERY PLAN of the one search
statement (`broker.repositories.audit.search_statement`) for the unfiltered keyset page, a deep page, a
filter on a column and a time range. SQLite only, the default database the console bench measures
(bench/console.py); the key filter's plan is pinned on both databases in test_key_answer.py."""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from broker.repositories import audit as audit_repo
from tests.conftest import sqlite_db

EVENTS = 20_000
# One event every 6 minutes from 2026-01-01 (20,000 events: about 83 days), 40 actors.
FILL = f"""
WITH RECURSIVE i(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM i WHERE n < {EVENTS})
INSERT INTO audit_events (occurred_at, request_id, method, route, action, outcome, status, seq, project,
                          environment, secret_name, actor_name)
SELECT datetime('2026-01-01', '+' || (n * 6) || ' minutes'), 'r' || n, 'GET', '/x', 'secret.read', 'ok',
       200, n, 'microblog', 'production', 'N' || (n % 500), 'bot-' || (n % 40)
FROM i
"""


@pytest.fixture
def trail(tmp_path: Path, sqlite_template: Path) -> Any:
    """An engine on a migrated SQLite trail of EVENTS linked events, analysed as a long-running one is."""
    url = sqlite_db(tmp_path / "trail.db", sqlite_template)
    path = url.removeprefix("sqlite+aiosqlite:///")
    with contextlib.closing(sqlite3.connect(path)) as raw, raw:
        raw.execute(FILL)
        raw.execute("ANALYZE")
    engine = create_engine(f"sqlite:///{path}")
    yield engine
    engine.dispose()


def _plan(engine: Any, conditions: list[Any], cursor: int | None) -> str:
    stmt = audit_repo.search_statement(conditions, key=None, cursor=cursor, newest_first=True, limit=100)
    compiled = stmt.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
    with engine.connect() as conn:
        return "\n".join(str(row[-1]) for row in conn.execute(text("EXPLAIN QUERY PLAN " + str(compiled))))


@pytest.mark.parametrize("cursor", [None, 51, EVENTS // 2])
def test_unfiltered_pages_walk_the_sequence_index_without_a_sort(trail: Any, cursor: int | None) -> None:
    """The first page, the last page and one in the middle: a range on the unique seq index, in order."""
    plan = _plan(trail, [], cursor)
    assert "SEARCH audit_events USING INDEX sqlite_autoindex_audit_events_1" in plan, plan
    assert "TEMP B-TREE" not in plan, plan


def test_a_column_filter_walks_the_sequence_index_without_a_sort(trail: Any) -> None:
    """An actor filter reads events newest first through the seq index and stops at the page's size."""
    plan = _plan(trail, [audit_repo.column("actor_name") == "bot-3"], None)
    assert "USING INDEX sqlite_autoindex_audit_events_1" in plan and "TEMP B-TREE" not in plan, plan


def test_a_narrow_time_range_uses_the_time_index(trail: Any) -> None:
    """A week of an 83-day trail is found through ix_audit_events_occurred_at (only its rows are sorted),
    not by walking every newer event."""
    col = audit_repo.column
    week = [
        col("occurred_at") >= datetime(2026, 2, 1, tzinfo=UTC),
        col("occurred_at") < datetime(2026, 2, 8, tzinfo=UTC),
    ]
    plan = _plan(trail, week, None)
    assert "USING INDEX ix_audit_events_occurred_at" in plan, plan
    assert "SCAN audit_events" not in plan, plan
