"""The canary judge: two groups' evidence in, a verdict per metric and one for the canary out.

Pure functions over plain data (the service sums each group's histogram deltas and counters; the
bench feeds simulated histograms). Why these statistics (docs/canaries.md has the long form):

- Latencies are only known as bucket counts. The test is a one-sided Mann-Whitney U (is the
  candidate stochastically slower?) on those counts, each bucket a block of ties, with the normal
  approximation and its tie correction: it needs no distribution shape, it is exact enough for the
  hundreds of requests a verdict needs, and unlike a bootstrap it costs one pass over the buckets.
- The effect is the change of a quantile (p99, and p50) with an analytic interval from the bucket
  counts: the rank of the q-quantile among n requests is known to ±z·sqrt(n·q·(1-q)); mapping those
  ranks through the histogram gives each group's interval, and the two combine on the log scale.
- A metric fails only when the test is significant at the configured risk AND the change exceeds
  the tolerance: so two identical versions fail at most at the configured risk (the test's level),
  and a real but harmless shift (+2% when +10% is tolerated) passes however much evidence there is.
- Errors are a difference of proportions: a one-sided two-proportion z-test, Newcombe's interval
  from Wilson scores, an absolute tolerance (points). Preemptions are rates per request: the
  conditional binomial test of two Poisson counts, interval on the log rate ratio.
- Request shape: TTFT grows with prompt length and e2e with output length. Where the candidate's
  requests are longer on average than the baseline's, its values are divided by the ratio of the
  means (TTFT per prompt token, e2e per output token) before comparing; where they are shorter,
  nothing is done (that can only hide a regression, never fail a good canary). TPOT and ITL are per
  token already.
- Per-token histograms (ITL) hold one observation per output event: those are not independent
  requests, so their counts are scaled down to the group's request count before testing.
- KV cache usage is a gauge: the evidence is its value at each scrape of each member. Mann-Whitney
  on those values (exact ranks, ties handled as blocks), the effect the difference of the means in
  absolute points with a Welch interval. Scrapes a second apart are not independent draws, so the
  interval is narrower than it should be; the absolute tolerance (10 points by default) is what keeps
  that from failing a good canary, and the test guards against a difference that is only noise.
- Goodput is the share of requests within the pool's latency objectives (the thresholds of its
  latency SLOs), read from each histogram at the threshold (linear within the bucket, as the SLOs
  read it). The histograms are separate, so whether one request met every objective is unknown: a
  group's goodput is the share meeting its tightest objective (the smallest share). Compared as two
  proportions, like errors: a drop in points.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from statistics import NormalDist
from typing import Any

from monitor.samples import Histogram

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"
VERDICTS = (PASS, FAIL, INCONCLUSIVE)
_SEVERITY = {PASS: 0, INCONCLUSIVE: 1, FAIL: 2}
LATENCY_METRICS = ("ttft", "tpot", "itl", "e2e")
LABELS = {"ttft": "TTFT", "tpot": "TPOT", "itl": "ITL", "e2e": "e2e latency", "errors": "errors",
          "preemptions": "preemptions per request", "kv_usage": "KV cache usage", "goodput": "goodput"}
POINTS = frozenset({"errors", "kv_usage", "goodput"})  # changes in absolute points, not relative
LOWER_IS_WORSE = frozenset({"goodput"})  # a regression is a drop: its change is negative
# the shape each latency is normalised by: (counter, what the normalised figure is per)
SHAPE = {"ttft": ("prompt_tokens", "prompt token"), "e2e": ("generation_tokens", "output token")}
_STD = NormalDist()


@dataclass(frozen=True, slots=True)
class GroupData:
    """One group's evidence since the canary started: events added over its instances."""

    requests: float = 0.0  # finished requests plus admission rejections
    errors: float = 0.0
    histograms: Mapping[str, Histogram] = field(default_factory=dict)  # ttft, tpot, itl, e2e deltas
    counters: Mapping[str, float] = field(default_factory=dict)  # prompt_tokens, generation_tokens, preemptions
    instances: int = 0
    samples: Mapping[str, Sequence[float]] = field(default_factory=dict)  # kv_usage: the gauge at each scrape


