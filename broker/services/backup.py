"""Backups and restores (`strongroom-server backup` and `restore`).

A backup is one portable SQLite file: the broker's schema at its revision, every row as stored (ciphertexts,
wrapped data keys, token hashes and the audit chain keep their bytes; no value is decrypted), and a table
`strongroom_backup` holding the manifest (schema head, audit head, rows per table, creation time, broker
version) and the checkpoint directory's documents as of the backup. The keyring is never in it: the file
alone opens no value. It is taken online from one snapshot: SQLite's backup API (a read transaction in WAL
mode, which writers do not wait for), or one REPEATABLE READ, read-only transaction on PostgreSQL whose rows
the copying repository (the one implementation of "every table in order", shared with `db copy`) writes
into a freshly migrated SQLite file. The file is written 0600 beside the target and renamed into place.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from broker.audit.canonical import canonical_json, format_time, is_hash
from broker.audit.checkpoint import CheckpointError, PublicKey, SignedCheckpoint
from broker.audit.checkpoint import parse as parse_checkpoint
from broker.audit.restore import RestoreMarker
from broker.audit.restore import parse as parse_marker
from broker.audit.sinks import CheckpointDirectory
from broker.audit.verify import Report
from broker.db import migrate
from broker.db.engine import make_engine
from broker.errors import Conflict, Invalid
from broker.files import install, private_temporary
from broker.repositories import audit as audit_repo
from broker.repositories import brokers as brokers_repo
from broker.repositories import copying as repo
from broker.services.audit.chaining import verify_linked

FORMAT = "strongroom-backup/1"
BATCH = 500
SQLITE_HEADER = b"SQLite format 3\x00"


@dataclass(frozen=True)
class Manifest:
    """A backup's manifest: its canonical JSON text and what it says."""

    document: str
    body: dict[str, Any]

    @property
    def sha256(self) -> str:
        """The manifest's hash, as an accepted restore names it."""
        return "sha256:" + hashlib.sha256(self.document.encode()).hexdigest()

    @property
    def schema_head(self) -> str:
        """The schema revision the backup's tables are at."""
        return str(self.body["schema_head"])

    @property
    def audit_seq(self) -> int:
        """The backup's linked audit head."""
        return int(self.body["audit_head"]["seq"])

    @property
    def audit_hash(self) -> str | None:
        """The hash of the backup's audit head (None for an empty chain)."""
        value = self.body["audit_head"]["hash"]
        return str(value) if value is not None else None

    @property
    def rows(self) -> dict[str, int]:
        """Rows per table."""
        return {str(k): int(v) for k, v in self.body["rows"].items()}


@dataclass(frozen=True)
class Backup:
    """A backup file read and checked: its manifest and the checkpoint directory's state it carries."""

    path: Path
    manifest: Manifest
    checkpoints: list[SignedCheckpoint]
    markers: list[RestoreMarker]

    def engine(self) -> AsyncEngine:
        """A read-only engine on the file (no pragma, nothing written to it)."""
        import aiosqlite

        uri = _read_only_uri(self.path)
        return create_async_engine(
            "sqlite+aiosqlite://", async_creator=lambda: aiosqlite.connect(uri, uri=True)
        )


def _read_only_uri(path: Path) -> str:
    """A SQLite URI that opens `path` read-only, whatever characters its name holds."""
    return f"file:{quote(str(path.resolve()))}?mode=ro"


@dataclass(frozen=True)
class Restored:
    """What `restore` wrote and what the check afterwards found."""

    tables: list[tuple[str, int]]
    audit: Report
    counts_match: bool
    replaced: bool = False

    @property
    def rows(self) -> int:
        """Rows restored in all."""
        return sum(n for _, n in self.tables)


def _sqlite_path(url: str) -> Path:
    return Path(url.partition(":///")[2].split("?", 1)[0])


def _sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


async def _revision(url: str) -> str | None:
    engine = make_engine(url, pool_size=1)
    try:
        return await migrate.current_revision(engine)
    finally:
        await engine.dispose()


