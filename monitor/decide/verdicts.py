"""What the health rules say about an instance, in plain data that every output reads.

States, the kinds of finding, and the verdict types: kept apart from the rules so that outputs
(NGINX, HAProxy, the API) depend on the words, not on the state machine that produces them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal, Mapping

HEALTHY, DEGRADED, EJECTED, UNKNOWN = "healthy", "degraded", "ejected", "unknown"
# Lifecycle and engine states: not failures, and not counted by the ejection cap, fail-open or the
# availability SLO. `starting`: joined, not yet seen serving; `leaving`: gone from discovery (or the
# config), drained and kept visible for a while; `sleeping`: vLLM's engine offloaded its weights.
STARTING, LEAVING, SLEEPING = "starting", "leaving", "sleeping"
STATES = (HEALTHY, DEGRADED, EJECTED, UNKNOWN, STARTING, LEAVING, SLEEPING)
# states in which an instance gets no new requests (ejected falls back to serving when a whole
# pool is ejected: failing open; the others never do, as they cannot serve at all)
NO_TRAFFIC = frozenset({EJECTED, STARTING, LEAVING, SLEEPING})
# states that are not members for the pool rules (cap, fail-open, outliers)
NOT_JUDGED = frozenset({STARTING, LEAVING, SLEEPING})
REMOVED = "removed"  # the audit log's to-state when a leaving instance is dropped after drain_time

# What a finding is about. The first three mean the instance cannot serve at all, so HAProxy is
# told `down` rather than `drain` (there is nothing in flight worth letting finish).
UNREACHABLE, HEALTH_CHECK, HANG = "unreachable", "health_check", "hang"
LATENCY, ERRORS, SATURATED, OUTLIER = "latency", "errors", "saturated", "outlier"
GPU = "gpu"
HARD_KINDS = frozenset({UNREACHABLE, HEALTH_CHECK, HANG})

FAIL_OPEN_PREFIX = "failing open: "
# states a stale verdict gives up (they are health judgements, made on data that is now too old);
# the lifecycle states are facts about membership and the engine, and a starting, leaving or
# sleeping server cannot serve whatever the monitor's age
STALE_SERVES = frozenset({HEALTHY, DEGRADED, EJECTED, UNKNOWN})


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule that fired: `degrade` or `eject`, what about, why, and how bad (orders candidates).

    `min_requests`: the requests the rule needs before it speaks (0 for rules that need none). An
    instance it degrades earns its way back only on as many requests served since: fewer say
    nothing either way, as they did not let the rule fire in the first place."""

    level: Literal["degrade", "eject"]
    kind: str
    reason: str
    severity: float
    min_requests: float = 0.0


@dataclass(frozen=True, slots=True)
class InstanceVerdict:
    """What outputs read: the state, its reasons, and the weight share a load balancer should use."""

    pool: str
    instance: str
    state: str
    reasons: tuple[str, ...]
    kind: str | None  # the main finding's kind (e.g. `latency`, `unreachable`), None when healthy
    since: float | None
    ejected_until: float | None
    weight: float  # 1.0 healthy or unknown, settings.degraded_weight degraded, 0.0 ejected
    signals: Mapping[str, Any] = field(default_factory=dict)
    decided_at: float | None = None  # the time of the cycle that made this verdict (None: none yet)
    # set when the verdict is older than the pool's `stale_after` as it is read: every output then
    # serves the instance at full weight (see `stale`), and this says why
    fail_open: str | None = None

    @property
    def serves_traffic(self) -> bool:
        """Healthy, degraded and unknown serve (unknown fails open); ejected, starting, leaving and
        sleeping do not, except an ejected one whose verdict is stale (failing open)."""
        return self.state not in NO_TRAFFIC or (self.fail_open is not None and self.state in STALE_SERVES)

    @property
    def http_status(self) -> int:
        """The `/upstreams/{pool}/{instance}` answer: 503 when it should get no traffic, else 200."""
        return 200 if self.serves_traffic else 503

    @property
    def reason_line(self) -> str:
        """One line for a health-check body or a log."""
        text = "; ".join(self.reasons) if self.reasons else "ok"
        if self.fail_open is not None:
            text = f"{self.fail_open}; {text}"
        return f"{self.state}: {text}".replace("\n", " ").replace("\r", " ")


def stale(verdict: InstanceVerdict, reason: str) -> InstanceVerdict:
    """The verdict as outputs read it once it is older than `stale_after`: a health judgement on
    data that old is no longer a reason to keep traffic away (nor to lower a weight), so it fails
    open, saying why; lifecycle states (starting, leaving, sleeping) are kept."""
    if verdict.state not in STALE_SERVES:
        return replace(verdict, fail_open=reason)
    return replace(verdict, fail_open=reason, weight=1.0)


@dataclass(frozen=True, slots=True)
class Transition:
    """One state change, as the audit log stores it."""

    at: float
    pool: str
    instance: str
    from_state: str
    to_state: str
    reasons: tuple[str, ...]
    signals: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class PoolVerdicts:
    """The outcome of one evaluation of one pool."""

    pool: str
    at: float
    verdicts: Mapping[str, InstanceVerdict]
    transitions: tuple[Transition, ...] = ()
    fail_open: str | None = None  # why nothing was changed this interval, None when decisions were made
    notes: tuple[str, ...] = ()  # pool-level remarks (e.g. why outlier detection did not run)
