"""A real Alertmanager (Debian's `prometheus-alertmanager`) on a loopback port, for the alerting tests.

Own config and --storage.path under the test's tmp_path, clustering off (--cluster.listen-address=),
so tests can run side by side and never talk to anything else. Tests that use it call
tests.helpers.ci.require() first: with CI=true a missing binary fails them instead of skipping.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import httpx

from tests.helpers.ci import require
from tests.helpers.ports import free_port
from tests.helpers.procs import LoggedServer, start_ready

BINARY = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")

# What README.md recommends: a page (burnrate_tier="fast") inhibits the ticket of the same SLO,
# pool and model. Everything goes to a receiver with no integrations: the tests read the API.
CONFIG = """
route:
  receiver: "null"
  group_by: [alertname, slo, pool]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: "null"
inhibit_rules:
  - source_matchers: ['burnrate_tier="fast"']
    target_matchers: ['burnrate_tier="slow"']
    equal: [slo, pool, model_name]
"""


def alertmanager_config(group_wait: str = "1s") -> str:
    """The configuration README.md recommends; the benchmarks time pages with `group_wait: 0s`."""
    return CONFIG.replace("group_wait: 1s", f"group_wait: {group_wait}")


def require_alertmanager() -> str:
    require(BINARY is not None, "prometheus-alertmanager is not installed (apt-get install prometheus-alertmanager)")
    assert BINARY is not None
    return BINARY


class Alertmanager(LoggedServer):
    """Start with `with Alertmanager(tmp_path) as am:`; `am.url`, `am.alerts()`."""

    name = "alertmanager"

    def __init__(self, workdir: Path, port: int | None = None, config: str = CONFIG) -> None:
        self.binary = require_alertmanager()
        self.workdir = workdir / f"alertmanager-{port or 'any'}-{time.monotonic_ns()}"
        self.workdir.mkdir(parents=True)
        (self.workdir / "alertmanager.yml").write_text(config)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.workdir / "alertmanager.log"

    def start(self, timeout_s: float = 15.0) -> Alertmanager:
        self.proc, self.log = start_ready(
            [self.binary, f"--config.file={self.workdir / 'alertmanager.yml'}",
             f"--storage.path={self.workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
             "--cluster.listen-address=", "--log.level=warn"],
            self.log_path, f"{self.url}/-/ready", "alertmanager", timeout_s)
        return self

    def __enter__(self) -> Alertmanager:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def alerts(self, **labels: str) -> list[dict[str, Any]]:
        """Alerts Alertmanager holds now (resolved ones are not listed), filtered by exact labels."""
        params = [("filter", f'{k}="{v}"') for k, v in labels.items()]
        response = httpx.get(f"{self.url}/api/v2/alerts", params=params, timeout=5)
        response.raise_for_status()
        return response.json()
