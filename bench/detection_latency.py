"""Detection latency: from a fault injected into one simulated vLLM instance to the 503 on its check URL,
to NGINX no longer sending it requests, and to a page in Alertmanager, against Prometheus running the
rules `slo-monitor generate` writes from the same config, with the same scrape interval.

The stack, all on loopback: `slo-monitor simulate` (3 instances), a real NGINX in front of them whose
upstream file the service writes (`nginx -t` + `nginx -s reload`), `slo-monitor load` sending
`--rate` requests/s through NGINX, `slo-monitor serve` scraping the instances every `--interval`
and paging Alertmanager #1, and Debian's Prometheus scraping the same instances at the same interval,
evaluating the generated rules at that interval too, and paging Alertmanager #2 (same Alertmanager
config). SLOs: `ttft-500ms` (99%) and `errors` (99.9%), 30 d windows; no history before the run,
so every burn-rate window holds the same `--healthy` seconds of good traffic when the fault starts.

After `--healthy` seconds of healthy traffic one fault goes to instance 0 (`POST /sim/faults`):
- `--fault errors`: `{"error_rate": 1.0}`, every request fails with HTTP 500 / finished_reason=error;
- `--fault latency`: `{"latency_multiplier": 50}`, every engine step 50x slower (TTFT ~1-2 s).
Then, polled every 0.1 s: the check URL `/upstreams/llama/{instance}`, the upstream file, which server
answers requests sent through NGINX (`X-Upstream`), both Alertmanagers' `/api/v2/alerts` for a
`SloErrorBudgetBurn` page, and Prometheus's own `ALERTS` (to split its delay into rule firing and
delivery).

    .venv/bin/python bench/detection_latency.py [--fault errors|latency] [--interval 5s] [--healthy 45]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    BENCH_NGINX_LOCATION,
    Alertmanager,
    NginxServer,
    Proc,
    Prometheus,
    alertmanager_config,
    free_range,
    load_average,
    python_module,
    ready,
    table,
    wait_for,
)

FAULTS = {"errors": {"error_rate": 1.0}, "latency": {"latency_multiplier": 50}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fault", choices=sorted(FAULTS), default="errors")
    ap.add_argument("--interval", default="5s", help="scrape interval of both, and Prometheus's rule interval")
    ap.add_argument("--window", default="1m", help="the service's evaluation.window (health verdicts)")
    ap.add_argument("--healthy", type=float, default=45.0, help="seconds of healthy traffic before the fault")
    ap.add_argument("--timeout", type=float, default=100.0, help="give up this long after the fault")
    ap.add_argument("--rate", type=float, default=10.0, help="requests/s through NGINX")
    ap.add_argument("--instances", type=int, default=3)
    ap.add_argument("--direct", action="store_true",
                    help="send the load straight to the instances (round-robin), not through NGINX: an ejection "
                         "then does not move traffic away, so the SLO keeps burning (to time the pages)")
    ap.add_argument("--base-port", type=int, default=23100, help="first port used (below 32768)")
    args = ap.parse_args()
    from monitor.config import parse_duration

    interval_s = parse_duration(args.interval)
    print(load_average())

    procs: list[Proc] = []
    nginx = None
    with tempfile.TemporaryDirectory(prefix="bench-detect-") as tmp:
        root = Path(tmp)
        base = free_range(args.base_port, args.instances + 5)
        sim_port, svc_port, prom_port, am1_port, am2_port, nginx_port = (
            base, *range(base + args.instances, base + args.instances + 5))
        try:
            sim = Proc(python_module("simulate", "--instances", args.instances, "--base-port", sim_port,
                                     "--status-every", "0"), name="simulate")
            procs.append(sim)
            urls = [f"http://127.0.0.1:{sim_port + i}" for i in range(args.instances)]
            wait_for("simulator", lambda: all(ready(u + "/health") for u in urls), 30, [sim])
            instances = [u.split("//", 1)[1] for u in urls]
            victim = instances[0]

            am1 = Alertmanager(root / "am-ours", am1_port, alertmanager_config(group_wait="0s")).start(timeout_s=30)
            am2 = Alertmanager(root / "am-prometheus", am2_port, alertmanager_config(group_wait="0s")).start(timeout_s=30)
            procs += [am1, am2]
            am1_url, am2_url = am1.url, am2.url

            upstream_file = root / "nginx" / "conf.d" / "llm-upstreams.conf"
            upstream_file.parent.mkdir(parents=True)
            from monitor.act.nginx import UpstreamServer, render_file
            from monitor.decide.verdicts import HEALTHY

            upstream_file.write_text(render_file({"llama": [UpstreamServer(i, HEALTHY) for i in instances]}))
            nginx = NginxServer(root / "nginx", upstream_file, "llama", nginx_port, location=BENCH_NGINX_LOCATION)
            nginx.start(timeout_s=15)
            procs.append(nginx)

            config = {
                "storage": {"url": f"sqlite:///{root}/monitor.db"},
                "scrape": {"interval": args.interval, "timeout": "2s"},
                "evaluation": {"window": args.window},
                "pools": [{"name": "llama", "targets": urls}],
                "slos": [
                    {"name": "ttft-500ms", "objective": "99%",
                     "indicator": {"type": "latency", "metric": "ttft", "threshold": "500ms"}},
                    {"name": "errors", "objective": "99.9%", "indicator": {"type": "error_ratio"}},
                ],
                "api": {"listen": f"127.0.0.1:{svc_port}"},
                "alertmanager": {"url": am1_url},
                "nginx": {"upstream_file": str(upstream_file), "check": nginx.command("-t", "-q"),
                          "reload": nginx.command("-s", "reload")},
            }
            (root / "monitor.yaml").write_text(yaml.safe_dump(config))

            from monitor.config import load
            from monitor.generate import Options, generate, to_yaml
            from monitor.generate import configs as gen_configs

            cfg = load(root / "monitor.yaml").config
            generate(cfg, root / "gen", Options(rule_interval_s=interval_s, scrape_interval=args.interval))
            rule_files = sorted(str(p) for p in (root / "gen" / "alerts").glob("*.rules.yml"))
            prom_cfg = gen_configs.prometheus_config(cfg, rule_files, scrape_interval=args.interval,
                                                     evaluation_interval=args.interval)
            prom_cfg["scrape_configs"] = [j for j in prom_cfg["scrape_configs"] if j["job_name"] == "vllm"]
            prom_cfg["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am2_port}"]}]}]}
            (root / "prometheus.yml").write_text(to_yaml(prom_cfg))
            prom = Prometheus(root, config=(root / "prometheus.yml").read_text(), port=prom_port).start(timeout_s=60)
            procs.append(prom)
            service = Proc(python_module("serve", "--config", root / "monitor.yaml"), name="serve", cwd=root)
            procs.append(service)
            svc, prom_url = f"http://127.0.0.1:{svc_port}", f"http://127.0.0.1:{prom_port}"
            wait_for("service", lambda: ready(svc + "/healthz"), 60, procs)
            wait_for("Prometheus", lambda: ready(prom_url + "/-/ready"), 60, procs)

            load_gen = Proc(python_module("load", "--targets", *(urls if args.direct else [nginx.url]), "--rate", args.rate, "--duration",
                                          args.healthy + args.timeout + 60, "--output-tokens", "16",
                                          "--prompt-tokens", "128", "--drain", "5", "--quiet"), name="load")
            procs.append(load_gen)
            print(f"healthy traffic for {args.healthy:g} s at {args.rate:g} requests/s "
                  f"{'straight to the instances' if args.direct else 'through NGINX'} ...", flush=True)
            time.sleep(args.healthy)
            for p in procs:
                p.check()
            client = httpx.Client(timeout=5)
            pre = client.get(f"{svc}/upstreams/llama/{victim}")
            assert pre.status_code == 200, pre.text
            assert not pages(client, am1_url) and not pages(client, am2_url), "a page before the fault"

            client.post(urls[0] + "/sim/faults", json=FAULTS[args.fault]).raise_for_status()
            t0, t0_wall = time.monotonic(), time.time()
            print(f"fault {FAULTS[args.fault]} on {victim}; watching for up to {args.timeout:g} s ...", flush=True)
            got = watch(client, t0, args, svc, victim, upstream_file, nginx.url, am1_url, am2_url, prom_url, procs)
            time.sleep(interval_s + 1)  # the range query's last step must reach the evaluation that fired
            got["conditions"] = conditions(client, prom_url, t0_wall, args, interval_s)
            if os.environ.get("BENCH_DEBUG"):
                for q in ('slo:bad_events:increase1h', 'max_over_time(slo:bad_events:increase1h[3m])',
                          'slo:bad_events:rate5m', 'ALERTS'):
                    print(q, client.get(prom_url + "/api/v1/query", params={"query": q}).json()["data"]["result"])
            log_lines = [line for line in service.lines if "nginx" in line.lower() or "->" in line][-12:]
            if os.environ.get("BENCH_DEBUG"):
                print("\n".join(log_lines))
                print((root / "nginx" / "error.log").read_text()[-3000:])
            client.post(urls[0] + "/sim/faults", json={})
        finally:
            for p in reversed(procs):
                p.stop()

    report(args, got, interval_s)
    if got["503"] is None:
        print("service log (last decisions):\n  " + "\n  ".join(log_lines))
    print(load_average())


SLO_OF_FAULT = {"errors": ("errors", 0.001), "latency": ("ttft-500ms", 0.01)}


def conditions(client: httpx.Client, prom_url: str, t0_wall: float, args, interval_s: float) -> list[tuple[str, float | None]]:
    """When each part of the generated page conditions first held in Prometheus, in seconds from the fault."""
    slo, budget = SLO_OF_FAULT[args.fault]
    parts = []
    for pair, (long, short, factor) in (("1h/5m", ("1h", "5m", 14.4)), ("6h/30m", ("6h", "30m", 6))):
        parts += [
            (f"{pair}: {short} bad-event ratio above {factor} x budget",
             f'slo:sli_error:ratio_rate{short}{{slo="{slo}"}} > ({factor} * {budget})'),
            (f"{pair}: {long} bad-event ratio above {factor} x budget",
             f'slo:sli_error:ratio_rate{long}{{slo="{slo}"}} > ({factor} * {budget})'),
            (f"{pair}: {long} bad events >= 5 (min_bad_events)",
             f'slo:bad_events:increase{long}{{slo="{slo}"}} >= 5 or slo:bad_events:rate5m{{slo="{slo}"}} * 300 >= 5'),
        ]
    out = []
    for name, expr in parts:
        body = client.get(prom_url + "/api/v1/query_range", params={
            "query": expr, "start": f"{t0_wall:.3f}", "end": f"{time.time():.3f}", "step": f"{interval_s:g}s"}).json()
        if body.get("status") != "success":
            out.append((name + f" (query failed: {body.get('error')})", None))
            continue
        times = [float(t) for series in body["data"]["result"] for t, _ in series["values"]]
        out.append((name, min(times) - t0_wall if times else None))
    return out


def pages(client: httpx.Client, am_url: str) -> list[dict]:
    params = [("filter", 'alertname="SloErrorBudgetBurn"'), ("filter", 'severity="page"')]
    return client.get(am_url + "/api/v2/alerts", params=params).json()


def watch(client, t0, args, svc, victim, upstream_file: Path, nginx_url, am1_url, am2_url, prom_url, procs) -> dict:
    got: dict = {"victim": victim, "503": None, "file": None, "page_ours": None, "page_prom": None, "firing_prom": None,
                 "slo_ours": None, "slo_prom": None}
    probes: list[tuple[float, str]] = []
    file_changes: list[tuple[float, bool]] = []
    got["file_changes"] = file_changes
    got["probe_log"] = probes
    down_line = re.compile(rf"server {re.escape(victim)}( weight=\d+)? down;")
    last_slow = 0.0
    while True:
        now = time.monotonic() - t0
        if now > args.timeout:
            break
        if got["503"] is None and client.get(f"{svc}/upstreams/llama/{victim}").status_code == 503:
            got["503"] = now
        is_down = bool(down_line.search(upstream_file.read_text()))
        if got["file"] is None and is_down:
            got["file"] = now
        if is_down != (file_changes[-1][1] if file_changes else False):
            file_changes.append((now, is_down))
        try:
            r = client.get(nginx_url + "/health", headers={"Connection": "close"})
            probes.append((now, r.headers.get("x-upstream", "")))
        except httpx.HTTPError:
            pass
        if now - last_slow >= 0.25:
            last_slow = now
            if got["page_ours"] is None and (found := pages(client, am1_url)):
                got["page_ours"], got["slo_ours"] = now, found[0]["labels"]["slo"]
                got["summary_ours"] = found[0].get("annotations", {}).get("summary")
            if got["page_prom"] is None and (found := pages(client, am2_url)):
                got["page_prom"], got["slo_prom"] = now, found[0]["labels"]["slo"]
            if got["firing_prom"] is None:
                alerts = client.get(prom_url + "/api/v1/alerts").json()["data"]["alerts"]
                if any(a["labels"].get("alertname") == "SloErrorBudgetBurn" and a["labels"].get("severity") == "page"
                       and a["state"] == "firing" for a in alerts):
                    got["firing_prom"] = now
            for p in procs:
                p.check()
        nginx_done = got["file"] is not None and now - got["file"] > 8
        if args.fault == "latency" and not args.direct and got["file"] is not None and now - got["file"] > 60:
            break  # the instance is out of traffic: the SLO stops burning, and no page may ever come
        if all(got[k] is not None for k in ("503", "page_ours", "page_prom")) and nginx_done:
            break
        time.sleep(max(0.0, 0.1 - (time.monotonic() - t0 - now)))
    # NGINX dropped the instance when requests stop reaching it: the first probe after the last one it answered
    back = next((t for t, down in file_changes if not down), None)  # an ejection ends, the instance returns
    hits = [t for t, up in probes if up == victim and (back is None or t < back)]
    after = [t for t, _ in probes if t > (hits[-1] if hits else -1)]
    # (a degraded instance gets a lower weight first, so probes reach it rarely before the file
    # marks it down: the drop cannot precede the file)
    got["nginx"] = max(after[0], got["file"] or 0.0) if (hits and len(after) >= 20) else None
    got["nginx_last_hit"] = hits[-1] if hits else None
    got["probes"] = len(probes)
    return got


def report(args, got: dict, interval_s: float) -> None:
    def s(v):
        return "never" if v is None else f"{v:.1f}"

    print()
    print(f"fault {args.fault} on 1 of {args.instances} instances at {args.rate:g} requests/s "
          f"({'straight to the instances' if args.direct else 'through NGINX'}), "
          f"scrape interval {args.interval} for both, window {args.window}, after {args.healthy:g} s healthy; "
          f"seconds from the fault (polled every 0.1 s, Alertmanagers every 0.25 s), timeout {args.timeout:g} s")
    rows = [
        ("check URL /upstreams/llama/{instance} answers 503", s(got["503"]), "-",
         "Prometheus has no per-instance verdict"),
        ("upstream file marks it down (nginx -t ok)", s(got["file"]), "-", ""),
        ("NGINX stops sending it requests (after reload)", s(got["nginx"]), "-",
         "NGINX alone never sees slowness or HTTP 500"),
        ("page firing (service / Prometheus ALERTS)", "-", s(got["firing_prom"]), ""),
        (f"page in Alertmanager (SLO {got['slo_ours'] or '-'} / {got['slo_prom'] or '-'})", s(got["page_ours"]),
         s(got["page_prom"]),
         f"ours/baseline {got['page_ours'] / got['page_prom']:.2f}" if got["page_ours"] and got["page_prom"] else ""),
    ]
    print(table(rows, ("event", "ours s", "baseline s", "note")))
    print()
    print(f"Prometheus: when each part of the generated page conditions (SLO {SLO_OF_FAULT[args.fault][0]}) "
          f"first held, at its {args.interval} rule evaluations (a pair fires when its three parts hold):")
    for name, t in got["conditions"]:
        print(f"  {name:<48} {s(t)} s")
    if got.get("summary_ours"):
        print(f"ours: the page said: {got['summary_ours']}")
    changes = ", ".join(f"{'down' if d else 'back'} at {t:.1f} s" for t, d in got["file_changes"])
    print(f"upstream file: {changes or 'never marked down'}")
    if os.environ.get("BENCH_DEBUG"):
        victim_hits = [round(t) for t, up in got["probe_log"] if up == got["victim"]]
        print("probes reaching the instance, by second:", victim_hits)
    if got["nginx_last_hit"] is not None:
        print(f"NGINX: last request routed to the instance at {got['nginx_last_hit']:.1f} s "
              f"({got['probes']} probes through NGINX, one every 0.1 s)")


if __name__ == "__main__":
    main()
