"""The hash chain in a real database (SQLite and PostgreSQL): every event linked once, in one line; signed
checkpoints every N events or T seconds, in the directory and the table; E34 clock steps."""

from __future__ import annotations

import itertools
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from broker.audit.canonical import GENESIS, record_hash
from broker.audit.checkpoint import parse, series_problem
from broker.models import audit_events
from broker.services import audit as svc
from broker.services.runtime import utcnow
from tests.integration.audit.conftest import AuditApi, broker


def assert_linear(api: AuditApi) -> list[dict[str, object]]:
    """Seq 1..N without gaps, each prev_hash the hash before it, each hash its record's."""
    rows = api.linked()
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    prev = GENESIS
    for row in rows:
        assert row["prev_hash"] == prev
        assert row["hash"] == record_hash(svc.to_record(row))
        prev = str(row["hash"])
    return rows  # type: ignore[return-value]


def test_every_event_is_linked_once_and_the_chain_verifies(api: AuditApi) -> None:
    api.traffic()
    api.chain()
    rows = assert_linear(api)
    assert len(rows) == len(api.all_audit())  # nothing left unlinked
    report = api.verify()
    assert report.ok, report.problem
    assert report.events == len(rows)
    if api.rt.settings.resolved_database_url.startswith("sqlite"):
        # SQLite links in the writing transaction: a request's event has its seq when the response arrives.
        r = api.get("common", "K0")
        assert api.one_audit(r.headers["x-request-id"])["seq"] is not None


def test_unlinked_rows_are_linked_oldest_first(api: AuditApi) -> None:
    """Events written before the chain existed (migration 0001), or whose chainer died, are picked up."""
    api.chain()
    before = len(api.linked())

    def add(n: int) -> None:
        async def go() -> None:
            async with api.rt.engine.begin() as conn:
                for i in range(n):
                    await conn.execute(
                        insert(audit_events).values(
                            occurred_at=utcnow(),
                            request_id=f"legacy-{i}",
                            method="GET",
                            route="/legacy",
                            outcome="ok",
                            status=200,
                        )
                    )

        api.run(go)

    add(3)
    api.chain()
    rows = assert_linear(api)
    assert [r["request_id"] for r in rows[before : before + 3]] == ["legacy-0", "legacy-1", "legacy-2"]
    assert api.verify().ok


def test_a_duplicate_seq_is_impossible(api: AuditApi) -> None:
    api.chain()
    head = api.linked()[-1]

    async def fork() -> None:
        async with api.rt.engine.begin() as conn:
            await conn.execute(
                insert(audit_events).values(
                    seq=head["seq"],
                    prev_hash=head["prev_hash"],
                    hash="f" * 64,
                    occurred_at=utcnow(),
                    request_id="fork",
                    method="GET",
                    route="/fork",
                    outcome="ok",
                    status=200,
                )
            )

    with pytest.raises(IntegrityError):
        api.run(fork)


def test_checkpoints_every_n_events(db_url: str, tmp_path: Path) -> None:
    with broker(db_url, tmp_path, audit_checkpoint_every=4) as api:
        api.traffic(8)
        api.chain()
        head = api.linked()[-1]["seq"]
        files = sorted(api.checkpoint_dir.glob("checkpoint-*.json"))
        signed = [parse(p.read_bytes()) for p in files]
        assert signed and series_problem(signed, api.rt.audit.signer.public) is None
        seqs = [c.seq for c in signed]
        assert seqs == sorted(seqs) and seqs[-1] > int(head) - 4  # never more than N behind the head
        assert all(b - a >= 4 for a, b in itertools.pairwise(seqs))
        by_seq = {r["seq"]: r["hash"] for r in api.linked()}
        assert all(by_seq[c.seq] == c.checkpoint.head for c in signed)
        # the table mirrors the directory
        assert [seq for seq, _ in api.checkpoint_rows()] == seqs
        assert api.verify().vouched_to == seqs[-1]


def test_checkpoints_every_t_seconds(db_url: str, tmp_path: Path) -> None:
    with broker(db_url, tmp_path, audit_checkpoint_every=1_000_000, audit_checkpoint_interval=60) as api:
        api.traffic(2)
        api.chain()
        assert list(api.checkpoint_dir.glob("checkpoint-*.json")) == []  # neither N events nor T seconds yet
        real = api.rt.clock
        api.rt.clock = lambda: real() + timedelta(seconds=61)
        try:
            api.chain()
        finally:
            api.rt.clock = real
        files = list(api.checkpoint_dir.glob("checkpoint-*.json"))
        assert len(files) == 1
        assert parse(files[0].read_bytes()).seq == api.linked()[-1]["seq"]
        # nothing new, nothing signed however much time passes
        api.rt.clock = lambda: real() + timedelta(seconds=200)
        try:
            api.chain()
        finally:
            api.rt.clock = real
        assert len(list(api.checkpoint_dir.glob("checkpoint-*.json"))) == 1


def test_e34_clock_step_backwards(db_url: str, tmp_path: Path) -> None:
    """A wall clock stepped back ten minutes: seq still increases, a clock_anomaly event is recorded, and
    checkpoint times never run backwards."""
    with broker(db_url, tmp_path) as api:
        api.traffic(2)
        first = api.checkpoint()
        assert first is not None
        real = api.rt.clock
        api.rt.clock = lambda: real() - timedelta(minutes=10)
        try:
            api.traffic(2)
            second = api.checkpoint()
        finally:
            api.rt.clock = real
        rows = assert_linear(api)
        anomalies = [r for r in rows if r["action"] == "audit.clock_anomaly"]
        assert len(anomalies) == 1 and "stepped back 59" in str(anomalies[0]["reason"])
        assert anomalies[0]["outcome"] == "error" and anomalies[0]["actor_type"] == "system"
        stepped = rows[rows.index(anomalies[0]) + 1]
        assert (
            stepped["occurred_at"] < rows[rows.index(anomalies[0]) - 1]["occurred_at"]
        )  # time went back ...
        assert stepped["seq"] > rows[rows.index(anomalies[0]) - 1]["seq"]  # ... seq did not
        assert second is not None and second.checkpoint.time >= first.checkpoint.time
        assert series_problem([first, second], api.rt.audit.signer.public) is None
        assert api.verify().ok