@dataclass(frozen=True, slots=True)
class Rules:
    """What the judge reads of a canary's settings (monitor.settings.canaries.CanaryConfig)."""

    metrics: Sequence[str]
    tolerance: Mapping[str, float]
    min_requests: int = 500
    min_duration_s: float = 300.0
    confidence: float = 0.95
    normalize: bool = True
    required: frozenset[str] = frozenset()  # metrics that must have data (listed explicitly)
    baseline_name: str = "baseline"
    candidate_name: str = "candidate"
    # goodput's objectives: histogram (ttft, tpot, itl, e2e) -> latency threshold in seconds, from the
    # latency SLOs covering the canary's pool; empty: goodput has nothing to judge
    goodput_thresholds: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MetricResult:
    metric: str
    verdict: str
    baseline: float | None = None  # the quantile (seconds), error ratio, preemptions per request, mean KV
    # usage or goodput (a share)
    candidate: float | None = None
    change: float | None = None  # relative (latencies, preemptions) or absolute (errors, kv_usage, goodput)
    interval: tuple[float, float] | None = None
    p_value: float | None = None
    quantile: str | None = None  # "p99", "p50" for latencies; "mean" for kv_usage
    tolerance: float = 0.0
    normalized: str | None = None  # "per prompt token" when the candidate's values were rescaled
    note: str = ""  # why inconclusive, when it is

    def to_json(self) -> dict[str, Any]:
        return {"baseline": _finite(self.baseline), "candidate": _finite(self.candidate),
                "change": _finite(self.change),
                "interval": [_finite(self.interval[0]), _finite(self.interval[1])] if self.interval else None,
                "verdict": self.verdict, "p_value": _finite(self.p_value), "quantile": self.quantile,
                "tolerance": self.tolerance, "normalized": self.normalized, "note": self.note or None}


@dataclass(frozen=True, slots=True)
class CanaryVerdict:
    verdict: str
    reason: str
    metrics: Mapping[str, MetricResult]
    requests: tuple[float, float]  # (baseline, candidate)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


# --- distributions as bucket counts -------------------------------------------------------------


def bucket_counts(hist: Histogram) -> list[float]:
    """Per-bucket (not cumulative) counts; a negative step (a hostile page) counts as 0."""
    out, below = [], 0.0
    for c in hist.cumulative:
        out.append(max(0.0, c - below))
        below = max(below, c)
    return out


def rebin(bounds: Sequence[float], counts: Sequence[float], grid: Sequence[float], scale: float = 1.0) -> list[float]:
    """Counts of a histogram with upper `bounds` (values divided by `scale`) spread onto `grid`'s
    buckets, uniformly within each source bucket (the assumption histogram_quantile makes). The +Inf
    bucket's mass, whose values are unknown beyond its lower bound, goes to the first grid bucket
    above that bound."""
    out = [0.0] * len(grid)
    lower = 0.0
    for upper, count in zip(bounds, counts):
        lo, hi = lower / scale, upper / scale
        lower = upper
        if count <= 0:
            continue
        if math.isinf(hi) or hi <= lo:
            index = next((i for i, g in enumerate(grid) if g > lo), len(grid) - 1)
            out[index] += count
            continue
        g_lo = 0.0
        for i, g_hi in enumerate(grid):
            overlap = min(hi, g_hi) - max(lo, g_lo)
            if overlap > 0:
                out[i] += count * overlap / (hi - lo)
            g_lo = g_hi
            if g_lo >= hi:
                break
    return out


