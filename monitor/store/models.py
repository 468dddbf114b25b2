"""SQL tables (SQLAlchemy 2). Migrations in migrations/ are the source of truth for the schema;
these models must match them (a test compares the two).

History is kept per instance per minute: at 1,000 targets scraped every 5 s, a row per scrape would
be 17 million rows a day, while a minute is finer than any SLO window or dashboard needs.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Pool(Base):
    __tablename__ = "pools"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Instance(Base):
    __tablename__ = "instances"
    __table_args__ = (UniqueConstraint("pool_id", "address", name="uq_instances_pool_address"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("pools.id", ondelete="CASCADE"), index=True)
    address: Mapped[str] = mapped_column(String(300))  # host:port
    url: Mapped[str] = mapped_column(Text)
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class ScrapeOutcome(Base):
    """How scraping one instance went during one minute."""

    __tablename__ = "scrape_outcomes"
    __table_args__ = (UniqueConstraint("instance_id", "minute", name="uq_scrape_outcomes_instance_minute"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"))
    minute: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    scrapes: Mapped[int] = mapped_column(Integer)
    failures: Mapped[int] = mapped_column(Integer)
    health_failures: Mapped[int] = mapped_column(Integer, default=0)
    mean_duration_s: Mapped[float] = mapped_column(Float)
    max_duration_s: Mapped[float] = mapped_column(Float)
    last_error_kind: Mapped[str | None] = mapped_column(String(40), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class InstanceRollup(Base):
    """One instance's events for one model over one minute (counts, not ratios, so they add up)."""

    __tablename__ = "instance_rollups"
    __table_args__ = (
        UniqueConstraint("instance_id", "model_name", "minute", name="uq_instance_rollups_instance_model_minute"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"))
    model_name: Mapped[str] = mapped_column(String(300))
    minute: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    span_s: Mapped[float] = mapped_column(Float)
    requests: Mapped[float] = mapped_column(Float)
    errors: Mapped[float] = mapped_column(Float)
    finished: Mapped[dict] = mapped_column(JSON)  # finished_reason -> count
    prompt_tokens: Mapped[float | None] = mapped_column(Float, nullable=True)
    generation_tokens: Mapped[float | None] = mapped_column(Float, nullable=True)
    preemptions: Mapped[float | None] = mapped_column(Float, nullable=True)
    ttft_p50_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    ttft_p99_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    tpot_p99_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    e2e_p99_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    queue_p99_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    kv_cache_usage: Mapped[float | None] = mapped_column(Float, nullable=True)
    requests_running: Mapped[float | None] = mapped_column(Float, nullable=True)
    requests_waiting: Mapped[float | None] = mapped_column(Float, nullable=True)
    # bucket increases per histogram ({"ttft": {"bounds": [...], "counts": [...]}}), so longer
    # windows and other quantiles can be computed later from stored minutes
    histograms: Mapped[dict] = mapped_column(JSON)


class SloEvent(Base):
    """Good and valid events of one SLO, pool (and model) over one minute: what error budgets and
    the long burn-rate windows are rebuilt from after a restart, instead of 30 days in memory.

    Keyed by names, not ids: an SLO exists only in the config, and a row must outlive a pool's
    removal for as long as the budget window it belongs to. `model_name` is "" for the whole pool
    (an empty string rather than NULL, because NULLs never collide in a unique constraint).
    """

    __tablename__ = "slo_events"
    __table_args__ = (
        UniqueConstraint("slo", "pool", "model_name", "minute", name="uq_slo_events_slo_pool_model_minute"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slo: Mapped[str] = mapped_column(String(100))
    pool: Mapped[str] = mapped_column(String(100))
    model_name: Mapped[str] = mapped_column(String(300))
    minute: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    good: Mapped[float] = mapped_column(Float)
    total: Mapped[float] = mapped_column(Float)


class DecisionRecord(Base):
    """The audit log: every health state change and every change of a pool's scaling recommendation,
    with the reasons and the signal values it was made on (what an operator asks after an ejection)."""

    __tablename__ = "decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # health | scaling
    pool: Mapped[str] = mapped_column(String(100), index=True)
    instance: Mapped[str] = mapped_column(String(300))  # "" for a pool-level decision
    from_state: Mapped[str] = mapped_column(String(40))
    to_state: Mapped[str] = mapped_column(String(40))
    reasons: Mapped[list] = mapped_column(JSON)
    signals: Mapped[dict] = mapped_column(JSON)


class ServiceState(Base):
    """Small pieces of decision state that must survive a restart (e.g. who is ejected, until when)."""

    __tablename__ = "service_state"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[dict] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LeaderLease(Base):
    """Who leads the replicas sharing this database, and until when (migration 0004).

    One row per lease name. Times are Unix seconds from the *database's* clock, never a replica's,
    so replicas whose clocks disagree still agree on when a lease has expired. `term` goes up by
    one at every change of holder: a fencing number for logs and /metrics.
    """

    __tablename__ = "leader_lease"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    term: Mapped[int] = mapped_column(Integer)
    acquired_at: Mapped[float] = mapped_column(Float)
    renewed_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)


class GpuRollupRecord(Base):
    """One GPU over one minute (migration 0005): means and maxima of its readings, energy used, throttle
    reasons and XID events, in /metrics' base units. Keyed by the GPU's node, UUID and MIG instance
    ("" for a whole GPU), not by instance: a GPU outlives the vLLM process it served, and its mapping
    (`pool`, `instance`, both nullable) is a label of the minute, as it was then."""

    __tablename__ = "gpu_rollups"
    __table_args__ = (
        UniqueConstraint("host", "uuid", "mig_instance", "minute", name="uq_gpu_rollups_gpu_minute"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    minute: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    host: Mapped[str] = mapped_column(String(300))
    uuid: Mapped[str] = mapped_column(String(200))
    mig_instance: Mapped[str] = mapped_column(String(100))
    gpu_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    model_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    pool: Mapped[str | None] = mapped_column(String(100), nullable=True, index=True)
    instance: Mapped[str | None] = mapped_column(String(300), nullable=True)
    samples: Mapped[int] = mapped_column(Integer)
    lost: Mapped[bool] = mapped_column(Boolean)
    utilization_mean: Mapped[float | None] = mapped_column(Float, nullable=True)
    utilization_max: Mapped[float | None] = mapped_column(Float, nullable=True)
    memory_used_bytes_mean: Mapped[float | None] = mapped_column(Float, nullable=True)
    memory_used_bytes_max: Mapped[float | None] = mapped_column(Float, nullable=True)
    memory_total_bytes: Mapped[float | None] = mapped_column(Float, nullable=True)
    memory_used_ratio_max: Mapped[float | None] = mapped_column(Float, nullable=True)
    power_watts_mean: Mapped[float | None] = mapped_column(Float, nullable=True)
    power_watts_max: Mapped[float | None] = mapped_column(Float, nullable=True)
    energy_joules: Mapped[float | None] = mapped_column(Float, nullable=True)
    temperature_celsius_max: Mapped[float | None] = mapped_column(Float, nullable=True)
    sm_clock_hertz_mean: Mapped[float | None] = mapped_column(Float, nullable=True)
    throttle_reasons: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    xid_events: Mapped[int] = mapped_column(Integer)
    xid_last: Mapped[int | None] = mapped_column(Integer, nullable=True)


class ExclusionRecord(Base):
    """A maintenance window posted through the API (migration 0006), kept as its own audit log: who
    posted it from where and why, and when it was ended early or removed. Rows are never deleted by
    the API (removal sets `removed_at`), so the record of what the budget was excused stays."""

    __tablename__ = "exclusions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slo: Mapped[str | None] = mapped_column(String(100), nullable=True)  # None: every SLO
    pool: Mapped[str | None] = mapped_column(String(100), nullable=True)  # None: every pool
    starts_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(300))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    removed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # the client's own id for the window (migration 0007): the same id posted twice is one row
    request_id: Mapped[str | None] = mapped_column(String(200), nullable=True, unique=True, index=True)
