"""GPU readings rolled up per GPU per minute

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gpu_rollups",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("host", sa.String(300), nullable=False),
        sa.Column("uuid", sa.String(200), nullable=False),
        sa.Column("mig_instance", sa.String(100), nullable=False),
        sa.Column("gpu_index", sa.Integer(), nullable=True),
        sa.Column("model_name", sa.String(200), nullable=True),
        sa.Column("pool", sa.String(100), nullable=True),
        sa.Column("instance", sa.String(300), nullable=True),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("lost", sa.Boolean(), nullable=False),
        sa.Column("utilization_mean", sa.Float(), nullable=True),
        sa.Column("utilization_max", sa.Float(), nullable=True),
        sa.Column("memory_used_bytes_mean", sa.Float(), nullable=True),
        sa.Column("memory_used_bytes_max", sa.Float(), nullable=True),
        sa.Column("memory_total_bytes", sa.Float(), nullable=True),
        sa.Column("memory_used_ratio_max", sa.Float(), nullable=True),
        sa.Column("power_watts_mean", sa.Float(), nullable=True),
        sa.Column("power_watts_max", sa.Float(), nullable=True),
        sa.Column("energy_joules", sa.Float(), nullable=True),
        sa.Column("temperature_celsius_max", sa.Float(), nullable=True),
        sa.Column("sm_clock_hertz_mean", sa.Float(), nullable=True),
        sa.Column("throttle_reasons", sa.BigInteger(), nullable=True),
        sa.Column("xid_events", sa.Integer(), nullable=False),
        sa.Column("xid_last", sa.Integer(), nullable=True),
        sa.UniqueConstraint("host", "uuid", "mig_instance", "minute", name="uq_gpu_rollups_gpu_minute"),
    )
    op.create_index("ix_gpu_rollups_minute", "gpu_rollups", ["minute"])
    op.create_index("ix_gpu_rollups_pool", "gpu_rollups", ["pool"])


def downgrade() -> None:
    op.drop_table("gpu_rollups")
