"""Where the service's memory goes at N vLLM instances: the readings FleetView keeps, measured without a fleet.

Builds what the service holds for a fleet scraped every `--interval` seconds with traffic, in one process and
without sockets: 4 realistic vLLM V1 pages (tests/helpers/realistic_page.build_live) advanced second by second
as bench/traffic_pages.py advances them, instance i reading group i % 4's page. Each instance parses its own
copy with monitor.collect.vllm.read_page (as the scraper does, so nothing is shared by accident), its
ScrapeResult is ingested by monitor.evaluate.fleet.FleetView, and every cycle asks FleetView.stats and
FleetView.view for every track (the signals stage and the API do), takes the minute tallies and rollups (the
history stage does), for enough cycles to fill FleetView.keep. Then it reports:

  - RSS: VmRSS of /proc/self/status before the fleet and after (gc'd), in MiB, without tracemalloc;
  - retained: what tracemalloc counts as still allocated by the fleet (a second, traced build), per instance
    and per kept reading (one ModelSample of one scrape), and the allocation sites that hold it, by line;
  - /metrics: the transient cost of one render of the per-instance families (FleetCollector.families and the
    text format), whose peak adds to the RSS each time Prometheus scrapes the service.

    .venv/bin/python bench/memory_probe.py [--instances 5000] [--interval 15] [--window 60] [--top 15] [--frozen]

`--frozen`: pages without traffic (an idle fleet), whose readings repeat scrape after scrape.

The figures are this process's, not the service's: the service also holds its SLO engine, decisions,
database buffers and the scrape's page bodies in flight (bench/fleet_1000.py measures the whole).
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from prometheus_client.exposition import generate_latest

from monitor.collect.vllm import read_page
from monitor.evaluate.fleet import FleetView, minute_floor, take_outcomes
from monitor.publish.metrics import FleetCollector, FleetSnapshot, InstanceRow
from monitor.samples import ScrapeResult
from tests.helpers.realistic_page import build_live

GROUPS = 4
MIB = 1024 * 1024


def rss_bytes(field: str = "VmRSS") -> int:
    """This process's resident memory (VmRSS), or its high-water mark (VmHWM), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


class Traffic:
    """GROUPS pages with traffic, advanced one second at a time as bench/traffic_pages.py does."""

    def __init__(self, frozen: bool = False) -> None:
        self.servers = [build_live(seed=g) for g in range(GROUPS)]
        self.rng = random.Random(1)
        self.frozen = frozen

    def advance(self, seconds: int) -> list[str]:
        rng = self.rng
        for _ in range(0 if self.frozen else seconds):
            for g, fake in enumerate(self.servers):
                fake.finish(rng.randint(2, 8), ttft=(0.05, 0.3 + 0.2 * g), output_tokens=12)
                if rng.random() < 0.05:
                    fake.finish(1, reason="error", output_tokens=2)
                fake.set_load(rng.randint(4, 16), rng.randint(0, 4), round(rng.uniform(0.3, 0.9), 3))
        return [fake.render() for fake in self.servers]


def address(i: int) -> str:
    return f"10.{i // 65536}.{i // 256 % 256}.{i % 256}:8000"


def build(instances: int, interval: float, window: float, cycles: int | None,
          frozen: bool = False, hold_bodies: bool = True) -> tuple[FleetView, float, int]:
    """The fleet after enough cycles to fill `keep` (or `cycles`); returns it, the last cycle's time, cycles run."""
    fleet = FleetView(window, interval)
    half = instances // 2
    fleet.set_members({
        "pool-a": {address(i): f"http://{address(i)}" for i in range(half)},
        "pool-b": {address(i): f"http://{address(i)}" for i in range(half, instances)},
    })
    pools = {address(i): "pool-a" if i < half else "pool-b" for i in range(instances)}
    cycles = cycles or int(fleet.keep / interval) + 3
    traffic = Traffic(frozen)
    start = 1_700_000_000.0
    now = start
    for cycle in range(cycles):
        pages = traffic.advance(int(interval))
        now = start + cycle * interval
        # the scraper's fetch phase ends with every target's body held, then parses them one by one, each
        # decoding its own copy (monitor/collect/scraper.py: Scraper.scrape_all); `--bodies one` holds one at a time
        bodies: list[bytes] | None = [pages[i % GROUPS].encode() for i in range(instances)] if hold_bodies else None
        results = []
        for i in range(instances):
            instance = address(i)
            body = bodies[i] if bodies is not None else pages[i % GROUPS].encode()
            page = read_page(body.decode("utf-8", errors="replace"))
            results.append(ScrapeResult(pool=pools[instance], instance=instance, url=f"http://{instance}/metrics",
                                        started_at=now + i * 1e-4, duration_s=0.01 + (i % 97) * 1e-4,
                                        models=tuple(page.models), body_bytes=len(body), bad_samples=page.bad))
        del bodies
        for result in results:  # the ingest stage, one result at a time
            fleet.ingest((result,))
        del results
        at = now + interval * 0.9
        for track in fleet.tracks.values():  # the signals stage, then the API's views
            fleet.stats(track, at, window)
            fleet.view(track, at)
        minute = minute_floor(at)
        fleet.rollups(minute - 60.0)
        take_outcomes(fleet.tracks.values(), minute)
    return fleet, now + interval * 0.9, cycles


