"""How the demo's load follows the service's verdicts: the upstream file the service writes, read
either by a real NGINX or by the load generator itself.

The demo configures the service's NGINX output (`nginx.upstream_file`) in its temporary folder, so
the file it routes by is the one a production NGINX would include. When an `nginx` binary is
installed, the demo runs it under a private prefix on a loopback port (nothing of the machine's own
NGINX is touched) and the service validates and reloads it as it would in production; the load goes
through it. Without NGINX, `UpstreamWeights` reads the same file and picks a server for each request
by NGINX's own smooth weighted round-robin, so the share each instance gets is the one NGINX would
give it: `down` servers none, a degraded one its lower weight.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_SERVER = re.compile(r"^\s*server\s+([^\s;]+)([^;]*);")
_WEIGHT = re.compile(r"\bweight=(\d+)\b")


@dataclass(frozen=True, slots=True)
class UpstreamEntry:
    address: str  # host:port
    weight: int
    down: bool


def parse_upstream(text: str, pool: str) -> list[UpstreamEntry]:
    """The `server` lines of `upstream <pool> { ... }` in an upstream file the service wrote."""
    entries: list[UpstreamEntry] = []
    inside = False
    for line in text.splitlines():
        stripped = line.strip()
        if not inside:
            inside = stripped.startswith(f"upstream {pool} ") or stripped == f"upstream {pool}{{"
            continue
        if stripped.startswith("}"):
            break
        match = _SERVER.match(line)
        if match is None:
            continue
        options = match.group(2)
        weight = _WEIGHT.search(options)
        entries.append(UpstreamEntry(match.group(1), int(weight.group(1)) if weight else 1,
                                     "down" in options.split()))
    return entries


class SmoothWeighted:
    """NGINX's smooth weighted round-robin (ngx_http_upstream_get_peer): each pick adds every
    server's weight to its current value, takes the largest, and subtracts the total from it. Over
    any run of picks each server gets its share, spread out rather than in bursts."""

    def __init__(self) -> None:
        self.weights: dict[str, int] = {}
        self.current: dict[str, int] = {}

    def set(self, weights: dict[str, int]) -> None:
        self.weights = {a: w for a, w in weights.items() if w > 0}
        self.current = {a: self.current.get(a, 0) for a in self.weights}

    def pick(self) -> str | None:
        if not self.weights:
            return None
        total = 0
        best: str | None = None
        for address, weight in self.weights.items():
            self.current[address] += weight
            total += weight
            if best is None or self.current[address] > self.current[best]:
                best = address
        assert best is not None
        self.current[best] -= total
        return best


class UpstreamWeights:
    """Routes each request as NGINX would by the service's upstream file, re-read whenever it is
    replaced (the service writes it atomically, so a new inode or mtime means new content)."""

    def __init__(self, path: Path, pool: str, fallback: list[str]) -> None:
        self.path = path
        self.pool = pool
        self.fallback = [u.rstrip("/") for u in fallback]
        self.rr = SmoothWeighted()
        self.rr.set({u.split("://", 1)[1]: 1 for u in self.fallback})
        self._stamp: tuple[int, int, int] | None = None
        self.entries: list[UpstreamEntry] = []

    def refresh(self) -> None:
        try:
            st = self.path.stat()
        except OSError:
            return
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            entries = parse_upstream(self.path.read_text(), self.pool)
        except OSError:
            return
        self._stamp = stamp
        if not entries:
            return
        self.entries = entries
        serving = {e.address: e.weight for e in entries if not e.down}
        # the service never marks every server down (it fails open); should a file do so, NGINX answers 502
        # and this keeps the last choice rather than sending nowhere
        if serving:
            self.rr.set(serving)

    def __call__(self, sent: int) -> str:
        self.refresh()
        address = self.rr.pick()
        return f"http://{address}" if address else self.fallback[sent % len(self.fallback)]
