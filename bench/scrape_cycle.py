"""Cost of one scrape cycle: N loopback targets serving a realistic ~58 KB vLLM V1 page.

Prints, side by side, our parse + normalise per page against prometheus_client's
text_string_to_metric_families over the whole page (the baseline a user would otherwise reach for),
then whole scrape cycles (HTTP + /health + parse) over N targets: wall time, CPU time, CPU per target.

    .venv/bin/python bench/scrape_cycle.py [--targets 200] [--cycles 5]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from realistic_page import build  # noqa: E402

from monitor.collect.scraper import Scraper, Target  # noqa: E402
from monitor.collect.vllm import parse_page  # noqa: E402


def per_call(fn, arg, repeat: int) -> float:
    start = time.process_time()
    for _ in range(repeat):
        fn(arg)
    return (time.process_time() - start) / repeat


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", type=int, default=200)
    ap.add_argument("--cycles", type=int, default=5)
    ap.add_argument("--base-port", type=int, default=21000)
    args = ap.parse_args()

    page = build()
    ours = per_call(parse_page, page, 200)
    baseline = per_call(lambda p: [list(f.samples) for f in text_string_to_metric_families(p)], page, 50)
    print(f"page: {len(page) / 1024:.1f} KiB")
    print(f"{'parse + normalise (ours)':<44}{ours * 1000:8.3f} ms/page")
    print(f"{'prometheus_client text_string_to_metric_families':<44}{baseline * 1000:8.3f} ms/page  (baseline)")
    print(f"{'speed-up':<44}{baseline / ours:8.1f} x")

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


async def cycles(args: argparse.Namespace) -> None:
    targets = [Target("bench", f"http://127.0.0.1:{args.base_port + i}") for i in range(args.targets)]
    scraper = Scraper(timeout=5.0, max_body_size=16 * 2**20)
    await scraper.scrape_all(targets)  # connections warm, as in steady state
    walls, cpus = [], []
    for _ in range(args.cycles):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        results = await scraper.scrape_all(targets)
        walls.append(time.perf_counter() - wall0)
        cpus.append(time.process_time() - cpu0)
        assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    await scraper.aclose()
    wall, cpu = sorted(walls)[len(walls) // 2], sorted(cpus)[len(cpus) // 2]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"scrape cycle, {args.targets} targets (median of {args.cycles}): wall {wall * 1000:.0f} ms, "
          f"CPU {cpu * 1000:.0f} ms = {cpu / args.targets * 1000:.2f} ms CPU per target "
          f"(/metrics + /health + parse); max RSS {rss:.0f} MiB")
    print(f"at a 5 s interval one core would carry about {int(5.0 / (cpu / args.targets))} targets")


if __name__ == "__main__":
    main()
