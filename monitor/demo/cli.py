"""`slo-monitor demo [--duration S]`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="simulated fleet + load + the service over it, with a live view",
                              description="Starts 3 simulated vLLM instances on loopback, load against them and "
                                          "the monitoring service over them (SQLite); about 20 s in, one instance "
                                          "gets a latency fault. Runs until Ctrl-C or --duration.")
    p.add_argument("--duration", help="stop by itself after this long, e.g. 30 or 2m, and print a summary")
    p.add_argument("--rate", type=float, default=6.0, help="load in requests per second (default 6)")
    p.add_argument("--fault-at", default="20", help="when to slow one instance down (default 20 s; at most "
                                                    "half of --duration)")
    p.add_argument("--latency-multiplier", type=float, default=4.0, help="how much slower (default 4)")
    p.add_argument("--db", help="SQLite file for the service (default: a temporary one)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from rich.console import Console

    from monitor.errors import BadInput
    from monitor.demo.runner import DemoOptions, run_demo
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
    if not args.rate > 0:
        problems.append("--rate: must be positive")
    if not args.latency_multiplier > 0:
        problems.append("--latency-multiplier: must be positive")
    if problems:
        raise BadInput("\n".join(problems))
    # the live view owns the terminal: keep routine INFO logs of the parts it runs out of it
    for name in ("httpx", "apscheduler", "alembic", "monitor", "uvicorn"):
        logging.getLogger(name).setLevel(logging.WARNING)
    options = DemoOptions(duration_s=duration, rate=args.rate, fault_at_s=fault_at,
                          latency_multiplier=args.latency_multiplier, seed=args.seed, db_path=args.db)

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
