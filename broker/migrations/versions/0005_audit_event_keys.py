"""audit event keys: the index of the keys each audit event touched, behind `audit list --name`

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-04 12:45:00

Existing events are indexed here, in batches by id. The derivation is written out in this revision on
purpose (a migration must do tomorrow what it did today); it is the one of
`broker.services.audit.touched_keys` at the time of writing, and a test checks the two agree.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 2000


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


def upgrade() -> None:
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
    with op.batch_alter_table("audit_event_keys", schema=None) as batch_op:
        batch_op.create_index("ix_audit_event_keys_name_seq", ["name", "seq"], unique=False)

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
                events.c.id,
                events.c.seq,
                events.c.project,
                events.c.environment,
                events.c.secret_name,
                events.c.fingerprints,
            )
            .where(events.c.id > after)
            .order_by(events.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            break
        out = []
        for row in rows:
            seen = dict.fromkeys(_touched(row.project, row.environment, row.secret_name, row.fingerprints))
            out += [
                {"event_id": row.id, "seq": row.seq, "project": p, "environment": e, "name": n}
                for p, e, n in seen
            ]
        if out:
            conn.execute(sa.insert(keys), out)
        after = rows[-1].id


def downgrade() -> None:
    with op.batch_alter_table("audit_event_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_event_keys_name_seq")
    op.drop_table("audit_event_keys")
