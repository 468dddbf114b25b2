"""A simulated vLLM fleet under load, watched by `slo-monitor serve`: the stack the engine end-to-end tests
(tests/test_engine_e2e.py) and the hang-detection benchmark (bench/hang_detection.py) both run.

Three real processes on loopback: `slo-monitor simulate` (N instances on consecutive ports), `slo-monitor
load` (Poisson arrivals round-robin over every instance, faulted ones included, so a dead engine's
queue grows as it would behind a load balancer that has not noticed yet) and `slo-monitor serve`
(scraping every instance, writing an NGINX upstream file). Faults go to an instance's `POST /sim/faults`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import httpx
import yaml

from tests.helpers.ports import free_range
from tests.helpers.waiting import wait_until


class EngineStack:
    """`start()`, then `instances` (host:port), `fault(i, {...})`, `api(path)`, `check(i)`; `stop()` always.

    config: the service's config without `pools` (added: one pool `llama` of every instance); the
    upstream file is `root/upstreams.conf`, the database `root/monitor.db`.
    """

    def __init__(self, root: Path, instances: int, config: dict[str, Any], *, rate: float = 6.0,
                 output_tokens: int = 20, prompt_tokens: int = 100, health: dict[str, Any] | None = None,
                 base_port: int = 25000) -> None:
        self.root = root
        self.n = instances
        self.config = config
        self.rate = rate
        self.output_tokens = output_tokens
        self.prompt_tokens = prompt_tokens
        self.health = health or {}
        self.base_port = base_port
        self.procs: list[tuple[str, subprocess.Popen, IO[str]]] = []
        self.instances: list[str] = []
        self.base = ""
        self.upstream_file = root / "upstreams.conf"

    # -- processes ----------------------------------------------------------------------------------

    def _spawn(self, name: str, *args: Any) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "w")  # noqa: SIM115 - closed in stop()
        proc = subprocess.Popen([sys.executable, "-m", "monitor", *map(str, args)], stdout=log,
                                stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.procs.append((name, proc, log))
        return proc

    def check_alive(self) -> None:
        for name, proc, _ in self.procs:
            if proc.poll() is not None:
                tail = (self.root / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def start(self) -> EngineStack:
        first = free_range(self.base_port, self.n + 1)
        ports = list(range(first, first + self.n))
        self.instances = [f"127.0.0.1:{p}" for p in ports]
        self._spawn("simulate", "simulate", "--instances", self.n, "--base-port", first, "--status-every", 0)
        self.wait(lambda: all(httpx.get(f"http://{i}/health", timeout=1).status_code == 200 for i in self.instances),
                  30, "the simulated instances")
        config = {**self.config, "storage": {"url": f"sqlite:///{self.root / 'monitor.db'}"},
                  "nginx": {"upstream_file": str(self.upstream_file)},
                  "pools": [{"name": "llama", "targets": [f"http://{i}" for i in self.instances],
                             "health": self.health}]}
        (self.root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        port = first + self.n
        self.base = f"http://127.0.0.1:{port}"
        self._spawn("serve", "serve", "--config", self.root / "config.yaml", "--listen", f"127.0.0.1:{port}")
        self.wait(lambda: httpx.get(self.base + "/healthz", timeout=1).status_code == 200, 30, "serve")
        self._spawn("load", "load", "--targets", *[f"http://{i}" for i in self.instances], "--rate", self.rate,
                    "--duration", 3600, "--output-tokens", self.output_tokens, "--prompt-tokens", self.prompt_tokens,
                    "--quiet", "--drain", 1)
        return self

    def stop(self) -> None:
        for _, proc, _ in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for _, proc, log in reversed(self.procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
        self.procs = []

    def __enter__(self) -> EngineStack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- asking ------------------------------------------------------------------------------------

    def wait(self, predicate, deadline_s: float, what: str):  # noqa: ANN001, ANN201 - wait_until's
        return wait_until(predicate, deadline_s, 0.1, what, (httpx.TransportError, KeyError, ValueError),
                          procs=[self])

    def check(self) -> None:
        """`wait_until`'s process check: any of the three that exited fails the wait at once."""
        self.check_alive()

    def fault(self, index: int, body: dict[str, Any]) -> dict[str, Any]:
        r = httpx.post(f"http://{self.instances[index]}/sim/faults", json=body, timeout=5)
        r.raise_for_status()
        return r.json()["faults"]

    def api(self, path: str, **params: Any) -> Any:
        r = httpx.get(self.base + path, params=params or None, timeout=5)
        r.raise_for_status()
        return r.json()

    def api_text(self, path: str) -> str:
        r = httpx.get(self.base + path, timeout=5)
        r.raise_for_status()
        return r.text

    def by_instance(self) -> dict[str, dict[str, Any]]:
        return {row["instance"]: row for row in self.api("/api/v1/instances")}

    def check_url(self, index: int) -> httpx.Response:
        return httpx.get(f"{self.base}/upstreams/llama/{self.instances[index]}", timeout=5)

    def page(self, index: int) -> str:
        return httpx.get(f"http://{self.instances[index]}/metrics", timeout=5).text

    def sim_health(self, index: int, timeout_s: float = 2.0) -> int | None:
        """The simulator's own /health status; None when it did not answer in time."""
        try:
            return httpx.get(f"http://{self.instances[index]}/health", timeout=timeout_s).status_code
        except httpx.TimeoutException:
            return None

    def elapsed_until(self, predicate, deadline_s: float, what: str) -> float:  # noqa: ANN001
        """Seconds until `predicate()` holds (polled every 0.1 s)."""
        start = time.monotonic()
        self.wait(predicate, deadline_s, what)
        return time.monotonic() - start
