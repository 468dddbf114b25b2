"""`slos:`: what an SLO measures (its indicator), its objective and window, and how it alerts: the
burn-rate window set, labels and annotations on every alert, the metric-absent delay and the
maintenance windows (`exclusions`) its error budget does not pay for.

Also the top-level `alerting:` section (user window sets), and the built-in window sets as data.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Sequence

from pydantic import Field, field_validator

from monitor.settings.alert_windows import BUILTIN_WINDOW_SETS, BurnWindow, SloAlerting, default_window_set
from monitor.settings.base import OptionalUrl, Section
from monitor.settings.exclusions import ExclusionConfig
from monitor.units import Latency, Name, Ratio, SloPeriod


class LatencyIndicator(Section):
    type: Literal["latency"]
    metric: Literal["ttft", "tpot", "e2e", "queue", "itl"]
    threshold: Latency


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


# --- the SLO ------------------------------------------------------------------------------------

LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# labels that say which alert it is: an SLO's own labels may not replace them (`severity` may)
RESERVED_LABELS = frozenset({"alertname", "slo", "pool", "model_name", "burnrate_tier"})
DEFAULT_ABSENT_FOR = 600.0


class SloConfig(Section):
    name: Name
    indicator: Indicator
    objective: Ratio
    window: SloPeriod = 30 * 86400.0
    pools: list[Name] | None = Field(default=None, description="pools this SLO applies to; all when unset")
    runbook_url: OptionalUrl = Field(default=None, description="sent as the alerts' runbook_url annotation")
    # Grafana SLO's `min_failures`: a burn-rate pair fires only with at least this many bad events in
    # its long window, so one failed request out of ten at night does not wake anybody.
    min_bad_events: float = Field(default=5.0, ge=0.0)
    # What an exhausted budget must stand on (ErrorBudgetExhausted only; burn-rate alerts are not held):
    # valid events over the SLO window, and the share of the window that has data. Three minutes of a
    # fresh service's errors would otherwise read a -1071% 30-day budget.
    budget_min_events: float = Field(default=100.0, ge=0.0, allow_inf_nan=False,
                                     description="ErrorBudgetExhausted needs at least this many valid events "
                                     "over the SLO window")
    budget_min_coverage: Ratio = Field(default=0.1, description="ErrorBudgetExhausted needs data over at least "
                                       "this share of the SLO window (0-1, or a percentage)")
    absent_for: SloPeriod = Field(default=DEFAULT_ABSENT_FOR, description="SLOMetricAbsent after the SLI's "
                                 "series have been missing this long while instances are up")
    labels: dict[str, str] = Field(default_factory=dict, description="added to every alert of the SLO")
    annotations: dict[str, str] = Field(default_factory=dict, description="added to every alert of the SLO")
    exclusions: list[ExclusionConfig] = Field(default_factory=list, description="maintenance windows the "
                                              "error budget does not pay for")
    alerting: SloAlerting = SloAlerting()

    @field_validator("objective")
    @classmethod
    def _objective_open_interval(cls, value: float) -> float:
        if not 0.0 < value < 1.0:
            raise ValueError("objective must be above 0% and below 100% (a 100% objective has no error budget; "
                             "use e.g. 99.9%)")
        return value

    @field_validator("labels", "annotations")
    @classmethod
    def _label_names(cls, value: dict[str, str], info: Any) -> dict[str, str]:
        for key in value:
            if not LABEL_NAME.match(key):
                raise ValueError(f"{key!r} is not a Prometheus label name (letters, digits, '_'; not starting "
                                 "with a digit)")
            if info.field_name == "labels" and key in RESERVED_LABELS:
                raise ValueError(f"{key!r} names the alert itself and cannot be replaced (reserved: "
                                 f"{', '.join(sorted(RESERVED_LABELS))}; `severity` may be)")
        return value

    @property
    def window_set(self) -> str:
        """The name of the window set the burn alerts use (`custom` for the SLO's own pairs)."""
        if self.alerting.windows is not None:
            return self.alerting.windows
        return "custom" if self.alerting.pairs is not None else default_window_set(self.window)

    @property
    def burn_windows(self) -> list[BurnWindow]:
        """The pairs of the SLO's window set."""
        if self.alerting.pairs is not None:
            return self.alerting.pairs
        return BUILTIN_WINDOW_SETS[self.window_set].pairs


def alerting_problems(slos: Sequence[SloConfig], pools: Sequence[str]) -> list[str]:
    """Cross-section checks: an exclusion naming a pool the SLO does not cover."""
    problems = []
    for i, slo in enumerate(slos):
        covered = set(slo.pools or pools)
        for j, exclusion in enumerate(slo.exclusions):
            for k, pool in enumerate(exclusion.pools or ()):
                if pool not in covered:
                    problems.append(f"slos[{i}].exclusions[{j}].pools[{k}]: SLO {slo.name!r} does not cover a "
                                    f"pool named {pool!r} (it covers: {', '.join(sorted(covered)) or 'none'})")
    return problems
