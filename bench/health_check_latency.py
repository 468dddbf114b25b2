"""Health-check answer latency under 200 concurrent pollers: `/upstreams/{pool}/{instance}` on the service
against asking Prometheus's `/api/v1/query` the same question.

A pool of `--targets` static servers of a realistic vLLM V1 page (bench/static_fleet.py) is watched
by `slo-monitor serve` and scraped by Prometheus (the scrape config `slo-monitor generate` writes),
both every 5 s. Then 200 pollers, each on its own keep-alive connection (a raw asyncio HTTP/1.1
client, so the client costs little beside the server), ask in a closed loop, round-robin over the
instances, for `--duration` seconds each:

- ours: `GET /upstreams/pool/{instance}` (200 / 503 with a one-line reason);
- baseline 1: `GET /api/v1/query?query=up{instance="..."}` (is it scraped at all);
- baseline 2: `GET /api/v1/query?query=histogram_quantile(0.99, sum by (le) (rate(
  vllm:time_to_first_token_seconds_bucket{instance="..."}[1m])))` (is it fast enough: the TTFT p99
  that the service's verdict reads).

Printed: requests/s, p50 / p99 / max latency, non-200 answers, and the server's CPU share.

    .venv/bin/python bench/health_check_latency.py [--pollers 200] [--duration 15] [--targets 10]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    HERE,
    PYTHON,
    Proc,
    ProcStat,
    Prometheus,
    free_range,
    load_average,
    percentile,
    python_module,
    ready,
    table,
    wait_for,
)

from tests.helpers.realistic_page import build


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, chunked = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def _poller(host: str, port: int, paths: list[str], offset: int, t_start: float, t_end: float,
                  latencies: list[float], statuses: dict[int, int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    requests = [f"GET {p} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: bench\r\n\r\n".encode() for p in paths]
    k = offset
    try:
        while True:
            t0 = time.perf_counter()
            if t0 >= t_end:
                break
            writer.write(requests[k % len(requests)])
            k += 1
            status = await _read_response(reader)
            t1 = time.perf_counter()
            if t0 >= t_start:  # the first requests, while connections open, are warm-up
                latencies.append(t1 - t0)
                statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


async def hammer(base: str, paths: list[str], pollers: int, duration: float, warmup: float = 2.0) -> dict:
    host, port = base.split("//", 1)[1].rsplit(":", 1)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    now = time.perf_counter()
    t_start, t_end = now + warmup, now + warmup + duration
    await asyncio.gather(*(_poller(host, int(port), paths, i, t_start, t_end, latencies, statuses)
                           for i in range(pollers)))
    return {"n": len(latencies), "rps": len(latencies) / duration, "p50": percentile(latencies, 0.5),
            "p99": percentile(latencies, 0.99), "max": max(latencies), "statuses": statuses}


def measure(base: str, paths: list[str], pid: int, args) -> dict:
    stat = ProcStat(pid)
    cpu0, t0 = stat.cpu_s(), time.monotonic()
    out = asyncio.run(hammer(base, paths, args.pollers, args.duration))
    out["cpu_share"] = (stat.cpu_s() - cpu0) / (time.monotonic() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pollers", type=int, default=200)
    ap.add_argument("--duration", type=float, default=15.0, help="seconds measured per server (default 15)")
    ap.add_argument("--targets", type=int, default=10, help="instances in the pool (default 10)")
    ap.add_argument("--base-port", type=int, default=23000, help="first port used (below 32768)")
    args = ap.parse_args()
    print(load_average())

    procs: list[Proc] = []
    with tempfile.TemporaryDirectory(prefix="bench-hc-") as tmp:
        root = Path(tmp)
        (root / "page.txt").write_text(build())
        base_port = free_range(args.base_port, args.targets + 2)
        svc_port, prom_port = base_port + args.targets, base_port + args.targets + 1
        urls = [f"http://127.0.0.1:{base_port + i}" for i in range(args.targets)]
        instances = [u.split("//", 1)[1] for u in urls]
        try:
            fleet = Proc([PYTHON, HERE / "static_fleet.py", args.targets, base_port, root / "page.txt"], name="fleet")
            procs.append(fleet)
            wait_for("static fleet", lambda: "ready" in fleet.lines, 30, [fleet])
            config = {"storage": {"url": f"sqlite:///{root}/monitor.db"}, "scrape": {"interval": "5s", "timeout": "2s"},
                      "pools": [{"name": "pool", "targets": urls}],
                      "slos": [{"name": "ttft-500ms", "objective": "99%",
                                "indicator": {"type": "latency", "metric": "ttft", "threshold": "500ms"}}],
                      "api": {"listen": f"127.0.0.1:{svc_port}"}}
            (root / "monitor.yaml").write_text(yaml.safe_dump(config))
            service = Proc(python_module("serve", "--config", root / "monitor.yaml"), name="serve", cwd=root)
            procs.append(service)

            from monitor.config import load
            from monitor.generate import configs

            prom_cfg = configs.prometheus_config(load(root / "monitor.yaml").config, [], scrape_interval="5s",
                                                 evaluation_interval="5s")
            prom_cfg["scrape_configs"] = [j for j in prom_cfg["scrape_configs"] if j["job_name"] == "vllm"]
            (root / "prometheus.yml").write_text(yaml.safe_dump(prom_cfg))
            prom = Prometheus(root, config=(root / "prometheus.yml").read_text(), port=prom_port).start(timeout_s=60)
            procs.append(prom)
            svc, prom_url = f"http://127.0.0.1:{svc_port}", f"http://127.0.0.1:{prom_port}"
            wait_for("service", lambda: ready(svc + "/healthz"), 60, procs)
            wait_for("Prometheus", lambda: ready(prom_url + "/-/ready"), 60, procs)
            # both have seen every target at least twice (Prometheus's rate() needs two samples)
            wait_for("two cycles", lambda: httpx.get(svc + "/healthz", timeout=5).json()["cycles"] >= 2, 60, procs)

            def prom_has_rate() -> bool:
                r = httpx.get(prom_url + "/api/v1/query", timeout=5, params={
                    "query": "count(rate(vllm:time_to_first_token_seconds_count[1m]))"}).json()["data"]["result"]
                return bool(r) and float(r[0]["value"][1]) >= args.targets

            wait_for("Prometheus rates", prom_has_rate, 60, procs)

            check = httpx.get(f"{svc}/upstreams/pool/{instances[0]}", timeout=5)
            p99 = ("histogram_quantile(0.99, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket"
                   '{{instance="{i}"}}[1m])))')
            sample = httpx.get(prom_url + "/api/v1/query", timeout=5, params={"query": p99.format(i=instances[0])}).json()
            print(f"ours answers: {check.status_code} {check.text.strip()!r}")
            print(f"Prometheus answers: {sample['status']} {sample['data']['result']}")
            cases = [
                ("ours: GET /upstreams/pool/{instance}", svc, [f"/upstreams/pool/{i}" for i in instances], service.pid),
                ("baseline: Prometheus query up{instance=...}", prom_url,
                 ["/api/v1/query?query=" + quote(f'up{{instance="{i}"}}') for i in instances], prom.pid),
                ("baseline: Prometheus query TTFT p99 of the instance", prom_url,
                 ["/api/v1/query?query=" + quote(p99.format(i=i)) for i in instances], prom.pid),
            ]
            results = []
            for name, base, paths, pid in cases:
                print(f"{name}: {args.pollers} pollers for {args.duration:g} s ...", flush=True)
                results.append((name, measure(base, paths, pid, args)))
                for p in procs:
                    p.check()
        finally:
            for p in reversed(procs):
                p.stop()

    print()
    print(f"{args.pollers} concurrent pollers, keep-alive, closed loop, {args.duration:g} s each, "
          f"round-robin over {args.targets} instances")
    rows = []
    for name, r in results:
        bad = sum(v for k, v in r["statuses"].items() if k != 200)
        rows.append((name, f"{r['rps']:.0f}", f"{r['p50'] * 1000:.1f}", f"{r['p99'] * 1000:.1f}",
                     f"{r['max'] * 1000:.0f}", bad, f"{r['cpu_share']:.2f}"))
    print(table(rows, ("", "requests/s", "p50 ms", "p99 ms", "max ms", "non-200", "server CPU (cores)")))
    ours = results[0][1]
    print()
    for name, r in results[1:]:
        print(f"ours vs {name.split(': ', 1)[1]}: requests/s x{ours['rps'] / r['rps']:.2f}, "
              f"p50 x{ours['p50'] / r['p50']:.2f}, p99 x{ours['p99'] / r['p99']:.2f} (ours / baseline)")
    print(load_average())


if __name__ == "__main__":
    main()
