"""`pools:`: each pool's targets and the settings its stages read (health, scaling, cost).

The models live here, apart from the logic that uses them (monitor/decide/health.py,
monitor/decide/scaling.py, monitor/evaluate/cost.py), so that reading a config never loads a stage.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from monitor.settings.base import Section
from monitor.settings.discovery import DiscoveryConfig
from monitor.units import (
    Interval,
    Latency,
    LatencyOrZero,
    Name,
    Percent,
    Ratio,
    TargetUrl,
    Window,
)


def _zero_is_off(value: object) -> object:
    """`slow_start: 0s` (or 0) means no ramp, as Envoy's and NGINX's slow_start read it."""
    return None if value in (0, "0", "0s", "0ms") else value


class HealthSettings(Section):
    """`pools[].health`: when an instance is degraded, ejected and let back. Every field has a default.

    Thresholds set to `null` switch their rule off.
    """

    failure_threshold: int = Field(3, ge=1, description="consecutive failed scrapes or /health probes that eject")
    window: Interval | None = Field(None, description="window of the latency and error figures; default evaluation.window")
    min_requests: int = Field(5, ge=0, description="requests in the window before latency and error ratio count")
    ttft_p99_degraded: Latency | None = 0.5
    ttft_p99_eject: Latency | None = 1.0
    e2e_p99_degraded: Latency | None = None
    e2e_p99_eject: Latency | None = None
    # slow decoding (seed guidance: TPOT p99 under 50-100 ms); off by default, as a long-context
    # model's normal TPOT varies with batch size far more than its TTFT does
    tpot_p99_degraded: Latency | None = None
    tpot_p99_eject: Latency | None = None
    relative_slowdown: float | None = Field(
        3.0, gt=1.0, description="in a pool too small for the outlier rule, a p99 this many times the median "
                                 "of the others degrades (never ejects)")
    relative_min_requests: int = Field(50, ge=1, description="requests on both sides before relative_slowdown counts")
    startup_grace: Interval = Field(600.0, description="how long a joined instance may stay starting before it is judged")
    drain_time: Interval = Field(60.0, description="how long a leaving instance stays visible (drained) before it is dropped")
    slow_start: Annotated[Interval | None, BeforeValidator(_zero_is_off)] = Field(
        None, description="a newly healthy instance's weight ramps up over this long; 0s or unset: off")
    error_ratio_degraded: Ratio | None = 0.05
    error_ratio_eject: Ratio | None = 0.25
    hang_intervals: int | None = Field(
        6, ge=1, description="intervals with requests running or waiting and no token, finished request or "
                             "engine iteration that mean a hang")
    kv_cache_threshold: Ratio | None = Field(0.9, description="KV-cache usage that, with requests waiting, degrades")
    kv_cache_min_waiting: int = Field(1, ge=1)
    outlier_stdev_factor: float | None = Field(1.9, gt=0, description="k in mean ± k·stdev of the rest of the pool")
    outlier_min_hosts: int = Field(5, ge=3, description="hosts with enough requests before outliers are judged")
    outlier_min_requests: int = Field(100, ge=0, description="requests per host in the window to take part")
    outlier_min_latency_ratio: float = Field(1.5, ge=1.0, description="and at least this many times the rest's mean")
    outlier_min_success_rate_drop: Ratio = Field(0.05, description="and at least this far below the rest's mean")
    outlier_action: Literal["degrade", "eject"] = "eject"
    base_ejection_time: Interval = 30.0
    max_ejection_time: Interval = 300.0
    backoff_decay: Interval = Field(60.0, description="healthy time that takes one step off the backoff")
    recovery_intervals: int = Field(3, ge=1, description="good intervals in a row before degraded/ejected return")
    max_ejection_percent: Percent = 50.0
    degraded_weight: Ratio = Field(0.25, description="share of a healthy server's weight a degraded one gets")
    stale_after: Interval | None = Field(None, description="monitor data older than this fails open; default 3 scrape intervals")

    @model_validator(mode="after")
    def _consistent(self) -> HealthSettings:
        problems = []
        for name in ("ttft_p99", "e2e_p99", "tpot_p99", "error_ratio"):
            low, high = getattr(self, f"{name}_degraded"), getattr(self, f"{name}_eject")
            if low is not None and high is not None and low > high:
                problems.append(f"{name}_degraded must not exceed {name}_eject")
        if self.max_ejection_time < self.base_ejection_time:
            problems.append("max_ejection_time must not be shorter than base_ejection_time")
        if self.degraded_weight <= 0:
            problems.append("degraded_weight must be above 0 (an instance with no weight is ejected, say so instead)")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def ejection_limit(self, pool_size: int) -> int:
        """How many instances of a pool of this size may be ejected at once.

        At least one whenever ejection is allowed at all (Envoy's `always_eject_one_host`), so small
        pools are not left unprotected; `max_ejection_percent: 0` switches ejection off.
        """
        if self.max_ejection_percent <= 0 or pool_size <= 0:
            return 0
        return max(1, math.floor(pool_size * self.max_ejection_percent / 100.0 + 1e-9))


# `max_replicas` when unset: a bound an autoscaler cannot run away past (one sick node once asked for
# a fleet 18 times larger); a pool already larger keeps its size as the bound
DEFAULT_MAX_REPLICAS = 100


class ScalingSettings(Section):
    """`pools[].scaling`: targets per metric (null switches a metric off), tolerance, windows, bounds."""

    min_replicas: int = Field(1, ge=0, le=2**31 - 1)  # Kubernetes replica counts are int32
    max_replicas: int | None = Field(None, ge=1, le=2**31 - 1, description=f"upper bound; unset: {DEFAULT_MAX_REPLICAS} (or the "
                                                              "pool's current replicas when more), and `check` warns")
    target_waiting_per_replica: float | None = Field(5.0, gt=0)
    target_kv_cache_usage: Ratio | None = 0.8
    target_ttft_p99: LatencyOrZero | None = 0.5
    target_ttft_burn_rate: float | None = Field(1.0, gt=0)
    min_requests: int = Field(10, ge=0, description="requests in the window before TTFT p99 counts")
    tolerance: float = Field(0.1, ge=0.0, lt=1.0)
    scale_up_stabilization: Window = 60.0
    scale_down_stabilization: Window = 300.0
    # HPA `behavior.scaleUp` policies (selectPolicy Max): per `scale_up_period`, at most +percent or
    # +replicas over the replicas at the period's start, whichever is larger; null switches one off
    scale_up_max_percent: float | None = Field(default=100.0, ge=0, description="replicas added per period, "
                                                                         "as a percentage of the pool")
    scale_up_max_replicas: int | None = Field(default=4, ge=0, description="replicas added per period")
    scale_up_period: Window = 60.0
    # a latency or burn signal scales up only when a capacity signal (waiting per replica, KV usage,
    # running per max_num_seqs) is at least this share of its target: slowness without load is
    # health (a sick node), not capacity
    capacity_agreement: Ratio = Field(default=0.5, description="share of its target a capacity signal must reach "
                                                        "before latency signals may scale up")
    max_num_seqs: int | None = Field(default=None, ge=1, description="the engines' --max-num-seqs: running requests "
                                                              "per replica against it is a capacity signal")
    target_running_share: Ratio | None = Field(default=0.9, description="running per replica / max_num_seqs target")

    @model_validator(mode="after")
    def _consistent(self) -> ScalingSettings:
        problems = []
        if self.max_replicas is not None and self.max_replicas < self.min_replicas:
            problems.append("max_replicas must not be below min_replicas")
        if self.target_kv_cache_usage is not None and self.target_kv_cache_usage <= 0:
            problems.append("target_kv_cache_usage must be above 0")
        if self.target_running_share is not None and self.target_running_share <= 0:
            problems.append("target_running_share must be above 0")
        if self.target_ttft_p99 is not None and self.target_ttft_p99 <= 0:
            problems.append("target_ttft_p99 must be above 0")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def max_replicas_for(self, current: int) -> int:
        """The bound in force: `max_replicas`, or when unset DEFAULT_MAX_REPLICAS raised to the pool's
        current size and `min_replicas` (an unset bound never shrinks a pool that is already larger)."""
        if self.max_replicas is not None:
            return self.max_replicas
        return max(DEFAULT_MAX_REPLICAS, current, self.min_replicas)


class CostConfig(Section):
    """`pools[].cost`: what the pool's GPUs cost."""

    gpu_hour: float = Field(gt=0, description="price of one GPU for one hour")
    gpus_per_instance: int = Field(default=1, ge=1, le=1024, description="GPUs behind each target")
    currency: str = Field(default="USD", min_length=1, max_length=16, pattern=r"^[A-Za-z0-9_.$€£¥-]+$")
    # what the pool may spend per UTC day, in `currency`: CostBudgetWarning at 80% of it, CostBudgetExceeded
    # at 100% (spend so far = replica-hours since midnight UTC x gpus_per_instance x gpu_hour)
    daily_budget: float | None = Field(default=None, gt=0, description="spend per UTC day that alerts "
                                                                         "at 80% (ticket) and 100% (page)")


class PoolConfig(Section):
    name: Name
    # duplicates (within a pool and across pools) are checked on the whole Config, together with
    # every other problem, so that `check` names them in the same pass as a typo elsewhere
    # optional when `discovery` finds the members; a pool needs at least one of the two
    targets: list[TargetUrl] = Field(default_factory=list)
    discovery: list[DiscoveryConfig] = Field(default_factory=list, description="file_sd, http_sd, dns, prometheus")
    health: HealthSettings = HealthSettings()
    scaling: ScalingSettings = ScalingSettings()
    cost: CostConfig | None = Field(default=None, description="GPU-hour price: cost per token and request")

    @model_validator(mode="after")
    def _has_members(self) -> PoolConfig:
        if not self.targets and not self.discovery:
            raise ValueError("a pool needs `targets`, `discovery` or both (e.g. targets: [http://10.0.0.11:8000])")
        return self
