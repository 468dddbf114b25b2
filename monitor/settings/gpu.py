"""`gpu:`: exporters, GPU → pool/instance mappings, health thresholds.

Same conventions as the rest of the config: unknown keys are errors, values are validated where
they are read, and cross-references to pools are checked by `check_gpu_config` (called by
`Config`'s cross-section checks), which returns problems prefixed with their key path.

```yaml
gpu:
  exporters: [http://10.0.0.11:9400, http://10.0.0.12:9400]   # dcgm-exporter or `slo-monitor exporter`
  mappings:
    - instance: 10.0.0.11:8000      # host:port of a pool target; the GPUs' host defaults to 10.0.0.11
      gpus: [0, 1]                  # indices on that host, or UUIDs (GPU-...); omitted = all its GPUs
    - instance: 10.0.0.11:8001
      host: gpu-node-a              # the page's Hostname label (or the exporter URL's host)
      gpus: [2, 3]
    - pool: llama-70b               # GPUs that serve a pool without one instance to name
      gpus: [GPU-5f2e6c1a-0000-0000-0000-000000000000]
  memory_threshold: 90%             # memory used above this is a health reason
  xid_hold: 5m                      # how long an XID event stays a health reason
  auto_map: true                    # unmapped GPUs: the only instance on the exporter's host, if just one
```
"""

from __future__ import annotations

from typing import Any, Sequence

from pydantic import Field, field_validator, model_validator

from monitor.settings.base import Section
from monitor.settings.pools import PoolConfig
from monitor.units import HttpUrl, Interval, Name, Ratio, instance_address


def normalize_instance(value: str) -> str:
    """`host:port` as the API names instances; a URL is reduced to it, hosts are lowercased."""
    text = value.strip()
    if "://" in text:
        return instance_address(text)
    return text.lower()


class GpuMappingConfig(Section):
    """Some GPUs and the pool (and instance) they serve. Matched in order; the first match wins."""

    instance: str | None = Field(default=None, description="host:port of a pool target (or its URL)")
    pool: Name | None = Field(default=None, description="the pool; implied by `instance` when that is set")
    host: str | None = Field(default=None, description="the node: Hostname label or exporter URL host")
    gpus: list[int | str] | None = Field(default=None, description="GPU indices or UUIDs; omitted = all")

    @field_validator("instance")
    @classmethod
    def _instance(cls, value: str | None) -> str | None:
        if value is None:
            return None
        text = normalize_instance(value)
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"not host:port: {value!r}")
        return text

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, value: list[int | str] | None) -> list[int | str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("empty list (omit `gpus` to mean every GPU of the host)")
        out: list[int | str] = []
        for i, gpu in enumerate(value):
            if isinstance(gpu, bool):
                raise ValueError(f"[{i}]: not a GPU index or UUID: {gpu!r}")
            if isinstance(gpu, int) or (isinstance(gpu, str) and gpu.strip().isdigit()):
                index = int(gpu)
                if index < 0:
                    raise ValueError(f"[{i}]: GPU index must be 0 or more")
                out.append(index)
            elif isinstance(gpu, str) and gpu.strip().upper().startswith(("GPU-", "MIG-")):
                out.append(gpu.strip())
            else:
                raise ValueError(f"[{i}]: not a GPU index or a UUID starting GPU- or MIG-: {gpu!r}")
        return out

    @model_validator(mode="after")
    def _enough(self) -> GpuMappingConfig:
        if self.instance is None and self.pool is None:
            raise ValueError("name an `instance` (host:port) or a `pool`")
        if self.host is None and self.instance is None and not self.uuids_only:
            raise ValueError("`host` is needed to say which node's GPU indices are meant "
                             "(or list GPUs by UUID)")
        return self

    @property
    def uuids_only(self) -> bool:
        return bool(self.gpus) and all(isinstance(g, str) for g in self.gpus or ())

    @property
    def node(self) -> str | None:
        """The host this entry's indices refer to: `host`, else the instance's host."""
        if self.host is not None:
            return self.host.strip().lower()
        if self.instance is not None:
            return self.instance.rpartition(":")[0].strip("[]")
        return None


class GpuConfig(Section):
    """The whole `gpu:` section."""

    exporters: list[HttpUrl] = Field(default_factory=list)
    mappings: list[GpuMappingConfig] = Field(default_factory=list)
    memory_threshold: Ratio = Field(default=0.9, description="memory used above this ratio is a health reason")
    xid_hold: Interval = Field(default=300.0, description="an XID event stays a health reason this long")
    stale_after: Interval = Field(default=60.0, description="readings older than this make no memory reason")
    auto_map: bool = True


def check_gpu_config(gpu: GpuConfig, pools: Sequence[PoolConfig], path: str = "gpu") -> list[str]:
    """Cross-references to pools, and GPUs claimed twice; for `Config`'s cross-section checks."""
    problems: list[str] = []
    owner: dict[str, str] = {}
    for pool in pools:
        for url in pool.targets:
            owner[instance_address(url).lower()] = pool.name
    pool_names = {p.name for p in pools}
    claimed: dict[tuple[str, Any], int] = {}
    for i, m in enumerate(gpu.mappings):
        where = f"{path}.mappings[{i}]"
        if m.instance is not None and m.instance not in owner:
            problems.append(f"{where}.instance: {m.instance} is not a target of any pool")
        if m.pool is not None and m.pool not in pool_names:
            problems.append(f"{where}.pool: no pool named {m.pool!r}")
        if m.instance is not None and m.pool is not None and owner.get(m.instance, m.pool) != m.pool:
            problems.append(f"{where}: instance {m.instance} is in pool {owner[m.instance]!r}, not {m.pool!r}")
        for j, g in enumerate(m.gpus or ["*"]):
            key = ("uuid", g.lower()) if isinstance(g, str) and g != "*" else (m.node or "", g)
            if key in claimed:
                problems.append(f"{where}.gpus[{j}]: GPU {g} is already mapped by {path}.mappings[{claimed[key]}]"
                                if m.gpus else f"{where}: every GPU of {m.node} is already mapped by "
                                               f"{path}.mappings[{claimed[key]}]")
            else:
                claimed[key] = i
    return problems