def _snapshot_sqlite(source: Path, target: Path) -> None:
    """Copy a live SQLite database page by page in one read transaction (SQLite's backup API)."""
    with (
        contextlib.closing(sqlite3.connect(source, timeout=30)) as src,
        contextlib.closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst)


async def _snapshot_postgresql(source_url: str, target_url: str) -> None:
    """Copy every table from one REPEATABLE READ, read-only transaction into the migrated SQLite file."""
    source = make_engine(source_url, pool_size=1)
    target = make_engine(target_url, pool_size=1)
    try:
        async with source.connect() as plain:
            src = await plain.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            async with src.begin(), target.begin() as dst:
                for name, expected, n, landed in await repo.copy_tables(src, dst, batch=BATCH):
                    if not (n == expected == landed):
                        raise Conflict(
                            f"backup: table {name}: {expected} rows in the snapshot, {landed} written"
                        )
    finally:
        await source.dispose()
        await target.dispose()


async def _seal(
    url: str, *, checkpoints: CheckpointDirectory, created_at: datetime, source: str, head: str
) -> Manifest:
    """Count the snapshot's rows, read its audit head, and store the manifest and the checkpoint
    directory's documents (those the snapshot reaches) in the file."""
    engine = make_engine(url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await repo.forget_running(conn)
            rows = {t.name: await repo.count(conn, t) for t in repo.tables()}
            seq, digest = await audit_repo.head(conn)
            signed = await asyncio.to_thread(checkpoints.between, 0, seq)
            markers = [m for m in await asyncio.to_thread(checkpoints.markers) if m.seq <= seq]
            docs = [(f"checkpoint-{c.seq:020d}", c.document()) for c in signed]
            docs += [(f"restore-{m.seq:020d}", m.document()) for m in markers]
            body = {
                "format": FORMAT,
                "created_at": format_time(created_at),
                "broker_version": metadata.version("strongroom"),
                "source": source,
                "schema_head": head,
                "audit_head": {"seq": seq, "hash": digest},
                "rows": rows,
                "checkpoints": {
                    "count": len(signed),
                    "newest_seq": signed[-1].seq if signed else 0,
                    "markers": len(markers),
                    "sha256": hashlib.sha256("\n".join(d for _, d in docs).encode()).hexdigest(),
                },
            }
            manifest = Manifest(canonical_json(body).decode("ascii"), body)
            await repo.add_documents(conn, [("manifest", manifest.document), *docs])
    finally:
        await engine.dispose()
    return manifest


def _fold(path: Path) -> None:
    """Leave the backup as one self-contained file (no -wal beside it)."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")


async def backup(*, source_url: str, out: Path, checkpoints: CheckpointDirectory, now: datetime) -> Manifest:
    """Take a consistent, online backup of the database at `source_url` into `out` (0600, atomically).

    Invalid when the database is not at this broker's newest schema revision."""
    head = migrate.head_revision(source_url)
    current = await _revision(source_url)
    if current != head:
        raise Invalid(
            f"backup: the database schema is at {current or 'nothing'} but this broker needs {head}; run "
            "`strongroom-server db upgrade` first (no backup was written)"
        )
    assert head is not None
    tmp = private_temporary(out)
    try:
        if source_url.startswith("sqlite"):
            await asyncio.to_thread(_snapshot_sqlite, _sqlite_path(source_url), tmp)
            source = "sqlite"
        else:
            await asyncio.to_thread(migrate.upgrade, _sqlite_url(tmp), head)
            await _snapshot_postgresql(source_url, _sqlite_url(tmp))
            source = "postgresql"
        manifest = await _seal(
            _sqlite_url(tmp), checkpoints=checkpoints, created_at=now, source=source, head=head
        )
        await asyncio.to_thread(_fold, tmp)
        install(tmp, out)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
            leftover.unlink(missing_ok=True)
    return manifest


class _Unusable(Exception):
    """Why a file is not a usable backup (open_backup turns it into one sentence naming --from)."""


def _read_file(path: Path) -> tuple[dict[str, str], dict[str, int], str | None]:
    """The backup's documents, its rows per table and its schema revision, read-only (_Unusable when the
    file is not SQLite, is damaged or is not a backup)."""
    if not path.is_file():
        raise FileNotFoundError(path)
    with path.open("rb") as handle:
        if handle.read(16) != SQLITE_HEADER:
            raise _Unusable("not a SQLite file")
    try:
        with contextlib.closing(sqlite3.connect(_read_only_uri(path), uri=True)) as conn:
            check = conn.execute("PRAGMA quick_check").fetchall()
            if check != [("ok",)]:
                raise _Unusable(f"SQLite finds it damaged: {str(check[0][0])[:200]}")
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "strongroom_backup" not in names:
                raise _Unusable("it holds no backup manifest")
            docs = {str(n): str(d) for n, d in conn.execute("SELECT name, document FROM strongroom_backup")}
            counts = {
                t.name: int(conn.execute(f'SELECT count(*) FROM "{t.name}"').fetchone()[0])  # noqa: S608
                for t in repo.tables()
                if t.name in names
            }
            revision = None
            if "alembic_version" in names:
                row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
                revision = str(row[0]) if row else None
    except sqlite3.DatabaseError as exc:
        raise _Unusable(f"SQLite cannot read it: {exc}") from None
    return docs, counts, revision


def _manifest(text: str | None) -> Manifest:
    try:
        body = json.loads(text) if text is not None else None
    except ValueError:
        body = None
    if (
        not isinstance(body, dict)
        or body.get("format") != FORMAT
        or not isinstance(body.get("rows"), dict)
        or not all(type(n) is int for n in body["rows"].values())
        or not isinstance(body.get("audit_head"), dict)
        or not isinstance(body.get("schema_head"), str)
    ):
        raise _Unusable(f"its manifest is not a {FORMAT} manifest")
    head = body["audit_head"]
    if not isinstance(head.get("seq"), int) or not (head.get("hash") is None or is_hash(head["hash"])):
        raise _Unusable("its manifest's audit_head is malformed")
    if canonical_json(body).decode("ascii") != text:
        raise _Unusable("its manifest is not in canonical form (edited?)")
    return Manifest(text, body)


def open_backup(path: Path, *, nothing: str = "nothing was restored") -> Backup:
    """Read and check a backup file: a SQLite file SQLite finds whole, a well-formed manifest whose row
    counts and schema revision the file matches, and readable checkpoint documents. Invalid naming --from
    (ending with `nothing`) when it is not one."""
    try:
        return _checked(path)
    except FileNotFoundError:
        raise Invalid(f"--from: {path}: no such file; {nothing}") from None
    except _Unusable as exc:
        raise Invalid(f"--from: {path} is not a usable Strongroom backup ({exc}); {nothing}") from None


def _checked(path: Path) -> Backup:
    docs, counts, revision = _read_file(path)
    manifest = _manifest(docs.get("manifest"))
    if revision != manifest.schema_head:
        raise _Unusable(f"its tables are at schema {revision}, its manifest says {manifest.schema_head}")
    for name, n in manifest.rows.items():
        if counts.get(name) != n:
            raise _Unusable(f"table {name} holds {counts.get(name)} rows, its manifest says {n}")
    if set(counts) != set(manifest.rows):
        raise _Unusable("its tables are not the ones its manifest lists")
    checkpoints, markers = [], []
    try:
        for name in sorted(docs):
            if name.startswith("checkpoint-"):
                checkpoints.append(parse_checkpoint(docs[name]))
            elif name.startswith("restore-"):
                markers.append(parse_marker(docs[name]))
    except CheckpointError as exc:
        raise _Unusable(f"a checkpoint it carries is malformed: {exc}") from None
    # The documents must be exactly the ones the manifest counted: a dropped checkpoint would otherwise let a
    # rewritten chain verify against nothing (in the order `backup` hashed them: checkpoints, then markers).
    carried = [docs[n] for n in sorted(docs) if n.startswith("checkpoint-")]
    carried += [docs[n] for n in sorted(docs) if n.startswith("restore-")]
    said = manifest.body.get("checkpoints")
    if (
        not isinstance(said, dict)
        or said.get("count") != len(checkpoints)
        or said.get("markers") != len(markers)
        or said.get("sha256") != hashlib.sha256("\n".join(carried).encode()).hexdigest()
    ):
        raise _Unusable("the checkpoints it carries are not the ones its manifest lists")
    return Backup(path=path, manifest=manifest, checkpoints=checkpoints, markers=markers)


async def verify_backup(backup: Backup, public: PublicKey) -> Report:
    """Verify the backup's audit chain against the checkpoints it carries, and that its head is the
    manifest's."""
    engine = backup.engine()
    try:
        report = await verify_linked(engine, public, backup.checkpoints)
    finally:
        await engine.dispose()
    if report.ok and (report.last_seq or 0, report.head) != (
        backup.manifest.audit_seq,
        backup.manifest.audit_hash,
    ):
        report.problem = "the chain's head is not the one its manifest names"
    return report


async def restore(
    *, backup: Backup, target_url: str, replace: bool, public: PublicKey, running_since: datetime
) -> Restored:
    """Write the backup's rows into the target in one transaction (all or nothing), then check the target:
    row counts against the manifest and the audit chain against the backup's checkpoints.

    Refused, with nothing written, when the backup's schema or the target's is not this broker's newest, when
    the backup's chain does not verify, or (Conflict) when the target holds rows and `replace` is not set, or a
    broker using the target reported itself at or after `running_since`."""
    head = migrate.head_revision(target_url)
    if backup.manifest.schema_head != head:
        raise Invalid(
            f"--from: the backup is at schema revision {backup.manifest.schema_head} (broker "
            f"{backup.manifest.body.get('broker_version')}) but this broker needs {head}; restore it with the "
            "broker version that made it, then upgrade (nothing was restored)"
        )
    current = await _revision(target_url)
    if current != head:
        raise Invalid(
            f"--to: the database schema is at {current or 'nothing'} but this broker needs {head}; run "
            "`strongroom-server db upgrade` on it first (nothing was restored)"
        )
    checked = await verify_backup(backup, public)
    if not checked.ok:
        raise Invalid(
            f"--from: the backup's audit chain does not verify ({checked.problem}); nothing was restored"
        )
    source = backup.engine()
    target = make_engine(target_url, pool_size=1)
    tables: list[tuple[str, int]] = []
    replaced = False
    try:
        async with target.begin() as dst:
            running = await brokers_repo.seen_since(dst, running_since)
            if running:
                listed = ", ".join(f"{row.host} pid {row.pid}" for row in running)
                raise Conflict(
                    f"--to: brokers are running on the target database ({listed}); stop them before restoring "
                    "(nothing was restored)"
                )
            filled = await repo.first_filled(dst)
            if filled is not None and not replace:
                raise Conflict(
                    f"--to: table {filled} already holds rows; restore fills an empty database unless --replace "
                    "says to wipe it (nothing was restored)"
                )
            if filled is not None:
                await repo.wipe(dst)
                replaced = True
            async with source.connect() as src, src.begin():
                copied = await repo.copy_tables(src, dst, batch=BATCH)
            for name, _, n, landed in copied:
                if not (n == landed == backup.manifest.rows.get(name)):
                    raise Conflict(
                        f"--to: table {name}: the backup lists {backup.manifest.rows.get(name)} rows, {n} were "
                        f"read and {landed} written; the restore was rolled back"
                    )
                tables.append((name, n))
            if target.dialect.name == "postgresql":
                await repo.move_sequences_past_ids(dst)
        async with target.connect() as conn:
            counts = {t.name: await repo.count(conn, t) for t in repo.tables()}
        report = await verify_linked(target, public, backup.checkpoints)
    finally:
        await source.dispose()
        await target.dispose()
    return Restored(
        tables=tables, audit=report, counts_match=counts == backup.manifest.rows, replaced=replaced
    )
