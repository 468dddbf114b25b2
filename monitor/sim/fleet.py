"""Run N simulated instances in this process, each on its own loopback port, and let the fleet change.

Every instance is a real HTTP server (uvicorn) so the monitor, NGINX or a load generator talk to it
exactly as to vLLM; all of them share the one asyncio loop, which is what lets a laptop core stand in
for a fleet. Ports are bound here (port 0 picks a free one) so tests never race for them.

Instances can join and leave while the fleet runs (`add`, `remove`), as pods do under an autoscaler.
A joining instance's port is bound at once but listens only after its model-load time: until then a
connection is refused, as vLLM does not listen before its model is loaded. With `file_sd` set, the
fleet keeps a Prometheus file_sd JSON file of its members (joining ones included, as Kubernetes lists
a pod before it is ready), rewritten atomically (temp file + rename) on every change.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import tempfile
from dataclasses import dataclass
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

log = logging.getLogger("monitor.sim")


class QuietServer(uvicorn.Server):
    """A uvicorn server that leaves SIGINT/SIGTERM to the command that runs it (many servers share
    one process, and the command decides how to shut all of them down)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind_socket(host: str, port: int) -> socket.socket:
    """A bound, not yet listening socket: connections to it are refused until it is served."""
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


def build_instance(params: InstanceParams, version: MetricsVersion = "latest",
                   ground_truth: GroundTruth | None = None) -> SimInstance:
    metrics = VllmMetrics(version, params.model, min(params.max_model_len, params.num_gpu_blocks * params.block_size),
                          cache_config_info(params))
    return SimInstance(Engine(params, metrics, ground_truth=ground_truth), metrics)


