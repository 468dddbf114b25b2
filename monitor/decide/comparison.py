"""The rules that judge an instance against the rest of its pool: statistical outliers where the
pool is large enough (Envoy's success-rate rule, with an absolute gap on top, since identical peers
have a stdev of zero), and plain relative slowness where it is not."""

from __future__ import annotations

import math
import statistics
from bisect import bisect_left, insort
from collections import Counter
from typing import Mapping

from monitor.decide.verdicts import LATENCY, OUTLIER, Finding
from monitor.decide.wording import count, pct, progress, secs
from monitor.evaluate.signals import InstanceSignals
from monitor.settings import HealthSettings


def compare_with_pool(eligible: list[str], members: int, sigs: Mapping[str, InstanceSignals], s: HealthSettings,
                      notes: list[str]) -> dict[str, list[Finding]]:
    """Latency and success-rate outliers against the rest of the pool (leave-one-out mean ± k·stdev),
    among `eligible` instances (seen, answering, not ejected) of a pool of `members` judged ones;
    in a pool too small for that, relative slowness against the median of the others."""
    out: dict[str, list[Finding]] = {}
    enough = [i for i in eligible if sigs[i].requests >= s.outlier_min_requests]
    if s.outlier_stdev_factor is None or len(enough) < s.outlier_min_hosts:
        if s.outlier_stdev_factor is not None and members >= s.outlier_min_hosts:
            notes.append(f"outlier detection skipped: {progress(len(enough), s.outlier_min_hosts, 'host')} "
                         f"with {count(s.outlier_min_requests, 'request')} or more in the window")
        return relative_slowdown(eligible, sigs, s)
    k = s.outlier_stdev_factor
    latency = {i: p99 for i in enough if (p99 := sigs[i].ttft_p99_s) is not None}
    success = {i: 1.0 - ratio for i in enough if (ratio := sigs[i].error_ratio) is not None}
    if len(latency) >= s.outlier_min_hosts:
        for i, (x, mean, sd) in leave_one_out(latency).items():
            if x > mean + k * sd and x > 0 and x >= s.outlier_min_latency_ratio * mean:
                out.setdefault(i, []).append(Finding(
                    s.outlier_action, OUTLIER,
                    f"outlier: TTFT p99 {secs(x)} vs rest of pool {secs(mean)} ± {secs(sd)} (k={k:g})",
                    x / mean if mean > 0 else math.inf, s.outlier_min_requests))
    if len(success) >= s.outlier_min_hosts:
        for i, (x, mean, sd) in leave_one_out(success).items():
            if x < mean - k * sd and mean - x >= s.outlier_min_success_rate_drop:
                out.setdefault(i, []).append(Finding(
                    s.outlier_action, OUTLIER,
                    f"outlier: success rate {pct(x)} vs rest of pool {pct(mean)} ± {pct(sd)} (k={k:g})",
                    (mean - x) / max(1.0 - mean, 1e-3), s.outlier_min_requests))
    return out


def leave_one_out(values: Mapping[str, float]) -> dict[str, tuple[float, float, float]]:
    """Per key: (its value, the mean and the population stdev of all the others), in one pass over sums
    rather than one pass per key: the pool-wide rules ran in O(n²) with exact `statistics.pstdev` (a fifth
    of the service's CPU at 1,000 instances). Values are centred on the overall mean first, so the
    sums of squares lose little precision (identical peers are exactly 0); a variance below zero from rounding
    is zero."""
    n = len(values)
    if n < 2:
        return {}
    center = math.fsum(values.values()) / n
    c = {i: v - center for i, v in values.items()}
    total = math.fsum(c.values())
    squares = math.fsum(d * d for d in c.values())
    m = n - 1
    counts = Counter(values.values())
    out = {}
    for i, x in values.items():
        if len(counts) == 1 or (len(counts) == 2 and counts[x] == 1):  # identical peers: exactly 0, not ~1e-9
            rest = next(v for v in counts if v != x) if len(counts) == 2 else x
            out[i] = (x, rest, 0.0)
            continue
        d = c[i]
        mean_c = (total - d) / m
        variance = (squares - d * d) / m - mean_c * mean_c
        out[i] = (x, center + mean_c, math.sqrt(variance) if variance > 0 else 0.0)
    return out


def relative_slowdown(eligible: list[str], sigs: Mapping[str, InstanceSignals],
                      s: HealthSettings) -> dict[str, list[Finding]]:
    """An instance whose TTFT, TPOT or e2e p99 is `relative_slowdown`× the median of the others
    (each side with enough requests) is degraded, never ejected on that alone: with two or three
    hosts a statistical rule has nothing to stand on, but a 5× gap needs no statistics."""
    factor = s.relative_slowdown
    busy = [i for i in eligible if sigs[i].requests >= s.relative_min_requests]
    if factor is None or len(busy) < 2:
        return {}
    out: dict[str, list[Finding]] = {}
    for label, attr in (("TTFT p99", "ttft_p99_s"), ("TPOT p99", "tpot_p99_s"), ("e2e p99", "e2e_p99_s")):
        values = {i: getattr(sigs[i], attr) for i in busy if getattr(sigs[i], attr) is not None}
        for i, x in values.items():
            rest = [v for j, v in values.items() if j != i]
            if not rest:
                continue
            median = statistics.median(rest)
            if median > 0 and x >= factor * median:
                out.setdefault(i, []).append(Finding(
                    "degrade", LATENCY,
                    f"slower than the pool: {label} {secs(x)} is {x / median:.1f}x the median "
                    f"{secs(median)} of the other {count(len(rest), 'instance')} (relative_slowdown {factor:g}x)",
                    x / median, s.relative_min_requests))
    return out


