"""Signed checkpoints of each tenant's chain head, append-only like the events.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "audit_checkpoints",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("signature", sa.Text, nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("""CREATE TRIGGER audit_checkpoints_no_update_delete BEFORE UPDATE OR DELETE ON audit_checkpoints
                      FOR EACH ROW EXECUTE FUNCTION audit_events_refuse_change()""")
        op.execute("""CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
                      FOR EACH STATEMENT EXECUTE FUNCTION audit_events_refuse_change()""")
    else:
        op.execute("""CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
                      BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only: UPDATE refused'); END""")
        op.execute("""CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
                      BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only: DELETE refused'); END""")


def downgrade() -> None:
    raise RuntimeError("the audit log is never downgraded: it would destroy evidence")
