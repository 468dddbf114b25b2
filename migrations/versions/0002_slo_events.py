"""per-minute good/total events per SLO, pool and model

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "slo_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("slo", sa.String(100), nullable=False),
        sa.Column("pool", sa.String(100), nullable=False),
        sa.Column("model_name", sa.String(300), nullable=False),
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("good", sa.Float(), nullable=False),
        sa.Column("total", sa.Float(), nullable=False),
        sa.UniqueConstraint("slo", "pool", "model_name", "minute", name="uq_slo_events_slo_pool_model_minute"),
    )
    op.create_index("ix_slo_events_minute", "slo_events", ["minute"])


def downgrade() -> None:
    op.drop_index("ix_slo_events_minute", table_name="slo_events")
    op.drop_table("slo_events")
