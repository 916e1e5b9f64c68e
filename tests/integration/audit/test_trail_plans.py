"""The console's trail pages stay a page's cost on a long trail: EXPLAIN QUERY PLAN of the one search
statement (`broker.repositories.audit.search_statement`) for the unfiltered keyset page, a deep page, the
actor, action and outcome filters (their (column, seq) indexes, revision 0009) and a time range. On SQLite,
the default database the console bench measures (bench/console.py); the filters' indexes on PostgreSQL too
(after ANALYZE, as autovacuum would have done). The key filter's plan is pinned on both databases in
test_key_answer.py."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.dialects import postgresql

from broker.repositories import audit as audit_repo
from tests.conftest import sqlite_db

EVENTS = 20_000
# One event every 6 minutes from 2026-01-01 (20,000 events: about 83 days), 40 actors; six reads in ten,
# then a write, a deploy bundle and an export; one in ten denied.
FILL = f"""
WITH RECURSIVE i(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM i WHERE n < {EVENTS})
INSERT INTO audit_events (occurred_at, request_id, method, route, action, outcome, status, seq, project,
                          environment, secret_name, actor_name)
SELECT datetime('2026-01-01', '+' || (n * 6) || ' minutes'), 'r' || n, 'GET', '/x',
       CASE n % 10 WHEN 0 THEN 'secret.write' WHEN 1 THEN 'deploy.bundle' WHEN 2 THEN 'env.export'
                   ELSE 'secret.read' END,
       CASE WHEN n % 10 = 9 THEN 'denied' ELSE 'ok' END, 200, n, 'microblog', 'production', 'N' || (n % 500),
       'bot-' || (n % 40)
FROM i
"""
# The same trail on PostgreSQL.
PG_FILL = f"""
INSERT INTO audit_events (occurred_at, request_id, method, route, action, outcome, status, seq, project,
                          environment, secret_name, actor_name)
SELECT timestamptz '2026-01-01 00:00:00+00' + n * interval '6 minutes', 'r' || n, 'GET', '/x',
       CASE n % 10 WHEN 0 THEN 'secret.write' WHEN 1 THEN 'deploy.bundle' WHEN 2 THEN 'env.export'
                   ELSE 'secret.read' END,
       CASE WHEN n % 10 = 9 THEN 'denied' ELSE 'ok' END, 200, n, 'microblog', 'production', 'N' || (n % 500),
       'bot-' || (n % 40)
FROM generate_series(1, {EVENTS}) AS n
"""
# Each filter with its index: a rare value, a frequent one and one no event has (the whole trail before).
FILTERS = [
    ("actor_name", "bot-3", "ix_audit_events_actor_seq"),
    ("actor_name", "nobody", "ix_audit_events_actor_seq"),
    ("action", "secret.write", "ix_audit_events_action_seq"),
    ("action", "audit.export", "ix_audit_events_action_seq"),
    ("outcome", "denied", "ix_audit_events_outcome_seq"),
    ("outcome", "error", "ix_audit_events_outcome_seq"),
]


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


@pytest.fixture(scope="module")
def pg_trail(pg_cluster: Any) -> Any:
    """A database of the session's PostgreSQL cluster (migrated to head) holding the same trail, analysed."""
    db = f"trail_plans_{os.getpid()}"
    pg_cluster.psql(f"CREATE DATABASE {db} TEMPLATE strongroom_template")
    pg_cluster.psql(PG_FILL, db=db)
    pg_cluster.psql("ANALYZE audit_events", db=db)
    return pg_cluster, db


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


