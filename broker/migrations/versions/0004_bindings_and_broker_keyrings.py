"""bindings and broker keyrings: secrets.binding (what a value is served as), broker_keyrings (which
KEK ids each running broker holds, for `keys rewrap`)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 12:45:00

Existing secrets get a NULL binding, which every read refuses as an integrity failure: after
upgrading, run `strongroom-server keys bind` once (it binds each secret to the path and current
version the database names at that moment; see docs/operations.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("secrets", sa.Column("binding", sa.LargeBinary(length=32), nullable=True))
    op.create_table(
        "broker_keyrings",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=253), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("current_kek", sa.String(length=64), nullable=False),
        sa.Column("kek_ids", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_broker_keyrings")),
    )


def downgrade() -> None:
    op.drop_table("broker_keyrings")
    # A plain ALTER TABLE (SQLite >= 3.35): a batch copy of `secrets` would trip its foreign keys.
    op.drop_column("secrets", "binding")
