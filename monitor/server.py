"""Running the ASGI app under uvicorn."""

from __future__ import annotations

import contextlib
import signal
from typing import Iterator

import uvicorn


class GracefulServer(uvicorn.Server):
    """uvicorn's server, exiting 0 after a graceful SIGTERM/SIGINT shutdown.

    uvicorn re-raises the signal once it has shut down, which makes a clean stop look like a crash
    (exit -15) to systemd, Kubernetes and scripts. Here in-flight requests finish, the lifespan stops
    the scheduler and flushes pending rows, and the process exits 0.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
