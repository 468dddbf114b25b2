"""NGINX output: render each pool's `upstream` block and swap it into a running NGINX safely.

Open-source NGINX has no API to change upstreams and never treats slowness as failure, so the way to
act is the documented one: regenerate an included file, `nginx -t`, `nginx -s reload`. The writer
makes each step safe on its own:

* the file is replaced atomically (temp file in the same directory + rename), so NGINX never reads
  half a file;
* the check command runs before the reload; if it fails the previous file is put back, so the next
  unrelated reload (an operator's, a certificate renewal's) does not pick up a broken file;
* nothing is rewritten or reloaded while the rendered content is unchanged, because each reload
  starts new workers and old ones linger until their long-running streams finish
  (`worker_shutdown_timeout`);
* every failure is returned as a `WriteResult`, never raised into the service loop.

Rendering fails open: ejected servers are marked `down`, but never all of them (NGINX answers 502
for an upstream with every server down, which is worse than serving through a slow instance).
"""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Mapping, Protocol, Sequence

from monitor.decide.verdicts import DEGRADED, EJECTED, NO_TRAFFIC, NOT_JUDGED, STARTING
from monitor.units import is_server_address

# the placeholder of a pool with no members: an upstream block must name a server, and this one never answers
NO_MEMBERS = "127.0.0.1:1"
HEADER = "# Written by llm-slo-monitor; do not edit: it is replaced whenever instance health changes.\n"


class ServerState(Protocol):
    """What rendering needs of a server; `monitor.decide.health.InstanceVerdict` is one."""

    @property
    def instance(self) -> str: ...  # host:port

    @property
    def state(self) -> str: ...

    @property
    def weight(self) -> float: ...  # share of a healthy server's weight, 0..1


@dataclass(frozen=True, slots=True)
class UpstreamServer:
    """A plain `ServerState`, for callers (and tests) that have no verdicts at hand."""

    instance: str
    state: str
    weight: float = 1.0


def _weights(servers: Sequence[ServerState]) -> dict[str, int] | None:
    """Integer NGINX weights keeping the ratio of the verdicts' weights; None when all are equal.

    With every serving server at full weight no `weight=` is written at all, so the file stays as
    an operator would write it by hand, and it changes (and NGINX reloads) only when a weight
    actually matters (a degraded server, or one warming up under `slow_start`).
    """
    serving = [s for s in servers if s.state not in NO_TRAFFIC]
    if all(s.weight >= 1.0 for s in serving):
        return None
    shares = {s.instance: Fraction(min(max(s.weight, 0.05), 1.0)).limit_denominator(20) for s in serving}
    common = math.lcm(*(share.denominator for share in shares.values()))
    return {i: max(1, int(share * common)) for i, share in shares.items()}


