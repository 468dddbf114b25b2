"""The configuration file: a pydantic model of the YAML in interfaces.md.

Every mistake is reported with its key path (``pools[0].targets[1]: not an http(s) URL``) and all of
them at once, because an operator fixing a config one error per run gives up on the tool. Unknown keys
are errors: a typo such as ``intervall`` would otherwise leave the default in force without a word.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from monitor.decide.health import HealthSettings
from monitor.evaluate.cost import CostConfig
from monitor.gpu.config import GpuConfig, check_gpu_config
from monitor.otlp.config import TracesConfig
from monitor.decide.scaling import ScalingSettings
from monitor.units import (  # noqa: F401 - re-exported: the config's value types
    Duration,
    HttpUrl,
    Listen,
    Name,
    Ratio,
    Size,
    instance_address,
    parse_duration,
    parse_http_url,
    parse_listen,
    parse_ratio,
    parse_size,
)



def _none_if_empty(value: Any) -> Any:
    """`${VAR}` of an unset variable expands to ""; an optional setting treats that as not set."""
    return None if value == "" else value


OptionalUrl = Annotated[HttpUrl | None, BeforeValidator(_none_if_empty)]
OptionalStr = Annotated[str | None, BeforeValidator(_none_if_empty)]


# --- the model ----------------------------------------------------------------------------------


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageConfig(_Section):
    url: str = "sqlite:///./slo-monitor.db"
    retention: Duration = Field(default=30 * 86400.0, description="rollups older than this are deleted")

    @field_validator("url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not re.match(r"^(sqlite|postgresql)(\+\w+)?://", value):
            raise ValueError("not a sqlite:/// or postgresql+psycopg:// URL")
        return value


class ScrapeConfig(_Section):
    interval: Duration = 5.0
    timeout: Duration = 2.0
    max_body_size: Size = 16 * 2**20
    metrics_path: str = "/metrics"
    health_path: str | None = "/health"
    concurrency: int = Field(default=256, ge=1, le=10_000)

    @model_validator(mode="after")
    def _timeout_fits(self) -> ScrapeConfig:
        if self.timeout > self.interval:
            raise ValueError("timeout must not exceed interval (scrapes of one target would overlap)")
        return self


class EvaluationConfig(_Section):
    window: Duration = Field(default=60.0, description="rolling window of the per-instance figures")


class PoolConfig(_Section):
    name: Name
    targets: list[HttpUrl] = Field(min_length=1)
    health: HealthSettings = HealthSettings()
    scaling: ScalingSettings = ScalingSettings()
    cost: CostConfig | None = Field(default=None, description="GPU-hour price: cost per token and request")

    @field_validator("targets")
    @classmethod
    def _distinct_instances(cls, targets: list[str]) -> list[str]:
        seen: dict[str, int] = {}
        for i, url in enumerate(targets):
            address = instance_address(url)
            if address in seen:
                raise ValueError(f"targets[{i}] is the same instance ({address}) as targets[{seen[address]}]")
            seen[address] = i
        return targets


class LatencyIndicator(_Section):
    type: Literal["latency"]
    metric: Literal["ttft", "tpot", "e2e", "queue"]
    threshold: Duration


class ErrorRatioIndicator(_Section):
    type: Literal["error_ratio"]


class SaturationIndicator(_Section):
    type: Literal["saturation"]
    metric: Literal["kv_cache_usage"] = "kv_cache_usage"
    threshold: Ratio


class AvailabilityIndicator(_Section):
    type: Literal["availability"]


Indicator = Annotated[
    LatencyIndicator | ErrorRatioIndicator | SaturationIndicator | AvailabilityIndicator,
    Field(discriminator="type"),
]


class SloConfig(_Section):
    name: Name
    indicator: Indicator
    objective: Ratio
    window: Duration = 30 * 86400.0
    pools: list[Name] | None = Field(default=None, description="pools this SLO applies to; all when unset")
    runbook_url: OptionalUrl = Field(default=None, description="sent as the alerts' runbook_url annotation")
    # Grafana SLO's `min_failures`: a burn-rate pair fires only with at least this many bad events in
    # its long window, so one failed request out of ten at night does not wake anybody.
    min_bad_events: float = Field(default=5.0, ge=0.0)

    @field_validator("objective")
    @classmethod
    def _objective_open_interval(cls, value: float) -> float:
        if not 0.0 < value < 1.0:
            raise ValueError("objective must be above 0% and below 100% (a 100% objective has no error budget)")
        return value


class ApiConfig(_Section):
    listen: Listen = "127.0.0.1:9470"
    token: OptionalStr = None


class AlertmanagerConfig(_Section):
    url: OptionalUrl = None
    # While an alert fires it is re-sent this often, with endsAt a few intervals ahead, so an
    # Alertmanager that restarted learns it again and an alert from a dead monitor expires by itself.
    resend_interval: Duration = 60.0
    timeout: Duration = Field(default=5.0, description="per POST to Alertmanager")

    @model_validator(mode="after")
    def _timeout_fits(self) -> AlertmanagerConfig:
        if self.timeout > self.resend_interval:
            raise ValueError("timeout must not exceed resend_interval")
        return self


class NginxConfig(_Section):
    upstream_file: OptionalStr = None
    check: OptionalStr = None
    reload: OptionalStr = None


class HaproxyConfig(_Section):
    agent_listen: Annotated[Listen | None, BeforeValidator(_none_if_empty)] = Field(
        default=None, description="HOST:PORT of the HAProxy agent-check listener; off when unset")


_MATCHER = r'\s*[A-Za-z_][A-Za-z0-9_]*\s*(?:=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"\s*'
_SELECTOR = re.compile(rf"{_MATCHER}(?:,{_MATCHER})*,?\s*")


class SourceConfig(_Section):
    """Where the per-instance signals come from.

    `scrape` (default): the service GETs every target's /metrics and /health itself. `prometheus`:
    it asks a Prometheus-compatible API (Prometheus, Thanos Query, Mimir, VictoriaMetrics) for the
    raw vLLM series that backend already scrapes, so a fleet large enough to need sharded
    Prometheus does not need a second set of scrapers, and several monitor replicas add no load
    on the vLLM servers.
    """

    type: Literal["scrape", "prometheus"] = "scrape"
    url: OptionalUrl = Field(default=None, description="base URL of the Prometheus HTTP API (…/api/v1/query is added)")
    instance_label: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] = "instance"
    selector: OptionalStr = Field(default=None, description='extra label matchers, e.g. job="vllm"')
    timeout: Duration | None = Field(default=None, description="per query; default scrape.timeout")
    max_response_size: Size = 64 * 2**20
    max_instances_per_query: int = Field(default=100, ge=1, le=10_000)
    max_age: Duration = Field(default=60.0, description="an instance whose last sample is older is reported stale")
    headers: dict[str, str] = Field(default_factory=dict, description="e.g. X-Scope-OrgID for Mimir")
    bearer_token: OptionalStr = None

    @field_validator("selector")
    @classmethod
    def _matchers_only(cls, value: str | None) -> str | None:
        # pasted into every selector of the query: only matchers, so it can never change the query's shape
        if value is not None and not _SELECTOR.fullmatch(value):
            raise ValueError('must be PromQL label matchers separated by commas, e.g. job="vllm", env=~"prod|canary"')
        return value.strip().rstrip(",").strip() if value else None

    @model_validator(mode="after")
    def _url_matches_type(self) -> SourceConfig:
        if self.type == "prometheus" and not self.url:
            raise ValueError("type prometheus needs url (e.g. http://prometheus:9090)")
        if self.type == "scrape" and self.url:
            raise ValueError("url is only used with type: prometheus")
        return self


class HaConfig(_Section):
    """Several replicas on one database: a lease row elects the one that writes the NGINX file,
    pages Alertmanager and writes history; the others evaluate the same data and answer the API."""

    enabled: bool = False
    lease: Duration = Field(default=15.0, description="a leader that stops renewing is replaced after this")
    renew_interval: Duration | None = Field(default=None, description="default: min(scrape.interval, lease / 3)")
    replica_id: OptionalStr = Field(default=None, max_length=200, description="default: hostname-pid")

    def renew_every(self, scrape_interval: float) -> float:
        return self.renew_interval or min(scrape_interval, self.lease / 3.0)


class Config(_Section):
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

    @model_validator(mode="after")
    def _cross_references(self) -> Config:
        problems: list[str] = []
        if self.source.timeout is not None and self.source.timeout > self.scrape.interval:
            problems.append("source.timeout: must not exceed scrape.interval (queries would overlap)")
        if self.ha.enabled and self.ha.renew_every(self.scrape.interval) * 2 > self.ha.lease:
            problems.append("ha.lease: must be at least two renew intervals "
                            f"({self.ha.renew_every(self.scrape.interval):g}s each), or one late renewal loses it")
        pool_names = [p.name for p in self.pools]
        for i, name in enumerate(pool_names):
            if name in pool_names[:i]:
                problems.append(f"pools[{i}].name: duplicate pool name {name!r}")
        owner: dict[str, str] = {}
        for i, pool in enumerate(self.pools):
            for j, url in enumerate(pool.targets):
                address = instance_address(url)
                if address in owner and owner[address] != pool.name:
                    problems.append(
                        f"pools[{i}].targets[{j}]: instance {address} is already in pool {owner[address]!r}"
                    )
                owner.setdefault(address, pool.name)
        slo_names = [s.name for s in self.slos]
        for i, slo in enumerate(self.slos):
            if slo.name in slo_names[:i]:
                problems.append(f"slos[{i}].name: duplicate SLO name {slo.name!r}")
            for j, pool in enumerate(slo.pools or []):
                if pool not in pool_names:
                    problems.append(f"slos[{i}].pools[{j}]: no pool named {pool!r}")
        problems.extend(check_gpu_config(self.gpu, self.pools))
        if problems:
            raise ConfigError(problems)
        return self

    def pool(self, name: str) -> PoolConfig | None:
        return next((p for p in self.pools if p.name == name), None)


DEFAULT_CONFIG: dict[str, Any] = {
    "storage": {"url": "sqlite:///./slo-monitor.db"},
    "pools": [{"name": "default", "targets": ["http://127.0.0.1:8000"]}],
}


# --- loading and error reporting ----------------------------------------------------------------


class ConfigError(ValueError):
    """Every problem found in a config, each already prefixed with its key path."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class Loaded:
    config: Config
    warnings: list[str]


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(node: Any, path: str, environ: dict[str, str], warnings: list[str]) -> Any:
    """Expand ``${NAME}`` / ``${NAME:-default}`` in string values, after YAML parsing.

    Expanding after parsing means a variable's value can never change the document's structure.
    """
    if isinstance(node, dict):
        return {k: _expand_env(v, _join(path, k), environ, warnings) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand_env(v, f"{path}[{i}]", environ, warnings) for i, v in enumerate(node)]
    if isinstance(node, str) and "${" in node:

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in environ:
                return environ[name]
            if default is not None:
                return default
            warnings.append(f"{path}: environment variable {name} is not set (expanded to an empty string)")
            return ""

        return _ENV_REF.sub(substitute, node)
    return node


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _loc_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in ("latency", "error_ratio", "saturation", "availability") and path.endswith("indicator"):
            continue  # pydantic names the union member it tried; the user only wrote `indicator`
        elif isinstance(part, str) and part.startswith("function-"):
            continue
        else:
            path = _join(path, part)
    return path


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys a section accepts, to suggest the intended spelling of an unknown one."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            if isinstance(part, str) and part in ("latency", "error_ratio", "saturation", "availability"):
                current = {
                    "latency": LatencyIndicator,
                    "error_ratio": ErrorRatioIndicator,
                    "saturation": SaturationIndicator,
                    "availability": AvailabilityIndicator,
                }[part]
            continue
        current = _model_in(field.annotation)
    return list(getattr(current, "model_fields", {}).keys())


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _describe(error: dict[str, Any]) -> str:
    loc = tuple(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        keys = _known_keys(Config, loc)
        close = difflib.get_close_matches(str(loc[-1]), keys, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(keys)})" if keys else ""
        return f"{_loc_path(loc)}: unknown key{hint}"
    if kind == "missing":
        return f"{_loc_path(loc)}: required key is missing"
    message = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix):]
    if kind == "union_tag_invalid":
        message = f"unknown type {error['input'].get('type')!r} (use latency, error_ratio, saturation or availability)" if isinstance(error.get("input"), dict) else message
    if kind == "too_short":
        message = "must not be empty"
    if kind == "string_pattern_mismatch":
        message = "must start with a letter or digit and use only letters, digits, '_', '.', '-'"
    return f"{_loc_path(loc) or '(top level)'}: {message}"


