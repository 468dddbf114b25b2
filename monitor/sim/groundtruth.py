"""`--ground-truth FILE`: what really happened to every request, one JSON line each.

The monitor only ever sees histograms and counters; tests and benchmarks compare its estimates with
these rows. Floats are written with Python's shortest round-trip repr, so a reader recomputing
`first_token - arrival` gets exactly the value the simulator put in its histogram bucket.

Row fields: instance (host:port), model, request_id, arrival, scheduled, first_token, finish (unix
seconds; scheduled/first_token null when never reached), prompt_tokens, cached_prompt_tokens,
generation_tokens, max_tokens, preemptions, status: `stop` | `length` (finished), `abort` (client went
away), `error` (injected error: HTTP 500, counted as finished_reason="error"), `engine_dead` (failed
by the `dead` fault; vLLM's dead engine counts nothing).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, TextIO


class GroundTruth:
    """Line-buffered so a reader sees every finished request without waiting for shutdown."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO | None = open(self.path, "w", buffering=1, encoding="utf-8")  # noqa: SIM115 (closed by close())
        self._lock = threading.Lock()

    def write(self, row: dict[str, Any]) -> None:
        line = json.dumps(row, separators=(",", ":")) + "\n"
        with self._lock:
            if self._file is not None:
                self._file.write(line)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