def quantile_at(q: float, bounds: Sequence[float], counts: Sequence[float]) -> float | None:
    """The q-quantile by linear interpolation within buckets (Prometheus's histogram_quantile);
    the last finite bound when it falls in +Inf; None when empty."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = min(max(q, 0.0), 1.0) * total
    below, lower = 0.0, 0.0
    for upper, count in zip(bounds, counts):
        if below + count >= rank and count > 0:
            if math.isinf(upper):
                return lower if lower > 0 else None
            return lower + (upper - lower) * (rank - below) / count
        below += count
        if not math.isinf(upper):
            lower = upper
    return lower if lower > 0 else None


def mann_whitney(baseline: Sequence[float], candidate: Sequence[float]) -> tuple[float, float]:
    """(one-sided p-value that the candidate is not larger, U/(n1·n2)) over counts on a common grid.

    Each bucket is a block of ties: U = Σ_k c_k·(B_<k + b_k/2); the variance is the normal
    approximation's with the tie correction n1·n2/12·((N+1) − Σ(t³−t)/(N(N−1))). Counts may be
    fractional (rebinned, or scaled to requests)."""
    n1, n2 = sum(baseline), sum(candidate)
    if not (n1 * n2 > 1e-9 and math.isfinite(n1 * n2)):
        return 1.0, 0.5
    u, below, ties = 0.0, 0.0, 0.0
    for b, c in zip(baseline, candidate):
        u += c * (below + b / 2.0)
        below += b
        t = b + c
        ties += t ** 3 - t
    n = n1 + n2
    variance = n1 * n2 / 12.0 * ((n + 1) - (ties / (n * (n - 1)) if n > 1 else 0.0))
    return _upper_tail(u - n1 * n2 / 2.0, variance), u / (n1 * n2)


def _upper_tail(excess: float, variance: float) -> float:
    """P(Z > excess/sqrt(variance)) for a standard normal Z; 1 (no evidence) when the variance is
    nil or the figures are not finite (every observation in one bucket, no event at all)."""
    if not (variance > 1e-12 and math.isfinite(variance) and math.isfinite(excess)):
        return 1.0
    z = excess / math.sqrt(variance)
    return 1.0 - _STD.cdf(z) if math.isfinite(z) else 1.0


def quantile_interval(q: float, bounds: Sequence[float], counts: Sequence[float], z: float
                      ) -> tuple[float | None, float | None]:
    """The q-quantile's interval from the counts: ranks n·q ± z·sqrt(n·q·(1−q)) mapped through the
    histogram (the binomial order-statistic interval, normal approximation)."""
    n = sum(counts)
    if n <= 0:
        return None, None
    spread = z * math.sqrt(n * q * (1.0 - q))
    lo = quantile_at(max(0.0, (n * q - spread) / n), bounds, counts)
    hi = quantile_at(min(1.0, (n * q + spread + 1.0) / n), bounds, counts)
    return lo, hi


def _ratio_interval(base: tuple[float, float | None, float | None], cand: tuple[float, float | None, float | None],
                    z: float) -> tuple[float, float] | None:
    """Interval of cand/base − 1 from each quantile's interval, combined on the log scale (delta
    method: the log-interval half-widths read as z·se, se² added)."""
    (qb, lb, hb), (qc, lc, hc) = base, cand
    if None in (lb, hb, lc, hc) or min(qb, qc, lb or 0, lc or 0) <= 0 or z <= 0:
        return None
    se_b = (math.log(hb) - math.log(lb)) / (2 * z)  # type: ignore[arg-type]
    se_c = (math.log(hc) - math.log(lc)) / (2 * z)  # type: ignore[arg-type]
    spread = z * math.sqrt(se_b ** 2 + se_c ** 2)
    ratio = math.log(qc / qb)
    return math.exp(ratio - spread) - 1.0, math.exp(ratio + spread) - 1.0


# --- one metric ----------------------------------------------------------------------------------


def judge_latency(metric: str, base: GroupData, cand: GroupData, rules: Rules) -> MetricResult:
    tolerance = rules.tolerance.get(metric, 0.1)
    hb, hc = base.histograms.get(metric), cand.histograms.get(metric)
    if hb is None or hc is None or hb.count <= 0 or hc.count <= 0:
        missing = rules.baseline_name if hb is None or hb.count <= 0 else rules.candidate_name
        return MetricResult(metric, INCONCLUSIVE, tolerance=tolerance, note=f"no {LABELS[metric]} observations "
                                                                            f"from {missing}")
    base_counts = bucket_counts(hb)
    scale, normalized = 1.0, None
    if rules.normalize and metric in SHAPE:
        counter, per = SHAPE[metric]
        shape_b, shape_c = _per_request(base, counter), _per_request(cand, counter)
        if shape_b and shape_c and shape_c > shape_b * 1.01:  # longer requests: judge per token
            scale, normalized = shape_c / shape_b, f"per {per}"
    cand_counts = rebin(hc.bounds, bucket_counts(hc), hb.bounds, scale)
    # one observation per request for the test (ITL counts output events: not independent requests)
    base_counts = _as_requests(base_counts, base.requests)
    cand_counts = _as_requests(cand_counts, cand.requests)
    alpha = 1.0 - rules.confidence
    z_two = _STD.inv_cdf(1.0 - alpha / 2.0)
    p_value, _ = mann_whitney(base_counts, cand_counts)
    best: MetricResult | None = None
    for q, name in ((0.99, "p99"), (0.5, "p50")):
        qb, qc = quantile_at(q, hb.bounds, base_counts), quantile_at(q, hb.bounds, cand_counts)
        change = qc / qb - 1.0 if qb and qc is not None and qb > 0 else None
        interval = None
        if qb and qc:
            interval = _ratio_interval((qb, *quantile_interval(q, hb.bounds, base_counts, z_two)),
                                       (qc, *quantile_interval(q, hb.bounds, cand_counts, z_two)), z_two)
        result = MetricResult(metric, PASS, qb, qc, change, interval, p_value,
                              name, tolerance, normalized)
        if best is None or (change is not None and (best.change is None or change > best.change)):
            best = result
    assert best is not None
    verdict = FAIL if p_value < alpha and best.change is not None and best.change > tolerance else PASS
    return _replace_verdict(best, verdict)


def _per_request(group: GroupData, counter: str) -> float | None:
    value = group.counters.get(counter)
    return value / group.requests if value and group.requests > 0 else None


def _as_requests(counts: list[float], requests: float) -> list[float]:
    total = sum(counts)
    if requests > 0 and total > requests * 1.05:
        return [c * requests / total for c in counts]
    return counts


def _replace_verdict(result: MetricResult, verdict: str, note: str | None = None) -> MetricResult:
    return MetricResult(result.metric, verdict, result.baseline, result.candidate, result.change, result.interval,
                        result.p_value, result.quantile, result.tolerance, result.normalized,
                        result.note if note is None else note)


def wilson(successes: float, n: float, z: float) -> tuple[float, float]:
    """Wilson's score interval of a proportion (good at 0 and near it, where errors live)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(max(0.0, p * (1 - p) / n + z * z / (4 * n * n)))
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportions(eb: float, nb: float, ec: float, nc: float, confidence: float
                    ) -> tuple[float, float, tuple[float, float]]:
    """(one-sided p-value that the candidate's proportion is not larger, the difference pc − pb, its
    interval): pooled z-test; Newcombe's hybrid score interval from Wilson scores."""
    eb, ec = min(max(eb, 0.0), nb), min(max(ec, 0.0), nc)
    pb, pc = eb / nb, ec / nc
    pooled = (eb + ec) / (nb + nc)
    p_value = _upper_tail(pc - pb, pooled * (1 - pooled) * (1 / nb + 1 / nc))
    z = _STD.inv_cdf(1.0 - (1.0 - confidence) / 2.0)
    lb, ub = wilson(eb, nb, z)
    lc, uc = wilson(ec, nc, z)
    diff = pc - pb
    interval = (diff - math.sqrt((pc - lc) ** 2 + (ub - pb) ** 2), diff + math.sqrt((uc - pc) ** 2 + (pb - lb) ** 2))
    return p_value, diff, interval


