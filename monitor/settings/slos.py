"""`slos:`: what an SLO measures (its indicator), its objective and window."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from monitor.settings.base import OptionalUrl, Section
from monitor.units import Duration, Name, Ratio


class LatencyIndicator(Section):
    type: Literal["latency"]
    metric: Literal["ttft", "tpot", "e2e", "queue", "itl"]
    threshold: Duration


class ErrorRatioIndicator(Section):
    type: Literal["error_ratio"]


class SaturationIndicator(Section):
    type: Literal["saturation"]
    metric: Literal["kv_cache_usage"] = "kv_cache_usage"
    threshold: Ratio


class AvailabilityIndicator(Section):
    type: Literal["availability"]


Indicator = Annotated[
    LatencyIndicator | ErrorRatioIndicator | SaturationIndicator | AvailabilityIndicator,
    Field(discriminator="type"),
]

# the `type` of each indicator, for error messages that name the member pydantic tried
INDICATOR_TYPES: dict[str, type[Section]] = {
    "latency": LatencyIndicator,
    "error_ratio": ErrorRatioIndicator,
    "saturation": SaturationIndicator,
    "availability": AvailabilityIndicator,
}


class SloConfig(Section):
    name: Name
    indicator: Indicator
    objective: Ratio
    window: Duration = 30 * 86400.0
    pools: list[Name] | None = Field(default=None, description="pools this SLO applies to; all when unset")
    runbook_url: OptionalUrl = Field(default=None, description="sent as the alerts' runbook_url annotation")
    # Grafana SLO's `min_failures`: a burn-rate pair fires only with at least this many bad events in
    # its long window, so one failed request out of ten at night does not wake anybody.
    min_bad_events: float = Field(default=5.0, ge=0.0)

    @field_validator("objective")
    @classmethod
    def _objective_open_interval(cls, value: float) -> float:
        if not 0.0 < value < 1.0:
            raise ValueError("objective must be above 0% and below 100% (a 100% objective has no error budget; "
                             "use e.g. 99.9%)")
        return value
