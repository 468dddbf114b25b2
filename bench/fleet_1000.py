"""One `slo-monitor serve` process tracking a fleet (1,000 targets every 5 s by default), against Debian's Prometheus
scraping the same fleet in the same run.

The fleet: `--targets` servers of a realistic ~58 KB vLLM V1 page (tests/helpers/realistic_page.py) on loopback
ports, bench/static_fleet.py processes of 500. By default the pages have traffic: bench/traffic_pages.py renders
four variants a second whose counters and histograms advance (requests finish, tokens are generated, the load
moves), and target i serves variant i % 4, read again every second, so every cycle has increases to count, SLO
events to file and quantiles to interpolate. `--frozen` serves one byte-identical page instead (the figures this
benchmark gave before issue 21: every increase is zero and most evaluation exits early: a best case).

Each side runs alone against the fleet, one after the other, for `--duration` seconds after a warm-up:

- ours: `slo-monitor serve` (SQLite storage, two pools, three SLOs) as a subprocess; CPU share of one core and RSS
  from /proc/<pid>/stat and /proc/<pid>/status, cycles completed and CPU per cycle, the
  `slo_monitor_scrape_cycle_duration_seconds` gauge read every 15 s (as a Prometheus scraping the service would),
  scrape errors at the end, and the latency of `/upstreams/{pool}/{instance}` from `--clients` keep-alive clients
  polling `--check-rate` times a second in all, over every instance in turn (the answer a load balancer's health
  check waits for while the cycle runs);
- baseline: Debian's Prometheus with the scrape config `slo-monitor generate` writes for the same fleet (same
  interval, no rules): its CPU share and RSS, and its own `scrape_duration_seconds`.

The interval scales with the fleet (5 s up to 1,666 targets, then 3 ms per target: 15 s at 5,000) unless
`--interval` says otherwise; the scrape timeout is a third of it, at least 2 s (both sides).

    .venv/bin/python bench/fleet_1000.py [--targets 1000] [--interval S] [--duration 60] [--warmup 15] [--frozen]
        [--clients 4] [--check-rate 50] [--skip-prometheus] [--base-port 24000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    HERE,
    PYTHON,
    Proc,
    ProcStat,
    Prometheus,
    Sampler,
    free_range,
    load_average,
    percentile,
    python_module,
    ratio,
    ready,
    table,
    wait_for,
)

from tests.helpers.realistic_page import build


def start_fleet(n: int, base: int, page_file: Path, per_process: int = 500) -> list[Proc]:
    """The targets, serving `page_file` (a file: frozen; a directory of bench/traffic_pages.py: traffic)."""
    procs = []
    for start in range(0, n, per_process):
        count = min(per_process, n - start)
        p = Proc([PYTHON, HERE / "static_fleet.py", count, base + start, page_file], name=f"static_fleet[{start}]")
        procs.append(p)
    for p in procs:
        wait_for(f"{p.name} ready", lambda p=p: "ready" in p.lines, 60, [p])
    return procs


def gauge(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    return None


class CycleTracker:
    """Polls /healthz twice a second; notes the process's CPU seconds whenever the cycle count moves,
    so CPU per cycle is measured between cycle ends (independent of what else the machine runs)."""

    def __init__(self, url: str, stat) -> None:
        self.url, self.stat = url, stat
        self.marks: list[tuple[float, int, float]] = []  # (monotonic, cycles, cpu seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.wait(0.5):
                try:
                    cycles = client.get(self.url).json()["cycles"]
                except httpx.HTTPError:
                    continue
                if not self.marks or cycles != self.marks[-1][1]:
                    self.marks.append((time.monotonic(), cycles, self.stat.cpu_s()))

    def start(self) -> CycleTracker:
        self._thread.start()
        return self

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        if len(self.marks) < 2:
            return {"cpu_per_cycle": math.nan, "period": math.nan}
        (t0, c0, cpu0), (t1, c1, cpu1) = self.marks[0], self.marks[-1]
        return {"cpu_per_cycle": (cpu1 - cpu0) / (c1 - c0), "period": (t1 - t0) / (c1 - c0)}


class Prober:
    """`clients` keep-alive clients in threads, polling `paths` in turn at `rate` requests a second in all; every
    latency is kept (an error or a non-200 answer other than 503 counts as a failure, and its time too)."""

    def __init__(self, host: str, port: int, paths: list[str], rate: float = 50.0, clients: int = 4) -> None:
        self.host, self.port, self.paths = host, port, paths
        self.period = clients / rate
        self.latencies: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(k, clients), daemon=True) for k in range(clients)]

    def _run(self, k: int, clients: int) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        i = k
        next_at = time.perf_counter() + k * self.period / clients
        while not self._stop.is_set():
            self._stop.wait(max(0.0, next_at - time.perf_counter()))
            next_at += self.period
            path = self.paths[i % len(self.paths)]
            i += clients
            t0 = time.perf_counter()
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                if response.status not in (200, 503):
                    self.failures += 1
            except (OSError, http.client.HTTPException):
                self.failures += 1
                conn.close()
                conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
            self.latencies.append(time.perf_counter() - t0)
        conn.close()

    def start(self) -> Prober:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()


def run_ours(args, root: Path, urls: list[str], fleet: list[Proc]) -> dict:
    port = free_range(args.base_port - 100, 1)
    half = len(urls) // 2
    config = {
        "storage": {"url": f"sqlite:///{root}/monitor.db"},
        "scrape": {"interval": f"{args.interval:g}s", "timeout": f"{args.timeout:g}s"},
        "pools": [{"name": "pool-a", "targets": urls[:half]}, {"name": "pool-b", "targets": urls[half:]}],
        "slos": [
            {"name": "ttft-500ms", "indicator": {"type": "latency", "metric": "ttft", "threshold": "500ms"},
             "objective": "99%"},
            {"name": "errors", "indicator": {"type": "error_ratio"}, "objective": "99.9%"},
            {"name": "up", "indicator": {"type": "availability"}, "objective": "99.9%"},
        ],
        "api": {"listen": f"127.0.0.1:{port}"},
    }
    path = root / "monitor.yaml"
    path.write_text(yaml.safe_dump(config))
    base = f"http://127.0.0.1:{port}"
    service = Proc(python_module("serve", "--config", path), name="slo-monitor serve", cwd=root)
    try:
        started = time.monotonic()
        wait_for("slo-monitor /healthz", lambda: ready(base + "/healthz"), 60, [service])
        wait_for(f"{args.warmup}s of warm-up and two cycles",
                 lambda: time.monotonic() - started >= args.warmup
                 and httpx.get(base + "/healthz", timeout=10).json()["cycles"] >= 2, 120, [service])
        print(f"ours: warm after {time.monotonic() - started:.0f} s; measuring {args.duration:g} s ...", flush=True)
        paths = [f"/upstreams/{'pool-a' if k < half else 'pool-b'}/{u.split('//', 1)[1]}" for k, u in enumerate(urls)]
        prober = Prober("127.0.0.1", port, paths, args.check_rate, args.clients).start()
        pids = {"ours": service.pid, **{f.name: f.pid for f in fleet}}
        cycles0 = httpx.get(base + "/healthz", timeout=10).json()["cycles"]
        sampler = Sampler(pids).start()
        tracker = CycleTracker(base + "/healthz", ProcStat(service.pid)).start()
        durations: list[float] = []
        metrics_bytes = 0
        t_end = time.monotonic() + args.duration
        with httpx.Client(timeout=30) as client:
            while time.monotonic() < t_end:
                time.sleep(min(15.0, max(0.0, t_end - time.monotonic())))
                text = client.get(base + "/metrics").text
                metrics_bytes = len(text)
                d = gauge(text, "slo_monitor_scrape_cycle_duration_seconds")
                if d is not None:
                    durations.append(d)
            usage = sampler.stop()
            per_cycle = tracker.stop()
            prober.stop()
            cycles = client.get(base + "/healthz").json()["cycles"] - cycles0
            instances = client.get(base + "/api/v1/instances").json()
        service.check()
        errors = [i["scrape"]["error"] for i in instances if i["scrape"]["error"]]
        return {"usage": usage, "cycles": cycles, "per_cycle": per_cycle, "durations": durations, "errors": errors,
                "instances": len(instances), "probe": prober.latencies, "probe_failures": prober.failures,
                "metrics_kib": metrics_bytes / 1024}
    finally:
        service.stop()


def run_prometheus(args, root: Path, urls: list[str], fleet: list[Proc]) -> dict:
    from monitor.config import load
    from monitor.generate import configs

    port = free_range(args.base_port - 99, 1)
    cfg_path = root / "fleet.yaml"
    half = len(urls) // 2
    cfg_path.write_text(yaml.safe_dump({"scrape": {"interval": f"{args.interval:g}s", "timeout": f"{args.timeout:g}s"},
                                        "pools": [{"name": "pool-a", "targets": urls[:half]},
                                                  {"name": "pool-b", "targets": urls[half:]}]}))
    every = f"{args.interval:g}s"
    prom_cfg = configs.prometheus_config(load(cfg_path).config, [], scrape_interval=every, evaluation_interval=every)
    prom_cfg["scrape_configs"] = [j for j in prom_cfg["scrape_configs"] if j["job_name"] == "vllm"]
    (root / "prometheus.yml").write_text(yaml.safe_dump(prom_cfg))
    base = f"http://127.0.0.1:{port}"
    prom = Prometheus(root, config=(root / "prometheus.yml").read_text(), port=port).start(timeout_s=60)
    try:
        started = time.monotonic()
        wait_for("Prometheus ready", lambda: ready(base + "/-/ready"), 60, [prom])

        def query(expr: str) -> list:
            body = httpx.get(base + "/api/v1/query", params={"query": expr}, timeout=10).json()
            return body["data"]["result"]

        wait_for(f"{args.warmup}s of warm-up and every target up",
                 lambda: time.monotonic() - started >= args.warmup
                 and float((query("sum(up)") or [{"value": [0, "0"]}])[0]["value"][1]) >= len(urls),
                 max(120.0, 4 * args.interval + 0.03 * len(urls)), [prom])  # 5,000 targets took 78-120 s
        print(f"baseline: warm after {time.monotonic() - started:.0f} s; measuring {args.duration:g} s ...", flush=True)
        sampler = Sampler({"prometheus": prom.pid, **{f.name: f.pid for f in fleet}}).start()
        time.sleep(args.duration)
        usage = sampler.stop()
        prom.check()
        up = float(query("sum(up)")[0]["value"][1])
        scrape_p50 = float(query("quantile(0.5, scrape_duration_seconds)")[0]["value"][1])
        scrape_max = float(query("max(max_over_time(scrape_duration_seconds[1m]))")[0]["value"][1])
        series = float(httpx.get(base + "/api/v1/status/tsdb", timeout=10).json()["data"]["headStats"]["numSeries"])
        samples = float(query("sum(scrape_samples_scraped)")[0]["value"][1])
        return {"usage": usage, "up": up, "scrape_p50": scrape_p50, "scrape_max": scrape_max, "series": series,
                "samples_per_cycle": samples}
    finally:
        prom.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds measured on each side (default 60)")
    ap.add_argument("--warmup", type=float, default=15.0)
    ap.add_argument("--base-port", type=int, default=24000, help="first port of the static targets (below 32768)")
    ap.add_argument("--interval", type=float, default=None,
                    help="scrape interval in seconds (default: 5, or 3 ms per target past 1,666 targets)")
    ap.add_argument("--frozen", action="store_true", help="serve one byte-identical page (no traffic)")
    ap.add_argument("--clients", type=int, default=4, help="keep-alive clients polling /upstreams/... (default 4)")
    ap.add_argument("--check-rate", type=float, default=50.0, help="their requests per second in all (default 50)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    ap.add_argument("--skip-prometheus", action="store_true")
    args = ap.parse_args()
    if args.interval is None:
        args.interval = max(5.0, 0.003 * args.targets)
    args.timeout = max(2.0, args.interval / 3)  # the fetch phase of 5,000 targets on 256 slots needs more than 2 s

    print(load_average())
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        root = Path(tmp)
        base = free_range(args.base_port, args.targets)
        urls = [f"http://127.0.0.1:{base + i}" for i in range(args.targets)]
        fleet: list[Proc] = []
        if args.frozen:
            page = root / "page.txt"
            page.write_text(build())
        else:
            page = root / "pages"
            page.mkdir()
            generator = Proc([PYTHON, HERE / "traffic_pages.py", page, 4], name="traffic_pages")
            fleet.append(generator)
            wait_for("traffic pages", lambda: "ready" in generator.lines, 60, [generator])
        fleet += start_fleet(args.targets, base, page)
        try:
            ours = run_ours(args, root, urls, fleet)
            prom = None if args.skip_prometheus else run_prometheus(args, root, urls, fleet)
        finally:
            for f in fleet:
                f.stop()
    report(args, ours, prom)
    print(load_average())
    if args.json is not None:
        args.json.write_text(json.dumps(summary(args, ours, prom), indent=1))


def summary(args, ours: dict, prom: dict | None) -> dict:
    """The figures the docs' tables quote, per side: CPU share, RSS, checks, cycle time, CPU per target."""
    u = ours["usage"]["ours"]
    probe = ours["probe"]
    pc = ours["per_cycle"]
    out = {"targets": args.targets, "interval_s": args.interval, "traffic": not args.frozen,
           "duration_s": args.duration, "ours_cpu": u["cpu_share"], "ours_rss_mib": u["rss_mib"],
           "ours_hwm_mib": u["hwm_mib"], "cpu_per_target_ms": pc["cpu_per_cycle"] / args.targets * 1000,
           "cycle_median_s": statistics.median(ours["durations"]) if ours["durations"] else math.nan,
           "cycle_max_s": max(ours["durations"]) if ours["durations"] else math.nan,
           "cycles": ours["cycles"], "scrape_errors": len(ours["errors"]),
           "check_p50_ms": percentile(probe, 0.5) * 1000, "check_p99_ms": percentile(probe, 0.99) * 1000,
           "check_max_ms": max(probe) * 1000, "checks": len(probe), "check_failures": ours["probe_failures"]}
    if prom:
        p = prom["usage"]["prometheus"]
        out.update({"prom_cpu": p["cpu_share"], "prom_rss_mib": p["rss_mib"], "prom_hwm_mib": p["hwm_mib"],
                    "prom_cpu_per_target_ms": p["cpu_share"] * args.interval / args.targets * 1000,
                    "cpu_ratio": u["cpu_share"] / p["cpu_share"] if p["cpu_share"] else math.nan,
                    "rss_ratio": u["rss_mib"] / p["rss_mib"] if p["rss_mib"] else math.nan})
    return out


