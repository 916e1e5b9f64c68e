"""audit: a partial index of the events the chainer has not linked yet

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 16:20:00

The chainer reads its backlog (`seq IS NULL`, oldest id first) through this index, so a pass costs its
own size instead of walking the linked history; the index stays as small as the backlog.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_audit_events_unlinked",
        "audit_events",
        ["id"],
        unique=False,
        postgresql_where=sa.text("seq IS NULL"),
        sqlite_where=sa.text("seq IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_audit_events_unlinked", table_name="audit_events")
