"""A client's own id for a posted maintenance window (POST /api/v1/exclusions `id`): a retry of a POST
that timed out finds the row the first try may have committed instead of adding a second one

Revision ID: 0007
Revises: 0006
Create Date: 2027-01-10
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("exclusions") as batch:
        batch.add_column(sa.Column("request_id", sa.String(200), nullable=True))
    op.create_index("ix_exclusions_request_id", "exclusions", ["request_id"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_exclusions_request_id", table_name="exclusions")
    with op.batch_alter_table("exclusions") as batch:
        batch.drop_column("request_id")
