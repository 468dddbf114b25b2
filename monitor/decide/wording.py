"""How reasons are written: durations, shares and counts in the words an operator reads in a
health-check body, the API and the logs, so every rule says `1.2s`, `5%` and `12:00:30Z` alike."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Sequence

from monitor.decide.verdicts import Finding


def secs(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value < 1:
        return f"{value * 1000:.0f}ms"
    return f"{value:.3g}s"


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.3g}%"


def num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g}"


def main_kind(found: Sequence[Finding]) -> str | None:
    return max(found, key=lambda f: f.severity).kind if found else None


def clock(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%H:%M:%SZ")