@pytest.mark.parametrize(("column", "value", "index"), FILTERS)
@pytest.mark.parametrize("cursor", [None, EVENTS // 2])
def test_an_actor_action_or_outcome_filter_walks_its_own_index_without_a_sort(
    trail: Any, column: str, value: str, index: str, cursor: int | None
) -> None:
    """`actor=`, `action=` and `outcome=` read a range of their (column, seq) index newest first and stop
    at the page's size: a rare or absent value no longer walks the whole trail."""
    plan = _plan(trail, [audit_repo.column(column) == value], cursor)
    assert f"SEARCH audit_events USING INDEX {index} ({column}=?" in plan, plan
    assert "TEMP B-TREE" not in plan, plan


def test_the_filters_the_search_builds_use_those_indexes(trail: Any) -> None:
    """The conditions `_conditions` makes of an EventQuery (not only a bare equality) reach the indexes;
    an action family (`deploy`, `secret.*`) still walks the sequence index in order."""
    from broker.services.audit import search

    now = datetime(2026, 3, 1, tzinfo=UTC)
    for query, index in (
        (search.EventQuery(actor="bot-3"), "ix_audit_events_actor_seq"),
        (search.EventQuery(action="secret.write"), "ix_audit_events_action_seq"),
        (search.EventQuery(outcome="denied"), "ix_audit_events_outcome_seq"),
        (search.EventQuery(actor="bot-3", outcome="denied"), "ix_audit_events_"),
        (search.EventQuery(action="deploy"), "sqlite_autoindex_audit_events_1"),
        (search.EventQuery(action="secret.*"), "sqlite_autoindex_audit_events_1"),
    ):
        where, _ = search._conditions(query, now)
        plan = _plan(trail, where, None)
        assert f"USING INDEX {index}" in plan and "TEMP B-TREE" not in plan, (query, plan)


@pytest.mark.parametrize(("column", "value", "index"), FILTERS)
def test_the_filter_indexes_on_postgresql(pg_trail: Any, column: str, value: str, index: str) -> None:
    """The same filters on PostgreSQL, after ANALYZE: a value no event has (the costliest search before,
    which read the whole trail) is an index scan of the filter's own index; a frequent one may walk the
    sequence index instead (a page is found within a few thousand rows). Never a sort or a sequential scan."""
    cluster, db = pg_trail
    stmt = audit_repo.search_statement(
        [audit_repo.column(column) == value], key=None, cursor=None, newest_first=True, limit=100
    )
    compiled = stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
    plan = cluster.psql("EXPLAIN " + str(compiled).replace("\n", " "), db=db)
    absent = value in ("nobody", "audit.export", "error")
    used = [f"Index Scan Backward using {index} on audit_events"]
    if not absent:
        used.append("Index Scan Backward using uq_audit_events_seq on audit_events")
    assert any(u in plan for u in used), plan
    assert "Sort" not in plan and "Seq Scan" not in plan, plan


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


ADDRESSES = [
    f"10.{a}.{b}.{c}" for a in (0, 1, 2, 17, 200) for b in (0, 15, 16, 31, 255) for c in (0, 7, 240, 255)
]
# Texts a source column may hold that no IPv4 block contains (Python's own check refuses them too).
ODD = [
    "::ffff:10.1.16.7",
    "010.1.16.7",
    "10.1.16.7x",
    "10.1.16",
    "",
    "2001:db8::1",
    "110.1.16.7",
    "10.11.16.7",
]


@pytest.mark.parametrize(
    "block",
    [
        "10.0.0.0/8",
        "10.1.0.0/16",
        "10.1.16.0/20",
        "10.0.0.0/9",
        "10.1.16.0/24",
        "10.1.16.240/28",
        "10.1.16.0/31",
        "2001:db8::/32",
    ],
)
def test_a_cidr_filter_is_narrowed_in_sql_to_exactly_the_block(trail: Any, block: str) -> None:
    """`source=` a CIDR block: the SQL the search runs keeps every stored address in the block and drops
    every other well-formed address (so a page no longer fetches and checks thousands of rows in Python)."""
    from broker.services.audit import search

    with trail.begin() as conn:
        conn.execute(text("DELETE FROM audit_events"))
        for seq, addr in enumerate(ADDRESSES + ODD, start=1):
            conn.execute(
                text(
                    "INSERT INTO audit_events (occurred_at, request_id, method, route, outcome, status, seq, "
                    "source_addr) VALUES ('2026-01-01', 'r', 'GET', '/x', 'ok', 200, :seq, :addr)"
                ),
                {"seq": seq, "addr": addr},
            )
    where, network = search._conditions(search.EventQuery(source=block), datetime.now(UTC))
    assert network is not None  # the exact check still runs after SQL
    stmt = audit_repo.search_statement(where, key=None, cursor=None, newest_first=True, limit=1000)
    with trail.connect() as conn:
        kept = {row.source_addr for row in conn.execute(stmt)}
    net = ipaddress.ip_network(block)

    def inside(addr: str) -> bool:
        try:
            return ipaddress.ip_address(addr) in net
        except ValueError:
            return False

    exact = {a for a in ADDRESSES + ODD if inside(a)}
    assert exact  # every block holds some of the stored addresses
    # Nothing in the block is lost; every well-formed address SQL keeps is in the block (the few
    # malformed texts that share its prefix are dropped by the exact check after SQL).
    assert exact <= kept
    assert {a for a in kept if a in ADDRESSES or inside(a)} == exact
    assert len(kept - exact) <= 3, kept - exact
