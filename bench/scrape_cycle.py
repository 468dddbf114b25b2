"""Cost of reading vLLM pages, and of one scrape cycle over N loopback targets.

1. Parse + normalise, per page, against prometheus_client's `text_string_to_metric_families` (the
   parser a user would otherwise reach for) followed by the same normaliser, on:
   - a realistic V1 page of ~58 KB (tests/helpers/realistic_page.py: serving, request-size, phase-time and
     iteration histograms, python/process and http families, as vLLM 0.11 prints them);
   - the simulator's own V1 and V0 pages (monitor/sim/metrics.py) after some traffic;
   - the V0 multiprocess fixture of the tests.
   Identical results are checked on every page the tests have (tests/helpers/exposition_pages.py, plus
   the ones above): the same `vllm:` samples as prometheus_client, and the same normalised
   ModelSamples.
2. Whole scrape cycles (HTTP `/metrics` + `/health` + parse) over N static targets in another
   process: wall time, CPU time, CPU per target.

    .venv/bin/python bench/scrape_cycle.py [--targets 200] [--cycles 5] [--base-port 21000]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from _common import ROOT as _ROOT  # noqa: F401  (puts the repository root on sys.path)

from monitor.collect.exposition import samples
from monitor.collect.scraper import Scraper, Target
from monitor.collect.vllm import parse_page
from tests.helpers.exposition_pages import baseline_parse_page, pages
from tests.helpers.realistic_page import build


def simulator_page(version: str, requests: int = 400) -> str:
    """The simulator's /metrics page after `requests` finished requests (~40 tokens each)."""
    import random

    from monitor.sim.metrics import FinishedStats, StepStats, VllmMetrics

    rng = random.Random(7)
    metrics = VllmMetrics(version, "meta-llama/Llama-3.1-8B-Instruct", 8192,
                          {"block_size": "16", "num_gpu_blocks": "27000"})
    metrics.bind_scheduler(lambda: 12.0, lambda: 3.0, lambda: 0.61)
    for _ in range(requests):
        ttft = rng.uniform(0.02, 0.6)
        itls = tuple(rng.uniform(0.01, 0.06) for _ in range(40))
        metrics.step(StepStats(512, 128, 41, 0, (ttft,), itls, 512, 128))
        reason = rng.choice(("stop", "stop", "stop", "length", "abort", "error"))
        metrics.finished(FinishedStats(reason, ttft + sum(itls), 0.01, ttft, ttft + sum(itls), sum(itls),
                                       rng.randint(50, 3000), 41, 128, 400, sum(itls) / 40))
    return metrics.render().decode()


def per_call(fn, arg, batch_s: float = 0.15, repeat: int = 7) -> float:
    """CPU seconds per call: the best of `repeat` batches of about `batch_s` each (as timeit does: the
    least disturbed batch is the cost; the machine may be busy with other work)."""
    fn(arg)  # warm
    start = time.process_time()
    fn(arg)
    n = max(3, int(batch_s / max(time.process_time() - start, 1e-6)))
    best = math.inf
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(n):
            fn(arg)
        best = min(best, (time.process_time() - start) / n)
    return best


def _key(v: float):
    return "nan" if math.isnan(v) else v


def same_samples(text: str) -> bool:
    ref = sorted((s.name, tuple(sorted(s.labels.items())), _key(s.value))
                 for f in text_string_to_metric_families(text) for s in f.samples if s.name.startswith("vllm:"))
    got = sorted((n, tuple(sorted(labels.items())), _key(v)) for n, labels, v in samples(text))
    return ref == got


def same_normalised(text: str) -> bool | None:
    try:
        ours = parse_page(text)
    except ValueError:
        ours = None
    try:
        base = baseline_parse_page(text)
    except ValueError:
        base = None
    return canon(ours) == canon(base)


def canon(obj):
    """Comparable form: dataclasses and mappings as sorted tuples, numbers as floats, NaN as text
    (prometheus_client gives `3` where we give `3.0`; NaN != NaN)."""
    import dataclasses

    if dataclasses.is_dataclass(obj):
        return tuple((f.name, canon(getattr(obj, f.name))) for f in dataclasses.fields(obj))
    if isinstance(obj, dict):
        return tuple(sorted((k, canon(v)) for k, v in obj.items()))
    if isinstance(obj, (list, tuple)):
        return tuple(canon(v) for v in obj)
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return "nan" if math.isnan(obj) else float(obj)
    return obj


