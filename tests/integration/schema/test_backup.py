"""`strongroom-server backup`, `restore` and `audit accept-restore` against real SQLite and PostgreSQL
databases: back up, write more, restore, the broker refuses to start until the loss is accepted, then serves
the backed-up value, and `audit verify` explains the gap; bad input changes nothing."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from broker.audit.canonical import canonical_json
from broker.audit.checkpoint import Signer, generate_private_pem
from broker.audit.checkpoint import parse as parse_checkpoint
from broker.audit.restore import sign as sign_restore
from broker.cli import main as server_cli
from broker.config import get_settings
from broker.db import migrate
from broker.errors import Unavailable
from broker.services import backup as backups
from tests.conftest import keyring_json
from tests.integration.audit.conftest import broker, cli_verify
from tests.integration.schema.test_db_copy import counts


@dataclass
class World:
    db_url: str
    tmp: Path

    @property
    def keyring(self) -> str:
        return (self.tmp / "keyring.json").read_text()

    @property
    def checkpoints(self) -> Path:
        return self.tmp / "data" / "audit-checkpoints"

    def cli(self, *args: str) -> Result:
        get_settings.cache_clear()
        env = {
            "STRONGROOM_DATABASE_URL": self.db_url,
            "STRONGROOM_DATA_DIR": str(self.tmp / "data"),
            "STRONGROOM_KEYRING": self.keyring,
        }
        try:
            return CliRunner().invoke(server_cli, list(args), env=env)
        finally:
            get_settings.cache_clear()


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    """A broker database holding DB_PASSWORD=before-backup and a signed checkpoint."""
    with broker(db_url, tmp_path) as api:
        assert api.put("production", "DB_PASSWORD", "before-backup").status_code == 200
        assert api.checkpoint() is not None
    yield World(db_url, tmp_path)


def write_more(w: World) -> None:
    """What happens after the backup: a new version, more events, and a checkpoint past the backup."""
    with broker(w.db_url, w.tmp) as api:
        assert api.put("production", "DB_PASSWORD", "after-backup").status_code == 200
        assert api.put("common", "LATER", "later-value").status_code == 200
        assert api.checkpoint() is not None


def test_backup_restore_refuse_accept_serve_and_verify_explains_the_gap(world: World) -> None:
    out = world.tmp / "backups dir #1" / "strongroom.backup"  # any characters in a path
    out.parent.mkdir()
    r = world.cli("backup", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert out.stat().st_mode & 0o777 == 0o600
    assert list(out.parent.iterdir()) == [out]  # nothing left beside it
    manifest = backups.open_backup(out).manifest
    assert manifest.schema_head == migrate.head_revision(world.db_url)
    assert manifest.rows == {**counts(world.db_url), "broker_keyrings": 0}  # data, not running processes
    assert manifest.sha256 in r.output

    write_more(world)
    newest = sorted(world.checkpoints.glob("checkpoint-*.json"))[-1]

    with broker(world.db_url, world.tmp):  # a running broker's database is never wiped under it
        r = world.cli("restore", "--from", str(out), "--replace")
        assert r.exit_code == 1
        assert "--to: brokers are running on the target database" in r.output
        assert "nothing was restored" in r.output

    r = world.cli("restore", "--from", str(out), "--replace")
    assert r.exit_code == 0, r.output
    assert "verified on the target" in r.output
    assert "accept-restore" in r.output
    assert counts(world.db_url) == manifest.rows

    with pytest.raises(Unavailable, match="behind the last checkpoint"), broker(world.db_url, world.tmp):
        pass

    r = world.cli(
        "audit", "accept-restore", "--from", str(out), "--reason", "disk lost; restored last night's"
    )
    assert r.exit_code == 0, r.output
    lost = f"seq {manifest.audit_seq + 1}.."
    assert lost in r.output
    assert not newest.exists() and list(world.checkpoints.glob("superseded-*/" + newest.name))

    with broker(world.db_url, world.tmp) as api:
        assert api.value("production", "DB_PASSWORD") == "before-backup"
        assert api.get("common", "LATER").status_code == 404
        accepted = [e for e in api.all_audit() if e["action"] == "audit.restore_accepted"]
        assert len(accepted) == 1 and "disk lost" in accepted[0]["reason"] and lost in accepted[0]["reason"]
        assert accepted[0]["actor_type"] == "operator"
        assert api.put("production", "DB_PASSWORD", "after-restore").status_code == 200
        assert api.checkpoint() is not None
        export = world.tmp / "export.jsonl"
        export.write_bytes(api.export())
        public_key = api.public_key_file()

    # Offline, as an auditor: the gap is explained, not a failure ...
    done = cli_verify(export, public_key, world.checkpoints)
    assert done.exit_code == 0, done.output
    assert "restore accepted at" in done.output and lost in done.output and "disk lost" in done.output
    # ... also from a synced copy that kept the superseded checkpoints beside the new ones ...
    synced = world.tmp / "auditor-copy"
    shutil.copytree(world.checkpoints, synced)
    for old in synced.glob("superseded-*/checkpoint-*.json"):
        shutil.move(old, synced / old.name)
    done = cli_verify(export, public_key, synced)
    assert done.exit_code == 0, done.output
    # ... but without the signed marker the same directory is a rollback nobody accepted.
    for marker in synced.glob("restore-*.marker"):
        marker.unlink()
    done = cli_verify(export, public_key, synced)
    assert done.exit_code == 1, done.output

    r = world.cli("audit", "verify")
    assert r.exit_code == 0, r.output
    assert "restore accepted at" in r.output and "disk lost" in r.output and lost in r.output
    assert manifest.sha256 in r.output

    # The same rollback again (or any other) is refused: the marker accepted that gap only.
    r = world.cli("restore", "--from", str(out), "--replace")
    assert r.exit_code == 0, r.output
    with pytest.raises(Unavailable, match="behind the last checkpoint"), broker(world.db_url, world.tmp):
        pass


def test_the_backup_holds_no_key_no_value_in_clear_and_every_table(world: World) -> None:
    out = world.tmp / "b.backup"
    assert world.cli("backup", "--out", str(out)).exit_code == 0
    data = out.read_bytes()
    document = json.loads(world.keyring)
    for material in [*document["keys"].values(), document["hmac_key"], document["audit_key"]]:
        assert material.encode() not in data
        assert base64.b64decode(material) not in data
    signing_key = (world.tmp / "data" / "dev-audit-signing-key.pem").read_bytes()
    assert signing_key.split(b"\n")[1] not in data
    assert b"before-backup" not in data  # ciphertexts stay ciphertexts
    with sqlite3.connect(out) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM strongroom_backup")}
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert "manifest" in names and any(n.startswith("checkpoint-") for n in names)
    assert not list(world.tmp.glob("b.backup-*"))


def test_a_restore_into_a_new_empty_database_needs_no_replace(world: World) -> None:
    """Into an empty SQLite file, whichever database the backup came from."""
    out = world.tmp / "b.backup"
    assert world.cli("backup", "--out", str(out)).exit_code == 0
    empty = world.tmp / "empty" / "broker.db"
    empty.parent.mkdir()
    target = f"sqlite+aiosqlite:///{empty}"
    migrate.upgrade(target)

    r = world.cli("restore", "--from", str(out), "--to", target)

    assert r.exit_code == 0, r.output
    assert counts(target) == backups.open_backup(out).manifest.rows


def corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    page = 4096
    for i in range(page * 2, min(len(data), page * 6)):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def wrong_head(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0007'")
        body = json.loads(
            conn.execute("SELECT document FROM strongroom_backup WHERE name = 'manifest'").fetchone()[0]
        )
        body["schema_head"] = "0007"
        conn.execute(
            "UPDATE strongroom_backup SET document = ? WHERE name = 'manifest'",
            (canonical_json(body).decode(),),
        )


def fewer_rows(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM audit_events WHERE seq = (SELECT max(seq) FROM audit_events)")


def checkpoints_dropped(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM strongroom_backup WHERE name LIKE 'checkpoint-%'")


@pytest.mark.parametrize(
    ("spoil", "args", "says"),
    [
        (lambda p: p.unlink(), ("--replace",), "--from: {path}: no such file"),
        (lambda p: p.write_bytes(b"not a backup at all"), ("--replace",), "--from: {path} is not a usable"),
        (corrupt, ("--replace",), "--from: {path} is not a usable"),
        (
            fewer_rows,
            ("--replace",),
            "--from: {path} is not a usable Strongroom backup (table audit_events holds",
        ),
        (
            checkpoints_dropped,
            ("--replace",),
            "--from: {path} is not a usable Strongroom backup (the checkpoints it carries are not the ones",
        ),
        (wrong_head, ("--replace",), "--from: the backup is at schema revision 0007"),
        (lambda p: None, (), "--to: table "),
    ],
    ids=[
        "missing",
        "not-sqlite",
        "corrupt",
        "rows-removed",
        "checkpoints-dropped",
        "wrong-head",
        "non-empty-target",
    ],
)
def test_bad_input_is_one_sentence_naming_the_option_and_changes_nothing(
    world: World, spoil: object, args: tuple[str, ...], says: str
) -> None:
    out = world.tmp / "b.backup"
    assert world.cli("backup", "--out", str(out)).exit_code == 0
    write_more(world)
    before = counts(world.db_url)
    spoil(out)  # type: ignore[operator]

    r = world.cli("restore", "--from", str(out), *args)

    assert r.exit_code != 0
    message = r.output.strip()
    assert message.startswith("Error: " + says.format(path=out)), message
    assert "nothing was restored" in message and "Traceback" not in message
    assert len(message.splitlines()) == 1
    assert counts(world.db_url) == before


def test_accept_restore_refuses_when_nothing_was_rolled_back(world: World) -> None:
    out = world.tmp / "b.backup"
    assert world.cli("backup", "--out", str(out)).exit_code == 0

    r = world.cli("audit", "accept-restore", "--from", str(out), "--reason", "testing")

    assert r.exit_code == 1
    assert "it is not behind, so there is no restore to accept (nothing was accepted)" in r.output
    assert not list(world.checkpoints.glob("restore-*"))


def test_accept_restore_refuses_a_database_that_is_not_the_backup(world: World) -> None:
    out = world.tmp / "b.backup"
    older = world.tmp / "older.backup"
    assert world.cli("backup", "--out", str(older)).exit_code == 0
    with broker(world.db_url, world.tmp) as api:
        assert api.put("production", "DB_PASSWORD", "second").status_code == 200
    assert world.cli("backup", "--out", str(out)).exit_code == 0
    write_more(world)
    assert world.cli("restore", "--from", str(older), "--replace").exit_code == 0

    r = world.cli("audit", "accept-restore", "--from", str(out), "--reason", "wrong file")

    assert r.exit_code == 1
    assert "--from: the database's audit event" in r.output and "not restored from this backup" in r.output
    with pytest.raises(Unavailable, match="behind the last checkpoint"), broker(world.db_url, world.tmp):
        pass


def test_a_backup_taken_while_another_connection_writes_is_consistent(world: World) -> None:
    """The writer runs through the API on its own thread and connection for the whole backup; the file's
    row counts match its manifest and its audit chain verifies against the checkpoints it carries."""
    out = world.tmp / "b.backup"
    with broker(world.db_url, world.tmp) as api:
        stop = threading.Event()
        written = threading.Condition()
        done = [0]

        def writer() -> None:
            while not stop.is_set():
                assert api.put("common", f"W{done[0] % 5}", f"v{done[0]}").status_code == 200
                with written:
                    done[0] += 1
                    written.notify_all()

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            with written:  # the writer is writing before the backup starts ...
                assert written.wait_for(lambda: done[0] > 0, timeout=60)
            r = world.cli("backup", "--out", str(out))
            with written:  # ... and still after it ended
                after = done[0]
                assert written.wait_for(lambda: done[0] > after, timeout=60)
        finally:
            stop.set()
            thread.join()
        assert r.exit_code == 0, r.output
        public = api.rt.audit.signer.public
    opened = backups.open_backup(out)  # row counts match the manifest
    report = asyncio.run(backups.verify_backup(opened, public))
    assert report.ok, report.problem
    assert opened.manifest.rows["secret_versions"] < counts(world.db_url)["secret_versions"]


def test_backup_refuses_a_database_behind_the_schema(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    url = f"sqlite+aiosqlite:///{db}"
    migrate.upgrade(url, "0006")
    w = World(url, tmp_path)
    (tmp_path / "keyring.json").write_text(keyring_json())
    out = tmp_path / "b.backup"

    r = w.cli("backup", "--out", str(out))

    assert r.exit_code == 1
    assert "the database schema is at 0006" in r.output and "no backup was written" in r.output
    assert not out.exists() and list(tmp_path.glob(".b.backup*")) == []


def test_manifest_hash_is_over_its_canonical_text(world: World) -> None:
    out = world.tmp / "b.backup"
    assert world.cli("backup", "--out", str(out)).exit_code == 0
    manifest = backups.open_backup(out).manifest
    assert manifest.sha256 == "sha256:" + hashlib.sha256(manifest.document.encode()).hexdigest()
    shutil.copy(out, world.tmp / "copy.backup")
    assert backups.open_backup(world.tmp / "copy.backup").manifest.sha256 == manifest.sha256


def test_with_the_checkpoint_directory_lost_too_restore_brings_the_backups_back(world: World) -> None:
    out = world.tmp / "b.backup"
    assert world.cli("backup", "--out", str(out)).exit_code == 0
    carried = sorted(p.name for p in world.checkpoints.glob("checkpoint-*.json"))
    write_more(world)
    shutil.rmtree(world.checkpoints)

    r = world.cli("restore", "--from", str(out), "--replace")

    assert r.exit_code == 0, r.output
    assert "was empty: wrote the backup's checkpoints into it" in r.output
    assert sorted(p.name for p in world.checkpoints.glob("checkpoint-*.json")) == carried
    with broker(world.db_url, world.tmp) as api:  # nothing is ahead of the database: no acceptance needed
        assert api.value("production", "DB_PASSWORD") == "before-backup"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--from", "{missing}", "--reason", "ok"), "--from: {missing}: no such file; nothing was accepted"),
        (("--from", "{out}", "--reason", "two\nlines"), "Invalid value for --reason: must be 1 to 300"),
        (("--from", "{out}", "--reason", "  "), "Invalid value for --reason: must be 1 to 300"),
    ],
    ids=["missing-file", "newline-in-reason", "empty-reason"],
)
def test_accept_restore_bad_input_names_the_option_and_accepts_nothing(
    world: World, args: tuple[str, ...], says: str
) -> None:
    out = world.tmp / "b.backup"
    assert world.cli("backup", "--out", str(out)).exit_code == 0
    write_more(world)
    assert world.cli("restore", "--from", str(out), "--replace").exit_code == 0
    before = counts(world.db_url)
    missing = world.tmp / "nope.backup"

    r = world.cli("audit", "accept-restore", *(a.format(out=out, missing=missing) for a in args))

    assert r.exit_code != 0
    assert says.format(missing=missing) in r.output, r.output
    assert not list(world.checkpoints.glob("restore-*")) and counts(world.db_url) == before
    with pytest.raises(Unavailable, match="behind the last checkpoint"), broker(world.db_url, world.tmp):
        pass


def test_backup_out_in_a_missing_directory_is_named_and_nothing_is_written(world: World) -> None:
    out = world.tmp / "no-such-dir" / "b.backup"

    r = world.cli("backup", "--out", str(out))

    assert r.exit_code == 2
    assert f"{out.parent}: no such directory" in r.output and "--out" in r.output
    assert not out.parent.exists()


def test_a_marker_not_signed_by_the_checkpoint_key_accepts_nothing(world: World) -> None:
    """Someone who can write the checkpoint directory, but lacks the signing key, forges an acceptance."""
    out = world.tmp / "b.backup"
    assert world.cli("backup", "--out", str(out)).exit_code == 0
    manifest = backups.open_backup(out).manifest
    write_more(world)
    newest = parse_checkpoint(sorted(world.checkpoints.glob("checkpoint-*.json"))[-1].read_bytes())
    assert world.cli("restore", "--from", str(out), "--replace").exit_code == 0
    mallory = Signer.from_pem(generate_private_pem())
    forged = sign_restore(
        mallory,
        seq=manifest.audit_seq,
        head=manifest.audit_hash,
        restored_seq=manifest.audit_seq - 1,
        superseded_seq=newest.seq,
        superseded_head=newest.checkpoint.head,
        superseded_time=newest.checkpoint.time,
        time="2099-01-01T00:00:00.000000Z",
        manifest=manifest.sha256,
        accepted_by="mallory",
        reason="trust me",
    )
    (world.checkpoints / f"restore-{forged.seq:020d}.marker").write_text(forged.document())

    refused = r"cannot be trusted: restore marker .* not valid for key"
    with pytest.raises(Unavailable, match=refused), broker(world.db_url, world.tmp):
        pass
    r = world.cli("audit", "accept-restore", "--from", str(out), "--reason", "via the forged one")
    assert r.exit_code == 1 and "cannot be trusted" in r.output
