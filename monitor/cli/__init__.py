"""`slo-monitor`: the command line. Exit codes: 0 success, 2 bad input, 1 anything else.

One module per command, each with `register(subparsers)`: the service's own commands here (serve,
check, db), the others beside the part of the product they run (demo, simulate, load, generate,
exporter). Commands raise `monitor.errors.BadInput` for input a person must fix; nothing they load
imports this package.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Sequence

from monitor.cli import check, db, serve
from monitor.cli.exits import EXIT_BAD_INPUT, EXIT_ERROR, EXIT_OK
from monitor.demo import cli as demo_cli
from monitor.errors import BadInput
from monitor.generate import cli as generate_cli
from monitor.gpu import exporter
from monitor.loadgen import cli as loadgen_cli
from monitor.sim import cli as sim_cli

__all__ = ["EXIT_BAD_INPUT", "EXIT_ERROR", "EXIT_OK", "build_parser", "main"]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
COMMANDS = (serve, check, db, demo_cli, sim_cli, loadgen_cli, generate_cli, exporter)


class CommandParser(argparse.ArgumentParser):
    """A command's parser. Every command (and `db upgrade`) takes `--log-level` after its name as well
    as before it, and lists it in its --help; given after, it wins."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # SUPPRESS: absent unless given here, so it never overwrites a --log-level given before the command
        self.add_argument("--log-level", choices=LOG_LEVELS, default=argparse.SUPPRESS,
                          help="DEBUG, INFO (default), WARNING or ERROR")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slo-monitor", description="SLOs and health decisions for vLLM fleets")
    parser.add_argument("--log-level", default="INFO", choices=LOG_LEVELS,
                        help="DEBUG, INFO (default), WARNING or ERROR; also accepted after the command")
    # nested subcommands (db upgrade) inherit the parser class, so they take --log-level too
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=CommandParser)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad arguments, 0 on --help
        return int(exc.code or 0)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("httpx", "apscheduler", "alembic.runtime.plugins"):  # a line per request or job run
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        return int(args.func(args) or 0)
    except BadInput as exc:
        print(f"error: {exc}" if "\n" not in str(exc) else f"error: invalid configuration:\n{exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as exc:  # the last line of defence; named, not a traceback wall
        logging.getLogger("monitor").exception("failed: %s", exc)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
