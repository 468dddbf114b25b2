"""What changed in a cycle, said once: a log line in words and an audit entry for each health
transition, membership change and new replica recommendation, a line when a pool starts or stops
failing open, and a line when an SLO's page or ticket starts or stops firing (with or without
Alertmanager)."""

from __future__ import annotations

import logging

from monitor.decide.fleet import CycleDecisions
from monitor.decide.verdicts import LEAVING, REMOVED, STARTING
from monitor.evaluate.slo.engine import SloStatus
from monitor.store import AuditEntry

log = logging.getLogger("monitor.service")


class EventLog:
    """Remembers what was last said, so each change is said once."""

    def __init__(self) -> None:
        self.fail_open: dict[str, str | None] = {}  # pool -> why decisions are failing open
        self.desired: dict[str, int] = {}  # pool -> last recommended replicas
        self.firing: dict[tuple[str, str, str], tuple[str, ...]] = {}  # SLO key -> severities firing

    def audit(self, outcome: CycleDecisions, now: float) -> list[AuditEntry]:
        """The cycle's audit entries, each logged once in words."""
        audit: list[AuditEntry] = []
        for decision in outcome.health:
            if decision.fail_open != self.fail_open.get(decision.pool):
                if decision.fail_open:
                    log.warning("pool %s: %s", decision.pool, decision.fail_open)
                else:
                    log.info("pool %s: no longer failing open", decision.pool)
                self.fail_open[decision.pool] = decision.fail_open
            for t in decision.transitions:
                log.info("%s", transition_line(t.pool, t.instance, t.from_state, t.to_state, t.reasons))
                audit.append(AuditEntry(t.at, "health", t.pool, t.instance, t.from_state, t.to_state, t.reasons,
                                        t.signals))
        for pool, rec in outcome.scaling.items():
            before = self.desired.get(pool)
            if before != rec.desired_replicas:
                self.desired[pool] = rec.desired_replicas
                if before is not None:
                    log.info("pool %s: desired replicas now %d (was %d): %s", pool, rec.desired_replicas, before,
                             rec.reason)
                audit.append(AuditEntry(now, "scaling", pool, "", "" if before is None else str(before),
                                        str(rec.desired_replicas), (rec.reason,), rec.signals))
        return audit

    def slo_changes(self, statuses: list[SloStatus]) -> None:
        """One line when an SLO's page or ticket starts or stops firing, Alertmanager or not."""
        firing: dict[tuple[str, str, str], tuple[str, ...]] = {}
        for status in statuses:
            key = (status.key.slo, status.key.pool, status.key.model_name)
            severities = status.fired_severities()
            firing[key] = severities
            before = self.firing.get(key, ())
            who = f"SLO {key[0]} pool {key[1]}" + (f" model {key[2]}" if key[2] else "")
            ev = status.evaluation
            for severity in severities:
                if severity not in before:
                    rates = ", ".join(f"{w} {ev.burn_rates[w]:.1f}x" for w in ("5m", "1h") if ev.burn_rates.get(w))
                    pairs = ", ".join(p.name for p in ev.pairs if p.severity == severity and p.name in ev.fired)
                    log.warning("%s: %s started firing (%s; burn %s; budget left %.0f%%)", who, severity,
                                pairs or "-", rates or "n/a", ev.error_budget_remaining * 100)
            for severity in before:
                if severity not in severities:
                    log.info("%s: %s stopped firing", who, severity)
        self.firing = firing


def transition_line(pool: str, instance: str, before: str, after: str, reasons: tuple[str, ...]) -> str:
    """`pool p 10.0.0.1:8000: healthy -> ejected: TTFT p99 1.2s > eject threshold 1s (...)`, or the
    membership events in words (`joined`, `left`, `dropped after draining`)."""
    why = "; ".join(dict.fromkeys(reasons))
    if not before and after == STARTING:
        return f"pool {pool} {instance}: joined the fleet (starting)"
    if after == LEAVING:
        return f"pool {pool} {instance}: left the fleet ({before} -> leaving, drained)"
    if after == REMOVED:
        return f"pool {pool} {instance}: dropped after draining"
    return f"pool {pool} {instance}: {before} -> {after}" + (f": {why}" if why else "")
