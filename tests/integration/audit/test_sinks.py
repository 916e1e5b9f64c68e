"""E28 with several sinks: the database plus an append-only JSON-lines file (and syslog). A request goes on
while at least one sink records its event, and the failing sink is reported (event and counter); when
no sink can, the request fails with 503, rolls back, and no value leaves. Sinks fail for real: a full
disk (a tiny tmpfs when the tests run as root, else ENOSPC from the write), permission denied, a
database error, a syslog socket that went away."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import broker.repositories.audit as audit_repo
from broker.audit import sinks
from broker.errors import Unavailable
from tests.integration.audit.conftest import broker, lines
from tests.integration.secrets.conftest import random_value


class DatabaseDown(RuntimeError):
    """The audit insert fails."""


@contextlib.contextmanager
def tiny_disk(path: Path) -> Iterator[Path | None]:
    """A 64 KiB tmpfs at `path` (root only); None when it cannot be mounted here."""
    path.mkdir()
    if os.geteuid() != 0:
        yield None
        return
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(path)], check=False
    )
    if done.returncode != 0:
        yield None
        return
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def disk_full(directory: Path | None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fill the tmpfs (really full), or make the sink's writes fail with ENOSPC where no tmpfs could be made."""
    if directory is not None:
        filler = directory / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
        try:
            yield
        finally:
            filler.unlink()
        return
    real = os.write

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(sinks.os, "write", full)
        yield
    assert os.write is real


def database_down(monkeypatch: pytest.MonkeyPatch) -> None:
    def down(*_a: Any, **_k: Any) -> None:
        raise DatabaseDown("audit insert failed")

    monkeypatch.setattr(audit_repo, "append", down)


def file_events(path: Path) -> list[dict[str, Any]]:
    return lines(path.read_bytes())


def test_the_file_mirrors_the_database(db_url: str, tmp_path: Path) -> None:
    audit_file = tmp_path / "audit.jsonl"
    with broker(db_url, tmp_path, audit_file=audit_file) as api:
        api.traffic(3)
        assert audit_file.stat().st_mode & 0o777 == 0o600
        in_file = {(e["request_id"], e["action"], e["outcome"]) for e in file_events(audit_file)}
        in_db = {(e["request_id"], e["action"], e["outcome"]) for e in api.all_audit()}
        assert in_db == in_file
        assert api.verify().ok


