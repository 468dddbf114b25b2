"""`slo-monitor load --targets URL... --rate R --duration S`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from typing import Any

from monitor.units import parse_duration, parse_http_url


def seconds(text: str) -> float:
    """`60`, `60s`, `2m`, `500ms`: the CLI accepts a bare number of seconds too."""
    try:
        value = float(text)
    except ValueError:
        return parse_duration(text)
    if value <= 0:
        raise ValueError(f"must be positive: {text!r}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("load", help="open-loop load against OpenAI-compatible servers, with a summary",
                              description="Poisson arrivals at --rate requests/s for --duration, round-robin over "
                                          "the targets; streams every answer to time TTFT/TPOT on the client.")
    p.add_argument("--targets", nargs="+", required=True, metavar="URL", help="base URLs, e.g. http://127.0.0.1:8000")
    p.add_argument("--rate", type=float, required=True, help="requests per second (Poisson arrivals)")
    p.add_argument("--duration", required=True, help="how long to send, e.g. 60 or 5m")
    p.add_argument("--prompt-tokens", type=int, default=256, help="mean prompt length (default 256)")
    p.add_argument("--output-tokens", type=int, default=128, help="mean output length (default 128)")
    p.add_argument("--range-ratio", type=float, default=0.5, help="lengths uniform in mean*(1±ratio) (default 0.5)")
    p.add_argument("--prefix-tokens", type=int, default=0, help="shared prompt prefix length (prefix-cache hits)")
    p.add_argument("--model", help="model name (default: the first target's /v1/models)")
    p.add_argument("--chat", action="store_true", help="use /v1/chat/completions instead of /v1/completions")
    p.add_argument("--goodput", nargs="+", default=[], metavar="KEY:MS",
                   help="SLO limits for goodput, e.g. ttft:500 tpot:50 e2el:10000")
    p.add_argument("--drain", default="30", help="how long to wait for requests in flight at the end (default 30s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", dest="json_out", metavar="FILE", help="also write the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=cmd_load)


def build_run(args: argparse.Namespace):
    from monitor.errors import BadInput
    from monitor.loadgen.report import parse_goodput
    from monitor.loadgen.runner import LoadRun
    from monitor.loadgen.workload import Workload

    problems = []
    targets = []
    for i, url in enumerate(args.targets):
        try:
            targets.append(parse_http_url(url))
        except ValueError as exc:
            problems.append(f"--targets[{i}] {url!r}: {exc}")
    duration = drain = 0.0
    try:
        duration = seconds(args.duration)
    except ValueError as exc:
        problems.append(f"--duration: {exc}")
    try:
        drain = seconds(args.drain)
    except ValueError as exc:
        problems.append(f"--drain: {exc}")
    if not args.rate > 0:
        problems.append("--rate: must be positive")
    goodput: dict[str, float] = {}
    try:
        goodput = parse_goodput(args.goodput)
    except ValueError as exc:
        problems.append(f"--goodput: {exc}")
    workload = None
    try:
        workload = Workload(args.prompt_tokens, args.output_tokens, args.range_ratio, args.prefix_tokens, args.seed)
    except ValueError as exc:
        problems.append(f"workload: {exc}")
    if problems:
        raise BadInput("\n".join(problems))
    return LoadRun(targets, args.rate, duration, workload, model=args.model, chat=args.chat, drain_s=drain,
                   goodput=goodput or None)


def cmd_load(args: argparse.Namespace) -> int:
    from monitor.loadgen.report import format_summary

    run = build_run(args)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    interactive = sys.stderr.isatty()

    def show(progress: Any) -> None:
        if args.quiet:
            return
        if interactive:
            print("\r" + progress.line() + "   ", end="", file=sys.stderr, flush=True)
        elif int(progress.elapsed_s) % 5 == 0:
            print(progress.line(), file=sys.stderr, flush=True)

    async def main():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, run.stop_sending.set)
        return await run.run(show)

    try:
        summary = asyncio.run(main())
    except Exception as exc:  # unreachable target, bad model: one line, exit 1
        import httpx

        if isinstance(exc, (httpx.HTTPError, OSError, KeyError, ValueError)):
            print(f"\nerror: cannot start the load: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        raise
    if interactive and not args.quiet:
        print(file=sys.stderr)
    print(format_summary(summary))
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump(summary.as_dict(), f, indent=2)
    return 0 if summary.completed > 0 else 1