def judge_errors(base: GroupData, cand: GroupData, rules: Rules) -> MetricResult:
    """Two proportions: one-sided pooled z-test; Newcombe's hybrid score interval of the difference."""
    tolerance = rules.tolerance.get("errors", 0.001)
    nb, nc = base.requests, cand.requests
    if nb <= 0 or nc <= 0:
        return MetricResult("errors", INCONCLUSIVE, tolerance=tolerance, note="no requests")
    p_value, diff, interval = two_proportions(base.errors, nb, cand.errors, nc, rules.confidence)
    alpha = 1.0 - rules.confidence
    verdict = FAIL if p_value < alpha and diff > tolerance else PASS
    pb, pc = min(base.errors, nb) / nb, min(cand.errors, nc) / nc
    return MetricResult("errors", verdict, pb, pc, diff, interval, p_value, None, tolerance)


def share_under(hist: Histogram, threshold: float) -> float | None:
    """The share of a histogram's observations at or under `threshold`: the cumulative count at it,
    linear within its bucket (how histogram_quantile and the SLOs read buckets); None when empty."""
    counts = bucket_counts(hist)
    total = sum(counts)
    if total <= 0 or not threshold > 0:
        return None
    under, lower = 0.0, 0.0
    for upper, count in zip(hist.bounds, counts):
        if threshold >= upper:
            under += count
        elif threshold > lower and not math.isinf(upper):
            under += count * (threshold - lower) / (upper - lower)
            break
        else:
            break
        lower = upper
    return min(1.0, under / total)


