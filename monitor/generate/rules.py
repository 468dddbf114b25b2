"""Prometheus recording and alerting rules for the configured SLOs, the fleet and the service.

Naming (Sloth-like, one `slo` label per SLO; `pool` and `model_name` come from the series):

* `slo:valid_events:rate5m`, `slo:bad_events:rate5m` — events per second over 5 minutes, the only
  rules that read vLLM's raw series;
* `slo:valid_events:increase<W>`, `slo:bad_events:increase<W>` — event counts over each longer window
  W, summed from the 5-minute recordings (`sum_over_time` of a rate sampled once per rule interval,
  times that interval), so a 3-day window costs one pass over one recorded series instead of a
  pass over three days of raw histogram buckets;
* `slo:sli_error:ratio_rate<W>` — bad / valid over W (absent while W holds no events, as the
  service's burn rates are `null`), for W in 5m, 30m, 1h, 2h, 6h, 1d, 3d and the SLO window;
* `slo:objective:ratio`, `slo:error_budget:ratio`, `slo:period_sli:ratio`,
  `slo:period_error_budget_remaining:ratio` — what dashboards plot.

Ratios are always counts divided by counts, never an average of 5-minute ratios: under uneven
traffic an average of ratios weighs a quiet hour like a busy one (Sloth's period SLI, slok/sloth #241).

Alerts: `SloErrorBudgetBurn` with `severity` (page | ticket) and `burnrate_tier` (fast | slow), the
labels the service itself sends to Alertmanager (`monitor.publish.alertmanager`), so one inhibit rule
serves both; the multiwindow pairs (the SLO's window set: `google-30d` unless it names another),
factors and minimum bad-event count are `monitor.evaluate.slo`'s, so Prometheus and the service page
on the same numbers. No `for:` on burn alerts (the long window already demands a sustained burn).
`SLOMetricAbsent` (page) when every spelling of the SLI's vLLM series has been absent from the pool
for the SLO's `absent_for` while one of its targets is up; `ErrorBudgetExhausted` (ticket) when the
budget over the SLO window is spent. Every alert of an SLO carries its `labels` and `annotations`.

Maintenance windows: the service exports `slo_monitor_exclusion_active{slo, pool}` (1 while one is in
force); `slo:exclusion_active:max5m` records whether one was in force at any point of the last five
minutes, and the event rates of those moments are not recorded (`unless`), so they count neither
good nor bad in any window, as in the service. The five minutes are the rate window: a 5-minute rate
taken just after a window ended still holds its events. Nothing pages during one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from monitor.config import (
    AvailabilityIndicator,
    ErrorRatioIndicator,
    LatencyIndicator,
    SaturationIndicator,
    SloConfig,
    parse_duration,
)
from monitor.evaluate.slo import WINDOW_NAMES, WINDOWS, BurnPair, error_budget, never_firing_pairs, slo_pairs
import monitor.generate.expressions as q

# The labels slo-monitor's own Alertmanager client sends for a burn (`monitor.publish.alertmanager`'s
# ALERTNAME and TIERS; a test holds the two equal): one inhibit rule then serves both paths.
BURN_ALERT = "SloErrorBudgetBurn"
TIERS = {"page": "fast", "ticket": "slow"}

ABSENT_ALERT = "SLOMetricAbsent"
ABSENT_SEVERITY = "page"
ABSENT_FOR = "10m"  # the fleet's VllmMetricsAbsent; an SLO's own is its `absent_for`
EXHAUSTED_ALERT = "ErrorBudgetExhausted"
EXHAUSTED_SEVERITY = "ticket"
EXCLUSION_SERIES = "slo_monitor_exclusion_active"  # exported by the service (monitor.publish.budgets)
EXCLUDED = "slo:exclusion_active:max5m"


def _block(expr: str) -> str:
    return expr.strip() + "\n"


@dataclass(frozen=True)
class Sli:
    """How one indicator becomes event rates in PromQL: what the rules record and what `absent()` watches."""

    valid_rate: str
    bad_rate: str
    by: tuple[str, ...]
    pre_rules: tuple[dict[str, Any], ...] = ()
    absent_selectors: tuple[str, ...] = ()  # the SLI is blind when all of these are absent

    @property
    def per_model(self) -> bool:
        return "model_name" in self.by


def pool_matcher(slo: SloConfig) -> str:
    """The SLO's pools, or any series carrying a pool label (set by the generated scrape config)."""
    if slo.pools:
        return f"pool=~{q.quote(q.regex_any(slo.pools))}"
    return 'pool!=""'


