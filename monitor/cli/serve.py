"""`slo-monitor serve [--config FILE] [--listen HOST:PORT]`: the service, until SIGTERM or SIGINT.

Start-up order is the user's first impression: the config is checked, the listening port is bound
and the database migrated before any job starts, so each of those failing is one line and an exit
code, never a traceback after scraping has begun. SIGHUP does not stop the service (`on_sighup`).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import signal
import socket
import sys
from typing import Any

from monitor.cli.check import checked
from monitor.cli.db import safe_url
from monitor.cli.exits import EXIT_ERROR, EXIT_OK

log = logging.getLogger("monitor")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="run the service")
    p.add_argument("--config", help="YAML config (default: embedded, one pool at http://127.0.0.1:8000)")
    p.add_argument("--listen", help="HOST:PORT, overrides api.listen")
    p.set_defaults(func=cmd_serve)


def listen_socket(host: str, port: int) -> socket.socket:
    """A bound socket for the API; uvicorn listens on it. Raises OSError (port in use, no such
    address) before anything else has started."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        # as uvicorn does: a restart may bind while the old connections sit in TIME_WAIT (on Linux
        # this never lets two processes listen on one port)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def bind_error(listen: str, exc: OSError | UnicodeError) -> str:
    """The one line a failed bind prints."""
    if isinstance(exc, UnicodeError):
        return f"slo-monitor: cannot listen on {listen}: not a host name ({exc})"
    reason = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc)).lower()
    return f"slo-monitor: cannot listen on {listen}: {reason}"


def on_sighup(app: Any) -> None:
    """What SIGHUP does to a running service: re-read the config file (as Prometheus does).

    Runs on the event loop (scheduled from the signal handler). The app's `reloader` (built when
    the service knows its config file) validates the file whole and applies it or keeps the old
    one; without one the signal is logged and ignored, so a `kill -HUP` meant for a reload, or a
    closed terminal, never stops the service.
    """
    reloader = getattr(app.state, "reloader", None)
    if reloader is not None:
        log.info("SIGHUP: reloading the configuration")
        reloader.request()
    else:
        log.warning("SIGHUP: ignored; no config file to reload (serve started without --config, "
                    "or this version cannot reload)")


def install_sighup(app: Any) -> None:
    def handler(signum: int, frame: Any) -> None:
        try:
            loop = asyncio.get_running_loop()  # the handler runs in the main thread, inside the loop
        except RuntimeError:
            on_sighup(app)
            return
        loop.call_soon_threadsafe(on_sighup, app)

    signal.signal(signal.SIGHUP, handler)


def cmd_serve(args: argparse.Namespace) -> int:
    cfg, warnings = checked(args.config, args.listen)  # the path `check` takes: refused the same way, exit 2
    for warning in warnings:
        log.warning("config: %s", warning)
    host, _, port = cfg.api.listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        sock = listen_socket(host, int(port))
    except (OSError, UnicodeError) as exc:  # UnicodeError: a host name getaddrinfo cannot encode
        print(bind_error(cfg.api.listen, exc), file=sys.stderr)
        return EXIT_ERROR
    try:
        # loaded only when serving (`check` and the other commands should not pay for the whole
        # service), and after the bind, so that a busy port is named at once
        import uvicorn
        from sqlalchemy.exc import SQLAlchemyError

        from monitor.server import FrontDoorServer
        from monitor.service import create_app
        from monitor.store import Store, upgrade

        try:
            store = Store.open(cfg.storage.url, statement_timeout=cfg.storage.statement_timeout)
        except (SQLAlchemyError, ImportError, ValueError) as exc:  # `check` tries the URL too: a driver gone since
            print(f"error: database {safe_url(cfg.storage.url)}: {str(exc).splitlines()[0]}", file=sys.stderr)
            return EXIT_ERROR
        try:
            # migrate before serving: a database that is unreachable at start is one clear line and
            # exit 1, not a traceback from inside the ASGI lifespan
            upgrade(store.engine)
        except SQLAlchemyError as exc:
            print(f"error: database {safe_url(cfg.storage.url)}: {str(getattr(exc, 'orig', None) or exc).splitlines()[0]}",
                  file=sys.stderr)
            store.close()
            return EXIT_ERROR
        app = create_app(cfg, store=store, migrate=False, config_path=args.config)
        install_sighup(app)
        # the API socket is served by the front door: health checks on a thread of their own, the rest
        # by uvicorn (monitor/publish/frontdoor.py)
        server = FrontDoorServer(uvicorn.Config(app, host=host, port=int(port), log_level=args.log_level.lower(),
                                                access_log=False), sock, app.state.service)
        server.run()
        return EXIT_OK if server.started else EXIT_ERROR
    finally:
        sock.close()
