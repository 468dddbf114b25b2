"""`slo-monitor demo [--scenario fault|autoscale|canary] [--duration S]`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="simulated fleet + load + the service over it, with a live view",
                              description="Starts simulated vLLM instances on loopback, load against them through "
                                          "the upstream the service writes (a real nginx when one is installed), "
                                          "and the monitoring service over them (SQLite). Scenario `fault` "
                                          "(default): 3 instances, about 20 s in one gets a latency fault; the "
                                          "service ejects it and the load moves away; runs until Ctrl-C or "
                                          "--duration. Scenario `autoscale`: load triples, the service's desired "
                                          "replicas rise, new instances load their model, join through file "
                                          "discovery and take traffic until TTFT recovers; ends by itself. "
                                          "Scenario `canary`: 3 v1 instances and one v2 whose TPOT is 1.5x; the "
                                          "canary judge collects evidence, fails v2, the demo rolls it back and "
                                          "deploys a fixed v2 that passes; ends by itself. The "
                                          "summary lists each decision and step with its time, the traffic "
                                          "shift and the SLOs.")
    p.add_argument("--scenario", choices=["fault", "autoscale", "canary"], default="fault",
                   help="fault (default): one slow instance among 3; autoscale: load triples and the fleet grows; "
                        "canary: a v2 rollout failed, rolled back and passed once fixed")
    p.add_argument("--duration", help="stop by itself after this long, e.g. 30 or 2m, and print a summary "
                                      "(autoscale: at most this long; by default it ends once TTFT has recovered)")
    p.add_argument("--rate", type=float, default=None,
                   help="load in requests per second (default 6; autoscale: 1.5 before it triples; canary: 8)")
    p.add_argument("--fault-at", default="20", help="when to slow one instance down (default 20 s; at most "
                                                    "half of --duration)")
    p.add_argument("--latency-multiplier", type=float, default=4.0, help="how much slower (default 4)")
    p.add_argument("--balancer", choices=["auto", "nginx", "weights"], default="auto",
                   help="how the load follows the verdicts: a real nginx reloaded by the service (nginx), the load "
                        "generator weighting its picks by the same upstream file (weights), or nginx when "
                        "installed (auto, default)")
    p.add_argument("--db", help="SQLite file for the service (default: a temporary one)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from rich.console import Console

    from monitor.demo.runner import DemoOptions, run_demo
    from monitor.errors import BadInput
    from monitor.loadgen.cli import seconds

    problems = []
    duration = None
    if args.duration is not None:
        try:
            duration = seconds(args.duration)
        except ValueError as exc:
            problems.append(f"--duration: {exc}")
    fault_at = 20.0
    try:
        fault_at = seconds(args.fault_at)
    except ValueError as exc:
        problems.append(f"--fault-at: {exc}")
    if args.rate is not None and not args.rate > 0:
        problems.append("--rate: must be positive")
    if not args.latency_multiplier > 0:
        problems.append("--latency-multiplier: must be positive")
    if problems:
        raise BadInput("\n".join(problems))
    # the live view owns the terminal: keep routine INFO logs of the parts it runs out of it
    for name in ("httpx", "apscheduler", "alembic", "monitor", "uvicorn"):
        logging.getLogger(name).setLevel(logging.WARNING)
    options = DemoOptions(scenario=args.scenario, duration_s=duration, rate=args.rate, fault_at_s=fault_at,
                          latency_multiplier=args.latency_multiplier, seed=args.seed, db_path=args.db,
                          balancer=args.balancer)

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        console = Console()
        if not console.is_terminal:  # a log file or a pipe: wide enough that tables are not squeezed
            console = Console(width=max(console.width, 160))
        return await run_demo(options, console, stop)

    return asyncio.run(main())
