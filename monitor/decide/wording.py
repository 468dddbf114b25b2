"""How reasons are written: durations, shares and counts in the words an operator reads in a
health-check body, the API and the logs, so every rule says `1.2s`, `5%` and `12:00:30Z` alike."""

from __future__ import annotations

from datetime import UTC, datetime
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


def count(n: float, noun: str, plural: str | None = None) -> str:
    """`1 good interval`, `3 good intervals`: a count and its noun, as a sentence says it."""
    return f"{num(n)} {noun if n == 1 else plural or noun + 's'}"


def progress(seen: float, needed: float, noun: str, plural: str | None = None) -> str:
    """How far a count is towards what a rule needs, as words: `1 of 3 good intervals needed`, and
    past it `3 of 3 good intervals needed, 14 seen` (never `14/3`, which reads as a ratio)."""
    text = f"{num(min(seen, needed))} of {count(needed, noun, plural)} needed"
    return text + f", {num(seen)} seen" if seen > needed else text


def ordinal(n: int) -> str:
    """`first`, `2nd`, `3rd`, `11th`: which one of a series."""
    if n == 1:
        return "first"
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def main_kind(found: Sequence[Finding]) -> str | None:
    return max(found, key=lambda f: f.severity).kind if found else None


def clock(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%H:%M:%SZ")
