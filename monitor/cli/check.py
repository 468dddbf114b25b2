"""`slo-monitor check --config FILE`: validate a config; exit 2 naming every problem."""

from __future__ import annotations

import argparse
import asyncio

from monitor.cli.advice import advice
from monitor.cli.exits import EXIT_OK
from monitor.collect.discovery import PoolSpec, check_files
from monitor.config import load_config


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("check", help="validate a config; exit 2 naming every problem",
                              description="Validates FILE and names every problem in one pass, each with its key "
                                          "path, the value seen and the form wanted; prints warnings for valid "
                                          "settings that are probably not what was meant.")
    p.add_argument("--config", required=True, help="YAML config to check")
    p.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)  # a ConfigError is a BadInput: printed, exit 2
    cfg = loaded.config
    # file_sd files are read once, so a target the service would drop is named now, with its reason
    files = asyncio.run(check_files([PoolSpec(p.name, (), tuple(p.discovery)) for p in cfg.pools], cfg.discovery))
    for warning in [*loaded.warnings, *advice(cfg), *files]:
        print(f"warning: {warning}")
    targets = sum(len(p.targets) for p in cfg.pools)
    sources = sum(len(p.discovery) for p in cfg.pools)
    found = f" + {sources} discovery source{'s' if sources != 1 else ''}" if sources else ""
    print(f"ok: {len(cfg.pools)} pools, {targets} targets{found}, {len(cfg.slos)} SLOs")
    return EXIT_OK