def slo_pools(pools: Sequence[str], slo: SloConfig) -> list[str]:
    """The pools an SLO covers: its own list, or every pool of the config (`pools`)."""
    return list(slo.pools) if slo.pools else list(pools)


def sli_for(slo: SloConfig) -> Sli:
    """The PromQL of one SLO's indicator, mirroring `monitor.evaluate.slo.count_events`."""
    ind = slo.indicator
    pool = pool_matcher(slo)
    w = q.RATE_WINDOW
    by = ("pool", "model_name")
    if isinstance(ind, LatencyIndicator):
        names = q.histogram_names(ind.metric)
        valid = q.sum_by(by, q.rate_any(names, [pool], w, "_count"))
        parts = []
        for bound, weight in q.threshold_buckets(ind.metric, ind.threshold):
            good = q.sum_by(by, q.rate_any(names, [pool, q.le_matcher(bound)], w, "_bucket"))
            parts.append(good if weight == 1.0 else f"{q.number(weight)} * {good}")
        good_expr = " + ".join(parts) if len(parts) == 1 else "(\n    " + "\n  + ".join(parts) + "\n  )"
        bad = f"clamp_min(\n    {valid}\n  -\n    {good_expr}\n  , 0)"
        return Sli(valid, bad, by, absent_selectors=tuple(q.selector(n + "_count", [pool]) for n in names))
    if isinstance(ind, ErrorRatioIndicator):
        valid = q.sum_by(by, f"rate({q.selector(q.SUCCESS, [pool])}[{w}]) or rate({q.selector(q.REJECTIONS, [pool])}[{w}])")
        errors = q.sum_by(
            by,
            f'rate({q.selector(q.SUCCESS, [pool, "finished_reason=" + q.quote("error")])}[{w}])'
            f" or rate({q.selector(q.REJECTIONS, [pool])}[{w}])",
        )
        # V0 servers create the `error` child only once such a request finished: without it, a
        # pool with traffic and no errors must still record 0 bad events, not nothing
        bad = f"{errors}\n  or\n0 * {valid}"
        return Sli(valid, bad, by, absent_selectors=(q.selector(q.SUCCESS, [pool]),))
    if isinstance(ind, SaturationIndicator):
        names = q.KV_USAGE
        breach = {
            "record": "slo:instance_breach:bool",
            "expr": _block(
                f"avg without (engine) ({q.any_of(names, [pool])}) > bool {q.number(ind.threshold)}"
            ),
            "labels": {"slo": slo.name},
        }
        series = f'slo:instance_breach:bool{{slo={q.quote(slo.name)}}}'
        valid = f"count by (pool, model_name) (avg_over_time({series}[{w}]))"
        bad = f"sum by (pool, model_name) (avg_over_time({series}[{w}]))"
        return Sli(valid, bad, by, pre_rules=(breach,), absent_selectors=tuple(q.selector(n, [pool]) for n in names))
    if isinstance(ind, AvailabilityIndicator):
        up = q.selector("up", [f"job={q.quote(q.VLLM_JOB)}", pool])
        valid = f"count by (pool) (avg_over_time({up}[{w}]))"
        bad = f"sum by (pool) (1 - avg_over_time({up}[{w}]))"
        # no SLOMetricAbsent: availability reads `up` itself, which is never absent while a target is
        # configured (a pool Prometheus does not scrape is the fleet's VllmMetricsAbsent)
        return Sli(valid, bad, ("pool",))
    raise TypeError(f"unknown indicator {ind!r}")


def live_pairs(slo: SloConfig) -> list[BurnPair]:
    """The pairs that can fire at all: one whose factor even 100% errors cannot reach is left out
    (the same pairs `slo-monitor check` warns about), since an alert that can never fire only
    pretends to protect the SLO."""
    pairs = slo_pairs(slo)
    dead = {pair.name for pair, _ in never_firing_pairs(slo.objective, slo.window, pairs)}
    return [p for p in pairs if p.name not in dead]


def windows_for(slo: SloConfig) -> list[str]:
    """Every window name the rules record: the service's burn-rate windows, the pairs' and the period."""
    names = list(WINDOW_NAMES)
    for pair in slo_pairs(slo):
        for name in (pair.long, pair.short):
            if name not in names:
                names.append(name)
    period = q.duration(slo.window)
    if period not in names:
        names.append(period)
    return names


