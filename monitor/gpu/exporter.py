"""`slo-monitor exporter --listen HOST:PORT`: the per-GPU-node agent, a stand-in for dcgm-exporter.

NVML sees only the GPUs of its own host, so GPU telemetry needs an agent on every node. It is kept
light on purpose: one process, the standard library's threading HTTP server, no database and no
event loop. A scrape reads NVML directly (a few milliseconds per GPU), with results reused for
`min_interval_s` so that several scrapers at once cost one read.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from monitor.errors import BadInput
from monitor.gpu.nvml import XID_WINDOW_S, NvmlReader
from monitor.gpu.readings import LABEL_HOSTNAME, LABEL_HOSTNAME_TAGGED
from monitor.gpu.render import CONTENT_TYPE, render_page
from monitor.units import parse_duration, parse_listen

log = logging.getLogger("monitor.gpu")

DEFAULT_LISTEN = "0.0.0.0:9400"  # dcgm-exporter's port, so Prometheus jobs written for it work unchanged


class GpuPageSource:
    """The current page, read at most once per `min_interval_s` whatever the number of scrapers."""

    def __init__(self, reader: NvmlReader, *, min_interval_s: float = 1.0,
                 hostname_label: str = LABEL_HOSTNAME) -> None:
        self.reader = reader
        self.min_interval_s = min_interval_s
        self.hostname_label = hostname_label
        self._page: str | None = None
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    def page(self) -> str:
        with self._lock:
            now = time.monotonic()
            if self._page is None or now - self._read_at >= self.min_interval_s:
                readings = self.reader.read()
                self._page = render_page(readings, nvml_up=self.reader.available, hostname_label=self.hostname_label)
                self._read_at = now
            return self._page


class _Handler(BaseHTTPRequestHandler):
    server: ExporterServer

    def do_GET(self) -> None:  # http.server's naming
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            try:
                body, status, ctype = self.server.source.page().encode(), 200, CONTENT_TYPE
            except Exception as exc:  # a reader bug must answer 500, not kill the thread
                log.exception("rendering the GPU page failed")
                body, status, ctype = f"error: {exc}\n".encode(), 500, "text/plain; charset=utf-8"
        elif path in ("/health", "/healthz"):
            body, status, ctype = b"ok\n", 200, "text/plain; charset=utf-8"
        else:
            body, status, ctype = b"not found: try /metrics\n", 404, "text/plain; charset=utf-8"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # a line per scrape is noise
        log.debug("%s " + format, self.address_string(), *args)  # noqa: G003 (http.server's own %-format, filled lazily)


class ExporterServer(ThreadingHTTPServer):
    """The HTTP side. `serve_in_thread()` for tests and embedding; `serve_forever()` for the command."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int, source: GpuPageSource) -> None:
        self.source = source
        if ":" in host:  # an IPv6 literal
            self.address_family = socket.AF_INET6
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        if isinstance(host, bytes):  # socketserver's hint allows bytes (AF_UNIX); an HTTP server has text
            host = host.decode()
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, args=(0.1,), name="gpu-exporter", daemon=True)
        thread.start()
        return thread


def node_hostname() -> str:
    """dcgm-exporter's rule: `$NODE_NAME` when set (Kubernetes), else the OS hostname."""
    return os.environ.get("NODE_NAME") or socket.gethostname()


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "exporter", help="serve this node's GPUs on /metrics under dcgm-exporter's names",
        description="Reads every local GPU through NVML (nvidia-ml-py) and serves it on /metrics under "
                    "dcgm-exporter's metric names and labels. Without an NVIDIA driver it logs why and "
                    "serves an empty page.")
    p.add_argument("--listen", default=DEFAULT_LISTEN, help=f"HOST:PORT to serve on (default {DEFAULT_LISTEN})")
    p.add_argument("--hostname", help="value of the hostname label (default: $NODE_NAME, else the OS hostname)")
    p.add_argument("--hostname-label", choices=[LABEL_HOSTNAME, LABEL_HOSTNAME_TAGGED], default=LABEL_HOSTNAME,
                   help="spelling of the node label: hostname (dcgm-exporter since PR #655, default) or Hostname "
                        "(its tagged releases up to 4.8.2), for dashboards that match the old one")
    p.add_argument("--xid-window", default="5m",
                   help="window of DCGM_EXP_XID_ERRORS_COUNT, e.g. 5m (default, as dcgm-exporter)")
    p.set_defaults(func=cmd_exporter)


def cmd_exporter(args: argparse.Namespace) -> int:
    try:
        listen = parse_listen(args.listen)
    except ValueError as exc:
        raise BadInput(f"--listen: {exc}") from None
    try:
        xid_window = parse_duration(args.xid_window)
    except ValueError as exc:
        raise BadInput(f"--xid-window: {exc}") from None
    host, _, port = listen.rpartition(":")
    reader = NvmlReader(args.hostname or node_hostname(), xid_window_s=xid_window or XID_WINDOW_S)
    reader.start()
    try:
        server = ExporterServer(host.strip("[]") or "0.0.0.0", int(port),
                                GpuPageSource(reader, hostname_label=args.hostname_label))
    except OSError as exc:
        reader.close()
        raise BadInput(f"--listen: cannot bind {listen}: {exc.strerror or exc}") from None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    thread = server.serve_in_thread()
    log.info("GPU exporter serving %s/metrics", server.url)
    print(f"serving {server.url}/metrics", flush=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.shutdown()  # from this thread: shutdown() waits for serve_forever in the other one
        thread.join(timeout=5)
        server.server_close()
        reader.close()
    return 0