def render_upstream(pool: str, servers: Iterable[ServerState], directives: Sequence[str] = ()) -> str:
    """`upstream <pool> { server host:port [weight=N] [down]; ... }` for one pool.

    Ejected → `down`; degraded → a lower `weight`; healthy and unknown → plain (unknown fails open:
    a server not yet seen may still be loading its model, and NGINX's own passive checks skip a
    server that refuses connections). If every judged server would be down, no ejected one is:
    failing open. Lifecycle states never fail open, as those servers cannot serve at all: a
    `starting` server is left out of the block until it is first seen healthy, `leaving` and
    `sleeping` ones are `down` (drained). A block needs at least one server, so a pool of nothing
    but starting servers lists them `down`.
    `directives` (e.g. `keepalive 32`, `least_conn`) are written first, verbatim.

    A server whose name is not `host:port` in the target grammar (`monitor.units.is_server_address`)
    is left out, and only counted in a comment: discovery refuses such names already, and this
    is the last check before a token reaches a file NGINX loads, where `a;}server{...` would be
    configuration.
    """
    given = list(servers)
    servers = sorted((s for s in given if is_server_address(s.instance)), key=lambda s: s.instance)
    refused = len(given) - len(servers)
    note = f"    # {refused} server{'s' if refused != 1 else ''} left out: not host:port" if refused else ""
    if not servers:  # a pool discovery finds empty (or scaled to zero): NGINX needs the block all the same
        lines = [f"upstream {pool} {{", *(f"    {d.rstrip(';').strip()};" for d in directives),
                 *([note] if note else []),
                 f"    server {NO_MEMBERS} down;  # no members: nothing to route to", "}"]
        return "\n".join(lines) + "\n"
    listed = [s for s in servers if s.state != STARTING] or servers
    judged = [s for s in listed if s.state not in NOT_JUDGED]
    all_down = bool(judged) and all(s.state == EJECTED for s in judged)
    weights = _weights(listed)
    lines = [f"upstream {pool} {{"]
    lines.extend(f"    {d.rstrip(';').strip()};" for d in directives)
    if note:
        lines.append(note)
    if all_down:
        lines.append("    # every server is ejected: failing open, none is marked down")
    for s in listed:
        parts = [f"server {s.instance}"]
        if s.state in NOT_JUDGED or (s.state == EJECTED and not all_down):
            parts.append("down")
        elif weights is not None:
            parts.append(f"weight={weights[s.instance]}")
        comment = f"  # {s.state}" if s.state in NO_TRAFFIC or s.state == DEGRADED else ""
        lines.append(f"    {' '.join(parts)};{comment}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_file(pools: Mapping[str, Iterable[ServerState]], directives: Mapping[str, Sequence[str]] | None = None) -> str:
    """The whole upstream file: one block per pool, in pool order as given."""
    blocks = [render_upstream(pool, servers, (directives or {}).get(pool, ())) for pool, servers in pools.items()]
    return HEADER + "\n".join(blocks)


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one `UpstreamWriter.apply` did. `ok` False means `error` says what went wrong."""

    ok: bool
    changed: bool  # the content differed from the last applied one and a write was attempted
    written: bool = False  # the new content is in place on disk
    checked: bool = False  # the check command ran and passed
    reloaded: bool = False  # the reload command ran and passed
    restored: bool = False  # the check failed and the previous file was put back
    skipped: str | None = None  # why nothing was attempted (unchanged, or a recent identical failure)
    error: str | None = None
    duration_s: float = 0.0


class UpstreamWriter:
    """Writes the upstream file, validates, reloads; keeps the last good file.

    State kept between calls: the last applied content (to skip unchanged renders) and the last
    failed one with its time (so a render NGINX rejects is retried every `retry_after_s`, not
    every scrape cycle).
    """

    def __init__(self, path: str | os.PathLike[str], check: str | None = None, reload: str | None = None, *,
                 timeout_s: float = 30.0, retry_after_s: float = 60.0) -> None:
        self.path = Path(path)
        self.check = check
        self.reload = reload
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self.last_applied: str | None = None
        self.last_failed: tuple[str, float] | None = None
        self.last_result: WriteResult | None = None
        self._lock = threading.Lock()  # apply() runs in worker threads; one write at a time

    async def apply(self, content: str) -> WriteResult:
        """`apply_sync` in a worker thread, so `nginx -t` never stalls the event loop."""
        return await asyncio.to_thread(self.apply_sync, content)

    def apply_sync(self, content: str) -> WriteResult:
        started = time.monotonic()
        try:
            with self._lock:
                result = self._apply(content)
        except Exception as exc:  # noqa: BLE001 - the loop must never die for an output
            result = WriteResult(False, True, error=f"{type(exc).__name__}: {exc}")
        result = _with_duration(result, time.monotonic() - started)
        self.last_result = result
        return result

    def _apply(self, content: str) -> WriteResult:
        if content == self.last_applied:
            return WriteResult(True, False, skipped="unchanged")
        if self.last_failed is not None:
            failed, at = self.last_failed
            if failed == content and time.monotonic() - at < self.retry_after_s:
                return WriteResult(False, False, skipped="same content failed recently",
                                   error="not retried yet: the same content failed less than "
                                         f"{self.retry_after_s:g}s ago")
        previous = self.path.read_bytes() if self.path.exists() else None
        mode = self.path.stat().st_mode & 0o7777 if self.path.exists() else 0o644
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.path, content.encode(), mode)
        checked = False
        if self.check:
            ok, output = self._run(self.check)
            if not ok:
                self._restore(previous, mode)
                self.last_failed = (content, time.monotonic())
                return WriteResult(False, True, written=False, restored=True,
                                   error=f"check failed, previous file restored: {output}")
            checked = True
        if self.reload:
            ok, output = self._run(self.reload)
            if not ok:
                self.last_failed = (content, time.monotonic())
                return WriteResult(False, True, written=True, checked=checked,
                                   error=f"reload failed (file is in place and valid): {output}")
        self.last_applied = content
        self.last_failed = None
        return WriteResult(True, True, written=True, checked=checked, reloaded=bool(self.reload))

    def _restore(self, previous: bytes | None, mode: int) -> None:
        if previous is None:
            self.path.unlink(missing_ok=True)
        else:
            _atomic_write(self.path, previous, mode)

    def _run(self, command: str) -> tuple[bool, str]:
        """Run an operator's command through the shell (as cron or consul-template would)."""
        try:
            done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=self.timeout_s,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return False, f"`{command}` timed out after {self.timeout_s:g}s"
        except OSError as exc:
            return False, f"`{command}` could not run: {exc}"
        if done.returncode == 0:
            return True, ""
        output = " | ".join(line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip())
        return False, f"`{command}` exited {done.returncode}: {output[-1000:]}"


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _with_duration(result: WriteResult, duration: float) -> WriteResult:
    return replace(result, duration_s=duration)
