"""Prometheus recording and alerting rules for the configured SLOs, one file per SLO (the PromQL of
each indicator is `sli`'s; the fleet's and the service's own alerts are `rules_fleet`'s and
`rules_service`'s).

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
  `slo:period_error_budget_remaining:ratio` — what dashboards plot;
* `slo:period_coverage:ratio` — the share of the SLO window with data (0-1): ErrorBudgetExhausted
  needs `budget_min_coverage` of it and `budget_min_events` valid events, as in the service;
  `slo:period_covered:seconds{window="30d"}` — the same in seconds, for "3m of 30d".

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

import monitor.generate.expressions as q
from monitor.config import AvailabilityIndicator, SloConfig, parse_duration
from monitor.evaluate.slo import WINDOW_NAMES, WINDOWS, BurnPair, error_budget, never_firing_pairs, slo_pairs
from monitor.generate.sli import Sli, pool_matcher, sli_for, slo_pools

# The labels slo-monitor's own Alertmanager client sends for a burn (`monitor.publish.alertmanager`'s
# ALERTNAME and TIERS; a test holds the two equal): one inhibit rule then serves both paths.
BURN_ALERT = "SloErrorBudgetBurn"
TIERS = {"page": "fast", "ticket": "slow"}

ABSENT_ALERT = "SLOMetricAbsent"
ABSENT_SEVERITY = "page"
EXHAUSTED_ALERT = "ErrorBudgetExhausted"
EXHAUSTED_SEVERITY = "ticket"
EXCLUSION_SERIES = "slo_monitor_exclusion_active"  # exported by the service (monitor.publish.budgets)
EXCLUDED = "slo:exclusion_active:max5m"
COVERAGE = "slo:period_coverage:ratio"  # share of the SLO window with data (ErrorBudgetExhausted's gate)
COVERED = "slo:period_covered:seconds"  # the same in seconds, with a `window` label


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
        "expr": q.block(f"max by (pool) (max_over_time({_sel(EXCLUSION_SERIES, slo)}[{rw}]))"),
        "labels": labels,
    })
    sli_rules.append({"record": f"slo:valid_events:rate{rw}", "expr": q.block(_gate(sli.valid_rate, slo)),
                      "labels": labels})
    sli_rules.append({"record": f"slo:bad_events:rate{rw}", "expr": q.block(_gate(sli.bad_rate, slo)),
                      "labels": labels})
    sli_rules.append({
        "record": f"slo:sli_error:ratio_rate{rw}",
        "expr": q.block(f"{_sel(f'slo:bad_events:rate{rw}', slo)}\n/\n({_sel(f'slo:valid_events:rate{rw}', slo)} > 0)"),
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
                "expr": q.block(f"sum_over_time({_sel(f'slo:{kind}_events:rate{rw}', slo)}[{span}]) * {q.number(interval_s)}"),
                "labels": labels,
            })
        sli_rules.append({
            "record": f"slo:sli_error:ratio_rate{name}",
            "expr": q.block(
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
        {"record": COVERAGE, "expr": q.block(coverage_expr(slo, interval_s)), "labels": labels},
        # the same as a duration, labelled with the window, for the dashboard's "3m of 30d"
        {"record": COVERED, "expr": f"{_sel(COVERAGE, slo)} * {q.number(slo.window)}",
         "labels": {**labels, "window": period}},
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
            "expr": q.block("\nor\n".join(terms)),
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
            "expr": q.block(f"(\n  {missing}\n)\nand on ()\n(count({up} == 1) > 0)\n"
                           f"unless on (pool)\n({_sel(EXCLUDED, slo)} > 0)"),
            # `pool` is in absent_over_time()'s result already; as a rule label it also tells the
            # per-pool rules apart for promtool's duplicate-rule check
            "labels": slo_labels(slo, ABSENT_SEVERITY, pool=pool),
            "annotations": slo_annotations(slo, {
                "summary": f"SLO {slo.name} cannot be evaluated for pool {pool}: its metrics are absent",
                "description": (
                    f"None of {', '.join(sorted({s.split('{')[0] for s in pinned}))} has had a series with "
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


def coverage_expr(slo: SloConfig, interval_s: float) -> str:
    """The share of the SLO window Prometheus has had the SLI's series: the 5-minute recording's
    samples over the window (one per rule interval, a range half an interval short as for the
    increases) times the interval, over the window, at most 1. The service's `coverage` counts
    from the first minute with events instead; both read 3m of 30d three minutes into a new service."""
    span = q.duration(slo.window - interval_s / 2)
    samples = f"count_over_time({_sel(f'slo:valid_events:rate{q.RATE_WINDOW}', slo)}[{span}])"
    return f"clamp_max({samples} * {q.number(interval_s)} / {q.number(slo.window)}, 1)"


def exhausted_alert(slo: SloConfig, period: str, rate_window: str) -> dict[str, Any]:
    """ErrorBudgetExhausted: no budget left over the SLO window, from at least `min_bad_events` bad
    events, `budget_min_events` valid ones and data over `budget_min_coverage` of the window (the
    service's `SloEvaluation.exhausted`)."""
    if period == rate_window:
        bad = f"{_sel(f'slo:bad_events:rate{rate_window}', slo)} * {q.number(q.RATE_RANGE_S)}"
        valid = f"{_sel(f'slo:valid_events:rate{rate_window}', slo)} * {q.number(q.RATE_RANGE_S)}"
    else:
        bad = _sel(f"slo:bad_events:increase{period}", slo)
        valid = _sel(f"slo:valid_events:increase{period}", slo)
    expr = f"{_sel('slo:period_error_budget_remaining:ratio', slo)} <= 0"
    if slo.min_bad_events > 0:
        expr += f"\nand\n{bad} >= {q.number(slo.min_bad_events)}"
    # what the figure stands on: a fresh service's three minutes of errors are no exhausted 30-day budget
    if slo.budget_min_events > 0:
        expr += f"\nand\n{valid} >= {q.number(slo.budget_min_events)}"
    if slo.budget_min_coverage > 0:
        expr += f"\nand\n{_sel(COVERAGE, slo)} >= {q.number(slo.budget_min_coverage)}"
    expr += f"\nunless on (pool)\n({_sel(EXCLUDED, slo)} > 0)"  # no alert during a maintenance window
    where = "pool {{ $labels.pool }}" + ("" if isinstance(slo.indicator, AvailabilityIndicator)
                                         else ", model {{ $labels.model_name }}")
    return {
        "alert": EXHAUSTED_ALERT,
        "expr": q.block(expr),
        "labels": slo_labels(slo, EXHAUSTED_SEVERITY),
        "annotations": slo_annotations(slo, {
            "summary": f"SLO {slo.name} ({where}) has exhausted its error budget",
            "description": (
                f"Objective {q.number(slo.objective * 100)}% over {period}: the error ratio over the window has "
                f"reached the whole error budget ({q.number(error_budget(slo.objective))}) with at least "
                f"{q.number(slo.min_bad_events)} bad events, {q.number(slo.budget_min_events)} valid events and "
                f"data over {q.number(slo.budget_min_coverage * 100)}% of the window. Until it recovers, every "
                "further bad event breaks the objective."
            ),
        }),
    }


__all__ = [
    "ABSENT_ALERT", "BURN_ALERT", "COVERAGE", "COVERED", "EXCLUDED", "EXCLUSION_SERIES", "EXHAUSTED_ALERT", "TIERS", "SloRules", "slo_rules",
    "live_pairs", "windows_for",
]
