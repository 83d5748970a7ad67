"""Cost columns beside the hashed record: the cost ledger (model served, tier, tokens, cost, cache hit).

Like 0003's, they are copies of fields inside `record` (verify checks they
agree), so the cost API sums them in the database: one row per request, written
in the same statement as the record itself, so the ledger and the audit log
can never disagree.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    # Plain ADD COLUMN on both databases: no table rebuild, so the append-only triggers stay.
    op.add_column("audit_events", sa.Column("model_served", sa.String(256), nullable=True))
    op.add_column("audit_events", sa.Column("tier", sa.String(256), nullable=True))
    op.add_column("audit_events", sa.Column("tokens_in", sa.Integer, nullable=True))
    op.add_column("audit_events", sa.Column("tokens_out", sa.Integer, nullable=True))
    op.add_column("audit_events", sa.Column("cost", sa.Float, nullable=True))
    op.add_column("audit_events", sa.Column("cache_hit", sa.Boolean, nullable=True))


def downgrade() -> None:
    raise RuntimeError("the audit log is never downgraded: it would destroy evidence")