def validate(data: Any, environ: dict[str, str] | None = None) -> Loaded:
    """Build a Config from parsed YAML; raises ConfigError naming every problem."""
    warnings: list[str] = []
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"(top level): expected a mapping of sections, got {type(data).__name__}"])
    data = _expand_env(data, "", dict(os.environ) if environ is None else environ, warnings)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems: list[str] = []
        for error in exc.errors():
            ctx_error = (error.get("ctx") or {}).get("error")
            if isinstance(ctx_error, ConfigError):
                problems.extend(ctx_error.problems)
            else:
                problems.append(_describe(error))
        raise ConfigError(problems) from None
    except ConfigError:
        raise
    warnings.extend(config_warnings(config))
    return Loaded(config, warnings)


def config_warnings(config: Config) -> list[str]:
    """Things that are valid but probably not what the operator meant."""
    from monitor.collect.vllm import threshold_warning  # late import: config must not need the collector

    from monitor.evaluate.slo import objective_warnings  # late import: slo.py imports this module

    warnings: list[str] = []
    for i, slo in enumerate(config.slos):
        if isinstance(slo.indicator, LatencyIndicator):
            warning = threshold_warning(slo.indicator.metric, slo.indicator.threshold)
            if warning:
                warnings.append(f"slos[{i}].indicator.threshold: {warning}")
        # an objective so low that even 100% errors cannot reach a pair's burn factor: that alert
        # would stay silent through a total outage, which the operator must hear about now
        for warning in objective_warnings(slo.objective, slo.window, name=slo.name):
            warnings.append(f"slos[{i}].objective: {warning}")
    if config.scrape.interval > config.evaluation.window / 2:
        warnings.append(
            "evaluation.window: shorter than two scrape intervals; per-instance rates need two samples"
        )
    return warnings


def load(path: str | Path, environ: dict[str, str] | None = None) -> Loaded:
    """Read and validate a YAML config file; raises ConfigError with every problem named."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config file ({exc.strerror or exc})"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{path}: not valid YAML{where}: {problem}"]) from None
    return validate(data, environ)


def load_default() -> Loaded:
    return validate(DEFAULT_CONFIG, environ={})