def _seconds(name: str) -> float:
    return WINDOWS.get(name) or parse_duration(name)


def equality_labels(selector: str) -> dict[str, str]:
    """The labels `absent(selector)` puts on its result: those of the `name="value"` matchers."""
    inner = selector.partition("{")[2].rpartition("}")[0]
    return dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', inner))


@dataclass
class SloRules:
    """One SLO's rule file, with what its promtool tests need to know."""

    slo: SloConfig
    pools: list[str]
    sli: Sli
    interval_s: float
    pairs: list[BurnPair]
    groups: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    # per pool: the labels `absent()` gives its alert (those of the selector's equality matchers)
    absent: list[tuple[str, dict[str, str], dict[str, Any]]] = field(default_factory=list)

    @property
    def file_stem(self) -> str:
        return f"slo-{self.slo.name}"

    @property
    def budget(self) -> float:
        return error_budget(self.slo.objective)

    def severities(self) -> list[str]:
        return [s for s in ("page", "ticket") if any(p.severity == s for p in self.pairs)]


def _sel(name: str, slo: SloConfig) -> str:
    return f"{name}{{slo={q.quote(slo.name)}}}"


def burn_annotations(slo: SloConfig, severity: str, pairs: list[BurnPair]) -> dict[str, str]:
    """Labels-only templates: promtool's tests compare annotations exactly, and a `$value` would tie
    them to the floating-point result of the expression."""
    budget = error_budget(slo.objective)
    spec = "; ".join(
        f"{p.name}: error ratio above {q.number(p.factor(slo.window) * budget)} "
        f"(burn {q.number(round(p.factor(slo.window), 4))}x, {q.number(p.budget_share * 100)}% of the budget "
        f"in {p.long})"
        for p in pairs
    )
    where = "pool {{ $labels.pool }}" + ("" if isinstance(slo.indicator, AvailabilityIndicator)
                                         else ", model {{ $labels.model_name }}")
    annotations = {
        "summary": f"SLO {slo.name} ({where}) is burning its error budget too fast ({severity})",
        "description": (
            f"Objective {q.number(slo.objective * 100)}% over {q.duration(slo.window)}. Fires when both windows "
            f"of a pair burn faster than its factor and the long window holds at least "
            f"{q.number(slo.min_bad_events)} bad events: {spec}."
        ),
    }
    return slo_annotations(slo, annotations)


def slo_annotations(slo: SloConfig, annotations: dict[str, str]) -> dict[str, str]:
    """runbook_url and the SLO's own annotations (which win), as the service sends them."""
    if slo.runbook_url:
        annotations["runbook_url"] = slo.runbook_url
    return {**annotations, **slo.annotations}


def slo_labels(slo: SloConfig, severity: str, **extra: str) -> dict[str, str]:
    """An SLO alert's labels: its own `labels` (a `severity` there replaces ours), then `slo`."""
    labels = {"slo": slo.name, **extra, "severity": severity}
    labels.update(slo.labels)  # reserved names are refused in the config; `severity` is replaced in place
    return labels


def _gate(expr: str, slo: SloConfig) -> str:
    """Event rates only outside maintenance windows (see the module doc)."""
    return f"(\n  {expr}\n)\nunless on (pool)\n({_sel(EXCLUDED, slo)} > 0)"


