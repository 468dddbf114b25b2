"""Running the ASGI app under uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

from monitor.publish.checks import check_answer
from monitor.publish.frontdoor import FrontDoor

logger = logging.getLogger("uvicorn.error")


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


class FrontDoorServer(GracefulServer):
    """GracefulServer whose listening socket is owned by the service's check thread
    (monitor/publish/frontdoor.py): health checks are answered there from the last published verdicts,
    every other connection is handed to uvicorn on this loop, as if uvicorn had accepted it."""

    def __init__(self, config: uvicorn.Config, sock: socket.socket, service: Any) -> None:
        super().__init__(config)
        self.sock = sock
        self.service = service
        self.door: FrontDoor | None = None
        self._adopting: set[asyncio.Task[None]] = set()  # hand-overs in flight, referenced until done

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=[])  # no listener of uvicorn's own: the door hands connections over
        if self.service.check_loop is None:  # the lifespan did not start the service: nothing to serve
            raise RuntimeError("the service's check loop did not start")
        loop = asyncio.get_running_loop()
        config = self.config

        def adopt(conn: socket.socket, buffered: bytes) -> None:  # on this loop
            def factory() -> asyncio.Protocol:
                protocol = config.http_protocol_class(config=config, server_state=self.server_state,  # type: ignore[call-arg]
                                                      app_state=self.lifespan.state)
                made = protocol.connection_made

                def connection_made(transport: Any) -> None:
                    made(transport)
                    if buffered:
                        protocol.data_received(buffered)
                protocol.connection_made = connection_made  # type: ignore[method-assign]
                return protocol

            async def connect() -> None:
                try:
                    await loop.connect_accepted_socket(factory, conn)
                except OSError:
                    conn.close()
            task = loop.create_task(connect())
            self._adopting.add(task)
            task.add_done_callback(self._adopting.discard)

        def handoff(conn: socket.socket, buffered: bytes) -> None:  # on the check thread
            loop.call_soon_threadsafe(adopt, conn, buffered)

        service = self.service
        self.door = FrontDoor(self.sock, lambda pool, instance: check_answer(service.checks, pool, instance,
                                                                             time.time()), handoff)
        service.check_loop.start_soon(self.door.serve())
        logger.info("Uvicorn running on http://%s:%d (health checks on their own thread)",
                    *self.sock.getsockname()[:2])

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.door is not None and self.service.check_loop is not None:
            await self.service.check_loop.submit(self.door.close())
        await super().shutdown(sockets=[])