def judge_goodput(base: GroupData, cand: GroupData, rules: Rules) -> MetricResult:
    """The share of requests within the latency objectives, as two proportions (of requests missing
    them): the candidate fails when its goodput is lower by more than the tolerance, significantly."""
    tolerance = rules.tolerance.get("goodput", 0.01)
    if not rules.goodput_thresholds:
        return MetricResult("goodput", INCONCLUSIVE, tolerance=tolerance,
                            note="no latency SLO covers the pool (goodput is the share within its objectives)")
    shares: list[tuple[float, float]] = []
    for metric, threshold in sorted(rules.goodput_thresholds.items()):
        hb, hc = base.histograms.get(metric), cand.histograms.get(metric)
        if hb is None or hc is None:
            continue
        sb, sc = share_under(hb, threshold), share_under(hc, threshold)
        if sb is not None and sc is not None:
            shares.append((sb, sc))
    nb, nc = base.requests, cand.requests
    if not shares or nb <= 0 or nc <= 0:
        return MetricResult("goodput", INCONCLUSIVE, tolerance=tolerance,
                            note="no observations at the latency objectives from both groups")
    gb, gc = min(b for b, _ in shares), min(c for _, c in shares)  # the tightest objective of each group
    p_value, diff, (lo, hi) = two_proportions(nb * (1 - gb), nb, nc * (1 - gc), nc, rules.confidence)
    alpha = 1.0 - rules.confidence
    verdict = FAIL if p_value < alpha and diff > tolerance else PASS
    return MetricResult("goodput", verdict, gb, gc, -diff, (-hi, -lo), p_value, None, tolerance)


def judge_kv_usage(base: GroupData, cand: GroupData, rules: Rules) -> MetricResult:
    """The gauge at each scrape: Mann-Whitney on the values (each distinct value a block of ties),
    the difference of the means in points with a Welch interval."""
    tolerance = rules.tolerance.get("kv_usage", 0.10)
    xb, xc = base.samples.get("kv_usage") or (), cand.samples.get("kv_usage") or ()
    if len(xb) < 2 or len(xc) < 2:
        missing = rules.baseline_name if len(xb) < 2 else rules.candidate_name
        return MetricResult("kv_usage", INCONCLUSIVE, tolerance=tolerance,
                            note=f"fewer than 2 KV cache usage samples from {missing}")
    grid = sorted(set(xb) | set(xc))
    index = {v: i for i, v in enumerate(grid)}
    counts_b, counts_c = [0.0] * len(grid), [0.0] * len(grid)
    for v in xb:
        counts_b[index[v]] += 1
    for v in xc:
        counts_c[index[v]] += 1
    p_value, _ = mann_whitney(counts_b, counts_c)
    mb, mc = math.fsum(xb) / len(xb), math.fsum(xc) / len(xc)
    var_b = math.fsum((v - mb) ** 2 for v in xb) / (len(xb) - 1)
    var_c = math.fsum((v - mc) ** 2 for v in xc) / (len(xc) - 1)
    z = _STD.inv_cdf(1.0 - (1.0 - rules.confidence) / 2.0)
    spread = z * math.sqrt(var_b / len(xb) + var_c / len(xc))
    diff = mc - mb
    alpha = 1.0 - rules.confidence
    verdict = FAIL if p_value < alpha and diff > tolerance else PASS
    return MetricResult("kv_usage", verdict, mb, mc, diff, (diff - spread, diff + spread), p_value, "mean", tolerance)