def slo_rules(pools: Sequence[str], slo: SloConfig, interval_s: float = 60.0) -> SloRules:
    """Recording rules, burn-rate alerts and absent-metric alerts of one SLO; `pools` names every
    pool of the config (an SLO without its own list covers them all)."""
    interval = q.duration(interval_s)
    sli = sli_for(slo)
    rules = SloRules(slo, slo_pools(pools, slo), sli, interval_s, live_pairs(slo))
    labels = {"slo": slo.name}
    rw = q.RATE_WINDOW

    sli_rules: list[dict[str, Any]] = [*sli.pre_rules]
    sli_rules.append({
        "record": EXCLUDED,
        "expr": _block(f"max by (pool) (max_over_time({_sel(EXCLUSION_SERIES, slo)}[{rw}]))"),
        "labels": labels,
    })
    sli_rules.append({"record": f"slo:valid_events:rate{rw}", "expr": _block(_gate(sli.valid_rate, slo)),
                      "labels": labels})
    sli_rules.append({"record": f"slo:bad_events:rate{rw}", "expr": _block(_gate(sli.bad_rate, slo)),
                      "labels": labels})
    sli_rules.append({
        "record": f"slo:sli_error:ratio_rate{rw}",
        "expr": _block(f"{_sel(f'slo:bad_events:rate{rw}', slo)}\n/\n({_sel(f'slo:valid_events:rate{rw}', slo)} > 0)"),
        "labels": labels,
    })
    period = q.duration(slo.window)
    for name in windows_for(slo):
        if name == rw:
            continue
        # samples of a recording are exactly one rule interval apart; a range half an interval
        # short of W holds W / interval of them whether the range's start is inclusive
        # (Prometheus 2) or not (Prometheus 3), so the sum is neither one sample long nor short
        span = q.duration(_seconds(name) - interval_s / 2)
        for kind in ("valid", "bad"):
            sli_rules.append({
                "record": f"slo:{kind}_events:increase{name}",
                "expr": _block(f"sum_over_time({_sel(f'slo:{kind}_events:rate{rw}', slo)}[{span}]) * {q.number(interval_s)}"),
                "labels": labels,
            })
        sli_rules.append({
            "record": f"slo:sli_error:ratio_rate{name}",
            "expr": _block(
                f"{_sel(f'slo:bad_events:increase{name}', slo)}\n/\n({_sel(f'slo:valid_events:increase{name}', slo)} > 0)"
            ),
            "labels": labels,
        })
    budget = error_budget(slo.objective)
    meta_rules = [
        {"record": "slo:objective:ratio", "expr": f"vector({q.number(slo.objective)})", "labels": labels},
        {"record": "slo:error_budget:ratio", "expr": f"vector({q.number(budget)})", "labels": labels},
        {"record": "slo:period_sli:ratio", "expr": f"1 - {_sel(f'slo:sli_error:ratio_rate{period}', slo)}",
         "labels": labels},
        {"record": "slo:period_error_budget_remaining:ratio",
         "expr": f"1 - {_sel(f'slo:sli_error:ratio_rate{period}', slo)} / {q.number(budget)}", "labels": labels},
    ]

    alert_rules: list[dict[str, Any]] = []
    for severity in rules.severities():
        pairs = [p for p in rules.pairs if p.severity == severity]
        terms = []
        for pair in pairs:
            threshold = f"({q.number(round(pair.factor(slo.window), 6))} * {q.number(budget)})"
            term = (
                f"  {_sel(f'slo:sli_error:ratio_rate{pair.long}', slo)} > {threshold}\n"
                f"  and\n  {_sel(f'slo:sli_error:ratio_rate{pair.short}', slo)} > {threshold}"
            )
            if slo.min_bad_events > 0:
                # the long window's count is summed from 5-minute rates, so early in an incident it
                # trails the real count by most of the first 5 minutes (5 counted when ~100 had
                # failed); the last 5 minutes' count, straight from the raw counters, lies inside
                # the long window too, so the larger of the two is the better lower bound
                n = q.number(slo.min_bad_events)
                term += (f"\n  and\n  (\n    {_sel(f'slo:bad_events:increase{pair.long}', slo)} >= {n}\n    or\n"
                         f"    {_sel(f'slo:bad_events:rate{rw}', slo)} * {q.number(q.RATE_RANGE_S)} >= {n}\n  )")
            terms.append(f"(\n{term}\n)")
        alert = {
            "alert": BURN_ALERT,
            "expr": _block("\nor\n".join(terms)),
            "labels": slo_labels(slo, severity, burnrate_tier=TIERS[severity]),
            "annotations": burn_annotations(slo, severity, pairs),
        }
        alert_rules.append(alert)
        rules.alerts.append(alert)
    exhausted = exhausted_alert(slo, period, rw)
    alert_rules.append(exhausted)
    rules.alerts.append(exhausted)
    absent_for = q.duration(slo.absent_for)
    for pool in rules.pools if sli.absent_selectors else ():
        pinned = [s.replace(pool_matcher(slo), f"pool={q.quote(pool)}") for s in sli.absent_selectors]
        up = q.selector("up", [f"job={q.quote(q.VLLM_JOB)}", f"pool={q.quote(pool)}"])
        missing = "\n  and\n  ".join(f"absent_over_time({s}[{absent_for}])" for s in pinned)
        alert = {
            "alert": ABSENT_ALERT,
            # every spelling of the series gone for absent_for, while a target of the pool is up (a pool
            # that is down is VllmTargetDown's), and no maintenance window in force
            "expr": _block(f"(\n  {missing}\n)\nand on ()\n(count({up} == 1) > 0)\n"
                           f"unless on (pool)\n({_sel(EXCLUDED, slo)} > 0)"),
            # `pool` is in absent_over_time()'s result already; as a rule label it also tells the
            # per-pool rules apart for promtool's duplicate-rule check
            "labels": slo_labels(slo, ABSENT_SEVERITY, pool=pool),
            "annotations": slo_annotations(slo, {
                "summary": f"SLO {slo.name} cannot be evaluated for pool {pool}: its metrics are absent",
                "description": (
                    f"None of {', '.join(sorted(set(s.split('{')[0] for s in pinned)))} has had a series with "
                    f'pool="{pool}" for {absent_for} while the pool\'s targets are up: a renamed or disabled vLLM '
                    "metric reads as no events, which would look like a perfect SLO. Without them the SLI, the "
                    "burn rates and every burn-rate alert of this SLO are silent. Check the vLLM version's metric "
                    "names, and that Prometheus scrapes the pool with the `pool` label (see prometheus.yml)."
                ),
            }),
        }
        alert_rules.append(alert)
        rules.alerts.append(alert)
        rules.absent.append((pool, equality_labels(pinned[0]), alert))

    # One group: Prometheus evaluates the rules of a group in order at one timestamp, each seeing
    # what the ones before it recorded, while separate groups run independently and would read each
    # other's recordings up to one interval late (a burn alert judging the previous minute's SLI).
    rules.groups = [{"name": f"slo:{slo.name}", "interval": interval, "rules": sli_rules + meta_rules + alert_rules}]
    return rules


