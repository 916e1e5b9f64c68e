"""B10-B13 against a real database (SQLite and PostgreSQL): rows modified, deleted, swapped and inserted with
SQL, a cut-off tail, a restored older database, forged checkpoints. Each is found by the broker's own
`verify` and by `strongroom audit verify` offline on an export, naming the first bad seq, exit status 1."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from broker.audit.checkpoint import Signer, generate_private_pem
from broker.errors import Unavailable
from broker.services.runtime import utcnow
from tests.integration.audit.conftest import AuditApi, broker, cli_verify, lines
from tests.support import pg


def tamper_and_check(api: AuditApi, mutate: Callable[[AuditApi, int], None], k: int, expected: int) -> None:
    """Apply a mutation at seq k, then: the database verify and the offline verify both name `expected`."""
    mutate(api, k)
    report = api.verify()
    assert not report.ok and report.bad_seq == expected, report.problem
    export = api.tmp / "export.jsonl"
    export.write_bytes(api.export())
    done = cli_verify(export, api.public_key_file(), api.checkpoint_dir)
    assert done.exit_code == 1, done.output
    assert f"FAILED at seq {expected}:" in done.output


def modify(api: AuditApi, k: int) -> None:
    assert api.sql("UPDATE audit_events SET actor_name = 'mallory' WHERE seq = :k", k=k) == 1


def delete(api: AuditApi, k: int) -> None:
    assert api.sql("DELETE FROM audit_events WHERE seq = :k", k=k) == 1


def swap(api: AuditApi, k: int) -> None:
    api.sql("UPDATE audit_events SET seq = -1 WHERE seq = :k", k=k)
    api.sql("UPDATE audit_events SET seq = :k WHERE seq = :k1", k=k, k1=k + 1)
    api.sql("UPDATE audit_events SET seq = :k1 WHERE seq = -1", k1=k + 1)


def insert(api: AuditApi, k: int) -> None:
    rows = api.linked()
    for seq in sorted((int(r["seq"]) for r in rows if int(r["seq"]) >= k), reverse=True):
        api.sql("UPDATE audit_events SET seq = seq + 1 WHERE seq = :s", s=seq)
    before = next(r for r in rows if r["seq"] == k - 1)
    api.sql(
        "INSERT INTO audit_events (seq, prev_hash, hash, occurred_at, request_id, method, route, action, "
        "outcome, status) VALUES (:k, :p, :h, :t, 'forged', 'GET', '/forged', 'secret.read', 'ok', 200)",
        k=k,
        p=before["hash"],
        h="e" * 64,
        t=utcnow(),
    )


@pytest.mark.parametrize(
    ("mutate", "expected_offset"),
    [(modify, 0), (delete, 0), (swap, 0), (insert, 0)],
    ids=["modified", "deleted", "swapped", "inserted"],
)
def test_b10_row_tampering_names_the_first_bad_seq(
    db_url: str, tmp_path: Path, mutate: Callable[[AuditApi, int], None], expected_offset: int
) -> None:
    with broker(db_url, tmp_path, audit_checkpoint_every=1_000_000) as api:
        api.traffic(5)
        api.chain()
        assert api.verify().ok
        k = len(api.linked()) // 2
        tamper_and_check(api, mutate, k, k + expected_offset)


def test_b10_a_rewritten_tail_is_caught_by_the_checkpoint(db_url: str, tmp_path: Path) -> None:
    """Someone who changes a row and recomputes every hash after it still cannot forge the signature."""
    from broker.audit.canonical import record_hash
    from broker.services.audit import to_record

    with broker(db_url, tmp_path) as api:
        api.traffic(4)
        signed = api.checkpoint()
        assert signed is not None
        k = signed.seq // 2
        modify(api, k)
        prev = next(r for r in api.linked() if r["seq"] == k - 1)["hash"]
        for row in api.linked():
            if row["seq"] < k:
                continue
            digest = record_hash(to_record(row, prev_hash=prev))
            api.sql(
                "UPDATE audit_events SET prev_hash = :p, hash = :h WHERE seq = :s",
                p=prev,
                h=digest,
                s=row["seq"],
            )
            prev = digest
        report = api.verify()
        assert report.bad_seq == signed.seq and "signed checkpoint" in (report.problem or "")


def test_b11_tail_truncation_against_the_external_checkpoint(db_url: str, tmp_path: Path) -> None:
    with broker(db_url, tmp_path) as api:
        api.traffic(5)
        signed = api.checkpoint()
        assert signed is not None
        cut = signed.seq - 3
        # The attacker deletes the last records and the database's copies of the checkpoints.
        api.sql("DELETE FROM audit_events WHERE seq > :cut", cut=cut)
        api.sql("DELETE FROM audit_checkpoints")
        report = api.verify()
        assert report.bad_seq == cut + 1 and "truncated" in (report.problem or ""), report.problem
        export = tmp_path / "export.jsonl"
        export.write_bytes(api.export())
        header = lines(export.read_bytes())[0]["export"]
        assert header["to_head"] is True and header["to_seq"] == cut
        # The export itself carries no checkpoint beyond the cut, but the auditor's copy does.
        done = cli_verify(export, api.public_key_file(), api.checkpoint_dir)
        assert done.exit_code == 1 and f"FAILED at seq {cut + 1}: truncated" in done.output, done.output
        # A bounded export (not "up to now") verifies when the auditor says it is one (catalogue 61:
        # the file's own header is not trusted to say so).
        bounded = tmp_path / "bounded.jsonl"
        bounded.write_bytes(api.export(until="2000-01-01"))
        assert cli_verify(bounded, api.public_key_file(), api.checkpoint_dir).exit_code == 1
        assert (
            cli_verify(bounded, api.public_key_file(), api.checkpoint_dir, extra=["--partial"]).exit_code == 0
        )


def snapshot(db_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A copy of the database as it is now (the broker must be stopped)."""
    if db_url.startswith("sqlite"):
        path = Path(db_url.split("///", 1)[1])
        copy = tmp_path / "snapshot.db"
        shutil.copy(path, copy)
        for suffix in ("-wal", "-shm"):
            if Path(str(path) + suffix).exists():
                shutil.copy(str(path) + suffix, str(copy) + suffix)
        return f"sqlite+aiosqlite:///{copy}"
    cluster: pg.Cluster = request.getfixturevalue("pg_cluster")
    name = db_url.rsplit("/", 1)[1]
    cluster.psql(f"CREATE DATABASE {name}_snap TEMPLATE {name}")
    return cluster.url(f"{name}_snap")


