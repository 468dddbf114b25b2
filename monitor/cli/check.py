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


def canary_group_lines(cfg: Config, found: dict[str, dict[str, dict[str, str]]]) -> list[str]:
    """A canary group that selects no instance of the file_sd files read now, or an instance that both
    groups select (left out of the comparison), named. Only pools found by files alone: a network
    source may still fill a group when the service runs."""
    by_file = {p.name for p in cfg.pools if p.discovery and all(d.type == "file" for d in p.discovery)}
    lines = []
    for i, canary in enumerate(cfg.canaries):
        chosen = {}
        for side in ("baseline", "candidate"):
            group = getattr(canary, side)
            pool = group.pool or canary.pool
            if pool not in by_file:
                continue
            members = {address for address, labels in found.get(pool, {}).items()
                       if all(labels.get(k) == v for k, v in group.labels.items())}
            chosen[side] = (pool, members)
            if not members:
                lines.append(f"canaries[{i}].{side}: no instance of pool {pool!r} in its file_sd files matches "
                             f"{group.describe(canary.pool)}, so this group is empty (its verdict stays inconclusive)")
        if len(chosen) == 2 and chosen["baseline"][0] == chosen["candidate"][0]:
            both = sorted(chosen["baseline"][1] & chosen["candidate"][1])
            if both:
                lines.append(f"canaries[{i}]: {len(both)} instance(s) match both baseline and candidate "
                             f"(e.g. {both[0]}) and are left out of the comparison")
    return lines


def cmd_check(args: argparse.Namespace) -> int:
    cfg, warnings = checked(args.config)
    # file_sd files are read once, so a target the service would drop is named now, with its reason
    labelled: dict[str, dict[str, dict[str, str]]] = {}
    warnings += asyncio.run(check_files([PoolSpec(p.name, (), tuple(p.discovery)) for p in cfg.pools], cfg.discovery,
                                        labelled))
    warnings += canary_group_lines(cfg, labelled)
    for warning in warnings:
        print(f"warning: {warning}")
    targets = sum(len(p.targets) for p in cfg.pools)
    sources = sum(len(p.discovery) for p in cfg.pools)
    found = f" + {counted(sources, 'discovery source')}" if sources else ""
    print(f"ok: {counted(len(cfg.pools), 'pool')}, {counted(targets, 'target')}{found}, "
          f"{counted(len(cfg.slos), 'SLO')}")
    return EXIT_OK
