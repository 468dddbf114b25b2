"""`CanaryFailed`: the optional Alertmanager notification of a failing canary (`canaries[].notify`).

One alert per canary, labels `alertname`, `canary`, `pool`, `severity: ticket`: stable while the
verdict stays `fail` (the sentence and figures are annotations, updated with each resend), so
Alertmanager sees one alert; it resolves when the verdict leaves `fail` (a rollback empties the
candidate group: `inconclusive`; or the evidence turns and it passes). A ticket, not a page: the
rollout tool reading the verdict is what acts; the notification tells the people who own the rollout.
Off by default, for the same reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from monitor.decide.canary import FAIL, describe
from monitor.units import rfc3339

CANARY_ALERT = "CanaryFailed"
CANARY_SEVERITY = "ticket"


def canary_alerts(states: Iterable[Any]) -> list[tuple[dict[str, str], dict[str, str]]]:
    """(labels, annotations) of every canary with `notify` whose verdict is `fail`, from the
    service's canary states (monitor/service/canaries.py: `CanaryState`)."""
    out = []
    for state in states:
        config, verdict = state.config, state.verdict
        if not getattr(config, "notify", False) or verdict is None or verdict.verdict != FAIL:
            continue
        failing = [describe(r) for r in verdict.metrics.values() if r.verdict == FAIL]
        base, cand = state.members
        labels = {"alertname": CANARY_ALERT, "canary": config.name, "pool": config.pool, "severity": CANARY_SEVERITY}
        annotations = {
            "summary": f"Canary {config.name} (pool {config.pool}) failed: {verdict.reason}",
            "description": (
                f"Candidate {config.candidate.describe(config.pool)} ({', '.join(cand) or 'no instances'}) against "
                f"baseline {config.baseline.describe(config.pool)} ({len(base)} instances): failing "
                f"{'; '.join(failing) or 'none'}. Failing since {rfc3339(state.verdict_since)}, on evidence since "
                f"{rfc3339(state.began_at)} at {config.confidence * 100:g}% confidence. Roll the candidate back, "
                f"or read GET /api/v1/canaries/{config.name} for every metric."),
        }
        out.append((labels, annotations))
    return out
