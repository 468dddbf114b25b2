"""The per-cycle cost of the window figures and the health decisions for one large pool, without scraping.

`python bench/decide_cycle.py [INSTANCES] [CYCLES] [REPEATS]`: a pool of INSTANCES (500) instances whose
track holds 15 readings of realistic vLLM V1 pages with traffic (tests/helpers/realistic_page, advanced as
bench/traffic_pages.py advances them), then CYCLES (10) cycles timed the way the service runs one
(monitor/service/core.py): every instance's new reading ingested, `fleet_signals` for the pool, and the
pool's decisions (`FleetDecisions.decide`: PoolHealth.evaluate, then the scaler). Prints the best and the
median cycle (ms) of each part, best over REPEATS (3) runs: the machine may be shared, the best is the
figure to compare.

The pages come from GROUPS servers (instance i reads group i % GROUPS), so that building them takes seconds
rather than minutes; the latencies differ by group and are drawn around the default TTFT threshold, so
the pool-wide and outlier rules have work.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from monitor.collect.vllm import parse_page
from monitor.decide.fleet import FleetDecisions, PoolPolicy
from monitor.evaluate.fleet import FleetView
from monitor.evaluate.signals import fleet_signals
from monitor.samples import ModelSample, ScrapeResult
from monitor.settings import HealthSettings, ScalingSettings
from tests.helpers.realistic_page import build_live

GROUPS = 40
FILLED = 15  # readings in the track before the timed cycles
INTERVAL_S = 5.0
WINDOW_S = 60.0
POOL = "bench"


def readings(count: int) -> list[list[tuple[ModelSample, ...]]]:
    """GROUPS series of `count` successive pages, parsed: every 5 s, ~25 requests finished (a few errors)."""
    rng = random.Random(1)
    out = []
    for g in range(GROUPS):
        fake = build_live(seed=g)
        series = []
        for _ in range(count):
            for _ in range(5):  # one page a second in traffic_pages.py, one reading every 5 s here
                fake.finish(rng.randint(2, 8), ttft=(0.05, 0.6 + 0.02 * g), output_tokens=12)
                if rng.random() < 0.05:
                    fake.finish(1, reason="error", output_tokens=2)
            fake.set_load(rng.randint(4, 16), rng.randint(0, 4), round(rng.uniform(0.3, 0.9), 3))
            series.append(tuple(parse_page(fake.render())))
        out.append(series)
    return out


def run(instances: int, cycles: int, pages: list[list[tuple[ModelSample, ...]]]) -> dict[str, list[float]]:
    names = [f"10.0.{i // 250}.{i % 250}:8000" for i in range(instances)]
    fleet = FleetView(WINDOW_S, INTERVAL_S, {POOL: {n: f"http://{n}/metrics" for n in names}})
    decisions = FleetDecisions({POOL: PoolPolicy(HealthSettings(), ScalingSettings())}, {POOL: names}, INTERVAL_S)
    times: dict[str, list[float]] = {"ingest": [], "signals": [], "decide": [], "cycle": []}
    t0 = 1_700_000_000.0
    loop = asyncio.new_event_loop()  # one loop, as the service runs (asyncio.run per cycle adds its own costs)
    for k in range(FILLED + cycles):
        now = t0 + k * INTERVAL_S
        results = [ScrapeResult(POOL, n, f"http://{n}/metrics", now, 0.01, pages[i % GROUPS][k], health_status=200)
                   for i, n in enumerate(names)]
        started = time.perf_counter()
        for result in results:  # the service ingests one result at a time (core.py's _ingest_one)
            fleet.ingest((result,))
        ingested = time.perf_counter()
        members = {p: list(h.instances) for p, h in decisions.health.items()}
        signals = loop.run_until_complete(fleet_signals(fleet, members, decisions.windows(fleet.window), now,
                                                        since=decisions.judged_since()))
        built = time.perf_counter()
        decisions.decide(signals, now, data_at=now, cycle_duration_s=0.1)
        done = time.perf_counter()
        if k >= FILLED:
            times["ingest"].append(ingested - started)
            times["signals"].append(built - ingested)
            times["decide"].append(done - built)
            times["cycle"].append(done - started)
    loop.close()
    return times


def main() -> None:
    instances = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    cycles = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    pages = readings(FILLED + cycles)
    best: dict[str, float] = {}
    medians: dict[str, float] = {}
    for _ in range(repeats):
        for part, values in run(instances, cycles, pages).items():
            best[part] = min(best.get(part, float("inf")), min(values))
            medians[part] = min(medians.get(part, float("inf")), statistics.median(values))
    print(f"{instances} instances, {FILLED} readings, {cycles} cycles x {repeats} runs (ms per cycle)")
    for part in best:
        print(f"  {part:8s} best {best[part] * 1000:7.1f}   median {medians[part] * 1000:7.1f}")


if __name__ == "__main__":
    main()
