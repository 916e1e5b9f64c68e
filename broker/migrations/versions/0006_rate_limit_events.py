"""rate_limit_events: the failed-login and fingerprint limiters' sliding windows, shared by every replica

Revision ID: 0006
Revises: 0003
Create Date: 2026-12-04 12:30:00

Rows hold a hash of the limiter key and when the event leaves its window; nothing a client sent.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rate_limit_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rate_limit_events")),
    )
    with op.batch_alter_table("rate_limit_events", schema=None) as batch_op:
        batch_op.create_index("ix_rate_limit_events_key_expires", ["key", "expires_at"], unique=False)
        batch_op.create_index("ix_rate_limit_events_kind_expires", ["kind", "expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("rate_limit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_rate_limit_events_kind_expires")
        batch_op.drop_index("ix_rate_limit_events_key_expires")
    op.drop_table("rate_limit_events")
