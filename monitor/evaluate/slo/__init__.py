"""SLO arithmetic: events per indicator (`events`), the per-minute series (`series`), budgets, burn
rates and the alert verdict (`burn`). Pure: no I/O, no clock; the engine that keeps state is
`monitor.evaluate.slo.engine`, beside it with its parts (`track`, `traces`, `presence`, `maintenance`).
Those are not re-exported here: they import settings, samples and traces, and the arithmetic stays
importable without them (and without an import cycle through this package)."""

from monitor.evaluate.slo.burn import (
    DEFAULT_BUDGET_MIN_COVERAGE,
    DEFAULT_BUDGET_MIN_EVENTS,
    DEFAULT_MIN_BAD_EVENTS,
    PAIRS,
    WINDOW_NAMES,
    WINDOWS,
    BurnPair,
    BurnVerdict,
    SloEvaluation,
    alert_verdict,
    burn_factor,
    burn_factors,
    burn_rate,
    coverage_text,
    error_budget,
    error_budget_remaining,
    evaluate,
    evaluate_counts,
    exhaustion_seconds,
    never_firing_pairs,
    objective_warnings,
    pair_fires,
    pairs_of,
    retention_for,
    seconds_to_fire,
    sli,
    slo_pairs,
)
from monitor.evaluate.slo.events import (
    LATENCY_METRICS,
    NO_EVENTS,
    Events,
    IndicatorConfig,
    availability_events,
    count_events,
    error_events,
    indicator_present,
    instance_available,
    latency_events,
    saturation_events,
)
from monitor.evaluate.slo.exclusions import (
    Exclusion,
    Window,
    minute_ranges,
    slo_windows,
)
from monitor.evaluate.slo.periods import (
    DAY,
    DEFAULT_PERIOD,
    MINUTE,
    Alert,
    Severity,
)
from monitor.evaluate.slo.series import (
    EventSeries,
    MinuteRanges,
)
from monitor.evaluate.slo.spend import (
    CostBudgetStatus,
    SpendMeter,
    budget_statuses,
)

__all__ = [
    "MINUTE", "DAY", "DEFAULT_PERIOD", "Alert", "Severity", "Events", "NO_EVENTS", "LATENCY_METRICS", "latency_events",
    "error_events", "saturation_events", "instance_available", "availability_events", "IndicatorConfig", "count_events",
    "indicator_present", "EventSeries", "MinuteRanges", "WINDOW_NAMES", "WINDOWS", "sli", "error_budget", "burn_rate",
    "error_budget_remaining", "exhaustion_seconds", "burn_factor", "BurnPair", "PAIRS", "pairs_of", "slo_pairs",
    "DEFAULT_MIN_BAD_EVENTS", "DEFAULT_BUDGET_MIN_EVENTS", "DEFAULT_BUDGET_MIN_COVERAGE", "coverage_text",
    "burn_factors", "retention_for", "seconds_to_fire", "never_firing_pairs", "objective_warnings", "pair_fires",
    "BurnVerdict", "alert_verdict", "SloEvaluation", "evaluate_counts", "evaluate", "Exclusion", "Window",
    "minute_ranges", "slo_windows", "CostBudgetStatus", "SpendMeter", "budget_statuses"
]
