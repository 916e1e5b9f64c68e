"""Retention: nothing is deleted by default; a prune cuts only at a published signed checkpoint, records
that it did, and leaves a chain that still verifies (from the checkpoint) in the database and offline."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from broker.services import audit as svc
from broker.services.audit import retention
from tests.integration.audit.conftest import AuditApi, broker, cli_verify, lines


async def note(api: AuditApi) -> None:
    await svc.record_system(api.rt, "test.later", reason="an event forty days later")


async def prune(api: AuditApi, days: int) -> tuple[int, int | None]:
    return await retention.prune(api.rt, older_than=timedelta(days=days))


def test_prune_keeps_the_chain_verifiable(db_url: str, tmp_path: Path) -> None:
    # Only the explicit checkpoints below: with the clock jumped forty days, a background pass would
    # otherwise sign one of its own first (a race the assertions on the anchor cannot tolerate).
    with broker(db_url, tmp_path, audit_checkpoint_interval=10**9) as api:
        api.traffic(3)
        assert api.run(prune, api, 1) == (0, None)  # no checkpoint yet
        old = api.checkpoint()
        assert old is not None
        api.traffic(2)
        real = api.rt.clock
        api.rt.clock = lambda: real() + timedelta(days=40)
        try:
            api.run(note, api)  # forty days later (the admin's token has long expired)
            assert api.checkpoint() is not None
            gone, anchor = api.run(prune, api, 30)
        finally:
            api.rt.clock = real
        assert (gone, anchor) == (old.seq, old.seq)
        api.chain()
        rows = api.linked()
        assert rows[0]["seq"] == old.seq + 1
        assert rows[-1]["action"] == "audit.prune" and f"up to seq {old.seq}" in str(rows[-1]["reason"])
        report = api.verify()
        assert report.ok and report.first_seq == old.seq + 1, report.problem
        export = tmp_path / "export.jsonl"
        export.write_bytes(api.export())
        assert lines(export.read_bytes())[1]["checkpoint"]["seq"] == old.seq  # the anchor rides along
        assert cli_verify(export, api.public_key_file(), api.checkpoint_dir).exit_code == 0
        # Deleting more than the prune did is not a prune: the start is no longer anchored.
        api.sql("DELETE FROM audit_events WHERE seq = :s", s=old.seq + 1)
        report = api.verify()
        assert report.bad_seq == old.seq + 1 and "missing at the start" in (report.problem or "")
