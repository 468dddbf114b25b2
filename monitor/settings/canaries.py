"""`canaries:`: a rollout's two groups of instances, the metrics compared and the regression each
tolerates, the evidence needed before a verdict, and the confidence.

The judge itself is monitor/decide/canary.py; this module only reads and checks the YAML (settings
import only `monitor.units`, pydantic and the standard library).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, field_validator, model_validator

from monitor.settings.base import Section
from monitor.units import Interval, Name

# what the judge knows, in the order it reports them; the default when `metrics` is not given
CANARY_METRICS = ("ttft", "tpot", "itl", "e2e", "errors", "goodput", "preemptions", "kv_usage")
# compared in absolute points (errors: candidate ratio - baseline ratio; goodput: the drop of the share
# within the latency objectives; kv_usage: of the mean usage); the rest relatively
ABSOLUTE_METRICS = frozenset({"errors", "goodput", "kv_usage"})
DEFAULT_TOLERANCE = {"ttft": 0.10, "tpot": 0.10, "itl": 0.10, "e2e": 0.10, "errors": 0.001, "goodput": 0.01,
                     "preemptions": 0.25, "kv_usage": 0.10}
MAX_TOLERANCE = 10.0  # +1000%: beyond it a "regression" is no longer a canary question


def parse_tolerance(value: Any) -> float:
    """`10%` → 0.10, `0.1` → 0.1 (a fraction), `0.1%` → 0.001: the regression a metric tolerates.
    Relative for latencies and preemptions (+10% on the quantile), absolute for `errors` (+0.1 point
    of error ratio), `goodput` (-1 point) and `kv_usage` (+10 points)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"not a tolerance: {value!r:.80} (use e.g. 10% or 0.1)")  # pydantic reads ValueError
    text = str(value).strip()
    try:
        number = float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
    except ValueError:
        raise ValueError(f"not a tolerance: {value!r:.80} (use e.g. 10% or 0.1)") from None
    if not (math.isfinite(number) and 0.0 <= number <= MAX_TOLERANCE):
        raise ValueError(f"tolerance out of range [0%, {MAX_TOLERANCE * 100:g}%]: {value!r:.80}")
    return number


def parse_confidence(value: Any) -> float:
    """`95%` or `0.95`: one minus the risk of failing a good canary; from 50% to 99.99%."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"not a confidence: {value!r:.80} (use e.g. 95% or 0.95)")  # pydantic reads ValueError
    text = str(value).strip()
    try:
        number = float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
    except ValueError:
        raise ValueError(f"not a confidence: {value!r:.80} (use e.g. 95% or 0.95)") from None
    if not (math.isfinite(number) and 0.5 <= number <= 0.9999):
        raise ValueError(f"confidence out of range [50%, 99.99%]: {value!r:.80}")
    return number


Tolerance = Annotated[float, BeforeValidator(parse_tolerance)]
Confidence = Annotated[float, BeforeValidator(parse_confidence)]
LabelValue = Annotated[str, Field(max_length=1000)]
LabelName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=200)]


class CanaryGroup(Section):
    """One side of a canary: instances of the canary's pool with these discovery labels, or every
    member of another pool (`pool`), or both (that pool's members with these labels)."""

    labels: dict[LabelName, LabelValue] = Field(default_factory=dict)
    pool: Name | None = None

    @model_validator(mode="after")
    def _selects(self) -> CanaryGroup:
        if not self.labels and self.pool is None:
            raise ValueError("a group needs `labels` (e.g. {version: v2}) or `pool`")
        return self

    def describe(self, default_pool: str) -> str:
        """`version=v2` or `pool chat-next`: the group as a sentence names it."""
        labels = ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))
        if self.pool is not None and self.pool != default_pool:
            return f"pool {self.pool}" + (f" {labels}" if labels else "")
        return labels or f"pool {default_pool}"

    def short(self) -> str:
        """What the judge's sentence calls the group's requests: `v2` for {version: v2}."""
        if len(self.labels) == 1:
            return next(iter(self.labels.values()))
        return ",".join(f"{k}={v}" for k, v in sorted(self.labels.items())) or str(self.pool)


