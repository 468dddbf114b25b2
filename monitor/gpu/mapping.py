"""Which pool and instance a GPU serves: a pure function of the reading and the config.

A GPU is known by its node and its UUID or index; an instance by `host:port`. Nothing on a dcgm page
links the two (vLLM's process is not labelled), so the link comes from the config:
1. the first `gpu.mappings` entry that matches: by UUID anywhere (UUIDs are globally unique), by index
   on the entry's node, or every GPU of the node when the entry lists none;
2. else, with `auto_map`, the one instance of any pool whose host is the GPU's node (its Hostname
   label or its exporter URL's host) — the common one-vLLM-per-node layout needs no mapping at all;
   several instances on the node share no GPU we could attribute, so the GPU stays unmapped, but when
   they are all in one pool it is attributed to that pool;
3. else unmapped: still shown at /api/v1/gpus and /metrics, never a reason in anyone's health.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence
from urllib.parse import urlsplit

from monitor.gpu.readings import GpuReading
from monitor.settings import GpuMappingConfig


@dataclass(frozen=True, slots=True)
class GpuPlacement:
    """Where a GPU belongs and which rule said so (shown in the API, so a wrong mapping is findable)."""

    pool: str | None
    instance: str | None
    rule: str


UNMAPPED = GpuPlacement(None, None, "unmapped")


class GpuMapper:
    """Places readings; built once from the config, then pure."""

    def __init__(self, mappings: Sequence[GpuMappingConfig], pools: Mapping[str, Sequence[str]],
                 *, auto_map: bool = True) -> None:
        """`pools`: pool name → its instances as `host:port`."""
        self.mappings = list(mappings)
        self.auto_map = auto_map
        self._pool_of: dict[str, str] = {}
        self._by_host: dict[str, list[str]] = {}
        for pool, instances in pools.items():
            for inst in instances:
                inst = inst.lower()
                self._pool_of[inst] = pool
                self._by_host.setdefault(inst.rpartition(":")[0].strip("[]"), []).append(inst)

    def place(self, reading: GpuReading) -> GpuPlacement:
        hosts = _hosts(reading)
        for i, m in enumerate(self.mappings):
            if _matches(m, reading, hosts):
                pool = m.pool if m.pool is not None else self._pool_of.get(m.instance or "")
                return GpuPlacement(pool, m.instance, f"gpu.mappings[{i}]")
        if self.auto_map:
            for host in hosts:
                instances = self._by_host.get(host)
                if not instances:
                    continue
                if len(instances) == 1:
                    return GpuPlacement(self._pool_of[instances[0]], instances[0], f"auto: the only instance on {host}")
                pools = {self._pool_of[i] for i in instances}
                if len(pools) == 1:
                    return GpuPlacement(pools.pop(), None, f"auto: pool of all {len(instances)} instances on {host}")
                return GpuPlacement(None, None, f"unmapped: {len(instances)} instances of several pools on {host}")
        return UNMAPPED


def _hosts(reading: GpuReading) -> list[str]:
    """Names the GPU's node goes by: the page's host label, then the exporter URL's host."""
    names = []
    if reading.host:
        names.append(reading.host.lower())
    if reading.source:
        url_host = (urlsplit(reading.source).hostname or "").lower()
        if url_host and url_host not in names:
            names.append(url_host)
    return names


def _matches(m: GpuMappingConfig, reading: GpuReading, hosts: list[str]) -> bool:
    node = m.node
    on_node = node is not None and node in hosts
    if m.gpus is None:
        return on_node
    for gpu in m.gpus:
        if isinstance(gpu, str):
            if reading.uuid and gpu.lower() == reading.uuid.lower() and (m.host is None or on_node):
                return True
        elif on_node and reading.index == gpu:
            return True
    return False
