"""`slo-monitor`: the command line (interfaces.md). Exit codes: 0 success, 2 bad input, 1 anything else."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from monitor import config as config_mod

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT = 0, 1, 2


class BadInput(Exception):
    """Raised by a command for bad arguments or config; printed and mapped to exit code 2."""


def _load_config(path: str | None) -> config_mod.Loaded:
    try:
        return config_mod.load(path) if path else config_mod.load_default()
    except config_mod.ConfigError as exc:
        raise BadInput("\n".join(exc.problems)) from None


def cmd_check(args: argparse.Namespace) -> int:
    loaded = _load_config(args.config)
    for warning in loaded.warnings:
        print(f"warning: {warning}")
    cfg = loaded.config
    targets = sum(len(p.targets) for p in cfg.pools)
    print(f"ok: {len(cfg.pools)} pools, {targets} targets, {len(cfg.slos)} SLOs")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from monitor.server import GracefulServer
    from monitor.service import create_app
    from sqlalchemy.exc import SQLAlchemyError

    from monitor.store.db import Store, upgrade

    loaded = _load_config(args.config)
    cfg = loaded.config
    if args.listen:
        try:
            listen = config_mod.parse_listen(args.listen)
        except ValueError as exc:
            raise BadInput(f"--listen: {exc}") from None
        cfg = cfg.model_copy(update={"api": cfg.api.model_copy(update={"listen": listen})})
    for warning in loaded.warnings:
        logging.getLogger("monitor").warning("config: %s", warning)
    host, _, port = cfg.api.listen.rpartition(":")
    store = Store.open(cfg.storage.url)
    try:
        # migrate before listening: a database that is unreachable at start is one clear line and
        # exit 1, not a traceback from inside the ASGI lifespan
        upgrade(store.engine)
    except SQLAlchemyError as exc:
        print(f"error: database {_safe_url(cfg.storage.url)}: {str(exc.orig or exc).splitlines()[0]}",
              file=sys.stderr)
        store.close()
        return EXIT_ERROR
    app = create_app(cfg, store=store, migrate=False)
    server = GracefulServer(uvicorn.Config(app, host=host.strip("[]") or "127.0.0.1", port=int(port),
                                           log_level=args.log_level.lower(), access_log=False))
    server.run()
    return EXIT_OK if server.started else EXIT_ERROR


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from monitor.store.db import upgrade

    cfg = _load_config(args.config).config
    upgrade(cfg.storage.url)
    print(f"database at {_safe_url(cfg.storage.url)} is at the latest schema")
    return EXIT_OK


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slo-monitor", description="SLOs and health decisions for vLLM fleets")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the service")
    serve.add_argument("--config", help="YAML config (default: embedded, one pool at http://127.0.0.1:8000)")
    serve.add_argument("--listen", help="HOST:PORT, overrides api.listen")
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check", help="validate a config; exit 2 naming every problem")
    check.add_argument("--config", required=True)
    check.set_defaults(func=cmd_check)

    db = sub.add_parser("db", help="database commands")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    db_upgrade = db_sub.add_parser("upgrade", help="apply migrations to the configured database")
    db_upgrade.add_argument("--config")
    db_upgrade.set_defaults(func=cmd_db_upgrade)

    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


# Commands that live beside their step of the flow; each module has `register(subparsers)`.
COMMAND_MODULES = (
    "monitor.demo.cli",  # demo
    "monitor.sim.cli",  # simulate
    "monitor.loadgen.cli",  # load
    "monitor.generate.cli",  # generate
    "monitor.gpu.exporter",  # exporter
)


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
    except Exception as exc:  # noqa: BLE001 - the last line of defence; named, not a traceback wall
        logging.getLogger("monitor").exception("failed: %s", exc)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
