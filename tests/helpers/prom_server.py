"""A real Prometheus (Debian's `prometheus`) on a loopback port, for the `prometheus` source tests.

Own config and --storage.tsdb.path under the test's tmp_path, 1 s scrape interval by default
(400 ms timeout). Prometheus 2.x applies discovered targets in batches every 5 s, so the first
samples exist about 5-6 s after start; `wait_for_targets` waits for them. Tests call
tests.helpers.ci.require() (through require_prometheus): with CI=true a missing binary fails them
instead of skipping.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Sequence

import httpx

from tests.helpers.ci import require
from tests.helpers.ports import free_port
from tests.helpers.procs import LoggedServer, start_ready

BINARY = shutil.which("prometheus")


def require_prometheus() -> str:
    require(BINARY is not None, "prometheus is not installed (apt-get install prometheus)")
    assert BINARY is not None
    return BINARY


class Prometheus(LoggedServer):
    """`with Prometheus(tmp_path, targets) as prom:`; `prom.url`, `prom.query(q)`.

    `config` replaces the generated one-job configuration with a whole prometheus.yml (rule files,
    alerting) for the benchmarks; `port` pins the port.
    """

    name = "prometheus"

    def __init__(self, workdir: Path, targets: Sequence[str] = (), *, job: str = "vllm", interval: str = "1s",
                 config: str | None = None, port: int | None = None) -> None:
        self.binary = require_prometheus()
        self.workdir = workdir / f"prometheus-{time.monotonic_ns()}"
        self.workdir.mkdir(parents=True)
        self.targets = [t.split("://", 1)[-1].rstrip("/") for t in targets]
        listed = ", ".join(f'"{t}"' for t in self.targets)
        (self.workdir / "prometheus.yml").write_text(config if config is not None else f"""
global: {{scrape_interval: {interval}, scrape_timeout: 400ms, evaluation_interval: {interval}}}
scrape_configs:
  - job_name: {job}
    static_configs: [{{targets: [{listed}]}}]
""")
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.workdir / "prometheus.log"

    def start(self, timeout_s: float = 15.0) -> Prometheus:
        self.proc, self.log = start_ready(
            [self.binary, f"--config.file={self.workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
             "--storage.tsdb.retention.time=1h", "--log.level=warn"],
            self.log_path, f"{self.url}/-/ready", "prometheus", timeout_s)
        return self

    def wait_for_targets(self, timeout_s: float = 20.0) -> None:
        """Until every target has been scraped once (up is 1 or 0 for each)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(self.query("up")) >= len(self.targets):
                return
            time.sleep(0.2)
        raise AssertionError(f"prometheus did not scrape {self.targets} within {timeout_s}s")

    def query(self, promql: str) -> list[dict[str, Any]]:
        response = httpx.post(f"{self.url}/api/v1/query", data={"query": promql}, timeout=5)
        response.raise_for_status()
        return response.json()["data"]["result"]

    def __enter__(self) -> Prometheus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
