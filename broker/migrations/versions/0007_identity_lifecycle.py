"""identity lifecycle: a previous client secret accepted during a rotation's grace period; soft deletion;
the OIDC `jti` replay register

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-04 13:30:00

The previous secret is stored as its keyed hash only, like the current one.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("principals", schema=None) as batch_op:
        batch_op.add_column(sa.Column("previous_secret_hash", sa.LargeBinary(), nullable=True))
        batch_op.add_column(
            sa.Column("previous_secret_expires_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "oidc_replays",
        sa.Column("issuer", sa.String(length=32), nullable=False),
        sa.Column("jti_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("issuer", "jti_hash", name=op.f("pk_oidc_replays")),
    )
    with op.batch_alter_table("oidc_replays", schema=None) as batch_op:
        batch_op.create_index("ix_oidc_replays_expires_at", ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("oidc_replays", schema=None) as batch_op:
        batch_op.drop_index("ix_oidc_replays_expires_at")
    op.drop_table("oidc_replays")
    with op.batch_alter_table("principals", schema=None) as batch_op:
        batch_op.drop_column("deleted_at")
        batch_op.drop_column("previous_secret_expires_at")
        batch_op.drop_column("previous_secret_hash")