def parse_benchmark() -> None:
    timed = {
        "realistic V1 (tests/helpers/realistic_page.py)": build(),
        "simulator V1 (monitor/sim)": simulator_page("v1"),
        "simulator V0 (monitor/sim)": simulator_page("v0"),
        "V0 multiprocess (tests/fixtures)": (ROOT / "tests/fixtures/vllm_v0_multiproc.txt").read_text(),
    }
    print("parse + normalise, CPU ms per page (ours: monitor.collect.vllm.parse_page; baseline: prometheus_client")
    print("text_string_to_metric_families over the whole page + the same normaliser)")
    print(f"{'page':<40}{'KiB':>6}{'ours ms':>10}{'baseline ms':>13}{'speed-up':>10}  identical")
    for name, text in timed.items():
        ours = per_call(parse_page, text)
        base = per_call(baseline_parse_page, text)
        same = same_samples(text) and same_normalised(text)
        print(f"{name:<40}{len(text) / 1024:6.1f}{ours * 1000:10.3f}{base * 1000:13.3f}{base / ours:9.1f}x  {same}")

    every = {**pages(), **{f"bench: {k}": v for k, v in timed.items()}}
    differ = [name for name, text in every.items() if not (same_samples(text) and same_normalised(text))]
    print(f"identical samples and normalised ModelSamples on {len(every) - len(differ)} of {len(every)} pages"
          + (f"; DIFFERENT: {differ}" if differ else ""))
    # 1,000 targets every 5 s means 200 pages per second of one core
    page = timed["realistic V1 (tests/helpers/realistic_page.py)"]
    ours, base = per_call(parse_page, page), per_call(baseline_parse_page, page)
    print(f"one core at 1,000 targets / 5 s: parsing alone takes {ours * 200:.0%} of it with ours, "
          f"{base * 200:.0%} with the baseline")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", type=int, default=200)
    ap.add_argument("--cycles", type=int, default=5)
    ap.add_argument("--base-port", type=int, default=21000, help="first port of the static targets (keep below 32768)")
    ap.add_argument("--skip-cycles", action="store_true", help="only the parser comparison")
    args = ap.parse_args()

    parse_benchmark()
    if args.skip_cycles:
        return
    page = build()
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(page)
    fleet = subprocess.Popen([sys.executable, str(HERE / "static_fleet.py"), str(args.targets), str(args.base_port),
                              f.name], stdout=subprocess.PIPE, text=True)
    try:
        assert fleet.stdout.readline().strip() == "ready"
        asyncio.run(cycles(args))
    finally:
        fleet.terminate()
        fleet.wait()
        Path(f.name).unlink()


class HttpxScraper(Scraper):
    """The baseline: the same scraper with every target through httpx, as before monitor/http1.py."""

    def _get(self, target, path):
        return self._client_for(target).stream("GET", target.url + path)


async def measure(scraper: Scraper, targets: list[Target], n_cycles: int) -> tuple[float, float]:
    """(median wall, median CPU) seconds of one cycle, connections warm as in steady state."""
    await scraper.scrape_all(targets)
    walls, cpus = [], []
    for _ in range(n_cycles):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        results = await scraper.scrape_all(targets)
        walls.append(time.perf_counter() - wall0)
        cpus.append(time.process_time() - cpu0)
        assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    await scraper.aclose()
    return sorted(walls)[len(walls) // 2], sorted(cpus)[len(cpus) // 2]


async def cycles(args: argparse.Namespace) -> None:
    targets = [Target("bench", f"http://127.0.0.1:{args.base_port + i}") for i in range(args.targets)]
    rows = []
    for name, cls in (("ours (monitor/http1.py)", Scraper), ("baseline: httpx per target", HttpxScraper)):
        wall, cpu = await measure(cls(timeout=5.0, max_body_size=16 * 2**20), targets, args.cycles)
        rows.append((name, wall, cpu))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print()
    print(f"scrape cycle, {args.targets} targets, /metrics + /health + parse (median of {args.cycles} cycles):")
    for name, wall, cpu in rows:
        print(f"  {name:28} wall {wall * 1000:6.0f} ms  CPU {cpu * 1000:6.0f} ms = {cpu / args.targets * 1000:5.2f} ms "
              f"per target -> one core carries ~{int(5.0 / (cpu / args.targets))} targets at 5 s")
    print(f"max RSS {rss:.0f} MiB (both runs)")

if __name__ == "__main__":
    main()
