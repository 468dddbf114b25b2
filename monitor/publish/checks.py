"""The answers a load balancer's health check reads, from a snapshot of the last published verdicts.

A check (`GET /upstreams/{pool}/{instance}`, a HAProxy agent check) must answer in bounded time whatever
the cycle is doing: HAProxy's default check timeout is 2 s, and a monitor that answers late marks healthy
servers DOWN. The cycle publishes an immutable `CheckSnapshot` when it has decided (and when membership
changes); the check listeners (monitor/publish/frontdoor.py, on a thread of their own) only read the
reference, which Python swaps atomically, and apply the one thing that changes between cycles: the
verdicts' age (past the pool's `stale_after` they fail open, exactly as `FleetDecisions.verdict` says).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from monitor.decide.pool import stale_reason
from monitor.decide.verdicts import InstanceVerdict, stale
from monitor.units import rfc3339


@dataclass(frozen=True, slots=True)
class PoolChecks:
    """One pool's verdicts as last decided, and what their age is judged by."""

    verdicts: Mapping[str, InstanceVerdict]
    decided_at: float | None
    stale_after: float


@dataclass(frozen=True, slots=True)
class CheckSnapshot:
    """Every configured pool (empty ones too: a known pool with an unknown instance is a different 404)."""

    pools: Mapping[str, PoolChecks] = field(default_factory=dict)
    pool_names: tuple[str, ...] = ()
    pool_of: Mapping[str, str] = field(default_factory=dict)  # instance -> pool (unique across pools)


@dataclass(frozen=True, slots=True)
class CheckAnswer:
    status: int
    body: str
    decided_at: str | None = None  # the X-Decided-At header


def snapshot_of(pools: Mapping[str, PoolChecks], configured: Iterable[str]) -> CheckSnapshot:
    names = tuple(configured)
    return CheckSnapshot(dict(pools), names,
                         {i: name for name, p in pools.items() for i in p.verdicts})


def verdict_at(snapshot: CheckSnapshot, pool: str, instance: str, now: float) -> InstanceVerdict | None:
    """The verdict as every output reads it at `now`: failing open once older than `stale_after`."""
    checks = snapshot.pools.get(pool)
    verdict = checks.verdicts.get(instance) if checks is not None else None
    if verdict is None or checks is None:
        return None
    why = stale_reason(checks.decided_at, checks.stale_after, now)
    return verdict if why is None else stale(verdict, why)


def find(snapshot: CheckSnapshot, name: str, now: float) -> InstanceVerdict | None:
    """A verdict by `pool/host:port` or by `host:port` alone (the HAProxy agent's `agent-send`)."""
    name = name.strip()
    if "/" in name:
        pool, _, instance = name.partition("/")
        return verdict_at(snapshot, pool, instance, now)
    pool_name = snapshot.pool_of.get(name)
    return verdict_at(snapshot, pool_name, name, now) if pool_name else None


def check_answer(snapshot: CheckSnapshot, pool: str, instance: str, now: float) -> CheckAnswer:
    """`/upstreams/{pool}/{instance}`: 200 while the instance should receive traffic (healthy, degraded,
    unknown, stale: fail open), 503 when it should not, 404 for an unknown pool or instance; a one-line
    reason in the body (the same text the API route answers)."""
    if pool not in snapshot.pool_names:
        return CheckAnswer(404, f"unknown pool {pool!r} (pools: {', '.join(snapshot.pool_names)})\n")
    verdict = verdict_at(snapshot, pool, instance, now)
    if verdict is None:
        return CheckAnswer(404, f"unknown instance {instance} in pool {pool}\n")
    return CheckAnswer(verdict.http_status, verdict.reason_line + "\n", rfc3339(verdict.decided_at))