def test_database_error_with_a_file_sink_goes_on_and_is_reported(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    audit_file = tmp_path / "audit.jsonl"
    with broker(db_url, tmp_path, audit_file=audit_file) as api:
        value = random_value()
        assert api.put("common", "K", value).status_code == 200
        with monkeypatch.context() as m:
            database_down(m)
            r = api.get("common", "K")
            assert r.status_code == 200 and r.json()["value"] == value
            rid = r.headers["x-request-id"]
            r2 = api.put("common", "K", "second")
            assert r2.status_code == 200
        assert api.audit_for(rid) == []  # the database did not record it ...
        events = file_events(audit_file)
        read = [e for e in events if e["request_id"] == rid]
        assert [(e["action"], e["outcome"]) for e in read] == [("secret.read", "ok")]  # ... the file did
        assert read[0]["fingerprints"][0]["fingerprint"].startswith("hmac-sha256:")
        failures = [e for e in events if e["action"] == "audit.sink_failure"]
        assert len(failures) == 1 and failures[0]["reason"].startswith("database: DatabaseDown")
        assert value not in audit_file.read_text()
        # Back to normal: the recovery is recorded in both, the counter stays.
        assert api.get("common", "K").status_code == 200
        assert any(e["action"] == "audit.sink_recovered" for e in api.all_audit())
        status = api.client.get("/v1/audit/status", headers=api.h).json()
        assert status["counters"]["sink_failures:database"] == 2
        assert {s["name"]: s["ok"] for s in status["sinks"]}["database"] is True
        assert api.verify().ok


def test_disk_full_file_sink_goes_on_and_is_reported(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tiny_disk(tmp_path / "disk") as disk:
        audit_file = tmp_path / "disk" / "audit.jsonl"
        with broker(db_url, tmp_path, audit_file=audit_file) as api:
            api.traffic(1)
            with disk_full(disk, monkeypatch):
                # The file's last page may still have room: go on until the disk is really full.
                for _ in range(60):
                    r = api.get("common", "K0")
                    assert r.status_code == 200
                    assert api.one_audit(r.headers["x-request-id"])["outcome"] == "ok"
                    if api.rt.audit.counters[f"sink_failures:file:{audit_file}"]:
                        break
                assert api.put("common", "K0", "changed").status_code == 200
            failures = [e for e in api.all_audit() if e["action"] == "audit.sink_failure"]
            assert (
                len(failures) == 1
                and "ENOSPC" in failures[0]["reason"]
                and str(audit_file) in failures[0]["reason"]
            )
            status = api.client.get("/v1/audit/status", headers=api.h).json()
            assert status["counters"][f"sink_failures:file:{audit_file}"] >= 2
            # Space again: back to recording, and the file holds whole lines only.
            assert api.get("common", "K0").status_code == 200
            assert any(e["action"] == "audit.sink_recovered" for e in api.all_audit())
            events = file_events(audit_file)
            assert events and all(isinstance(e, dict) for e in events)


def test_permission_denied_file_sink_goes_on_and_is_reported(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    audit_file = tmp_path / "audit.jsonl"
    with broker(db_url, tmp_path, audit_file=audit_file) as api:
        real_open = os.open

        def denied(path: Any, *a: Any, **k: Any) -> int:
            if str(path) == str(audit_file):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return real_open(path, *a, **k)

        with monkeypatch.context() as m:
            m.setattr(sinks.os, "open", denied)
            assert api.put("common", "K", "v").status_code == 200
        failure = next(e for e in api.all_audit() if e["action"] == "audit.sink_failure")
        assert "EACCES" in failure["reason"]


def test_every_sink_failing_fails_closed(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tiny_disk(tmp_path / "disk") as disk:
        audit_file = tmp_path / "disk" / "audit.jsonl"
        with broker(db_url, tmp_path, audit_file=audit_file) as api:
            old, new = random_value(), random_value()
            assert api.put("common", "K", old).status_code == 200
            before = api.stored()
            with disk_full(disk, monkeypatch), monkeypatch.context() as m:
                database_down(m)
                # The file's last page may still have room: reads go on (recorded there) until it is full.
                for _ in range(60):
                    r = api.safe("GET", api.url("common", "K"), headers=api.h)
                    if r.status != 200:
                        break
                for method, kw in (("GET", {}), ("PUT", {"json": {"value": new}})):
                    r = api.safe(method, api.url("common", "K"), headers=api.h, **kw)
                    assert (
                        r.status == 503
                        and r.json()["detail"] == "the audit trail is unavailable; retry later"
                    )
                    assert old not in r.text and new not in r.text
            assert api.stored() == before
            assert api.value("common", "K") == old


def test_syslog_sink(db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "log.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.settimeout(5)
    try:
        with broker(db_url, tmp_path, audit_syslog=f"unix:{path}") as api:
            r = api.get("common", "NOPE")
            messages = []
            with contextlib.suppress(TimeoutError):
                while True:
                    server.settimeout(0.5 if messages else 5)
                    messages.append(server.recv(65536))
            assert any(r.headers["x-request-id"].encode() in m for m in messages)
            assert all(m.startswith(b"<86>1 ") and m.count(b"\n") == 0 for m in messages)
            server.close()
            path.unlink()  # the syslog daemon went away
            assert api.get("common", "NOPE").status_code == 404
            failure = next(e for e in api.all_audit() if e["action"] == "audit.sink_failure")
            assert failure["reason"].startswith(f"syslog:unix:{path}: ")
    finally:
        server.close()


def test_start_up_refuses_an_audit_file_it_cannot_open(db_url: str, tmp_path: Path) -> None:
    with pytest.raises(Unavailable, match="EISDIR"), broker(db_url, tmp_path, audit_file=tmp_path):
        pass


def test_a_database_outage_is_still_on_record_in_the_file(db_url: str, tmp_path: Path) -> None:
    audit_file = tmp_path / "audit.jsonl"
    with broker(db_url, tmp_path, audit_file=audit_file) as api:
        real = api.rt.engine

        class Unreachable:
            def begin(self) -> Any:
                raise ConnectionRefusedError("database unreachable")

            connect = begin

            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

        api.rt.engine = Unreachable()  # type: ignore[assignment]
        # With other sinks every unit of work runs in a transaction of the engine (it may wait on them).
        api.rt.units.engine = api.rt.engine
        try:
            r = api.safe("GET", api.url("common", "K"), headers=api.h)
        finally:
            api.rt.engine = api.rt.units.engine = real
        assert r.status == 500  # the request failed, but its failure is recorded
        events = [e for e in file_events(audit_file) if e["request_id"] == r.request_id]
        assert [(e["action"], e["outcome"]) for e in events] == [("secret.read", "error")]
        failure = next(e for e in file_events(audit_file) if e["action"] == "audit.sink_failure")
        assert failure["reason"] == "database: ConnectionRefusedError"


def test_an_unwritable_checkpoint_directory_is_reported_once_and_recovers(
    db_url: str, tmp_path: Path
) -> None:
    """Publishing fails for real (a regular file stands where the checkpoint directory was): the failure is
    counted each time (at least twice here; on PostgreSQL the background chainer may try more often),
    recorded as one audit.checkpoint_failure event however often it recurs within the minute, shown in status, and the checkpoints are published once the directory is back."""
    with broker(db_url, tmp_path) as api:
        where = api.checkpoint_dir
        assert api.put("common", "K", random_value()).status_code == 200
        first = api.checkpoint()
        assert first is not None
        where.rename(tmp_path / "moved")
        where.write_text("not a directory")
        for _ in range(2):
            assert api.put("common", "K", random_value()).status_code == 200
            assert api.checkpoint() is not None  # signed into the database all the same
        failures = [e for e in api.all_audit() if e["action"] == "audit.checkpoint_failure"]
        assert len(failures) == 1 and failures[0]["outcome"] == "error"
        assert failures[0]["reason"].startswith(f"checkpoint directory {where}: ")
        status = api.client.get("/v1/audit/status", headers=api.h).json()
        count = status["counters"]["checkpoint_publish_failures"]
        (sink,) = [s for s in status["sinks"] if s["name"] == f"checkpoints:{where}"]
        assert count >= 2 and (sink["ok"], sink["failures"]) == (False, count)
        assert status["published_seq"] == first.seq
        where.unlink()
        # On PostgreSQL the background chainer may publish in this very instant and make the directory
        # itself (CI saw it once): the old checkpoints go back into whichever directory stands there.
        shutil.copytree(tmp_path / "moved", where, dirs_exist_ok=True)
        assert api.put("common", "K", random_value()).status_code == 200
        last = api.checkpoint()
        assert last is not None
        status = api.client.get("/v1/audit/status", headers=api.h).json()
        (sink,) = [s for s in status["sinks"] if s["name"] == f"checkpoints:{where}"]
        assert sink["ok"] is True and status["published_seq"] >= last.seq
        assert api.verify().ok
