"""Simulated canary evidence: a group's requests drawn at random and summed into vLLM's histogram
buckets, as the service would sum its instances' deltas. Shared by tests/test_canary_judge.py and
bench/canary_judge.py (fast: no process, no network)."""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass

from monitor.decide.canary import GroupData
from monitor.samples import Histogram
from monitor.sim.metrics import REQUEST_LATENCY_BUCKETS, TPOT_BUCKETS, TTFT_BUCKETS

BOUNDS = {"ttft": (*TTFT_BUCKETS, math.inf), "tpot": (*TPOT_BUCKETS, math.inf), "itl": (*TPOT_BUCKETS, math.inf),
          "e2e": (*REQUEST_LATENCY_BUCKETS, math.inf)}


@dataclass(frozen=True)
class Version:
    """How a version behaves: factors on TTFT and TPOT, its error ratio, its traffic's shape."""

    ttft_factor: float = 1.0
    tpot_factor: float = 1.0
    error_ratio: float = 0.002
    mean_prompt_tokens: float = 600.0
    mean_output_tokens: float = 200.0
    preemptions_per_request: float = 0.01


def group(version: Version, requests: int, rng: random.Random, instances: int = 1) -> GroupData:
    """`requests` requests of one version: TTFT = 15 ms + 0.1 ms per prompt token (±25%), TPOT
    log-normal around 30 ms (σ 0.3), e2e = TTFT + TPOT × output tokens, one ITL observation per token
    (summarised by its request's TPOT, with jitter)."""
    counts = {k: [0] * len(b) for k, b in BOUNDS.items()}
    sums = dict.fromkeys(BOUNDS, 0.0)
    prompt_total = output_total = 0.0
    errors = preemptions = 0

    def observe(key: str, value: float, n: int = 1) -> None:
        counts[key][bisect.bisect_left(BOUNDS[key], value)] += n
        sums[key] += value * n

    for _ in range(requests):
        prompt = max(1, int(rng.lognormvariate(math.log(version.mean_prompt_tokens) - 0.18, 0.6)))
        output = max(1, int(rng.lognormvariate(math.log(version.mean_output_tokens) - 0.18, 0.6)))
        ttft = (0.015 + 0.0001 * prompt) * rng.uniform(0.75, 1.25) * version.ttft_factor
        tpot = 0.03 * rng.lognormvariate(0.0, 0.3) * version.tpot_factor
        prompt_total += prompt
        output_total += output
        observe("ttft", ttft)
        observe("tpot", tpot)
        observe("e2e", ttft + tpot * output)
        for _ in range(4):  # a few interval observations per request stand for its tokens
            observe("itl", tpot * rng.uniform(0.8, 1.2), max(1, output // 4))
        if rng.random() < version.error_ratio:
            errors += 1
        if rng.random() < version.preemptions_per_request:
            preemptions += 1
    histograms = {}
    for key, bounds in BOUNDS.items():
        cumulative, running = [], 0.0
        for c in counts[key]:
            running += c
            cumulative.append(running)
        histograms[key] = Histogram(bounds, tuple(cumulative), sums[key], running)
    return GroupData(float(requests), float(errors), histograms,
                     {"prompt_tokens": prompt_total, "generation_tokens": output_total,
                      "preemptions": float(preemptions)}, instances)


def identical(requests: int, seed: int = 1) -> tuple[GroupData, GroupData]:
    """The same requests on both sides: every difference is exactly zero."""
    same = group(Version(), requests, random.Random(seed))
    return same, same