def judge_preemptions(base: GroupData, cand: GroupData, rules: Rules) -> MetricResult:
    """Preemptions per request, two Poisson counts: given their total, the candidate's share is
    binomial under no difference (normal approximation); the interval is on the log rate ratio."""
    tolerance = rules.tolerance.get("preemptions", 0.25)
    kb, kc = base.counters.get("preemptions"), cand.counters.get("preemptions")
    nb, nc = base.requests, cand.requests
    if kb is None or kc is None or nb <= 0 or nc <= 0:
        return MetricResult("preemptions", INCONCLUSIVE, tolerance=tolerance, note="no preemption counter")
    rb, rc = kb / nb, kc / nc
    total, share = kb + kc, nc / (nb + nc)
    p_value = _upper_tail(kc - total * share, total * share * (1 - share))
    alpha = 1.0 - rules.confidence
    z = _STD.inv_cdf(1.0 - alpha / 2.0)
    change = interval = None
    if kb > 0 and kc > 0:
        change = rc / rb - 1.0
        spread = z * math.sqrt(1 / kb + 1 / kc)
        interval = (math.exp(math.log(rc / rb) - spread) - 1.0, math.exp(math.log(rc / rb) + spread) - 1.0)
    regressed = kc > 0 and (kb == 0 or (change is not None and change > tolerance))
    verdict = FAIL if p_value < alpha and regressed else PASS
    return MetricResult("preemptions", verdict, rb, rc, change, interval, p_value, None, tolerance)


def judge_metric(metric: str, base: GroupData, cand: GroupData, rules: Rules) -> MetricResult:
    if metric == "errors":
        return judge_errors(base, cand, rules)
    if metric == "preemptions":
        return judge_preemptions(base, cand, rules)
    if metric == "goodput":
        return judge_goodput(base, cand, rules)
    if metric == "kv_usage":
        return judge_kv_usage(base, cand, rules)
    return judge_latency(metric, base, cand, rules)


# --- the canary ----------------------------------------------------------------------------------


def judge(base: GroupData, cand: GroupData, rules: Rules, evidence_s: float | None) -> CanaryVerdict:
    """Every metric, and the canary's verdict: the worst metric's, `inconclusive` while either
    group has fewer than `min_requests` or the evidence is younger than `min_duration`.

    `evidence_s`: how long both groups have had requests (None: not yet)."""
    base, cand = _clean(base), _clean(cand)
    requests = (base.requests, cand.requests)
    # the canary's risk is shared among its metrics (Bonferroni): with six metrics each tested at the
    # full risk, two identical versions would fail a quarter of the time. Shared among those that can
    # be judged: a metric neither side reports (no KV gauge, no latency SLO for goodput) is left out
    # and takes no share
    judged = [m for m in rules.metrics if m in rules.required or has_data(m, base, cand, rules)]
    per_metric = replace(rules, confidence=1.0 - (1.0 - rules.confidence) / max(1, len(judged)))
    results = {m: judge_metric(m, base, cand, per_metric) for m in rules.metrics}
    counts = f"{_count(cand.requests)} {rules.candidate_name} requests against {_count(base.requests)} " \
             f"{rules.baseline_name}"
    short = [(name, group) for name, group in ((rules.baseline_name, base), (rules.candidate_name, cand))
             if group.requests < rules.min_requests]
    if base.instances == 0 or cand.instances == 0:
        empty = rules.baseline_name if base.instances == 0 else rules.candidate_name
        note = f"no {empty} instances"
    elif short:
        note = "; ".join(f"{_count(g.requests)} {n} requests of {_count(rules.min_requests)} needed"
                         for n, g in short)
    elif evidence_s is None or evidence_s < rules.min_duration_s:
        note = f"evidence for {_dur(evidence_s or 0.0)} of {_dur(rules.min_duration_s)} needed"
    else:
        note = ""
    if note:  # not enough evidence: nothing may pass or fail yet
        results = {m: r if r.verdict == INCONCLUSIVE else _replace_verdict(r, INCONCLUSIVE, note)
                   for m, r in results.items()}
        return CanaryVerdict(INCONCLUSIVE, f"{note} ({counts}): inconclusive", results, requests)
    counted = {m: r for m, r in results.items()
               if r.verdict != INCONCLUSIVE or m in rules.required}  # a metric neither group reports is left out
    if not counted:
        return CanaryVerdict(INCONCLUSIVE, f"no metric reported by both groups ({counts}): inconclusive",
                             results, requests)
    worst = max(_SEVERITY[r.verdict] for r in counted.values())
    verdict = next(v for v, s in _SEVERITY.items() if s == worst)
    named = max((r for r in counted.values() if r.verdict == verdict), key=_badness)
    if named.verdict == INCONCLUSIVE:
        return CanaryVerdict(INCONCLUSIVE, f"{LABELS[named.metric]}: {named.note} ({counts}): inconclusive",
                             results, requests)
    return CanaryVerdict(verdict, f"{describe(named)} on {counts}: {verdict}", results, requests)


