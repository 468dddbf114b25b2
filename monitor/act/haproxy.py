"""HAProxy agent-check listener: tells HAProxy, per server, `up`, `drain` or `down` and a weight share.

HAProxy connects to `agent-addr:agent-port` every `agent-inter`, sends its `agent-send` string and
reads one line back. Unlike a reload-based output this changes weights and states live, and since
only the agent can undo what the agent set, every answer states the whole wish (`up ready 100%`),
never a partial one. Configure each server as:

    server s1 10.0.0.11:8000 check agent-check agent-addr <monitor> agent-port <port>
        agent-inter 2s agent-send "<pool>/10.0.0.11:8000\\n"

(`agent-send "10.0.0.11:8000\\n"` works too: instances are unique across pools.) Answers:

* healthy or unknown → `up ready 100%` (unknown fails open, as everywhere in this product);
* degraded → `up ready N%`, N the pool's `degraded_weight`;
* ejected because it cannot serve (unreachable, /health failing, hung) → `down #reason`;
* ejected while still answering (slow, erroring, outlier) → `up drain`: no new sessions, while
  streams in flight finish, which matters for completions that run for minutes;
* a name the monitor does not know → a `#comment` only, which HAProxy ignores: changing the state
  of a server the monitor knows nothing about would be guessing;
* a verdict older than the pool's `stale_after` (the monitor stopped deciding) → `up ready 100%`
  with the reason as a comment, whatever it said before: failing open, as the check URL and the
  NGINX file do (starting, leaving and sleeping servers keep their answer: they cannot serve).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from monitor.decide.verdicts import DEGRADED, EJECTED, HARD_KINDS, LEAVING, SLEEPING, STARTING, InstanceVerdict

log = logging.getLogger(__name__)

MAX_REQUEST = 512


def agent_reply(verdict: InstanceVerdict | None, name: str = "") -> str:
    """The one line (with its newline) HAProxy gets for one server."""
    if verdict is None:
        return f"#unknown server {_clean(name)!r}: agent-send must be \"<pool>/<host:port>\\n\"\n"
    if verdict.fail_open is not None and verdict.serves_traffic:  # stale: fail open, say why
        return f"up ready 100% #{_clean(verdict.fail_open)}\n"
    if verdict.state == STARTING:  # not listening yet (a loading model): nothing to drain
        return f"down #{_clean('; '.join(verdict.reasons))}\n"
    if verdict.state in (LEAVING, SLEEPING):  # let what is in flight finish, send nothing new
        return f"up drain #{_clean('; '.join(verdict.reasons))}\n"
    if verdict.state == EJECTED:
        if verdict.kind in HARD_KINDS:
            return f"down #{_clean('; '.join(verdict.reasons))}\n"
        return "up drain\n"
    if verdict.state == DEGRADED or verdict.weight < 1.0:  # degraded, or warming up (slow_start)
        return f"up ready {max(1, min(100, round(verdict.weight * 100)))}%\n"
    return "up ready 100%\n"


def _clean(text: str, limit: int = 200) -> str:
    """Text safe inside an agent answer's `#comment`: one line of printable ASCII (anything else,
    a control character or a byte HAProxy might read as the end of the answer, becomes `?`)."""
    return "".join(c if " " <= c <= "~" else "?" for c in " ".join(text.split()))[:limit]


class AgentCheckServer:
    """An asyncio TCP listener answering HAProxy agent checks from a verdict lookup.

    lookup(name) takes the `agent-send` text (stripped) and returns the verdict, or None when the
    name is unknown; `FleetDecisions.find` is that function. Start it inside the service's event loop.
    """

    def __init__(self, lookup: Callable[[str], InstanceVerdict | None], host: str = "127.0.0.1", port: int = 0,
                 *, read_timeout_s: float = 1.0) -> None:
        self.lookup = lookup
        self.host = host
        self.port = port
        self.read_timeout_s = read_timeout_s
        self.answered = 0
        self._server: asyncio.AbstractServer | None = None
        self._warned: set[str] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("HAProxy agent-check listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _read_name(self, reader: asyncio.StreamReader) -> str:
        """Read up to a newline, EOF, MAX_REQUEST bytes or the timeout (agent-send may lack a newline)."""
        buffer = b""
        deadline = time.monotonic() + self.read_timeout_s
        while b"\n" not in buffer and len(buffer) < MAX_REQUEST:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                chunk = await asyncio.wait_for(reader.read(MAX_REQUEST - len(buffer)), remaining)
            except TimeoutError:
                break
            if not chunk:
                break
            buffer += chunk
        return buffer.split(b"\n", 1)[0].decode("utf-8", "replace").strip()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            name = await self._read_name(reader)
            try:
                verdict = self.lookup(name) if name else None
            except Exception:  # a lookup bug must not take the listener down
                log.exception("agent-check lookup failed for %r", name)
                verdict = None
            if verdict is None and name not in self._warned and len(self._warned) < 1000:
                self._warned.add(name)
                log.warning("HAProxy agent-check asked about unknown server %r", name)
            writer.write(agent_reply(verdict, name).encode())
            await writer.drain()
            self.answered += 1
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass
