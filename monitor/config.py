"""The configuration file: the sections of `monitor.settings` assembled into one `Config`, loaded
from YAML.

Every mistake is reported with its key path (``pools[0].targets[1]: not an http(s) URL``), the value
seen and the form wanted, and all of them in one pass, because an operator fixing a config one error
per run gives up on the tool. Unknown keys are errors: a typo such as ``intervall`` would otherwise
leave the default in force without a word.

This module imports no stage (collect, evaluate, decide, act, publish): warnings that need a
stage's knowledge (a latency threshold between histogram buckets, an objective too low for an alert
to fire) are added by the CLI where it prints them (monitor/cli/advice.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Sequence

import yaml
from pydantic import Field, ValidationError, model_validator

from monitor.errors import BadInput
from monitor.settings import (  # noqa: F401 - re-exported: `from monitor.config import SloConfig` keeps working
    INDICATOR_TYPES,
    AlertingConfig,
    AlertmanagerConfig,
    ApiConfig,
    AvailabilityIndicator,
    CostConfig,
    ErrorRatioIndicator,
    EvaluationConfig,
    GpuConfig,
    GpuMappingConfig,
    HaConfig,
    HaproxyConfig,
    HealthSettings,
    Indicator,
    LatencyIndicator,
    NginxConfig,
    OptionalStr,
    OptionalUrl,
    PoolConfig,
    SaturationIndicator,
    ScalingSettings,
    ScrapeConfig,
    Section,
    SloConfig,
    SourceConfig,
    StorageConfig,
    TracesConfig,
    alerting_problems,
    check_gpu_config,
    resolve_window_sets,
)
from monitor.settings.canaries import CanaryConfig, canary_problems, canary_warnings
from monitor.settings.discovery import DiscoverySettings
from monitor.settings.loading import describe, expand_env, name_unset, unique
from monitor.settings.ui import UiConfig
from monitor.units import (  # noqa: F401 - re-exported: the config's value types
    Duration,
    HttpUrl,
    Listen,
    Name,
    Percent,
    Ratio,
    Size,
    Window,
    instance_address,
    parse_duration,
    parse_http_url,
    parse_listen,
    parse_percent,
    parse_ratio,
    parse_size,
    parse_window,
)


class ConfigError(BadInput, ValueError):
    """Every problem found in a config, each already prefixed with its key path."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


# --- the model ----------------------------------------------------------------------------------


class Config(Section):
    storage: StorageConfig = StorageConfig()
    source: SourceConfig = SourceConfig()
    scrape: ScrapeConfig = ScrapeConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    pools: list[PoolConfig] = Field(min_length=1)
    slos: list[SloConfig] = Field(default_factory=list)
    api: ApiConfig = ApiConfig()
    gpu: GpuConfig = GpuConfig()
    alertmanager: AlertmanagerConfig = AlertmanagerConfig()
    nginx: NginxConfig = NginxConfig()
    haproxy: HaproxyConfig = HaproxyConfig()
    traces: TracesConfig = TracesConfig()
    ha: HaConfig = HaConfig()
    discovery: DiscoverySettings = DiscoverySettings()
    alerting: AlertingConfig = AlertingConfig()
    ui: UiConfig = UiConfig()  # the console and the status page (monitor/publish/ui)
    canaries: list[CanaryConfig] = Field(default_factory=list)  # rollouts judged (monitor/decide/canary.py)

    @model_validator(mode="before")
    @classmethod
    def _window_sets(cls, data: Any) -> Any:
        """User window sets (alerting.window_sets and _file) put in place of the names SLOs give."""
        try:
            return resolve_window_sets(data, _read_yaml_documents)
        except ValueError as exc:
            raise ConfigError([str(exc)]) from None

    @model_validator(mode="after")
    def _cross_sections(self) -> Config:
        problems: list[str] = []
        if self.source.timeout is not None and self.source.timeout > self.scrape.interval:
            problems.append(f"source.timeout: {self.source.timeout:g}s must not exceed scrape.interval "
                            f"({self.scrape.interval:g}s): queries would overlap; set it to "
                            f"{self.scrape.interval:g}s or less")
        if self.ha.enabled and self.ha.renew_every(self.scrape.interval) * 2 > self.ha.lease:
            renew = self.ha.renew_every(self.scrape.interval)
            problems.append(f"ha.lease: must be at least two renew intervals ({renew:g}s each), or one late "
                            f"renewal loses it; set lease to {2 * renew:g}s or more, or a shorter renew_interval")
        problems.extend(reference_problems(*_model_refs(self)))
        problems.extend(check_gpu_config(self.gpu, self.pools))
        problems.extend(alerting_problems(self.slos, [p.name for p in self.pools]))
        problems.extend(canary_problems(self.canaries, [p.name for p in self.pools]))
        if problems:
            raise ConfigError(problems)
        return self

    def pool(self, name: str) -> PoolConfig | None:
        return next((p for p in self.pools if p.name == name), None)


def _read_yaml_documents(path: str) -> list[Any]:
    """A YAML file's documents (alerting.window_sets_file): OSError when it cannot be read, a
    ValueError naming what is wrong with its bytes or YAML (the same bounds as the config's)."""
    with open(path, "rb") as file:
        data = file.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ValueError(f"too large (over {MAX_CONFIG_BYTES // 2**20} MiB)")
    try:
        return parse_yaml(data, all_documents=True)
    except ConfigError as exc:
        raise ValueError("; ".join(exc.problems)) from None


DEFAULT_CONFIG: dict[str, Any] = {
    "storage": {"url": "sqlite:///./slo-monitor.db"},
    "pools": [{"name": "default", "targets": ["http://127.0.0.1:8000"]}],
}


# --- references between sections ----------------------------------------------------------------
# Checked on the validated model and, when some field fails, on the raw YAML too: pydantic runs
# `Config`'s own validators only once every field is valid, and a duplicate target should be named
# in the same pass as a typo three sections away.


@dataclass(frozen=True)
class PoolRef:
    index: int
    name: str | None
    addresses: list[tuple[int, str]] = field(default_factory=list)  # (target index, host:port)


@dataclass(frozen=True)
class SloRef:
    index: int
    name: str | None
    pools: list[tuple[int, str]] = field(default_factory=list)  # (index in slos[].pools, pool name)


def reference_problems(pools: Sequence[PoolRef], slos: Sequence[SloRef]) -> list[str]:
    """Duplicate pool and SLO names, one instance listed twice, SLOs naming a pool that is not there."""
    problems: list[str] = []
    seen_pools: set[str] = set()
    for pool in pools:
        if pool.name is not None and pool.name in seen_pools:
            problems.append(f"pools[{pool.index}].name: duplicate pool name {pool.name!r} "
                            "(pool names must be unique; rename one, or merge their targets)")
        if pool.name is not None:
            seen_pools.add(pool.name)
    first: dict[str, tuple[PoolRef, int]] = {}
    for pool in pools:
        for j, address in pool.addresses:
            where = f"pools[{pool.index}].targets[{j}]"
            if address not in first:
                first[address] = (pool, j)
            elif first[address][0].index == pool.index:
                problems.append(f"{where}: the same instance ({address}) as pools[{pool.index}].targets"
                                f"[{first[address][1]}] (remove one of them)")
            elif first[address][0].name != pool.name:
                problems.append(f"{where}: instance {address} is already in pool {first[address][0].name!r} "
                                "(an instance belongs to one pool; remove it from one of them)")
    names = ", ".join(sorted(seen_pools)) or "none"
    seen_slos: set[str] = set()
    for slo in slos:
        if slo.name is not None and slo.name in seen_slos:
            problems.append(f"slos[{slo.index}].name: duplicate SLO name {slo.name!r} (SLO names must be unique)")
        if slo.name is not None:
            seen_slos.add(slo.name)
        for j, pool_name in slo.pools:
            if pool_name not in seen_pools:
                problems.append(f"slos[{slo.index}].pools[{j}]: no pool named {pool_name!r} (pools: {names})")
    return problems


