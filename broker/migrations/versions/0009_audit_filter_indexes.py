"""audit: indexes for the trail's actor, action and outcome filters

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 21:00:00

`audit list` and the console's trail page filter by actor, action or outcome and page newest first by
sequence. Without an index on the filtered column the search walks the sequence index until a page is
full, so a rare actor, action or outcome costs the length of the trail (every row of it for no match).
With (column, seq) the page is a range of that index, in sequence order: it costs its own size.

The upgrade builds the three indexes over every event already recorded, in its one transaction (on
PostgreSQL writes to audit_events wait until it ends, so a broker with a very long trail upgrades in a
quiet moment, as for any migration of this table).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "ix_audit_events_actor_seq": ["actor_name", "seq"],
    "ix_audit_events_action_seq": ["action", "seq"],
    "ix_audit_events_outcome_seq": ["outcome", "seq"],
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, "audit_events", columns, unique=False)


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="audit_events")
