"""Warnings about a valid config that need a stage's knowledge, printed by `check` and logged by
`serve` at start. They live here, at the top of the house, so that `monitor.config` loads no stage."""

from __future__ import annotations

from monitor.collect.vllm import threshold_warning
from monitor.config import Config, LatencyIndicator
from monitor.evaluate.slo import objective_warnings


def advice(config: Config) -> list[str]:
    """Each warning prefixed with its key path, as the config's own warnings are."""
    warnings: list[str] = []
    for i, slo in enumerate(config.slos):
        if isinstance(slo.indicator, LatencyIndicator):
            warning = threshold_warning(slo.indicator.metric, slo.indicator.threshold)
            if warning:
                warnings.append(f"slos[{i}].indicator.threshold: {warning}")
        # an objective so low that even 100% errors cannot reach a pair's burn factor: that alert
        # would stay silent through a total outage, which the operator must hear about now
        for warning in objective_warnings(slo.objective, slo.window, name=slo.name):
            warnings.append(f"slos[{i}].objective: {warning}")
    return warnings