def restored_backup(db_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A copy of the database taken before more traffic and a checkpoint the copy does not hold: what
    restoring an older backup looks like. Returns its URL."""
    with broker(db_url, tmp_path) as api:
        api.traffic(3)
    old = snapshot(db_url, tmp_path, request)
    with broker(db_url, tmp_path) as api:
        api.traffic(3)
        assert api.checkpoint() is not None
    return old


def test_b12_an_older_database_is_refused_at_start_up(
    db_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    old = restored_backup(db_url, tmp_path, request)
    with pytest.raises(Unavailable, match="behind the last checkpoint") as err, broker(old, tmp_path):
        pass
    assert "older backup" in err.value.message
    # The current database is fine.
    with broker(db_url, tmp_path) as api:
        assert api.verify().ok


def test_b12_read_only_mode_serves_reads_and_refuses_changes(
    db_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    old = restored_backup(db_url, tmp_path, request)
    published = sorted(p.name for p in (tmp_path / "data" / "audit-checkpoints").glob("checkpoint-*"))
    with broker(old, tmp_path, audit_on_rollback="read-only") as api:
        assert api.rt.audit.read_only is not None and "behind" in api.rt.audit.read_only
        assert api.get("common", "K0").status_code == 200
        r = api.put("common", "K0", "new")
        assert r.status_code == 503 and "read-only" in r.json()["detail"]
        assert api.one_audit(r.headers["x-request-id"])["outcome"] == "error"
        status = api.client.get("/v1/audit/status", headers=api.h).json()
        assert "behind" in status["read_only"]
        assert any(e["action"] == "audit.rollback_detected" for e in api.all_audit())
        api.chain()
        assert api.checkpoint() is None  # no checkpoint of the diverging chain is ever signed
    assert sorted(p.name for p in (tmp_path / "data" / "audit-checkpoints").glob("checkpoint-*")) == published


def test_b13_a_checkpoint_signed_by_another_key_is_refused(db_url: str, tmp_path: Path) -> None:
    with broker(db_url, tmp_path) as api:
        api.traffic(2)
        api.chain()
        head = api.linked()[-1]
        directory = api.checkpoint_dir
    mallory = Signer.from_pem(generate_private_pem())
    forged = mallory.sign(seq=int(head["seq"]), head=str(head["hash"]), time="2099-01-01T00:00:00.000000Z")
    (directory / f"checkpoint-{forged.seq:020d}.json").write_text(forged.document())
    with pytest.raises(Unavailable, match="not valid for key"), broker(db_url, tmp_path):
        pass


def test_b13_shrinking_or_backwards_checkpoints_are_refused(db_url: str, tmp_path: Path) -> None:
    with broker(db_url, tmp_path) as api:
        api.traffic(3)
        first = api.checkpoint()
        api.traffic(1)
        second = api.checkpoint()
        assert first is not None and second is not None
        export = tmp_path / "export.jsonl"
        export.write_bytes(api.export())
        assert cli_verify(export, api.public_key_file(), api.checkpoint_dir).exit_code == 0
        signer, directory = api.rt.audit.signer, api.checkpoint_dir
    # A validly signed checkpoint (say, a replayed or mis-made one) that vouches for less, later.
    shrunk = signer.sign(seq=first.seq - 1, head="a" * 64, time="2099-01-01T00:00:00.000000Z")
    other = tmp_path / "other"
    other.mkdir()
    (other / "checkpoint-x.json").write_text(shrunk.document())
    done = cli_verify(export, api.public_key_file(), other)
    assert done.exit_code == 1 and "shrank or the time ran backwards" in done.output
    (directory / f"checkpoint-{shrunk.seq:020d}.json").write_text(shrunk.document())
    with pytest.raises(Unavailable, match="cannot be trusted"), broker(db_url, tmp_path):
        pass
