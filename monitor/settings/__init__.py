"""The configuration's section models, one module per purpose; `monitor.config` assembles them.

They import only `monitor.units` and pydantic, so a stage that reads its own settings (health,
scaling, cost, GPUs, traces) never loads another stage, and the config never loads a stage.
"""

from monitor.settings.alert_windows import (
    BUILTIN_WINDOW_SETS,
    AlertingConfig,
    BurnWindow,
    WindowSet,
    resolve_window_sets,
)
from monitor.settings.base import OptionalStr, OptionalUrl, Section, none_if_empty
from monitor.settings.exclusions import ExclusionConfig, WeeklyWindow
from monitor.settings.gpu import GpuConfig, GpuMappingConfig, check_gpu_config, normalize_instance
from monitor.settings.ha import HaConfig
from monitor.settings.outputs import AlertmanagerConfig, ApiConfig, HaproxyConfig, NginxConfig
from monitor.settings.pools import CostConfig, HealthSettings, PoolConfig, ScalingSettings
from monitor.settings.scrape import EvaluationConfig, ScrapeConfig, SourceConfig
from monitor.settings.slos import (
    INDICATOR_TYPES,
    AvailabilityIndicator,
    ErrorRatioIndicator,
    Indicator,
    LatencyIndicator,
    SaturationIndicator,
    SloConfig,
    alerting_problems,
)
from monitor.settings.storage import StorageConfig
from monitor.settings.traces import TracesConfig

__all__ = [
    "BUILTIN_WINDOW_SETS", "AlertingConfig", "BurnWindow", "ExclusionConfig", "WeeklyWindow", "WindowSet",
    "alerting_problems", "resolve_window_sets",
    "INDICATOR_TYPES", "AlertmanagerConfig", "ApiConfig", "AvailabilityIndicator", "CostConfig", "ErrorRatioIndicator",
    "EvaluationConfig", "GpuConfig", "GpuMappingConfig", "HaConfig", "HaproxyConfig", "HealthSettings", "Indicator",
    "LatencyIndicator", "NginxConfig", "OptionalStr", "OptionalUrl", "PoolConfig", "SaturationIndicator",
    "ScalingSettings", "ScrapeConfig", "Section", "SloConfig", "SourceConfig", "StorageConfig", "TracesConfig",
    "check_gpu_config", "none_if_empty", "normalize_instance",
]
