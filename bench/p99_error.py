"""p99 estimation error against the simulator's ground truth.

`slo-monitor simulate --ground-truth FILE` writes one row per finished request with its exact
timestamps. Under `slo-monitor load` (Poisson arrivals, varied lengths, instances of different
speeds), every `--every` seconds once the window is full this reads, per instance:

- ours: `ttft_p99_s`, `tpot_p99_s`, `e2e_p99_s` from `/api/v1/instances` (window `--window`, ending
  at the instance's `last_scrape`);
- baseline: Prometheus (same scrape interval) `histogram_quantile(0.99, sum by (le) (rate(
  <histogram>_bucket{instance=...}[window])))` evaluated at the same `last_scrape` time;
- the exact p99 over the same window of ground-truth requests (nearest rank): TTFT = first_token -
  arrival for first tokens in (last_scrape - window, last_scrape], e2e = finish - arrival for
  requests finished in it. The rows hold no per-token times, so the TPOT truth is the p99 of each
  request's mean inter-token time, (finish - first_token) / (tokens - 1), while vLLM's histogram
  (and so both estimates) counts every inter-token gap: the TPOT error is indicative only;
- the naive upper-bucket-bound estimate: the `le` of the bucket that holds the p99 rank, computed
  from the ground truth itself (what reading the buckets without interpolation gives, with no
  scrape or window error at all); and the interpolated estimate from the same exact bucket counts,
  which is the error due to bucket resolution alone.

Printed per metric: median and max relative error |estimate - truth| / truth over all readings.

    .venv/bin/python bench/p99_error.py [--duration 60] [--every 10] [--rate 12] [--interval 5s]
"""

from __future__ import annotations

import argparse
import bisect
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Proc, Prometheus, free_range, load_average, python_module, ready, table, wait_for

from monitor.sim.metrics import REQUEST_LATENCY_BUCKETS, TPOT_BUCKETS, TTFT_BUCKETS
from tests.helpers.times import parse_rfc3339

METRICS = {  # API field -> (histogram name per version, buckets)
    "ttft_p99_s": ({"v1": "vllm:time_to_first_token_seconds", "v0": "vllm:time_to_first_token_seconds"}, TTFT_BUCKETS),
    "tpot_p99_s": ({"v1": "vllm:inter_token_latency_seconds", "v0": "vllm:time_per_output_token_seconds"}, TPOT_BUCKETS),
    "e2e_p99_s": ({"v1": "vllm:e2e_request_latency_seconds", "v0": "vllm:e2e_request_latency_seconds"},
                  REQUEST_LATENCY_BUCKETS),
}


