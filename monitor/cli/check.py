"""`slo-monitor check --config FILE`: validate a config; exit 2 naming every problem.

`checked()` is the one path `serve` takes too: whatever `check` passes, `serve` starts with, and
whatever `serve` refuses, `check` names first, with the same words.
"""

from __future__ import annotations

import argparse
import asyncio

from monitor.cli.advice import advice
from monitor.cli.exits import EXIT_OK
from monitor.collect.discovery import PoolSpec, check_files
from monitor.config import Config, listen_problem, load_config
from monitor.errors import BadInput
from monitor.units import counted, parse_listen


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("check", help="validate a config; exit 2 naming every problem",
                              description="Validates FILE and names every problem in one pass, each with its key "
                                          "path, the value seen and the form wanted; prints warnings for valid "
                                          "settings that are probably not what was meant. Exit 0 when valid, 2 "
                                          "when not (also for a file that cannot be read or is not YAML).")
    p.add_argument("--config", required=True, help="YAML config to check")
    p.set_defaults(func=cmd_check)


def checked(path: str | None, listen: str | None = None) -> tuple[Config, list[str]]:
    """The config a command serves with (`listen`: serve's --listen) and its warnings; a
    ConfigError or BadInput (printed by the CLI, exit 2) names every problem."""
    loaded = load_config(path)
    cfg = loaded.config
    if listen:
        try:
            listen = parse_listen(listen)
        except ValueError as exc:
            raise BadInput(f"--listen: {exc}") from None
        problem = listen_problem(listen)
        if problem:
            raise BadInput(f"--listen: {problem}")
        cfg = cfg.model_copy(update={"api": cfg.api.model_copy(update={"listen": listen})})
    return cfg, [*loaded.warnings, *advice(cfg)]


def cmd_check(args: argparse.Namespace) -> int:
    cfg, warnings = checked(args.config)
    # file_sd files are read once, so a target the service would drop is named now, with its reason
    warnings += asyncio.run(check_files([PoolSpec(p.name, (), tuple(p.discovery)) for p in cfg.pools], cfg.discovery))
    for warning in warnings:
        print(f"warning: {warning}")
    targets = sum(len(p.targets) for p in cfg.pools)
    sources = sum(len(p.discovery) for p in cfg.pools)
    found = f" + {counted(sources, 'discovery source')}" if sources else ""
    print(f"ok: {counted(len(cfg.pools), 'pool')}, {counted(targets, 'target')}{found}, "
          f"{counted(len(cfg.slos), 'SLO')}")
    return EXIT_OK
