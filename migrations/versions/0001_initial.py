"""pools, instances, scrape outcomes and per-minute instance rollups

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pools",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "instances",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("pool_id", sa.Integer(), sa.ForeignKey("pools.id", ondelete="CASCADE"), nullable=False),
        sa.Column("address", sa.String(300), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.UniqueConstraint("pool_id", "address", name="uq_instances_pool_address"),
    )
    op.create_index("ix_instances_pool_id", "instances", ["pool_id"])
    op.create_table(
        "scrape_outcomes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("instance_id", sa.Integer(), sa.ForeignKey("instances.id", ondelete="CASCADE"), nullable=False),
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("scrapes", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("health_failures", sa.Integer(), nullable=False),
        sa.Column("mean_duration_s", sa.Float(), nullable=False),
        sa.Column("max_duration_s", sa.Float(), nullable=False),
        sa.Column("last_error_kind", sa.String(40), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.UniqueConstraint("instance_id", "minute", name="uq_scrape_outcomes_instance_minute"),
    )
    op.create_index("ix_scrape_outcomes_minute", "scrape_outcomes", ["minute"])
    op.create_table(
        "instance_rollups",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("instance_id", sa.Integer(), sa.ForeignKey("instances.id", ondelete="CASCADE"), nullable=False),
        sa.Column("model_name", sa.String(300), nullable=False),
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("span_s", sa.Float(), nullable=False),
        sa.Column("requests", sa.Float(), nullable=False),
        sa.Column("errors", sa.Float(), nullable=False),
        sa.Column("finished", sa.JSON(), nullable=False),
        sa.Column("prompt_tokens", sa.Float(), nullable=True),
        sa.Column("generation_tokens", sa.Float(), nullable=True),
        sa.Column("preemptions", sa.Float(), nullable=True),
        sa.Column("ttft_p50_s", sa.Float(), nullable=True),
        sa.Column("ttft_p99_s", sa.Float(), nullable=True),
        sa.Column("tpot_p99_s", sa.Float(), nullable=True),
        sa.Column("e2e_p99_s", sa.Float(), nullable=True),
        sa.Column("queue_p99_s", sa.Float(), nullable=True),
        sa.Column("kv_cache_usage", sa.Float(), nullable=True),
        sa.Column("requests_running", sa.Float(), nullable=True),
        sa.Column("requests_waiting", sa.Float(), nullable=True),
        sa.Column("histograms", sa.JSON(), nullable=False),
        sa.UniqueConstraint("instance_id", "model_name", "minute", name="uq_instance_rollups_instance_model_minute"),
    )
    op.create_index("ix_instance_rollups_minute", "instance_rollups", ["minute"])


def downgrade() -> None:
    op.drop_table("instance_rollups")
    op.drop_table("scrape_outcomes")
    op.drop_table("instances")
    op.drop_table("pools")