def report(args, ours: dict, prom: dict | None) -> None:
    u = ours["usage"]["ours"]
    every = args.interval
    expected = args.duration / every
    durations = ours["durations"]
    probe = ours["probe"]
    print()
    pages = "frozen (byte-identical)" if args.frozen else "traffic (counters and histograms advance every second)"
    print(f"{args.targets} targets of a 58 KB V1 page, {pages}, every {every:g} s, "
          f"{args.duration:g} s measured on each side")
    rows = [
        ("CPU share of one core", f"{u['cpu_share']:.2f}",
         f"{prom['usage']['prometheus']['cpu_share']:.2f}" if prom else "-",
         ratio(u["cpu_share"], prom["usage"]["prometheus"]["cpu_share"]) if prom else "-"),
        ("RSS at the end, MiB", f"{u['rss_mib']:.0f}", f"{prom['usage']['prometheus']['rss_mib']:.0f}" if prom else "-",
         ratio(u["rss_mib"], prom["usage"]["prometheus"]["rss_mib"]) if prom else "-"),
        ("peak RSS (VmHWM), MiB", f"{u['hwm_mib']:.0f}", f"{prom['usage']['prometheus']['hwm_mib']:.0f}" if prom else "-",
         ratio(u["hwm_mib"], prom["usage"]["prometheus"]["hwm_mib"]) if prom else "-"),
    ]
    print(table(rows, ("", "ours (slo-monitor serve)", "baseline (Prometheus)", "ours/baseline")))
    print()
    fleet_cpu = sum(v["cpu_share"] for k, v in ours["usage"].items() if k.startswith(("static_fleet", "traffic")))
    print(f"ours: {ours['cycles']} cycles in {args.duration:g} s (a {every:g} s interval gives {expected:.0f}); "
          f"cycle wall time (gauge, read every 15 s): "
          + (f"median {statistics.median(durations):.2f} s, max {max(durations):.2f} s" if durations else "none read"))
    pc = ours["per_cycle"]
    print(f"ours: CPU per cycle (between cycle ends) {pc['cpu_per_cycle']:.2f} s = {pc['cpu_per_cycle'] / every:.2f} "
          f"of a core at a {every:g} s interval ({pc['cpu_per_cycle'] / args.targets * 1000:.2f} ms per target); "
          f"one cycle every {pc['period']:.2f} s on average")
    if prom:
        share = prom["usage"]["prometheus"]["cpu_share"]
        print(f"baseline: {share * every / args.targets * 1000:.2f} ms of CPU per target per scrape")
    print(f"ours: {len(ours['errors'])} of {ours['instances']} instances with a scrape error at the end"
          + (f" (e.g. {ours['errors'][0]})" if ours["errors"] else ""))
    print(f"ours: /upstreams/{{pool}}/{{instance}} from {args.clients} keep-alive clients, {args.check_rate:g}/s in all: "
          f"p50 {percentile(probe, 0.5) * 1000:.1f} ms, p99 {percentile(probe, 0.99) * 1000:.1f} ms, "
          f"max {max(probe) * 1000:.0f} ms over {len(probe)} checks ({ours['probe_failures']} failed); "
          f"own /metrics page {ours['metrics_kib']:.0f} KiB")
    print(f"fleet (and page generator) CPU while ours ran: {fleet_cpu:.2f} cores")
    if prom:
        pfleet = sum(v["cpu_share"] for k, v in prom["usage"].items() if k.startswith(("static_fleet", "traffic")))
        print(f"baseline: {prom['up']:.0f} targets up, scrape_duration_seconds p50 {prom['scrape_p50'] * 1000:.0f} ms, "
              f"max {prom['scrape_max'] * 1000:.0f} ms; {prom['samples_per_cycle']:.0f} samples per cycle, "
              f"{prom['series']:.0f} head series; fleet CPU {pfleet:.2f} cores")
    # cycles are counted between two reads of a counter: at 4 expected, a cycle that ends a little late
    # falls out of the window (3 counted), so a cycle longer than the interval is what says it fell behind
    slowest = max(ours["durations"]) if ours["durations"] else math.inf
    keeps_up = ours["cycles"] >= min(0.9 * expected, expected - 1) and slowest < every and not ours["errors"]
    print(f"keeps up (every target every {every:g} s without errors): {'yes' if keeps_up else 'no'}")
    print("summary " + json.dumps({k: round(v, 3) if isinstance(v, float) else v
                                   for k, v in summary(args, ours, prom).items()}))


if __name__ == "__main__":
    main()
