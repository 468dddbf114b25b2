"""`slo-monitor db upgrade [--config FILE]`: apply the migrations to the configured database."""

from __future__ import annotations

import argparse

from monitor.cli.exits import EXIT_OK
from monitor.config import load_config


def register(subparsers: argparse._SubParsersAction) -> None:
    db = subparsers.add_parser("db", help="database commands")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    upgrade = db_sub.add_parser("upgrade", help="apply migrations to the configured database")
    upgrade.add_argument("--config", help="YAML config (default: embedded, SQLite ./slo-monitor.db)")
    upgrade.set_defaults(func=cmd_db_upgrade)


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    # the store loads SQLAlchemy and Alembic: only for the commands that use it
    from monitor.store import upgrade

    cfg = load_config(args.config).config
    upgrade(cfg.storage.url)
    print(f"database at {safe_url(cfg.storage.url)} is at the latest schema")
    return EXIT_OK


def safe_url(url: str) -> str:
    """The database URL with its password masked, for messages."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