def exhausted_alert(slo: SloConfig, period: str, rate_window: str) -> dict[str, Any]:
    """ErrorBudgetExhausted: no budget left over the SLO window, from at least `min_bad_events` bad
    events (the service's `SloEvaluation.exhausted`)."""
    if period == rate_window:
        bad = f"{_sel(f'slo:bad_events:rate{rate_window}', slo)} * {q.number(q.RATE_RANGE_S)}"
    else:
        bad = _sel(f"slo:bad_events:increase{period}", slo)
    expr = f"{_sel('slo:period_error_budget_remaining:ratio', slo)} <= 0"
    if slo.min_bad_events > 0:
        expr += f"\nand\n{bad} >= {q.number(slo.min_bad_events)}"
    expr += f"\nunless on (pool)\n({_sel(EXCLUDED, slo)} > 0)"  # no alert during a maintenance window
    where = "pool {{ $labels.pool }}" + ("" if isinstance(slo.indicator, AvailabilityIndicator)
                                         else ", model {{ $labels.model_name }}")
    return {
        "alert": EXHAUSTED_ALERT,
        "expr": _block(expr),
        "labels": slo_labels(slo, EXHAUSTED_SEVERITY),
        "annotations": slo_annotations(slo, {
            "summary": f"SLO {slo.name} ({where}) has exhausted its error budget",
            "description": (
                f"Objective {q.number(slo.objective * 100)}% over {period}: the error ratio over the window has "
                f"reached the whole error budget ({q.number(error_budget(slo.objective))}) with at least "
                f"{q.number(slo.min_bad_events)} bad events. Until it recovers, every further bad event breaks "
                "the objective."
            ),
        }),
    }


# --- the fleet: targets and metrics that disappeared ----------------------------------------------

FLEET_FILE = "fleet"


def fleet_rules(pools: Sequence[str], interval_s: float = 60.0) -> list[dict[str, Any]]:
    """vLLM targets down and pools without vLLM metrics: what every SLO and panel silently depends on."""
    job = f"job={q.quote(q.VLLM_JOB)}"
    rules: list[dict[str, Any]] = [{
        "alert": "VllmTargetDown",
        "expr": _block(f"up{{{job}}} == 0"),
        "for": "5m",
        "labels": {"severity": "ticket"},
        "annotations": {
            "summary": "Prometheus cannot scrape vLLM at {{ $labels.instance }} (pool {{ $labels.pool }})",
            "description": "The /metrics endpoint has failed every scrape for 5 minutes: the server is down, "
                           "still loading its model, or unreachable from Prometheus.",
        },
    }]
    for pool in pools:
        rules.append({
            "alert": "VllmMetricsAbsent",
            "expr": _block(f"absent({q.selector(q.RUNNING, [f'pool={q.quote(pool)}'])})"),
            "for": ABSENT_FOR,
            "labels": {"pool": pool, "severity": "ticket"},
            "annotations": {
                "summary": f"No vLLM metrics for pool {pool}",
                "description": f'No series of {q.RUNNING} with pool="{pool}" for {ABSENT_FOR}: Prometheus '
                               "does not scrape the pool, or scrapes it without the `pool` label.",
            },
        })
    return [{"name": "fleet:alerts", "interval": q.duration(interval_s), "rules": rules}]


