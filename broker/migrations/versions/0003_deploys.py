"""deploys: the deploy ledger (deploys, what each host got, which secret versions were served, per host)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 13:27:00

Values never reach these tables: secret versions are recorded with their audit fingerprints (HMAC).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "deploys",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project", sa.String(length=64), nullable=False),
        sa.Column("environment", sa.String(length=64), nullable=False),
        sa.Column("service", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("via", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("principal_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("principal_name", sa.String(length=128), nullable=False),
        sa.Column("token_accessor", sa.String(length=64), nullable=False),
        sa.Column("manifest_digest", sa.String(length=80), nullable=False),
        sa.Column("manifest", sa.Text(), nullable=False),
        sa.Column("hosts", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["principal_id"], ["principals.id"], name=op.f("fk_deploys_principal_id_principals")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deploys")),
        sa.UniqueConstraint("token_accessor", name=op.f("uq_deploys_token_accessor")),
    )
    with op.batch_alter_table("deploys", schema=None) as batch_op:
        batch_op.create_index(
            "ix_deploys_project_environment_started", ["project", "environment", "started_at"], unique=False
        )

    op.create_table(
        "deploy_hosts",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("deploy_id", sa.String(length=36), nullable=False),
        sa.Column("host", sa.String(length=253), nullable=False),
        sa.Column("role", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("container", sa.String(length=256), nullable=True),
        sa.Column("image_digest", sa.String(length=256), nullable=True),
        sa.Column("env_fingerprint", sa.String(length=80), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["deploy_id"], ["deploys.id"], name=op.f("fk_deploy_hosts_deploy_id_deploys")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deploy_hosts")),
    )
    with op.batch_alter_table("deploy_hosts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_deploy_hosts_deploy_id"), ["deploy_id"], unique=False)
        batch_op.create_index("ix_deploy_hosts_host_at", ["host", "at"], unique=False)

    op.create_table(
        "deploy_keys",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("deploy_id", sa.String(length=36), nullable=False),
        sa.Column("environment", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(length=80), nullable=False),
        sa.ForeignKeyConstraint(["deploy_id"], ["deploys.id"], name=op.f("fk_deploy_keys_deploy_id_deploys")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deploy_keys")),
        sa.UniqueConstraint(
            "deploy_id", "environment", "name", name=op.f("uq_deploy_keys_deploy_id_environment_name")
        ),
    )
    with op.batch_alter_table("deploy_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_deploy_keys_deploy_id"), ["deploy_id"], unique=False)

    # What each host's env file held: status compares a host with what it received, not with today's manifest.
    op.create_table(
        "deploy_host_keys",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("deploy_id", sa.String(length=36), nullable=False),
        sa.Column("host", sa.String(length=253), nullable=False),
        sa.Column("role", sa.String(length=64), nullable=False),
        sa.Column("environment", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(length=80), nullable=False),
        sa.ForeignKeyConstraint(
            ["deploy_id"], ["deploys.id"], name=op.f("fk_deploy_host_keys_deploy_id_deploys")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deploy_host_keys")),
        sa.UniqueConstraint(
            "deploy_id",
            "host",
            "role",
            "environment",
            "name",
            name=op.f("uq_deploy_host_keys_deploy_id_host_role_environment_name"),
        ),
    )
    with op.batch_alter_table("deploy_host_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_deploy_host_keys_deploy_id"), ["deploy_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("deploy_host_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deploy_host_keys_deploy_id"))

    op.drop_table("deploy_host_keys")
    with op.batch_alter_table("deploy_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deploy_keys_deploy_id"))

    op.drop_table("deploy_keys")
    with op.batch_alter_table("deploy_hosts", schema=None) as batch_op:
        batch_op.drop_index("ix_deploy_hosts_host_at")
        batch_op.drop_index(batch_op.f("ix_deploy_hosts_deploy_id"))

    op.drop_table("deploy_hosts")
    with op.batch_alter_table("deploys", schema=None) as batch_op:
        batch_op.drop_index("ix_deploys_project_environment_started")

    op.drop_table("deploys")
