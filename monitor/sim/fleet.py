"""Run N simulated instances in this process, each on its own loopback port.

Every instance is a real HTTP server (uvicorn) so the monitor, NGINX or a load generator talk to it
exactly as to vLLM; all of them share the one asyncio loop, which is what lets a laptop core stand in
for a fleet. Ports are bound here (port 0 picks a free one) so tests never race for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path
from typing import TYPE_CHECKING, AsyncIterator, Iterator, Sequence

import uvicorn

from monitor.sim.engine import Engine
from monitor.sim.groundtruth import GroundTruth
from monitor.sim.metrics import MetricsVersion, VllmMetrics
from monitor.sim.params import Faults, InstanceParams
from monitor.sim.server import SimInstance

if TYPE_CHECKING:
    from monitor.sim.tracing import SpanSender


class QuietServer(uvicorn.Server):
    """A uvicorn server that leaves SIGINT/SIGTERM to the command that runs it (many servers share
    one process, and the command decides how to shut all of them down)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def free_port(host: str = "127.0.0.1") -> int:
    with contextlib.closing(bind_socket(host, 0)) as sock:
        return sock.getsockname()[1]


def cache_config_info(params: InstanceParams) -> dict[str, str]:
    """The labels of `vllm:cache_config_info` (vLLM's CacheConfig fields as strings)."""
    return {
        "block_size": str(params.block_size), "cache_dtype": "auto", "cpu_offload_gb": "0",
        "enable_prefix_caching": str(params.prefix_caching), "gpu_memory_utilization": "0.9",
        "is_attention_free": "False", "num_cpu_blocks": "0", "num_gpu_blocks": str(params.num_gpu_blocks),
        "num_gpu_blocks_override": "None", "sliding_window": "None", "swap_space_bytes": str(4 * 2**30),
    }


def build_instance(params: InstanceParams, version: MetricsVersion = "v1",
                   ground_truth: GroundTruth | None = None) -> SimInstance:
    metrics = VllmMetrics(version, params.model, min(params.max_model_len, params.num_gpu_blocks * params.block_size),
                          cache_config_info(params))
    return SimInstance(Engine(params, metrics, ground_truth=ground_truth), metrics)


class SimFleet:
    """N instances on one host; `start()` binds and serves them, `stop()` ends every one of them."""

    def __init__(self, params: Sequence[InstanceParams], *, version: MetricsVersion = "v1",
                 host: str = "127.0.0.1", ground_truth: str | Path | None = None,
                 otlp_endpoint: str | None = None, otlp_service_name: str | None = None) -> None:
        """`otlp_endpoint`: send vLLM V1-shaped `llm_request` spans there (OTLP/HTTP, e.g.
        `http://monitor:9470/v1/traces`); `otlp_service_name` is their `service.name`."""
        self.host = host
        self.version = version
        self.ground_truth = GroundTruth(ground_truth) if ground_truth else None
        self.spans: SpanSender | None = None
        if otlp_endpoint:
            from monitor.sim.tracing import DEFAULT_SERVICE_NAME, SpanSender

            self.spans = SpanSender(otlp_endpoint, service_name=otlp_service_name or DEFAULT_SERVICE_NAME)
        self.instances = [build_instance(p, version, self.ground_truth) for p in params]
        self._servers: list[QuietServer] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._sockets: list[socket.socket] = []
        self.urls: list[str] = []

    def bind(self, ports: Sequence[int] | None = None) -> list[str]:
        """Bind every instance's port (port 0 or no ports: free ports) and name the instances, without
        serving yet: callers that must know the URLs before anything runs (the demo's config) bind first."""
        if self._sockets:
            return self.urls
        ports = list(ports) if ports is not None else [0] * len(self.instances)
        if len(ports) != len(self.instances):
            raise ValueError("one port per instance")
        try:
            for port in ports:
                self._sockets.append(bind_socket(self.host, port))
        except OSError:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()
            raise
        host = f"[{self.host}]" if ":" in self.host else self.host
        for instance, sock in zip(self.instances, self._sockets, strict=True):
            port = sock.getsockname()[1]
            instance.engine.name = f"{host}:{port}"
            if self.spans is not None:
                instance.engine.tracing = self.spans.tracer(instance.engine.name)
            self.urls.append(f"http://{host}:{port}")
        return self.urls

    async def start(self, ports: Sequence[int] | None = None) -> list[str]:
        """Bind (unless done already) and serve every instance; returns once all of them answer."""
        self.bind(ports)
        for instance, sock in zip(self.instances, self._sockets, strict=True):
            config = uvicorn.Config(instance.app, log_config=None, log_level="warning", access_log=False,
                                    lifespan="off", timeout_keep_alive=30, timeout_graceful_shutdown=2,
                                    backlog=4096)
            server = QuietServer(config)
            self._servers.append(server)
            instance.engine.start()
            self._tasks.append(asyncio.get_running_loop().create_task(server.serve(sockets=[sock])))
        while not all(s.started for s in self._servers):
            failed = [t for t in self._tasks if t.done()]
            if failed:
                await self.stop()
                failed[0].result()
                raise RuntimeError("a simulated instance stopped while starting")
            await asyncio.sleep(0.01)
        return self.urls

    async def stop(self) -> None:
        for server in self._servers:
            server.should_exit = True
        for instance in self.instances:
            await instance.engine.stop()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self._servers.clear()
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()
        if self.ground_truth is not None:
            self.ground_truth.close()
        if self.spans is not None:  # flushes the last spans: blocking HTTP, so off the event loop
            await asyncio.to_thread(self.spans.shutdown)

    def instance(self, name_or_url: str) -> SimInstance:
        for instance, url in zip(self.instances, self.urls, strict=True):
            if name_or_url in (url, instance.engine.name):
                return instance
        raise KeyError(name_or_url)

    def set_faults(self, index: int, faults: Faults) -> None:
        self.instances[index].engine.set_faults(faults)


@contextlib.asynccontextmanager
async def running_fleet(params: Sequence[InstanceParams], **kwargs) -> AsyncIterator[SimFleet]:
    fleet = SimFleet(params, **kwargs)
    await fleet.start()
    try:
        yield fleet
    finally:
        await fleet.stop()
