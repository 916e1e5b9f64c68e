"""audit chain: seq, prev_hash, hash, scopes, fingerprints, client kind, upstream origin; checkpoints

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 09:00:00

Existing events stay unchained (seq null) until the broker's chainer links them, oldest first.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("scopes", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("fingerprints", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("client_kind", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("backend", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("upstream_path", sa.String(length=512), nullable=True))
        batch_op.add_column(sa.Column("upstream_version", sa.String(length=128), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_audit_events_seq"), ["seq"])

    op.create_table(
        "audit_checkpoints",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("head", sa.String(length=64), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_checkpoints")),
    )


def downgrade() -> None:
    op.drop_table("audit_checkpoints")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_audit_events_seq"), type_="unique")
        batch_op.drop_column("upstream_version")
        batch_op.drop_column("upstream_path")
        batch_op.drop_column("backend")
        batch_op.drop_column("client_kind")
        batch_op.drop_column("fingerprints")
        batch_op.drop_column("scopes")
        batch_op.drop_column("hash")
        batch_op.drop_column("prev_hash")
        batch_op.drop_column("seq")
