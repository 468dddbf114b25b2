"""1,000 targets through file_sd with 10 % of them replaced every minute, against the same fleet static.

The fleet: static vLLM V1 pages of ~58 KB (tests/helpers/realistic_page.py) on loopback ports, served
by bench/static_fleet.py processes of 500, with spare ports for every target that will ever join, so
that each replacement is a new address (as a rescheduled pod gets a new IP) and the servers of
departed targets keep running (their connections would stay open if we kept them).

Two phases, one after the other, each with the service alone against the fleet:

- static: `targets:` lists the first 1,000 (two pools of 500, three SLOs, SQLite), as
  bench/fleet_1000.py runs it; measured for `--static-duration` seconds (long enough for every track to hold
  its full sample history, so that both phases' RSS are steady-state figures);
- churn: the same pools, each reading a file_sd file; every `--every` seconds `--replace` of each
  pool's members (the oldest first) are removed from its file and as many new ones added; measured
  for `--duration` seconds.

The service runs as its own process (as `slo-monitor serve` does: Store, migrations, create_app,
uvicorn), plus a thread that reads the size of every per-instance structure every 5 s (members,
tracks, health entries, joined_at, SLO engine baselines, the scraper's idle connections, the store's
id map, open file descriptors): what departed instances could leave behind. The report prints CPU
per target and RSS of both phases side by side, and each structure after every replacement round,
which must level off (members + the ones still draining) instead of growing by 10 % a round.

    .venv/bin/python bench/discovery_churn.py [--targets 1000] [--duration 180] [--every 60] [--replace 0.1]
                                              [--static-duration 300] [--warmup 30] [--base-port 24000]

The issue's full run is `--duration 600` (10 minutes of churn); the default is 3 minutes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PYTHON, Proc, ProcStat, Sampler, free_range, load_average, ratio, ready, table, wait_for
from fleet_1000 import CycleTracker, start_fleet

from tests.helpers.realistic_page import build

INTERVAL_S = 5.0
STATE_EVERY_S = 5.0
SLOS = [
    {"name": "ttft-500ms", "indicator": {"type": "latency", "metric": "ttft", "threshold": "500ms"},
     "objective": "99%"},
    {"name": "errors", "indicator": {"type": "error_ratio"}, "objective": "99.9%"},
    {"name": "up", "indicator": {"type": "availability"}, "objective": "99.9%"},
]


# --- the service, with its state sizes read from inside ---------------------------------------------


def state_sizes(service) -> dict[str, int]:
    """Per-instance structures of a running Service (read from another thread: retried if a dict
    changes size while it is summed)."""
    for _ in range(20):
        try:
            scraper = service.scraper
            plain = getattr(scraper, "_plain", None)
            idle = getattr(plain, "_idle", {}) if plain is not None else {}
            return {
                "members": sum(len(m) for m in list(service.membership.values())),
                "scraped": len(service.targets),
                "tracks": len(service.fleet.tracks),
                "stats cache": len(service.fleet._stats_cache),
                "health entries": sum(len(h.instances) for h in list(service.decisions.health.values())),
                "pool_of": len(service.decisions.pool_of),
                "joined_at": len(service.joined_at),
                "SLO baselines": len(service.slo._previous),
                "idle origins": len(idle),
                "idle conns": sum(len(v) for v in list(idle.values())),
                "https clients": len(getattr(scraper, "_clients", {})),
                "store ids": len(service.store._instance_ids) if service.store is not None else 0,
                "open fds": len(os.listdir("/proc/self/fd")),
                "RSS MiB": rss_mib(),
            }
        except RuntimeError:
            time.sleep(0.01)
    return {}


def rss_mib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024)
    return -1


def serve_inside(config_path: str) -> None:
    """What `slo-monitor serve` does, plus a thread printing `STATE {json}` every few seconds."""
    import uvicorn

    from monitor.config import load
    from monitor.service import create_app
    from monitor.store import Store, upgrade

    cfg = load(config_path).config
    store = Store.open(cfg.storage.url)
    upgrade(store.engine)
    app = create_app(cfg, store=store, migrate=False, config_path=config_path)
    service = app.state.service

    def report() -> None:
        while True:
            time.sleep(STATE_EVERY_S)
            print("STATE " + json.dumps({"t": time.time(), "cycles": service.cycles, **state_sizes(service)}),
                  flush=True)

    threading.Thread(target=report, daemon=True).start()
    host, _, port = cfg.api.listen.rpartition(":")
    uvicorn.run(app, host=host, port=int(port), log_level="warning", access_log=False)


def states(proc: Proc) -> list[dict]:
    return [json.loads(line[6:]) for line in list(proc.lines) if line.startswith("STATE ")]


# --- one phase -----------------------------------------------------------------------------------


def write_sd(path: Path, addresses: list[str]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps([{"targets": addresses}]))
    os.replace(tmp, path)


def run_phase(name: str, args, root: Path, addresses: list[str], spare: list[str], fleet: list[Proc],
              duration: float) -> dict:
    churn = name == "churn"
    half = args.targets // 2
    members = {"pool-a": addresses[:half], "pool-b": addresses[half:args.targets]}
    port = free_range(args.base_port - 100, 1)
    workdir = root / name
    workdir.mkdir()
    pools = []
    # the static page's counters never move while it shows requests running: the hang rule would
    # eject half of each pool after 6 intervals, in both phases, and churn would add new ones to judge
    health = {"hang_intervals": None}
    for pool, listed in members.items():
        if churn:
            write_sd(workdir / f"{pool}.json", listed)
            pools.append({"name": pool, "health": health,
                          "discovery": [{"type": "file", "files": [str(workdir / f"{pool}.json")]}]})
        else:
            pools.append({"name": pool, "health": health, "targets": [f"http://{a}" for a in listed]})
    config = {"storage": {"url": f"sqlite:///{workdir}/monitor.db"}, "scrape": {"interval": "5s", "timeout": "2s"},
              "pools": pools, "slos": SLOS, "api": {"listen": f"127.0.0.1:{port}"}}
    path = workdir / "monitor.yaml"
    path.write_text(yaml.safe_dump(config))
    base = f"http://127.0.0.1:{port}"
    service = Proc([PYTHON, __file__, "--serve-inside", path], name=f"service ({name})", cwd=workdir)
    try:
        started = time.monotonic()
        wait_for(f"{name}: service /healthz", lambda: ready(base + "/healthz"), 60, [service])
        wait_for(f"{name}: {args.warmup:g}s of warm-up and two cycles",
                 lambda: time.monotonic() - started >= args.warmup
                 and httpx.get(base + "/healthz", timeout=10).json()["cycles"] >= 2, 180, [service])
        print(f"{name}: warm after {time.monotonic() - started:.0f} s; measuring {duration:g} s"
              + (f", replacing {args.replace:.0%} of each pool every {args.every:g} s" if churn else ""), flush=True)
        sampler = Sampler({"service": service.pid}).start()
        tracker = CycleTracker(base + "/healthz", ProcStat(service.pid)).start()
        t0 = time.monotonic()
        rounds: list[dict] = []
        spare = list(spare)
        replaced = 0
        next_round = t0 + args.every
        while time.monotonic() < t0 + duration:
            time.sleep(min(1.0, max(0.0, t0 + duration - time.monotonic())))
            if churn and next_round <= time.monotonic() < t0 + duration:
                # the state just before each replacement: the previous round has had `every` seconds to settle
                rounds.append({"round": len(rounds), **states(service)[-1]})
                for pool, listed in members.items():
                    n = max(1, round(len(listed) * args.replace))
                    if len(spare) < n:
                        raise RuntimeError("out of spare ports: raise --spare")
                    listed[:] = listed[n:] + spare[:n]
                    del spare[:n]
                    replaced += n
                    write_sd(workdir / f"{pool}.json", listed)
                next_round += args.every
        usage = sampler.stop()["service"]
        per_cycle = tracker.stop()
        service.check()
        if churn:  # the last round's departed ones drained and dropped (drain_time 60 s), outside the measurement
            rounds.append({"round": len(rounds), **states(service)[-1]})
            time.sleep(60 + 2 * INTERVAL_S)
        time.sleep(STATE_EVERY_S + 1)
        rounds.append({"round": "end", **states(service)[-1]})
        with httpx.Client(timeout=30) as client:
            instances = client.get(base + "/api/v1/instances").json()
        errors = [i for i in instances if i["scrape"]["error"] and i["state"] != "leaving"]
        by_state: dict[str, list[dict]] = {}
        for i in instances:
            by_state.setdefault(i["state"], []).append(i)
        return {"usage": usage, "per_cycle": per_cycle, "rounds": rounds, "replaced": replaced,
                "errors": len(errors), "instances": len(instances),
                "states": {k: (len(v), "; ".join(v[0]["reasons"])[:200]) for k, v in sorted(by_state.items())}}
    finally:
        service.stop()


# --- report ---------------------------------------------------------------------------------------


def report(args, static: dict | None, churn: dict) -> None:
    print()
    print(f"{args.targets} targets of a ~58 KB V1 page every {INTERVAL_S:g} s; churn: {churn['replaced']} "
          f"replaced over {args.duration:g} s ({args.replace:.0%} of each pool every {args.every:g} s, "
          f"drain_time 60 s)")
    rows = []

    def row(label: str, get, fmt: str) -> None:
        s = get(static) if static else math.nan
        c = get(churn)
        rows.append((label, fmt.format(s) if static else "-", fmt.format(c), ratio(c, s) if static else "-"))

    row("CPU per cycle per target, ms", lambda r: r["per_cycle"]["cpu_per_cycle"] / args.targets * 1000, "{:.2f}")
    row("CPU share of one core", lambda r: r["usage"]["cpu_share"], "{:.2f}")
    row("one cycle every, s", lambda r: r["per_cycle"]["period"], "{:.2f}")
    row("RSS at the end, MiB", lambda r: r["usage"]["rss_mib"], "{:.0f}")
    row("max RSS sampled, MiB", lambda r: r["usage"]["rss_max_mib"], "{:.0f}")
    row("peak RSS (VmHWM), MiB", lambda r: r["usage"]["hwm_mib"], "{:.0f}")
    print(table(rows, ("", "static fleet", "churn", "churn/static")))
    print()
    keys = [k for k in churn["rounds"][0] if k not in ("round", "t", "cycles")]
    header = ("structure", *(f"before {r['round'] + 1}" if r["round"] != "end" else "drained"
                             for r in churn["rounds"]), *(("static",) if static else ()))
    lines = [(k, *(r.get(k, "-") for r in churn["rounds"]), *((static["rounds"][-1].get(k, "-"),) if static else ()))
             for k in keys]
    print("per-instance state, read inside the service before each replacement round (`before N`: N-1 rounds done, "
          "the last one's departed still draining; `drained`: 70 s after the measurement, the last round's departed "
          "dropped):")
    print(table(lines, header))
    print()
    for name, result in (("static", static), ("churn", churn)):
        if result:
            print(f"{name}: {result['instances']} instances in the API at the end, "
                  f"{result['errors']} with a scrape error; by state:")
            for state, (n, example) in result["states"].items():
                print(f"  {state}: {n}" + (f" (e.g. {example})" if state not in ("healthy", "leaving") else ""))
    if static:
        cpu = ratio(churn["per_cycle"]["cpu_per_cycle"], static["per_cycle"]["cpu_per_cycle"])
        rss = ratio(churn["usage"]["rss_mib"], static["usage"]["rss_mib"])
        print(f"goal (CPU per target and RSS within 10% of the static fleet's): CPU {cpu}, RSS {rss}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=180.0, help="seconds of churn measured (default 180; 600 for 10 min)")
    ap.add_argument("--every", type=float, default=60.0, help="seconds between replacement rounds (default 60)")
    ap.add_argument("--replace", type=float, default=0.10, help="share of each pool replaced per round (default 0.1)")
    ap.add_argument("--static-duration", type=float, default=300.0,
                    help="seconds of the static phase (default 300: its RSS is read once every track holds its "
                         "full sample history, 195 s at a 60 s window; 0 skips it)")
    ap.add_argument("--warmup", type=float, default=30.0)
    ap.add_argument("--base-port", type=int, default=24000, help="first port of the fleet (below 32768)")
    ap.add_argument("--serve-inside", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_inside:
        serve_inside(args.serve_inside)
        return

    rounds = int(args.duration // args.every) + 1
    total = args.targets + math.ceil(args.targets * args.replace) * rounds + 2
    print(load_average())
    with tempfile.TemporaryDirectory(prefix="bench-churn-") as tmp:
        root = Path(tmp)
        page = root / "page.txt"
        page.write_text(build())
        base = free_range(args.base_port, total)
        addresses = [f"127.0.0.1:{base + i}" for i in range(total)]
        print(f"fleet: {total} static pages on ports {base}..{base + total - 1}", flush=True)
        fleet = start_fleet(total, base, page)
        try:
            static = (run_phase("static", args, root, addresses, [], fleet, args.static_duration)
                      if args.static_duration > 0 else None)
            churn = run_phase("churn", args, root, addresses, addresses[args.targets:], fleet, args.duration)
        finally:
            for f in fleet:
                f.stop()
    report(args, static, churn)
    print(load_average())


if __name__ == "__main__":
    main()
