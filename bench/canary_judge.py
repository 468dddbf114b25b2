"""The canary judge measured on simulated histograms (tests/helpers/canary_data.py): no process.

- A/A: the same version on both sides, many times: the share judged `fail` against the configured
  risk (1 - confidence).
- Regressions of 10%, 25% and 50% in TPOT or TTFT: the candidate requests needed for a `fail` (the
  baseline has three times as many, as with three v1 instances and one v2), median and 90th percentile
  over seeds, and the share caught within the largest step.
- A changed prompt mix alone (longer or shorter prompts and answers): the share judged `fail`.

Run: `.venv/bin/python bench/canary_judge.py [--trials N]`. Prints a Markdown table (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from monitor.decide.canary import FAIL, Rules, judge
from tests.helpers.canary_data import Version, group

METRICS = ("ttft", "tpot", "itl", "e2e", "errors", "preemptions")
STEPS = (100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000)


def rules(tolerance: float, confidence: float = 0.95) -> Rules:
    return Rules(METRICS, {**dict.fromkeys(("ttft", "tpot", "itl", "e2e"), tolerance), "errors": 0.001,
                           "preemptions": 0.25},
                 min_requests=100, min_duration_s=0.0, confidence=confidence, baseline_name="v1",
                 candidate_name="v2")


def false_fails(candidate: Version, trials: int, n: int, r: Rules, seed: int) -> float:
    rng = random.Random(seed)
    fails = sum(judge(group(Version(), 3 * n, rng, 3), group(candidate, n, rng), r, 1e9).verdict == FAIL
                for _ in range(trials))
    return fails / trials


def requests_to_fail(candidate: Version, r: Rules, seed: int) -> int | None:
    """The first step at which the candidate fails (each step drawn afresh: a new sample)."""
    rng = random.Random(seed)
    for n in STEPS:
        if judge(group(Version(), 3 * n, rng, 3), group(candidate, n, rng), r, 1e9).verdict == FAIL:
            return n
    return None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=400, help="A/A and prompt-mix runs each")
    parser.add_argument("--seeds", type=int, default=30, help="runs per regression")
    args = parser.parse_args()
    started = time.perf_counter()
    r = rules(0.05)
    print("| case | configured risk | `fail` share |")
    print("| --- | --- | --- |")
    for confidence in (0.95, 0.99):
        rate = false_fails(Version(), args.trials, 1000, rules(0.0, confidence), 1)
        print(f"| A/A, 1,000 v2 against 3,000 v1, tolerance 0% (the test alone) | {1 - confidence:.0%} | {rate:.1%} |")
    rate = false_fails(Version(), args.trials, 1000, rules(0.10), 2)
    print(f"| A/A, 1,000 v2 against 3,000 v1, tolerance 10% | 5% | {rate:.1%} |")
    for label, version in (("prompts and answers 2x longer", Version(mean_prompt_tokens=1200, mean_output_tokens=400)),
                           ("prompts 3x longer", Version(mean_prompt_tokens=1800)),
                           ("prompts and answers half as long", Version(mean_prompt_tokens=300, mean_output_tokens=100))):
        rate = false_fails(version, args.trials, 1000, rules(0.10), 3)
        print(f"| same version, {label}, tolerance 10% | 5% | {rate:.1%} |")
    print()
    print("| regression | tolerance | caught (of runs) | candidate requests to `fail`: median | p90 |")
    print("| --- | --- | --- | --- | --- |")
    for metric in ("tpot", "ttft"):
        for factor in (1.10, 1.25, 1.50):
            version = Version(tpot_factor=factor) if metric == "tpot" else Version(ttft_factor=factor)
            found = [requests_to_fail(version, r, seed) for seed in range(args.seeds)]
            hits = sorted(n for n in found if n is not None)
            median = f"{statistics.median(hits):,.0f}" if hits else "-"
            p90 = f"{hits[min(len(hits) - 1, int(0.9 * len(hits)))]:,}" if hits else "-"
            print(f"| {metric.upper()} +{factor - 1:.0%} | 5% | {len(hits)}/{len(found)} within {STEPS[-1]:,} | "
                  f"{median} | {p90} |")
    print(f"\n({time.perf_counter() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