LATENCY_FIGURES = (("TTFT p99", "ttft_p99_s", "ttft_p99_degraded"), ("TPOT p99", "tpot_p99_s", "tpot_p99_degraded"),
                   ("e2e p99", "e2e_p99_s", "e2e_p99_degraded"))


def pool_wide_slowness(eligible: list[str], sigs: Mapping[str, InstanceSignals],
                       s: HealthSettings) -> dict[str, dict[str, str]]:
    """instance -> {figure label: why} where every other instance in rotation is slow on that figure too.

    A latency threshold says an instance is slow; it does not say why. When every other server of
    the pool (at least one, each with `min_requests` requests; servers already ejected count, as
    their figures are the pool's too) is past the same figure's degraded threshold, the slowness is
    the pool's: load, a long prompt mix, a slow release. An ejection then moves the load onto the
    others and makes them slower still (the overload cascade the decision-quality benchmark
    shows), so such a finding degrades and never ejects: capacity is the scaler's business, not
    the health path's. A sick node among fast ones is unaffected.
    """
    # a peer speaks with as many requests as the threshold rule itself needed (`min_requests`)
    busy = [i for i in eligible if sigs[i].requests >= max(s.min_requests, 1)]
    out: dict[str, dict[str, str]] = {}
    if len(busy) < 2:
        return out
    # only peers judged over about the same stretch compare: replicas that joined (or came back) after
    # the load began are fast because they missed it, which says nothing of this one. An instance's
    # figures begin at its last change of state, else with the window; its peers are those that began
    # no later than half its own window after it
    starts = {i: since if (since := sigs[i].judged_since) is not None else -math.inf for i in busy}
    limits = {i: starts[i] + (sigs[i].window_s or 0.0) / 2 for i in busy}
    for label, attr, threshold_key in LATENCY_FIGURES:
        threshold = getattr(s, threshold_key)
        if threshold is None:
            continue
        found = _slow_peers({i: getattr(sigs[i], attr) for i in busy}, starts, limits, threshold)
        for i in busy:  # in the pool's order, as the findings are listed
            if i in found:
                median, peers = found[i]
                out.setdefault(i, {})[label] = (
                    f"ejection held back: the whole pool is slow ({label} median {secs(median)} of the other "
                    f"{count(peers, 'instance')}, all past {secs(threshold)}): capacity, not this instance")
    return out


def _slow_peers(values: Mapping[str, float | None], starts: Mapping[str, float], limits: Mapping[str, float],
                threshold: float) -> dict[str, tuple[float, int]]:
    """instance -> (the median of its peers' values, their number), where it has peers and every one
    of them is past `threshold` (a peer without a value is not). The peers of i are the others whose
    start is at or before limits[i].

    In O(n log n) rather than a list of peers per instance (O(n²): 6% of the service's CPU with pools
    of 500): in the order of the instances' limits, each one's peers are a growing prefix of the
    instances sorted by start (itself aside), so counting the slow ones and keeping their values sorted
    is done once for the pool; the median is read by index from those values, the instance's own left
    out. A prefix holding two instances that are not slow has a bad peer for everyone after it. NaN
    compares false (`statistics.median` over the same floats, the same answer, as before): a NaN start
    is nobody's peer, a NaN limit has none.
    """
    order = sorted((i for i in starts if not math.isnan(starts[i])), key=starts.__getitem__)
    slow = {i: float(v) for i, v in values.items() if v is not None and v > threshold}
    found: dict[str, tuple[float, int]] = {}
    slow_values: list[float] = []  # the values of the slow instances in the prefix, sorted
    taken = not_slow = 0  # instances of `order` in the prefix, and those of them not slow
    for i in sorted((i for i in limits if not math.isnan(limits[i])), key=limits.__getitem__):
        limit = limits[i]
        while taken < len(order) and starts[order[taken]] <= limit:
            j = order[taken]
            if j in slow:
                insort(slow_values, slow[j])
            else:
                not_slow += 1
            taken += 1
        if not_slow >= 2:
            break  # every later prefix holds them both: a peer not slow for anyone
        own = starts[i] <= limit  # an instance is in its own prefix (unless its window is negative)
        peers = taken - own
        if peers == 0 or not_slow > (own and i not in slow):
            continue
        # the peers' values: the prefix's slow ones, the instance's own left out (at `skip`)
        skip = bisect_left(slow_values, slow[i]) if own and i in slow else peers
        found[i] = (_median_skipping(slow_values, skip, peers), peers)
    return found


def _median_skipping(ordered: list[float], skip: int, n: int) -> float:
    """`statistics.median` of the first n + 1 of `ordered` without the one at `skip` (of the first n,
    when skip is n or more), read by index rather than copied."""
    def nth(k: int) -> float:
        return ordered[k] if k < skip else ordered[k + 1]

    half = n // 2
    return nth(half) if n % 2 else (nth(half - 1) + nth(half)) / 2
