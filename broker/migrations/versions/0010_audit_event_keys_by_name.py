"""audit: the key index keyed by (name, seq), written when an event is linked

Revision ID: 0010
Revises: 0008
Create Date: 2026-12-04 21:00:00

`audit_event_keys` held three B-trees per row on SQLite (the rowid table, the primary key on event_id,
the (name, seq) index) and, on PostgreSQL, rows inserted with a null seq that the chainer then updated
(a new tuple and two index entries more per key). Now the primary key (name, seq, project, environment)
is the index `audit list --name` walks; on SQLite the table is WITHOUT ROWID (one B-tree), and rows are
written by the transaction that links their event, so seq is never null. Rows of events not linked yet
are dropped here: the chainer writes them when it links those events.

The downgrade restores the former table and indexes the events not linked yet as revision 0005 did
(the derivation is written out in this revision on purpose; a test checks it agrees with
`broker.services.audit.touched_keys`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 2000
COLUMNS = "event_id, seq, project, environment, name"


def _touched(
    project: Any, environment: Any, secret_name: Any, fingerprints: Any
) -> Iterator[tuple[str, str, str]]:
    project, environment = (project or "")[:64], (environment or "")[:64]
    if secret_name:
        yield project, environment, secret_name[:256]
    try:
        items = json.loads(fingerprints) if fingerprints else []
    except ValueError:
        items = []
    for item in items if isinstance(items, list) else []:
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str) or not name:
            continue
        where = item.get("environment")
        stored = where[:64] if isinstance(where, str) and where else environment
        yield project, stored, name[:256]
        if environment and stored != environment:
            yield project, environment, name[:256]


def _set_aside(old_pk: str) -> None:
    """Rename the current table (and, on PostgreSQL, its primary key's index, whose name is schema-wide)."""
    op.rename_table("audit_event_keys", "audit_event_keys_old")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER INDEX pk_audit_event_keys RENAME TO {old_pk}")


def upgrade() -> None:
    op.drop_index("ix_audit_event_keys_name_seq", table_name="audit_event_keys")
    _set_aside("pk_audit_event_keys_old")
    op.create_table(
        "audit_event_keys",
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("project", sa.String(length=64), nullable=False),
        sa.Column("environment", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", "seq", "project", "environment", name=op.f("pk_audit_event_keys")),
        sqlite_with_rowid=False,
    )
    op.execute(
        f"INSERT INTO audit_event_keys ({COLUMNS}) SELECT {COLUMNS} FROM audit_event_keys_old "
        "WHERE seq IS NOT NULL"
    )
    op.drop_table("audit_event_keys_old")


def downgrade() -> None:
    _set_aside("pk_audit_event_keys_old")
    op.create_table(
        "audit_event_keys",
        sa.Column("event_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("environment", sa.String(length=64), nullable=False),
        sa.Column("project", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint(
            "event_id", "name", "environment", "project", name=op.f("pk_audit_event_keys")
        ),
    )
    op.create_index("ix_audit_event_keys_name_seq", "audit_event_keys", ["name", "seq"], unique=False)
    op.execute(f"INSERT INTO audit_event_keys ({COLUMNS}) SELECT {COLUMNS} FROM audit_event_keys_old")
    op.drop_table("audit_event_keys_old")
    _index_unlinked()


def _index_unlinked() -> None:
    """The former schema holds rows (seq null) for events not linked yet: write them, in batches by id."""
    conn = op.get_bind()
    events = sa.table(
        "audit_events",
        sa.column("id", sa.BigInteger()),
        sa.column("seq", sa.BigInteger()),
        sa.column("project", sa.String()),
        sa.column("environment", sa.String()),
        sa.column("secret_name", sa.String()),
        sa.column("fingerprints", sa.Text()),
    )
    keys = sa.table(
        "audit_event_keys",
        sa.column("event_id", sa.BigInteger()),
        sa.column("name", sa.String()),
        sa.column("environment", sa.String()),
        sa.column("project", sa.String()),
        sa.column("seq", sa.BigInteger()),
    )
    after = 0
    while True:
        rows = conn.execute(
            sa.select(
                events.c.id, events.c.project, events.c.environment, events.c.secret_name, events.c.fingerprints
            )
            .where(events.c.seq.is_(None), events.c.id > after)
            .order_by(events.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            break
        out = []
        for row in rows:
            seen = dict.fromkeys(_touched(row.project, row.environment, row.secret_name, row.fingerprints))
            out += [{"event_id": row.id, "seq": None, "project": p, "environment": e, "name": n} for p, e, n in seen]
        if out:
            conn.execute(sa.insert(keys), out)
        after = rows[-1].id