def has_data(metric: str, base: GroupData, cand: GroupData, rules: Rules) -> bool:
    """Whether both groups carry what `metric` is judged on (requests aside: while they are short
    the canary is inconclusive anyway)."""
    if metric == "errors":
        return True
    if metric == "preemptions":
        return "preemptions" in base.counters and "preemptions" in cand.counters
    if metric == "kv_usage":
        return bool(base.samples.get("kv_usage")) and bool(cand.samples.get("kv_usage"))
    if metric == "goodput":
        return any(m in base.histograms and m in cand.histograms for m in rules.goodput_thresholds)
    return metric in base.histograms and metric in cand.histograms


def _clean(group: GroupData) -> GroupData:
    """Counts as the judge may trust them: finite and not negative (a hostile page's sums are
    refused upstream; this holds the judge to it whatever it is handed)."""

    def ok(value: float) -> float:
        return value if math.isfinite(value) and 1e-6 <= value <= 1e15 else 0.0

    histograms = {k: h for k, h in group.histograms.items()
                  if all(0 <= c <= 1e15 for c in h.cumulative) and 0 <= h.count <= 1e15 and h.bounds
                  and len(h.bounds) == len(h.cumulative) and all(b > 0 for b in h.bounds)
                  and all(x < y for x, y in zip(h.bounds, h.bounds[1:]))}
    samples = {k: [v for v in values if math.isfinite(v) and 0.0 <= v <= 1.0]  # a usage is a share
               for k, values in group.samples.items()}
    return GroupData(ok(group.requests), min(ok(group.errors), ok(group.requests)), histograms,
                     {k: ok(v) for k, v in group.counters.items()}, max(0, group.instances), samples)


def _badness(result: MetricResult) -> float:
    """How close a metric came to its tolerance (a change at the tolerance is 1)."""
    if result.change is None:
        return -math.inf
    change = -result.change if result.metric in LOWER_IS_WORSE else result.change
    return change / result.tolerance if result.tolerance > 0 else change * 1e9


def describe(result: MetricResult) -> str:
    """`TPOT p99 +46% [+38%, +55%]`, `errors +0.40 points [+0.21, +0.62]`."""
    label = LABELS[result.metric] + (f" {result.quantile}" if result.quantile else "")
    if result.normalized:
        label += f" {result.normalized}"
    if result.change is None:
        return f"{label} n/a"
    if result.metric in POINTS:
        text = f"{label} {result.change * 100:+.2f} points"
        if result.interval:
            text += f" [{result.interval[0] * 100:+.2f}, {result.interval[1] * 100:+.2f}]"
        return text
    text = f"{label} {_signed_pct(result.change)}"
    if result.interval:
        text += f" [{_signed_pct(result.interval[0])}, {_signed_pct(result.interval[1])}]"
    return text


def _signed_pct(value: float) -> str:
    return f"{value * 100:+.0f}%"


def _count(value: float) -> str:
    return f"{round(value):,}"


def _dur(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 120:
        return f"{seconds}s"
    return f"{seconds // 60}m" + (f"{seconds % 60}s" if seconds % 60 and seconds < 600 else "")