def _model_refs(config: Config) -> tuple[list[PoolRef], list[SloRef]]:
    pools = [PoolRef(i, p.name, [(j, instance_address(url)) for j, url in enumerate(p.targets)])
             for i, p in enumerate(config.pools)]
    slos = [SloRef(i, s.name, list(enumerate(s.pools or []))) for i, s in enumerate(config.slos)]
    return pools, slos


def _raw_refs(data: dict[str, Any]) -> tuple[list[PoolRef], list[SloRef]]:
    """The same references from YAML that did not validate: whatever parts of it are readable."""

    def items(node: Any) -> list[tuple[int, Any]]:
        return list(enumerate(node)) if isinstance(node, list) else []

    def name(node: dict[str, Any]) -> str | None:
        return node["name"] if isinstance(node.get("name"), str) else None

    pools: list[PoolRef] = []
    for i, pool in items(data.get("pools")):
        if not isinstance(pool, dict):
            continue
        addresses = []
        for j, url in items(pool.get("targets")):
            try:
                addresses.append((j, instance_address(parse_http_url(url))))
            except ValueError:
                pass  # named by the field's own error
        pools.append(PoolRef(i, name(pool), addresses))
    slos = [SloRef(i, name(slo), [(j, p) for j, p in items(slo.get("pools")) if isinstance(p, str)])
            for i, slo in items(data.get("slos")) if isinstance(slo, dict)]
    return pools, slos


# --- reading the file: any bytes give a Config or a ConfigError -----------------------------------

MAX_CONFIG_BYTES = 4 * 2**20  # a config with ten thousand targets is under 1 MiB
MAX_DEPTH = 50  # the config's own nesting is under 10 levels
MAX_VALUES = 200_000  # scalars, lists and mappings, counting each use of an alias in full


