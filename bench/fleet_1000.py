"""One `slo-monitor serve` process tracking 1,000 targets every 5 s, against Prometheus scraping the same fleet.

The fleet: 1,000 static servers of a realistic ~58 KB vLLM V1 page (tests/helpers/realistic_page.py) on
loopback ports, two bench/static_fleet.py processes of 500. Each side runs alone against it, one
after the other, for `--duration` seconds after a warm-up:

- ours: `slo-monitor serve` (SQLite storage, two pools of 500, three SLOs) as a subprocess; CPU share
  of one core and RSS from /proc/<pid>/stat and /proc/<pid>/status, cycles completed and the
  `slo_monitor_scrape_cycle_duration_seconds` gauge read every 15 s (as a Prometheus scraping the
  service would), scrape errors at the end, and the latency of `/upstreams/{pool}/{instance}` polled
  5 times a second throughout (the API shares the event loop with the scrape cycle);
- baseline: Debian's Prometheus with the scrape config `slo-monitor generate` writes for the same
  fleet (5 s interval, no rules): its CPU share and RSS, and its own `scrape_duration_seconds`.

The goal for ours: at most one core and under 500 MB.

    .venv/bin/python bench/fleet_1000.py [--targets 1000] [--duration 60] [--warmup 15] [--base-port 24000]
"""

from __future__ import annotations

import argparse
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
    """Polls one URL `rate` times a second in a thread; keeps every latency (a 5xx or timeout counts too)."""

    def __init__(self, url: str, rate: float = 5.0) -> None:
        self.url, self.period = url, 1.0 / rate
        self.latencies: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    client.get(self.url)
                except httpx.HTTPError:
                    self.failures += 1
                self.latencies.append(time.perf_counter() - t0)
                self._stop.wait(max(0.0, self.period - (time.perf_counter() - t0)))

    def start(self) -> Prober:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_ours(args, root: Path, urls: list[str], fleet: list[Proc]) -> dict:
    port = free_range(args.base_port - 100, 1)
    half = len(urls) // 2
    config = {
        "storage": {"url": f"sqlite:///{root}/monitor.db"},
        "scrape": {"interval": "5s", "timeout": "2s"},
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
        instance = urls[0].split("//", 1)[1]
        prober = Prober(f"{base}/upstreams/pool-a/{instance}").start()
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
    cfg_path.write_text(yaml.safe_dump({"scrape": {"interval": "5s", "timeout": "2s"},
                                        "pools": [{"name": "pool-a", "targets": urls[:half]},
                                                  {"name": "pool-b", "targets": urls[half:]}]}))
    prom_cfg = configs.prometheus_config(load(cfg_path).config, [], scrape_interval="5s", evaluation_interval="5s")
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
                 and float((query("sum(up)") or [{"value": [0, "0"]}])[0]["value"][1]) >= len(urls), 120, [prom])
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
    ap.add_argument("--skip-prometheus", action="store_true")
    args = ap.parse_args()

    print(load_average())
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        root = Path(tmp)
        page = root / "page.txt"
        page.write_text(build())
        base = free_range(args.base_port, args.targets)
        urls = [f"http://127.0.0.1:{base + i}" for i in range(args.targets)]
        fleet = start_fleet(args.targets, base, page)
        try:
            ours = run_ours(args, root, urls, fleet)
            prom = None if args.skip_prometheus else run_prometheus(args, root, urls, fleet)
        finally:
            for f in fleet:
                f.stop()
    report(args, ours, prom)
    print(load_average())


def report(args, ours: dict, prom: dict | None) -> None:
    u = ours["usage"]["ours"]
    expected = args.duration / 5.0
    durations = ours["durations"]
    probe = ours["probe"]
    print()
    print(f"{args.targets} targets of a {58} KB V1 page every 5 s, {args.duration:g} s measured on each side")
    rows = [
        ("CPU share of one core", f"{u['cpu_share']:.2f}",
         f"{prom['usage']['prometheus']['cpu_share']:.2f}" if prom else "-",
         ratio(u["cpu_share"], prom["usage"]["prometheus"]["cpu_share"]) if prom else "-"),
        ("RSS at the end, MiB", f"{u['rss_mib']:.0f}", f"{prom['usage']['prometheus']['rss_mib']:.0f}" if prom else "-",
         ratio(u["rss_mib"], prom["usage"]["prometheus"]["rss_mib"]) if prom else "-"),
        ("peak RSS (VmHWM), MiB", f"{u['hwm_mib']:.0f}", f"{prom['usage']['prometheus']['hwm_mib']:.0f}" if prom else "-",
         ratio(u["hwm_mib"], prom["usage"]["prometheus"]["hwm_mib"]) if prom else "-"),
    ]
    print(table(rows, ("", "ours (slo-monitor serve)", "baseline (Prometheus 2.42)", "ours/baseline")))
    print()
    fleet_cpu = sum(v["cpu_share"] for k, v in ours["usage"].items() if k.startswith("static_fleet"))
    print(f"ours: {ours['cycles']} cycles in {args.duration:g} s (a 5 s interval gives {expected:.0f}); "
          f"cycle wall time (gauge, read every 15 s): "
          + (f"median {statistics.median(durations):.2f} s, max {max(durations):.2f} s" if durations else "none read"))
    pc = ours["per_cycle"]
    print(f"ours: CPU per cycle (between cycle ends) {pc['cpu_per_cycle']:.2f} s = {pc['cpu_per_cycle'] / 5:.2f} of a core "
          f"at a 5 s interval ({pc['cpu_per_cycle'] / args.targets * 1000:.2f} ms per target); one cycle every "
          f"{pc['period']:.2f} s on average")
    print(f"ours: {len(ours['errors'])} of {ours['instances']} instances with a scrape error at the end"
          + (f" (e.g. {ours['errors'][0]})" if ours["errors"] else ""))
    print(f"ours: /upstreams/... answered during the run: p50 {percentile(probe, 0.5) * 1000:.1f} ms, "
          f"p99 {percentile(probe, 0.99) * 1000:.0f} ms, max {max(probe) * 1000:.0f} ms over {len(probe)} polls "
          f"({ours['probe_failures']} failed); own /metrics page {ours['metrics_kib']:.0f} KiB")
    print(f"static fleet CPU while ours ran: {fleet_cpu:.2f} cores")
    if prom:
        pfleet = sum(v["cpu_share"] for k, v in prom["usage"].items() if k.startswith("static_fleet"))
        print(f"baseline: {prom['up']:.0f} targets up, scrape_duration_seconds p50 {prom['scrape_p50'] * 1000:.0f} ms, "
              f"max {prom['scrape_max'] * 1000:.0f} ms; {prom['samples_per_cycle']:.0f} samples per cycle, "
              f"{prom['series']:.0f} head series; static fleet CPU {pfleet:.2f} cores")
    keeps_up = ours["cycles"] >= 0.9 * expected and not ours["errors"]
    needed = ours["per_cycle"]["cpu_per_cycle"] / 5.0
    print(f"goal (every target every 5 s without errors, <= 1 core, < 500 MB): "
          f"{'met' if keeps_up and needed <= 1.0 and u['hwm_mib'] < 500 else 'NOT met'} "
          f"(keeps up: {'yes' if keeps_up else 'no'}; CPU a 5 s cycle needs: {needed:.2f} cores; "
          f"peak RSS {u['hwm_mib']:.0f} MiB)")


if __name__ == "__main__":
    main()