def exact_p99(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def bucket_estimates(values: list[float], bounds: tuple[float, ...]) -> tuple[float | None, float | None]:
    """(upper bound of the bucket holding the p99 rank, histogram_quantile-style interpolation) from
    exact bucket counts of `values`."""
    if not values:
        return None, None
    counts = [0] * (len(bounds) + 1)
    for v in values:
        counts[bisect.bisect_left(bounds, v)] += 1  # le: v <= bound
    rank = 0.99 * len(values)
    cumulative = 0
    for i, c in enumerate(counts):
        if cumulative + c >= rank and c:
            if i == len(bounds):
                return bounds[-1], bounds[-1]
            lower = bounds[i - 1] if i else 0.0
            return bounds[i], lower + (bounds[i] - lower) * (rank - cumulative) / c
        cumulative += c
    return bounds[-1], bounds[-1]


def truth_values(rows: list[dict], instance: str, field: str, start: float, end: float) -> list[float]:
    out = []
    for r in rows:
        if r["instance"] != instance:
            continue
        if field == "ttft_p99_s":
            t = r["first_token"]
            if t is not None and start < t <= end:
                out.append(t - r["arrival"])
        elif field == "e2e_p99_s":
            if r["status"] in ("stop", "length", "abort", "error") and start < r["finish"] <= end:
                out.append(r["finish"] - r["arrival"])
        elif field == "tpot_p99_s":
            if r["first_token"] is not None and r["generation_tokens"] > 1 and start < r["finish"] <= end:
                out.append((r["finish"] - r["first_token"]) / (r["generation_tokens"] - 1))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of readings once the window is full")
    ap.add_argument("--every", type=float, default=10.0, help="seconds between readings")
    ap.add_argument("--rate", type=float, default=12.0, help="requests/s over all instances")
    ap.add_argument("--instances", type=int, default=4)
    ap.add_argument("--speed", default="1,0.5,1.5,0.8", help="per-instance speed factors of the simulator")
    ap.add_argument("--interval", default="5s", help="scrape interval of both")
    ap.add_argument("--window", default="1m", help="the service's evaluation.window and Prometheus's rate() range")
    ap.add_argument("--metrics-version", choices=["v1", "v0"], default="v1")
    ap.add_argument("--base-port", type=int, default=23200, help="first port used (below 32768)")
    args = ap.parse_args()
    from monitor.config import parse_duration

    window = parse_duration(args.window)
    print(load_average())
    procs: list[Proc] = []
    readings = []  # (instance, last_scrape, {field: (ours, prom)})
    with tempfile.TemporaryDirectory(prefix="bench-p99-") as tmp:
        root = Path(tmp)
        base = free_range(args.base_port, args.instances + 2)
        svc_port, prom_port = base + args.instances, base + args.instances + 1
        truth_file = root / "truth.jsonl"
        try:
            sim = Proc(python_module("simulate", "--instances", args.instances, "--base-port", base,
                                     "--metrics-version", args.metrics_version, "--speed", args.speed,
                                     "--ground-truth", truth_file, "--status-every", "0"), name="simulate")
            procs.append(sim)
            urls = [f"http://127.0.0.1:{base + i}" for i in range(args.instances)]
            wait_for("simulator", lambda: all(ready(u + "/health") for u in urls), 30, [sim])
            config = {"storage": {"url": f"sqlite:///{root}/monitor.db"},
                      "scrape": {"interval": args.interval, "timeout": "2s"},
                      "evaluation": {"window": args.window},
                      "pools": [{"name": "llama", "targets": urls}],
                      "api": {"listen": f"127.0.0.1:{svc_port}"}}
            (root / "monitor.yaml").write_text(yaml.safe_dump(config))
            from monitor.config import load
            from monitor.generate import configs, to_yaml

            prom_cfg = configs.prometheus_config(load(root / "monitor.yaml").config, [], scrape_interval=args.interval,
                                                 evaluation_interval=args.interval)
            prom_cfg["scrape_configs"] = [j for j in prom_cfg["scrape_configs"] if j["job_name"] == "vllm"]
            (root / "prometheus.yml").write_text(to_yaml(prom_cfg))
            prom = Prometheus(root, config=(root / "prometheus.yml").read_text(), port=prom_port).start(timeout_s=60)
            service = Proc(python_module("serve", "--config", root / "monitor.yaml"), name="serve", cwd=root)
            procs += [prom, service]
            svc, prom_url = f"http://127.0.0.1:{svc_port}", f"http://127.0.0.1:{prom_port}"
            wait_for("service", lambda: ready(svc + "/healthz"), 60, procs)
            wait_for("Prometheus", lambda: ready(prom_url + "/-/ready"), 60, procs)
            total = window + 10 + args.duration + 15
            load_gen = Proc(python_module("load", "--targets", *urls, "--rate", args.rate, "--duration", total,
                                          "--prompt-tokens", "512", "--output-tokens", "64", "--range-ratio", "0.9",
                                          "--drain", "10", "--quiet"), name="load")
            procs.append(load_gen)
            print(f"load {args.rate:g} requests/s over {args.instances} instances (speeds {args.speed}); "
                  f"filling the {args.window} window, then {args.duration:g} s of readings ...", flush=True)
            time.sleep(window + 10)
            client = httpx.Client(timeout=10)
            t_end = time.monotonic() + args.duration
            while time.monotonic() < t_end:
                for p in procs:
                    p.check()
                for view in client.get(svc + "/api/v1/instances").json():
                    if not view["last_scrape"]:
                        continue
                    at = parse_rfc3339(view["last_scrape"])
                    pairs = {}
                    for field, (names, _) in METRICS.items():
                        expr = (f"histogram_quantile(0.99, sum by (le) (rate({names[args.metrics_version]}_bucket"
                                f'{{instance="{view["instance"]}"}}[{args.window}])))')
                        res = client.get(prom_url + "/api/v1/query", params={"query": expr, "time": at}).json()
                        prom_value = float(res["data"]["result"][0]["value"][1]) if res["data"]["result"] else None
                        pairs[field] = (view["metrics"].get(field), prom_value)
                    readings.append((view["instance"], at, pairs))
                time.sleep(args.every)
            time.sleep(15)  # requests whose first token fell in the last window finish and are written
        finally:
            for p in reversed(procs):
                p.stop()
        from monitor.sim.groundtruth import read_rows

        rows = read_rows(truth_file)

    errors: dict[str, dict[str, list[float]]] = {f: {"ours": [], "prom": [], "upper": [], "interp": []} for f in METRICS}
    detail = []
    for instance, at, pairs in readings:
        for field, (ours, prom) in pairs.items():
            values = truth_values(rows, instance, field, at - window, at)
            truth = exact_p99(values)
            if truth is None or truth <= 0:
                continue
            upper, interp = bucket_estimates(values, METRICS[field][1])
            for key, est in (("ours", ours), ("prom", prom), ("upper", upper), ("interp", interp)):
                if est is not None and not math.isnan(est):
                    errors[field][key].append(abs(est - truth) / truth)
            detail.append((instance, field, len(values), truth, ours, prom, upper))

    print()
    print(f"{len(readings)} readings ({args.instances} instances every {args.every:g} s for {args.duration:g} s), "
          f"window {args.window}, scrape interval {args.interval}, {len(rows)} ground-truth requests; "
          f"relative error |estimate - exact p99| / exact p99, median / max")

    def cell(xs: list[float]) -> str:
        return f"{statistics.median(xs):.1%} / {max(xs):.1%}" if xs else "-"

    out = []
    for field, e in errors.items():
        name = field.replace("_p99_s", "").upper() + (" (vs per-request mean, indicative)" if "tpot" in field else "")
        ratio = (f"{statistics.median(e['ours']) / statistics.median(e['prom']):.2f}"
                 if e["ours"] and e["prom"] and statistics.median(e["prom"]) else "-")
        out.append((name, cell(e["ours"]), cell(e["prom"]), ratio, cell(e["upper"]), cell(e["interp"])))
    print(table(out, ("p99", "ours", "baseline: Prometheus histogram_quantile", "ours/baseline (median)",
                      "naive upper bucket bound", "interpolated, exact buckets")))
    for field in METRICS:
        agree = [abs(pairs[field][0] - pairs[field][1]) / pairs[field][1] for _, _, pairs in readings
                 if pairs[field][0] and pairs[field][1] and not math.isnan(pairs[field][1])]
        if agree:
            print(f"{field}: ours vs Prometheus on the same readings: median difference {statistics.median(agree):.1%}, "
                  f"max {max(agree):.1%}")
    print("the last reading (instance, metric, requests in window, exact p99, ours, Prometheus, upper bucket bound):")
    for d in detail[-3 * args.instances:]:
        print("  " + ", ".join(f"{x:.4f}" if isinstance(x, float) else str(x) for x in d))
    print(load_average())


if __name__ == "__main__":
    main()