def read_bytes(path: str | Path) -> bytes:
    """The file's bytes, at most MAX_CONFIG_BYTES (a bigger file is refused, not read whole)."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config file ({exc.strerror or exc})"]) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError([f"{path}: too large (over {MAX_CONFIG_BYTES // 2**20} MiB); is this the config file?"])
    return data


class _TooDeep(yaml.YAMLError):
    pass


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with the nesting bounded while the document is composed (the composer
    recurses: a few thousand `[` would otherwise end in a RecursionError), and timestamps that are
    not dates (`2026-13-45`) left as strings instead of raising from inside the constructor."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise _TooDeep(f"nested too deeply (more than {MAX_DEPTH} levels) at line {mark.line + 1}")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_yaml_timestamp(self, node: Any) -> Any:
        try:
            return super().construct_yaml_timestamp(node)
        except (ValueError, OverflowError):
            return self.construct_scalar(node)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)


def parse_yaml(data: bytes, source: str = "", *, all_documents: bool = False) -> list[Any]:
    """The YAML documents in `data` (only the first unless `all_documents`); ConfigError for bytes
    that are not UTF-8, YAML that does not parse, a key given twice in one mapping (at any level:
    YAML would silently keep the last), nesting deeper than MAX_DEPTH and documents that expand to
    more than MAX_VALUES values through aliases (a "billion laughs")."""
    where = f"{source}: " if source else ""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError([(f"{where}not UTF-8 at byte {exc.start} (line {line}: byte 0x{data[exc.start]:02x}); "
                           "save the file as UTF-8")]) from None
    documents: list[Any] = []
    loader: _Loader | None = None
    try:
        loader = _Loader(text)
        while loader.check_node():
            node = loader.get_node()
            problems = _node_problems(node)
            if problems:  # by key path, as the validation's own problems read
                raise ConfigError(problems)
            documents.append(loader.construct_document(node))
            if not all_documents:
                break
    except _TooDeep as exc:
        raise ConfigError([f"{where}{exc}"]) from None
    except yaml.reader.ReaderError as exc:  # a control character: its line, not "position 1234"
        line = text.count("\n", 0, exc.position) + 1
        raise ConfigError([(f"{where}not valid YAML at line {line}: character #x{exc.character:04x} is not "
                           "allowed in YAML")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{where}not valid YAML{at}: {problem}"]) from None
    except ConfigError:
        raise
    except (ValueError, OverflowError, RecursionError) as exc:  # a constructor's own (an int of 5,000 digits)
        raise ConfigError([f"{where}not valid YAML: {exc}"]) from None
    finally:
        if loader is not None:
            loader.dispose()
    return documents


def _node_problems(root: yaml.Node) -> list[str]:
    """Duplicate keys by key path with both lines, a recursive alias, and the size once aliases are
    expanded, from the composed document (before any value is built)."""
    problems: list[str] = []
    budget = [MAX_VALUES]

    def walk(node: yaml.Node, path: str, active: tuple[int, ...]) -> None:
        budget[0] -= 1
        if budget[0] < 0:
            raise _Refused(f"(top level): too large: more than {MAX_VALUES} values once aliases are expanded")
        if id(node) in active:
            raise _Refused(f"{path or '(top level)'}: an alias refers to a node that contains it "
                           "(a recursive structure)")
        if len(active) >= MAX_DEPTH:  # aliases can nest one anchor's depth inside another's
            raise _Refused(f"{path}: nested too deeply (more than {MAX_DEPTH} levels once aliases are expanded)")
        if isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, f"{path}[{i}]", (*active, id(node)))
        elif isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                if key is not None and key_node.tag != "tag:yaml.org,2002:merge":
                    line = key_node.start_mark.line + 1
                    if key in seen:
                        shown = f"{path}.{key}" if path else key
                        problems.append(f"{shown}: duplicate key (line {seen[key]} and line {line}); "
                                        "YAML keeps only the last, so remove or merge one")
                    else:
                        seen[key] = line
                walk(value_node, f"{path}.{key}" if path else str(key), (*active, id(node)))

    try:
        walk(root, "", ())
    except _Refused as exc:
        problems.append(str(exc))
    return problems


class _Refused(Exception):
    """Stops the walk of a document too large or too deep to walk further."""


# --- loading (how each error reads, ${NAME} expansion: monitor.settings.loading) ----------------


@dataclass(frozen=True)
class Loaded:
    config: Config
    warnings: list[str]


def validate(data: Any, environ: dict[str, str] | None = None) -> Loaded:
    """Build a Config from parsed YAML; raises ConfigError naming every problem, and nothing else.

    The one path every command takes (`check`, `serve`, `db upgrade`, a reload): it ends with what
    serving does with the values that could still fail on them (`startup_problems`), so a config
    `check` passes never stops `serve`.
    """
    warnings: list[str] = []
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"(top level): expected a mapping of sections, got {type(data).__name__}"])
    unset: dict[str, list[str]] = {}
    data = expand_env(data, "", dict(os.environ) if environ is None else environ, warnings, unset)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems: list[str] = []
        for error in exc.errors():
            ctx_error = (error.get("ctx") or {}).get("error")
            if isinstance(ctx_error, ConfigError):
                problems.extend(ctx_error.problems)
            else:
                problems.append(describe(error, Config))
        problems.extend(_quietly(reference_problems, *_raw_refs(data)))
        raise ConfigError(unique(name_unset(problems, unset))) from None
    except ConfigError as exc:
        raise ConfigError(unique(name_unset(exc.problems, unset))) from None
    except (ValueError, TypeError, ArithmeticError, LookupError, AttributeError, RecursionError) as exc:
        # a validator that did not expect this value: still a refused config, never a traceback
        raise ConfigError([(f"(top level): cannot read this config ({type(exc).__name__}: {exc}); "
                           "please report it with the file")]) from None
    problems = startup_problems(config)
    if problems:
        raise ConfigError(problems)
    warnings.extend(config_warnings(config))
    return Loaded(config, warnings)


def _quietly(check: Any, *args: Any) -> list[str]:
    """A best-effort extra check on YAML that failed validation: whatever it cannot read is named
    by the field's own error already."""
    try:
        return list(check(*args))
    except (ValueError, TypeError, AttributeError, LookupError):
        return []