def write_file_sd(path: Path, targets: Sequence[str], labels: dict[str, str] | None = None) -> None:
    """Prometheus file_sd JSON (`[{"targets": [...], "labels": {...}}]`), replaced atomically so a
    reader never sees half a file: written to a temp file in the same directory, then renamed."""
    groups = [{"targets": list(targets), "labels": dict(labels or {})}] if targets else []
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(groups, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@dataclass(eq=False)
class Member:
    """One instance of the fleet and what serves it; `state` is `loading` until it listens."""

    instance: SimInstance
    sock: socket.socket
    url: str
    state: str = "loading"  # loading | serving | stopped
    server: QuietServer | None = None
    task: asyncio.Task[None] | None = None
    loader: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.instance.engine.name


class SimFleet:
    """Instances on one host; `start()` binds and serves them, `add`/`remove` change the fleet while
    it runs, `stop()` ends every one of them."""

    def __init__(self, params: Sequence[InstanceParams], *, version: MetricsVersion = "latest",
                 host: str = "127.0.0.1", ground_truth: str | Path | None = None,
                 otlp_endpoint: str | None = None, otlp_service_name: str | None = None,
                 file_sd: str | Path | None = None, file_sd_labels: dict[str, str] | None = None) -> None:
        """`otlp_endpoint`: send vLLM V1-shaped `llm_request` spans there (OTLP/HTTP, e.g.
        `http://monitor:9470/v1/traces`); `otlp_service_name` is their `service.name`. `file_sd`: keep
        a Prometheus file_sd JSON file of the members there (`file_sd_labels` on its target group)."""
        self.host = host
        self.version = version
        self.ground_truth = GroundTruth(ground_truth) if ground_truth else None
        self.spans: SpanSender | None = None
        if otlp_endpoint:
            from monitor.sim.tracing import DEFAULT_SERVICE_NAME, SpanSender

            self.spans = SpanSender(otlp_endpoint, service_name=otlp_service_name or DEFAULT_SERVICE_NAME)
        self.file_sd = Path(file_sd) if file_sd else None
        self.file_sd_labels = dict(file_sd_labels or {})
        self.params = list(params)
        self.instances = [build_instance(p, version, self.ground_truth) for p in params]
        self.members: list[Member] = []
        self._started = False
        self._added = 0
        self._lock = asyncio.Lock()

    @property
    def urls(self) -> list[str]:
        return [m.url for m in self.members]

    def _host_in_url(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    def _member(self, instance: SimInstance, sock: socket.socket) -> Member:
        port = sock.getsockname()[1]
        instance.engine.name = f"{self._host_in_url()}:{port}"
        if self.spans is not None:
            instance.engine.tracing = self.spans.tracer(instance.engine.name)
        return Member(instance, sock, f"http://{self._host_in_url()}:{port}")

    def bind(self, ports: Sequence[int] | None = None) -> list[str]:
        """Bind every instance's port (port 0 or no ports: free ports) and name the instances, without
        serving yet: callers that must know the URLs before anything runs (the demo's config) bind first."""
        if self.members:
            return self.urls
        ports = list(ports) if ports is not None else [0] * len(self.instances)
        if len(ports) != len(self.instances):
            raise ValueError("one port per instance")
        socks: list[socket.socket] = []
        try:
            for port in ports:
                socks.append(bind_socket(self.host, port))
        except OSError:
            for sock in socks:
                sock.close()
            raise
        self.members = [self._member(i, s) for i, s in zip(self.instances, socks, strict=True)]
        return self.urls

    async def _serve(self, member: Member) -> None:
        config = uvicorn.Config(member.instance.app, log_config=None, log_level="warning", access_log=False,
                                lifespan="off", timeout_keep_alive=30, timeout_graceful_shutdown=2, backlog=4096)
        member.server = QuietServer(config)
        member.instance.engine.start()
        member.task = asyncio.get_running_loop().create_task(member.server.serve(sockets=[member.sock]))
        while not member.server.started:
            if member.task.done():
                member.task.result()
                raise RuntimeError(f"simulated instance {member.name} stopped while starting")
            await asyncio.sleep(0.01)
        member.state = "serving"

    async def start(self, ports: Sequence[int] | None = None) -> list[str]:
        """Bind (unless done already) and serve every instance; returns once all of them answer."""
        self.bind(ports)
        self._started = True
        try:
            for member in self.members:
                await self._serve(member)
        except BaseException:
            await self.stop()
            raise
        self._write_file_sd()
        return self.urls

    async def add(self, count: int = 1, *, load_time_s: float = 0.0,
                  params: InstanceParams | None = None) -> list[str]:
        """Start `count` new instances on free ports; each refuses connections for `load_time_s`
        (its model load), then serves. Returns their URLs at once (they are in the file_sd file)."""
        if count < 1:
            raise ValueError("add: at least 1 instance")
        async with self._lock:
            added = []
            for _ in range(count):
                base = params or (self.params[0] if self.params else InstanceParams())
                self._added += 1
                p = base.with_(seed=base.seed + 1000 + self._added)
                instance = build_instance(p, self.version, self.ground_truth)
                member = self._member(instance, bind_socket(self.host, 0))
                self.instances.append(instance)
                self.members.append(member)
                member.loader = asyncio.get_running_loop().create_task(self._load(member, load_time_s))
                added.append(member.url)
                log.info("instance %s added (loading for %.1f s)", member.name, load_time_s)
            self._write_file_sd()
            return added

    async def _load(self, member: Member, load_time_s: float) -> None:
        if load_time_s > 0:
            await asyncio.sleep(load_time_s)
        if member.state == "loading":
            try:
                await self._serve(member)
                log.info("instance %s serving", member.name)
            except Exception:  # one instance failing to start must not end the fleet
                log.exception("instance %s failed to start", member.name)
                member.state = "stopped"

    async def remove(self, name_or_url: str) -> str:
        """Stop one instance (its requests end as aborted) and drop it from the fleet and file_sd."""
        async with self._lock:
            member = self._find(name_or_url)
            self.members.remove(member)
            self.instances.remove(member.instance)
            self._write_file_sd()
        await self._stop_member(member)
        log.info("instance %s removed", member.name)
        return member.url

    def newest(self) -> str | None:
        """The most recently joined member (the one an autoscaler removes first)."""
        return self.members[-1].url if self.members else None

    def _find(self, name_or_url: str) -> Member:
        for member in self.members:
            if name_or_url in (member.url, member.name):
                return member
        raise KeyError(name_or_url)

    async def _stop_member(self, member: Member) -> None:
        member.state = "stopped"
        if member.loader is not None and not member.loader.done():
            member.loader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await member.loader
        if member.server is not None:
            member.server.should_exit = True
        await member.instance.engine.stop()
        if member.task is not None:
            await asyncio.gather(member.task, return_exceptions=True)
        member.sock.close()

    def _write_file_sd(self) -> None:
        if self.file_sd is None:
            return
        try:
            write_file_sd(self.file_sd, [m.url.split("://", 1)[1] for m in self.members], self.file_sd_labels)
        except OSError as exc:
            log.error("cannot write the file_sd file %s: %s", self.file_sd, exc)

    async def stop(self) -> None:
        members, self.members = self.members, []
        for member in members:
            if member.server is not None:
                member.server.should_exit = True
        for member in members:
            await self._stop_member(member)
        for instance in self.instances:  # never bound or served
            await instance.engine.stop()
        self.members = []
        if self.ground_truth is not None:
            self.ground_truth.close()
        if self.spans is not None:  # flushes the last spans: blocking HTTP, so off the event loop
            await asyncio.to_thread(self.spans.shutdown)

    def instance(self, name_or_url: str) -> SimInstance:
        return self._find(name_or_url).instance

    def describe(self) -> list[dict[str, str]]:
        """What the control endpoint lists: each member's URL, name and state."""
        return [{"url": m.url, "instance": m.name, "state": m.state} for m in self.members]

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
