"""Query columns beside the hashed record: user, endpoint, model, status.

They are copies of fields inside `record` (verify checks they agree), kept as
columns so the audit API filters in the database instead of parsing JSON.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    # Plain ADD COLUMN on both databases: no table rebuild, so the append-only triggers stay.
    op.add_column("audit_events", sa.Column("user_id", sa.String(256), nullable=True))
    op.add_column("audit_events", sa.Column("endpoint", sa.String(64), nullable=True))
    op.add_column("audit_events", sa.Column("model", sa.String(256), nullable=True))
    op.add_column("audit_events", sa.Column("status", sa.Integer, nullable=True))


def downgrade() -> None:
    raise RuntimeError("the audit log is never downgraded: it would destroy evidence")