def readings(fleet: FleetView) -> int:
    return sum(len(series) for track in fleet.tracks.values() for series in track.samples.values())


def render_metrics(fleet: FleetView, at: float) -> int:
    """One /metrics render of the per-instance families (what FleetCollector does per scrape); its text size."""
    rows = tuple(InstanceRow(view, "healthy", True, at, 0) for view in fleet.views(at))
    snap = FleetSnapshot(at, rows, len(fleet.tracks), 1.0, 1, None)

    class Registry:
        def collect(self):
            return iter(FleetCollector.families(snap))

    return len(generate_latest(Registry()))  # type: ignore[arg-type]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--instances", type=int, default=5000)
    ap.add_argument("--interval", type=float, default=15.0, help="scrape interval, seconds")
    ap.add_argument("--window", type=float, default=60.0, help="evaluation window, seconds")
    ap.add_argument("--cycles", type=int, default=None, help="default: enough to fill FleetView.keep")
    ap.add_argument("--top", type=int, default=15, help="allocation sites to list")
    ap.add_argument("--frozen", action="store_true", help="pages without traffic (an idle fleet)")
    ap.add_argument("--bodies", choices=["all", "one"], default="all",
                    help="all: every page body held at the end of the fetch phase, as the scraper does (default); "
                         "one: one body at a time (what the readings alone cost)")
    ap.add_argument("--no-trace", action="store_true", help="RSS only (skips the traced second build)")
    args = ap.parse_args()

    Traffic().advance(1)  # imports, the page builders' registries: not the fleet's
    gc.collect()
    rss0 = rss_bytes()
    clock = time.perf_counter()
    fleet, at, cycles = build(args.instances, args.interval, args.window, args.cycles, args.frozen, args.bodies == "all")
    built_s = time.perf_counter() - clock
    gc.collect()
    rss1 = rss_bytes()
    kept = readings(fleet)
    idle = " without traffic" if args.frozen else ""
    print(f"{args.instances} instances{idle}, {cycles} cycles of {args.interval:g} s (keep {fleet.keep:g} s), "
          f"{kept} readings kept ({kept / args.instances:.1f} per instance), built in {built_s:.0f} s")
    print(f"RSS: {rss0 / MIB:.0f} MiB before, {rss1 / MIB:.0f} MiB after: +{(rss1 - rss0) / MIB:.1f} MiB "
          f"({(rss1 - rss0) / args.instances:,.0f} B per instance, {(rss1 - rss0) / kept:,.0f} B per reading); "
          f"high-water mark {rss_bytes('VmHWM') / MIB:.0f} MiB")
    rss2 = rss_bytes()
    size = render_metrics(fleet, at)
    gc.collect()
    print(f"/metrics render: {size / MIB:.1f} MiB of text; RSS +{(rss_bytes() - rss2) / MIB:.1f} MiB after it")
    if args.no_trace:
        return
    del fleet
    gc.collect()

    tracemalloc.start(1)
    before = tracemalloc.take_snapshot()
    base, _ = tracemalloc.get_traced_memory()
    fleet, at, _ = build(args.instances, args.interval, args.window, args.cycles, args.frozen, args.bodies == "all")
    gc.collect()
    held, _ = tracemalloc.get_traced_memory()
    retained = held - base
    kept = readings(fleet)
    after = tracemalloc.take_snapshot()
    print(f"retained (tracemalloc): {retained / MIB:.1f} MiB: {retained / args.instances:,.0f} B per instance, "
          f"{retained / kept:,.0f} B per kept reading")
    print(f"top {args.top} allocation sites still holding memory:")
    filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
    for stat in after.filter_traces(filters).compare_to(before.filter_traces(filters), "lineno")[:args.top]:
        frame = stat.traceback[0]
        where = f"{frame.filename.removeprefix(str(ROOT) + '/')}:{frame.lineno}"
        print(f"  {stat.size_diff / MIB:8.1f} MiB {stat.count_diff:>10,} blocks  {where}")
    tracemalloc.reset_peak()
    mark, _ = tracemalloc.get_traced_memory()
    render_metrics(fleet, at)
    _, peak = tracemalloc.get_traced_memory()
    print(f"/metrics render peak (tracemalloc): +{(peak - mark) / MIB:.1f} MiB "
          f"({(peak - mark) / args.instances:,.0f} B per instance), freed after")


if __name__ == "__main__":
    main()