def startup_problems(config: Config) -> list[str]:
    """What `serve` does with the values at start that can fail although each is valid alone: the
    scheduler's intervals become timedeltas, the listen addresses become a host name to bind and a
    port, the database URL is parsed by SQLAlchemy. Each is tried here, so `check` finds it."""
    problems: list[str] = []
    intervals = {"scrape.interval": config.scrape.interval}
    if config.ha.enabled:
        intervals["ha.renew_interval"] = config.ha.renew_every(config.scrape.interval)
    for key, seconds in intervals.items():
        try:
            timedelta(seconds=seconds)
        except (OverflowError, ValueError):
            problems.append(f"{key}: {seconds:g}s cannot be scheduled")
    for key, listen in (("api.listen", config.api.listen), ("haproxy.agent_listen", config.haproxy.agent_listen)):
        if listen:
            problem = listen_problem(listen)
            if problem:
                problems.append(f"{key}: {problem}")
    try:
        from sqlalchemy.engine import make_url  # only here: no other part of the config needs SQLAlchemy

        make_url(config.storage.url).get_dialect()
    except ImportError as exc:
        problems.append(f"storage.url: the database driver is not installed ({exc})")
    except Exception as exc:  # noqa: BLE001 - ArgumentError, ValueError (a port that is not a number)...
        problems.append(f"storage.url: not a database URL SQLAlchemy can read ({str(exc).splitlines()[0]})")
    return problems


def listen_problem(listen: str) -> str | None:
    """Why HOST:PORT cannot be bound by name (None when it can be tried): the host must encode as
    IDNA, as getaddrinfo encodes it, or binding fails with a UnicodeError rather than an OSError."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    try:
        int(port)
        host.encode("idna")
    except (ValueError, UnicodeError) as exc:
        return f"not a host name or address that can be bound: {listen!r} ({exc})"
    return None


def config_warnings(config: Config) -> list[str]:
    """Things that are valid but probably not what the operator meant, judged from the config alone
    (the CLI adds the ones that need a stage's knowledge: monitor/cli/advice.py)."""
    warnings: list[str] = []
    if config.scrape.interval > config.evaluation.window / 2:
        warnings.append(
            f"evaluation.window: {config.evaluation.window:g}s is shorter than two scrape intervals "
            f"({config.scrape.interval:g}s each); per-instance rates need two samples (set it to "
            f"{2 * config.scrape.interval:g}s or more)"
        )
    warnings.extend(canary_warnings(config.canaries, [p.name for p in config.pools if not p.discovery]))
    return warnings


def load(path: str | Path, environ: dict[str, str] | None = None) -> Loaded:
    """Read and validate a YAML config file; raises ConfigError with every problem named, and
    nothing else, whatever the file holds."""
    documents = parse_yaml(read_bytes(path), str(path))
    return validate(documents[0] if documents else None, environ)


def load_default() -> Loaded:
    return validate(DEFAULT_CONFIG, environ={})


def load_config(path: str | None) -> Loaded:
    """The config a command runs with: the file given, else the embedded default (one pool at
    http://127.0.0.1:8000). A ConfigError is a BadInput: the CLI prints it and exits 2."""
    return load(path) if path else load_default()
