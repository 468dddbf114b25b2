"""The audit log's entry: a health state change or a changed scaling recommendation, as stored and served."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audit entry: a health state change or a changed scaling recommendation."""

    at: float
    kind: str  # health | scaling
    pool: str
    instance: str  # "" for pool-level decisions
    from_state: str
    to_state: str
    reasons: tuple[str, ...]
    signals: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "kind": self.kind, "pool": self.pool, "instance": self.instance or None,
                "from": self.from_state, "to": self.to_state, "reasons": list(self.reasons),
                "signals": dict(self.signals)}
