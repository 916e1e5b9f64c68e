"""The chainer under a backlog and under contention, in a real database (SQLite and PostgreSQL).

A backlog of unlinked events is linked by one pass in one UPDATE (on PostgreSQL a statement run per event
is prepared, and its generic plan costs in proportion to the backlog); the backlog is read through the
partial index of unlinked events; and a background pass that finds another process's chainer holding
the lock returns at once without linking (two brokers still write one chain: test_two_brokers.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from broker.repositories import audit as audit_repo
from broker.services.audit import chaining, runner
from broker.services.audit.events import BATCH
from tests.integration.audit.conftest import AuditApi, broker
from tests.integration.audit.test_chain import assert_linear

# Far above PostgreSQL's five custom plans before a generic one, well below one pass's BATCH.
BACKLOG = 300


@pytest.fixture
def quiet(db_url: str, tmp_path: Path) -> Iterator[AuditApi]:
    """A broker whose background chainer wakes only when a request kicks it (an hour between timed passes)."""
    with broker(db_url, tmp_path, audit_checkpoint_interval=3600) as api:
        api.chain()
        api.run(_fresh_chainer, api)
        yield api


async def _fresh_chainer(api: AuditApi) -> None:
    """Replace the background chainer with one that no request has woken yet. A pass woken during set-up
    could otherwise run whenever the loop got to it, after a test planted its backlog (a loaded machine made
    it so: the backlog linked before the test's lock was taken)."""
    trail = api.rt.audit
    task = trail._task
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    trail._wake = asyncio.Event()
    trail._task = asyncio.create_task(runner._run(api.rt), name="strongroom-audit-chainer")


def plant_backlog(api: AuditApi, n: int, tag: str) -> None:
    """n committed, unlinked events in one transaction (as a broker's appender leaves them on PostgreSQL)."""
    if api.rt.engine.dialect.name == "postgresql":
        series = "SELECT i AS n FROM generate_series(1, :n) AS i"
    else:
        series = (
            "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < :n) SELECT n FROM s"
        )
    api.sql(
        "INSERT INTO audit_events (occurred_at, request_id, method, route, action, outcome, status, "
        f"project, environment, secret_name) SELECT CURRENT_TIMESTAMP, :tag || n, 'GET', '/x', "
        f"'secret.read', 'ok', 200, 'microblog', 'production', 'K' || n FROM ({series}) AS q",
        n=n,
        tag=tag,
    )


def plant_history(api: AuditApi, n: int) -> None:
    """n linked events far beyond the chain's head (a long history; never verified by these tests)."""
    if api.rt.engine.dialect.name == "postgresql":
        api.sql(
            "INSERT INTO audit_events (occurred_at, request_id, method, route, outcome, status, seq) "
            "SELECT now(), 'h' || i, 'GET', '/x', 'ok', 200, 1000000 + i FROM generate_series(1, :n) AS i",
            n=n,
        )
    else:
        api.sql(
            "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < :n) "
            "INSERT INTO audit_events (occurred_at, request_id, method, route, outcome, status, seq) "
            "SELECT '2026-12-04 12:00:00', 'h' || n, 'GET', '/x', 'ok', 200, 1000000 + n FROM s",
            n=n,
        )


def unlinked(api: AuditApi) -> int:
    return int(api.query(text("SELECT count(*) FROM audit_events WHERE seq IS NULL"))[0][0])


def test_a_backlog_is_linked_by_one_pass_in_one_statement(quiet: AuditApi) -> None:
    """Whoever links the backlog (this call, or the background chainer if it woke first) does it with one
    UPDATE of audit_events, and the chain stays one line that verifies."""
    api = quiet
    updates: list[tuple[str, Any]] = []

    def seen(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("UPDATE AUDIT_EVENTS"):
            updates.append((statement, many))

    sync_engine = api.rt.engine.sync_engine
    before = len(api.linked())
    event.listen(sync_engine, "before_cursor_execute", seen)
    try:
        plant_backlog(api, BACKLOG, "backlog-")
        assert unlinked(api) == BACKLOG
        api.chain()
    finally:
        event.remove(sync_engine, "before_cursor_execute", seen)
    assert unlinked(api) == 0
    assert len(updates) == 1, updates
    if api.rt.engine.dialect.name == "postgresql":
        assert "unnest" in updates[0][0] and not updates[0][1]
    rows = assert_linear(api)
    assert [r["request_id"] for r in rows[before:]] == [f"backlog-{i}" for i in range(1, BACKLOG + 1)]
    assert api.verify().ok


def test_the_backlog_is_read_through_the_partial_index(quiet: AuditApi) -> None:
    """EXPLAIN of pending() on a long linked history with a backlog of two passes: the partial index of
    unlinked events drives it in id order on PostgreSQL (after ANALYZE), stopping after one pass's rows,
    with no scan of the history and no sort of the backlog."""
    api = quiet
    plant_history(api, 20_000)
    plant_backlog(api, 2 * BATCH, "b-")
    if api.rt.engine.dialect.name == "postgresql":
        api.sql("ANALYZE audit_events")
    stmt = audit_repo.pending_statement(limit=1000)
    compiled = stmt.compile(dialect=api.rt.engine.dialect, compile_kwargs={"literal_binds": True})
    explain = "EXPLAIN QUERY PLAN " if api.rt.engine.dialect.name == "sqlite" else "EXPLAIN "
    plan = "\n".join(str(row[-1]) for row in api.query(text(explain + str(compiled))))
    if api.rt.engine.dialect.name == "sqlite":
        # SQLite may equally search the unique seq index for NULL: its entries for one key are in id order.
        assert "SEARCH audit_events USING" in plan, plan
        assert "SCAN audit_events" not in plan and "TEMP B-TREE" not in plan, plan
    else:
        assert "ix_audit_events_unlinked" in plan, plan
        assert "Seq Scan" not in plan and "Sort" not in plan, plan


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_pass_that_finds_the_lock_held_returns_at_once_without_linking(quiet: AuditApi) -> None:
    """Forced, not timed: a transaction standing for another broker's chainer holds the chain lock while
    this broker's background pass runs; the pass returns skipped, with nothing linked and no connection
    left waiting. Once the holder commits, the next pass links the backlog and signs the checkpoint that
    fell due meanwhile (a skipped pass delays it only until the lock is free)."""
    api = quiet
    plant_backlog(api, 50, "held-")

    async def contend() -> tuple[chaining.ChainPass, chaining.ChainPass, int, int]:
        async with api.rt.engine.connect() as holder:
            await holder.begin()
            await audit_repo.lock_chain(holder)
            # wait_for only turns a regression (a pass that blocks on the lock held right here, which
            # would never be released) into a failure instead of a hung test run.
            skipped = await asyncio.wait_for(chaining.chain(api.rt, wait=False, force_checkpoint=True), 120)
            async with api.rt.engine.connect() as conn:
                left = await audit_repo.count_pending(conn)
                checkpoint = await audit_repo.last_checkpoint(conn)
            await holder.rollback()
        after = await chaining.chain(api.rt, wait=False, force_checkpoint=True)
        return skipped, after, left, int(checkpoint.seq) if checkpoint is not None else 0

    before = api.checkpoint_rows()
    skipped, after, left, checkpoint_seq = api.run(contend)
    assert skipped.skipped and skipped.linked == 0 and skipped.checkpoint is None
    assert left == 50
    assert checkpoint_seq == (before[-1][0] if before else 0)
    assert api.rt.audit.counters["chain_passes_skipped"] >= 1
    assert not after.skipped and after.linked >= 50
    assert unlinked(api) == 0
    assert after.checkpoint is not None and after.checkpoint.seq == after.head_seq
    assert_linear(api)
    assert api.verify().ok


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_the_link_statements_generic_plan_finds_each_event_by_id(quiet: AuditApi) -> None:
    """The plan PostgreSQL falls back to for the prepared link (a generic plan, forced here), on a long
    history with a backlog: no scan of the history, and run once a pass, never once an event."""
    api = quiet
    plant_history(api, 20_000)
    plant_backlog(api, BACKLOG, "generic-")
    api.sql("ANALYZE audit_events")

    async def go() -> str:
        async with api.rt.engine.connect() as conn:
            await conn.execute(text("SET plan_cache_mode = force_generic_plan"))
            # The statement as the driver sends it ($1..$4), prepared under a name so EXPLAIN can run it.
            sql = str(audit_repo._LINK_PG.compile(dialect=conn.dialect))
            await conn.exec_driver_sql(f"PREPARE chain_link AS {sql}")
            rows = (await conn.exec_driver_sql("EXPLAIN EXECUTE chain_link(NULL, NULL, NULL, NULL)")).all()
            await conn.rollback()
            return "\n".join(str(row[0]) for row in rows)

    plan = api.run(go)
    assert "Seq Scan on audit_events" not in plan, plan


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_the_background_chainer_tries_again_after_a_skipped_pass(
    quiet: AuditApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forced, not timed: the broker's own chainer is woken while another transaction holds the lock, so
    its pass is skipped; once the lock is free it links the backlog by itself, with no further wake-up
    and long before its next timed pass (an hour away): a skip never strands events or a checkpoint."""
    api = quiet
    passes: list[chaining.ChainPass] = []
    skipped, linked = asyncio.Event(), asyncio.Event()

    async def watched(rt: Any, **kwargs: Any) -> chaining.ChainPass:
        result = await chaining.chain(rt, **kwargs)
        passes.append(result)
        (skipped if result.skipped else linked if result.linked else asyncio.Event()).set()
        return result

    monkeypatch.setattr(runner, "chain", watched)
    plant_backlog(api, 40, "retry-")

    async def go() -> None:
        async with api.rt.engine.connect() as holder:
            await holder.begin()
            await audit_repo.lock_chain(holder)
            api.rt.audit.kick(inline=False)
            # wait_for only turns a hang (the behaviour under test missing) into a failure.
            await asyncio.wait_for(skipped.wait(), 120)
            await holder.rollback()
        await asyncio.wait_for(linked.wait(), 120)

    api.run(go)
    assert passes[0].skipped and passes[0].linked == 0
    assert unlinked(api) == 0
    assert_linear(api)
