"""What the publishing side reads of the running monitor: a narrow view, so that the API and the
/metrics collectors depend on these names and not on the service that wires the stages together.
`monitor.service.Service` provides it."""

from __future__ import annotations

from collections import deque
from typing import Any, Iterable, Mapping, Protocol, Sequence

from monitor.config import Config
from monitor.decide.scaling import ScalingRecommendation
from monitor.decide.verdicts import InstanceVerdict
from monitor.evaluate.fleet import FleetView
from monitor.evaluate.slo import CostBudgetStatus, Exclusion
from monitor.evaluate.slo.engine import SloStatus
from monitor.gpu.health import GpuTracker
from monitor.otlp.receiver import TraceReceiver
from monitor.otlp.store import TraceStore
from monitor.store import AuditEntry, Store

NAMESPACE = "slo_monitor"


class Verdicts(Protocol):
    """Health verdicts and scaling recommendations as of the last cycle."""

    def verdict(self, pool: str, instance: str) -> InstanceVerdict | None: ...
    def pool_verdicts(self, pool: str) -> list[InstanceVerdict]: ...
    def recommendation(self, pool: str) -> ScalingRecommendation | None: ...


class Slos(Protocol):
    statuses: list[SloStatus]
    cost_budgets: list[CostBudgetStatus]  # each pool's spend today (monitor.publish.budgets)
    @property
    def adhoc_exclusions(self) -> tuple[Exclusion, ...]: ...  # windows posted to the API (monitor.publish.exclusions)

    def set_exclusions(self, exclusions: Iterable[Exclusion]) -> None: ...
    def horizon(self) -> float: ...
    def minutes(self, slo: str, pool: str, model_name: str = "",
                since: float | None = None) -> list[tuple[int, float, float]]: ...


class MonitorState(Protocol):
    """Everything an output reads; all of it is updated on the event loop once per cycle."""

    config: Config
    fleet: FleetView
    @property  # read-only here: outputs read the decisions, and a property lets the service hold a richer type
    def decisions(self) -> Verdicts: ...
    @property
    def slo(self) -> Slos: ...
    store: Store | None
    recent_decisions: deque[AuditEntry]
    traces: TraceStore
    receiver: TraceReceiver
    gpus: GpuTracker
    cycles: int
    slo_errors: int
    decide_errors: int
    @property
    def fail_open(self) -> Mapping[str, str | None]: ...
    leadership: Any
    @property
    def notifier(self) -> Any: ...
    nginx: Any
    @property
    def discovery_statuses(self) -> Sequence[Any]: ...
    reload_status: Any
    stages: Any  # monitor.service.stages.Stages: errors per stage, what fails now
    last_cycle_success_at: float | None
    canaries: Any  # monitor.service.canaries.Canaries: each canary's evidence and verdict (publish/canaries.py)

    def is_leader(self) -> bool: ...
    def figures_at(self) -> float: ...
    def ready(self) -> bool: ...
    def member_info(self, instance: str) -> tuple[str, float | None]: ...  # (source, joined_at)
    def stalled(self) -> str | None: ...  # why the loop looks dead, None while cycles complete