class CanaryConfig(Section):
    name: Name
    pool: Name
    baseline: CanaryGroup
    candidate: CanaryGroup
    metrics: list[str] = Field(default_factory=lambda: list(CANARY_METRICS), min_length=1)
    tolerance: dict[str, Tolerance] = Field(default_factory=dict)
    min_requests: int = Field(500, ge=1, le=10**9, description="finished requests per group before a verdict")
    min_duration: Interval = Field(300.0, description="time since both groups had requests before a verdict")
    confidence: Confidence = 0.95
    normalize: bool = Field(True, description="TTFT per prompt token, e2e per output token, where the "
                                              "candidate's requests are larger than the baseline's")
    notify: bool = Field(False, description="a `CanaryFailed` alert (ticket) to `alertmanager` while the verdict "
                                            "is fail")

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, metrics: list[str]) -> list[str]:
        unknown = [m for m in metrics if m not in CANARY_METRICS]
        if unknown:
            raise ValueError(f"unknown metric {unknown[0]!r:.80} (the judge knows: {', '.join(CANARY_METRICS)})")
        if len(set(metrics)) != len(metrics):
            raise ValueError("a metric is listed twice")
        return metrics

    @field_validator("tolerance")
    @classmethod
    def _known_tolerances(cls, tolerance: dict[str, float]) -> dict[str, float]:
        unknown = [m for m in tolerance if m not in CANARY_METRICS]
        if unknown:
            raise ValueError(f"tolerance for an unknown metric {unknown[0]!r:.80} "
                             f"(the judge knows: {', '.join(CANARY_METRICS)})")
        return tolerance

    @model_validator(mode="after")
    def _two_groups(self) -> CanaryConfig:
        base_pool, cand_pool = self.baseline.pool or self.pool, self.candidate.pool or self.pool
        if base_pool == cand_pool and _overlap(self.baseline.labels, self.candidate.labels) == "same":
            raise ValueError("baseline and candidate select the same instances (give them different labels or pools)")
        return self

    def tolerance_of(self, metric: str) -> float:
        return self.tolerance.get(metric, DEFAULT_TOLERANCE[metric])

    @property
    def risk(self) -> float:
        return 1.0 - self.confidence


def _overlap(a: dict[str, str], b: dict[str, str]) -> str | None:
    """"same" when two label selectors are equal, "may" when an instance could match both (no label
    they both name has different values), None when they are disjoint."""
    if a == b:
        return "same"
    if any(a[k] != b[k] for k in a.keys() & b.keys()):
        return None
    return "may"


def canary_problems(canaries: Sequence[CanaryConfig], pools: Sequence[str]) -> list[str]:
    """Cross-section checks: unique names, pools that exist."""
    problems = []
    names = ", ".join(sorted(pools)) or "none"
    seen: set[str] = set()
    for i, canary in enumerate(canaries):
        if canary.name in seen:
            problems.append(f"canaries[{i}].name: duplicate canary name {canary.name!r} (canary names must be unique)")
        seen.add(canary.name)
        for key, pool in (("pool", canary.pool), ("baseline.pool", canary.baseline.pool),
                          ("candidate.pool", canary.candidate.pool)):
            if pool is not None and pool not in pools:
                problems.append(f"canaries[{i}].{key}: no pool named {pool!r} (pools: {names})")
    return problems


def canary_warnings(canaries: Sequence[CanaryConfig], static_only: Sequence[str]) -> list[str]:
    """What `check` says of canaries that are valid but cannot work as written: groups that may
    overlap, and label groups in a pool whose members are all static targets (labels come from
    discovery: a static target has none, so the group is empty)."""
    warnings = []
    for i, canary in enumerate(canaries):
        base_pool, cand_pool = canary.baseline.pool or canary.pool, canary.candidate.pool or canary.pool
        if base_pool == cand_pool and _overlap(canary.baseline.labels, canary.candidate.labels) == "may":
            warnings.append(f"canaries[{i}]: baseline ({canary.baseline.describe(canary.pool)}) and candidate "
                            f"({canary.candidate.describe(canary.pool)}) may overlap: an instance matching both "
                            "is left out of the comparison; give both groups the same label key")
        for side, group, pool in (("baseline", canary.baseline, base_pool), ("candidate", canary.candidate, cand_pool)):
            if group.labels and pool in static_only:
                warnings.append(f"canaries[{i}].{side}.labels: pool {pool!r} has only static targets, which carry "
                                "no labels, so this group is empty; find the instances with `discovery` (labels "
                                f"come from it) or compare two pools (`{side}: {{pool: NAME}}`)")
    return warnings