# --- the service's own decisions -----------------------------------------------------------------

SERVICE_FILE = "decisions"  # not `slo-...`: that prefix belongs to the per-SLO files
NS = "slo_monitor"
# (desired, current) replica gauges on the service's /metrics (monitor.publish.metrics); a
# parameter wherever used, so scaling panels and alerts can be left out (None) for a service
# build without them.
REPLICA_METRICS: tuple[str, str] | None = (f"{NS}_pool_desired_replicas", f"{NS}_pool_current_replicas")
# the daily cost budget: spend so far today and the budget, per pool (monitor.publish.budgets)
COST_TODAY = f"{NS}_pool_cost_today"
COST_BUDGET = f"{NS}_pool_cost_daily_budget"
COST_WARNING_ALERT = "CostBudgetWarning"
COST_EXCEEDED_ALERT = "CostBudgetExceeded"
COST_WARNING_AT = 0.8


@dataclass(frozen=True)
class ServiceAlert:
    name: str
    expr: str
    for_: str | None
    severity: str
    summary: str
    description: str


def service_alerts(replica_metrics: tuple[str, str] | None = REPLICA_METRICS) -> list[ServiceAlert]:
    """Alerts on what slo-monitor decided and on whether it can decide at all.

    `replica_metrics` is (desired, current) when the service exposes both, else None.
    """
    job = f"job={q.quote(q.SERVICE_JOB)}"
    alerts = [
        ServiceAlert(
            "SloMonitorDown", f"up{{{job}}} == 0", "2m", "page",
            "slo-monitor at {{ $labels.instance }} is down",
            "Prometheus has not scraped slo-monitor for 2 minutes. Load balancers that use its health checks "
            "get no answers, and its SLO alerts and scaling recommendations have stopped.",
        ),
        ServiceAlert(
            "SloMonitorAbsent", f"absent(up{{{job}}})", "10m", "ticket",
            "Prometheus does not scrape slo-monitor",
            f'No target with job="{q.SERVICE_JOB}": the alerts on health decisions below cannot fire.',
        ),
        ServiceAlert(
            "SloMonitorInstanceEjected", f'{NS}_instance_state{{state="ejected"}} == 1', "1m", "ticket",
            "{{ $labels.instance }} (pool {{ $labels.pool }}) is ejected from the load balancer",
            "slo-monitor took the instance out of rotation; GET /api/v1/instances gives the reasons and "
            "/api/v1/decisions the history.",
        ),
        ServiceAlert(
            "SloMonitorInstanceDegraded", f'{NS}_instance_state{{state="degraded"}} == 1', "15m", "ticket",
            "{{ $labels.instance }} (pool {{ $labels.pool }}) has been degraded for 15 minutes",
            "The instance is slow or erroring but still serves (with less weight). GET /api/v1/instances gives "
            "the reasons.",
        ),
        ServiceAlert(
            "SloMonitorPoolCapacityLow",
            f'sum by (pool) ({NS}_instance_state{{state=~"ejected|unknown"}})\n/\n'
            f"count by (pool) ({NS}_instance_state{{state=\"healthy\"}})\n>= 0.5",
            "5m", "page",
            "Half or more of pool {{ $labels.pool }} is ejected or unreachable",
            "At least half of the pool's instances have been ejected or unknown for 5 minutes: the rest carries "
            "the whole load (slo-monitor fails open rather than eject more).",
        ),
        ServiceAlert(
            "SloMonitorScrapeFailing", f"{NS}_scrape_consecutive_failures >= 3", "5m", "ticket",
            "slo-monitor cannot scrape {{ $labels.instance }} (pool {{ $labels.pool }})",
            "Three or more consecutive scrapes of the instance failed for 5 minutes; its state is unknown.",
        ),
        ServiceAlert(
            "SloMonitorSloEvaluationErrors", f"increase({NS}_slo_evaluation_errors_total[10m]) > 0", None, "ticket",
            "slo-monitor failed to evaluate its SLOs",
            "At least one scrape cycle's SLO step failed in the last 10 minutes; the service log names the error.",
        ),
        ServiceAlert(
            "SloMonitorAlertmanagerFailing", f"{NS}_alertmanager_up == 0", "5m", "ticket",
            "slo-monitor cannot deliver alerts to Alertmanager",
            "POSTs to Alertmanager have failed for 5 minutes: the service's own SLO pages are not arriving.",
        ),
        ServiceAlert(
            "SloMonitorStorageFailing", f"{NS}_storage_up == 0", "10m", "ticket",
            "slo-monitor cannot write to its database",
            "Database writes have failed for 10 minutes; rows wait in memory (bounded) and history is at risk.",
        ),
    ]
    alerts += [
        ServiceAlert(
            "SloMonitorFailingOpen", f"{NS}_pool_fail_open == 1", "10m", "ticket",
            "Health decisions for pool {{ $labels.pool }} have been failing open for 10 minutes",
            "slo-monitor's data for the pool is stale or every target failed at once, so it ejects nothing new: "
            "a broken instance can keep receiving traffic until this clears.",
        ),
        ServiceAlert(
            "SloMonitorDecisionErrors", f"increase({NS}_decision_errors_total[10m]) > 0", None, "ticket",
            "slo-monitor failed to compute its health or scaling decisions",
            "At least one scrape cycle's decision step failed in the last 10 minutes; the service log names the "
            "error.",
        ),
        ServiceAlert(
            "SloMonitorNginxApplyFailing", f"{NS}_nginx_last_apply_ok == 0", "5m", "ticket",
            "slo-monitor cannot apply its upstream changes to NGINX",
            "Writing, validating (`nginx -t`) or reloading the upstream file has failed for 5 minutes; NGINX keeps "
            "the last good file, so ejections and returns are not reaching it.",
        ),
    ]
    today, budget = f"max by (pool) ({COST_TODAY})", f"max by (pool) ({COST_BUDGET})"
    alerts += [
        ServiceAlert(
            COST_WARNING_ALERT, f"{today}\n/\n{budget}\n>= {q.number(COST_WARNING_AT)}", None, "ticket",
            "Pool {{ $labels.pool }} has spent 80% or more of today's GPU budget",
            "slo-monitor's spend so far today (replica-hours since midnight UTC x GPUs x gpu_hour) has reached "
            "80% of the pool's cost.daily_budget.",
        ),
        ServiceAlert(
            COST_EXCEEDED_ALERT, f"{today}\n/\n{budget}\n>= 1", None, "page",
            "Pool {{ $labels.pool }} has spent its whole GPU budget for today",
            "slo-monitor's spend so far today (replica-hours since midnight UTC x GPUs x gpu_hour) has reached "
            "the pool's cost.daily_budget.",
        ),
    ]
    if replica_metrics:
        desired, current = replica_metrics
        alerts.append(ServiceAlert(
            "SloMonitorScaleUpPending", f"{desired} > {current}", "15m", "ticket",
            "Pool {{ $labels.pool }} has wanted more replicas for 15 minutes",
            "slo-monitor recommends more replicas than the pool runs, and has for 15 minutes: the autoscaler "
            "is not acting on the recommendation, or cannot (quota, GPUs).",
        ))
    return alerts


def service_rules(alerts: list[ServiceAlert], interval_s: float = 60.0) -> list[dict[str, Any]]:
    rules = []
    for a in alerts:
        rule: dict[str, Any] = {"alert": a.name, "expr": _block(a.expr)}
        if a.for_:
            rule["for"] = a.for_
        rule["labels"] = {"severity": a.severity}
        rule["annotations"] = {"summary": a.summary, "description": a.description}
        rules.append(rule)
    return [{"name": "slo-monitor:alerts", "interval": q.duration(interval_s), "rules": rules}]


__all__ = [
    "ABSENT_ALERT", "BURN_ALERT", "COST_EXCEEDED_ALERT", "COST_WARNING_ALERT", "EXCLUDED", "EXCLUSION_SERIES",
    "EXHAUSTED_ALERT", "REPLICA_METRICS", "TIERS", "SloRules", "fleet_rules", "service_alerts", "service_rules",
    "slo_rules", "sli_for", "live_pairs", "windows_for",
]
