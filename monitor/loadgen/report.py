"""The end-of-run summary, laid out like vLLM's `benchmark_serving` result block.

Goodput counts requests that met every given limit at once (TTFT, TPOT, e2e, in ms, as vLLM's
`--goodput ttft:500 tpot:50`), because a request fast to start but slow to finish is not good service.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from monitor.loadgen.client import Outcome

GOODPUT_KEYS = ("ttft", "tpot", "e2el")


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation, as numpy.percentile's default."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def parse_goodput(items: Iterable[str]) -> dict[str, float]:
    """`ttft:500 tpot:50` -> {"ttft": 0.5, "tpot": 0.05} (seconds); raises ValueError naming the item."""
    limits: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition(":")
        if not sep or key not in GOODPUT_KEYS:
            raise ValueError(f"goodput limit {item!r}: expected KEY:MS with KEY one of {', '.join(GOODPUT_KEYS)}")
        try:
            ms = float(value)
        except ValueError:
            raise ValueError(f"goodput limit {item!r}: {value!r} is not a number of milliseconds") from None
        if ms <= 0:
            raise ValueError(f"goodput limit {item!r}: must be positive")
        limits[key] = ms / 1000.0
    return limits


@dataclass(frozen=True, slots=True)
class Stat:
    mean: float | None
    median: float | None
    p99: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        if not values:
            return cls(None, None, None)
        return cls(sum(values) / len(values), percentile(values, 50), percentile(values, 99))


@dataclass(slots=True)
class Summary:
    rate: float
    duration_s: float
    completed: int
    failed: int
    incomplete: int
    input_tokens: int
    output_tokens: int
    good: int | None
    ttft: Stat
    tpot: Stat
    itl: Stat
    e2el: Stat
    errors: dict[str, int] = field(default_factory=dict)
    per_target: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def request_throughput(self) -> float:
        return self.completed / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def goodput(self) -> float | None:
        return self.good / self.duration_s if self.good is not None and self.duration_s > 0 else None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "request_rate": self.rate, "duration_s": self.duration_s, "completed": self.completed,
            "failed": self.failed, "incomplete": self.incomplete, "total_input_tokens": self.input_tokens,
            "total_output_tokens": self.output_tokens, "request_throughput": self.request_throughput,
            "request_goodput": self.goodput,
            "output_throughput": self.output_tokens / self.duration_s if self.duration_s > 0 else 0.0,
            "errors": self.errors, "per_target": self.per_target,
        }
        for name in ("ttft", "tpot", "itl", "e2el"):
            stat: Stat = getattr(self, name)
            for label in ("mean", "median", "p99"):
                value = getattr(stat, label)
                out[f"{label}_{name}_ms"] = value * 1000 if value is not None else None
        return out


def summarize(outcomes: Sequence[Outcome], rate: float, duration_s: float, incomplete: int = 0,
              goodput: dict[str, float] | None = None) -> Summary:
    ok = [o for o in outcomes if o.ok]
    failed = [o for o in outcomes if not o.ok]
    errors: dict[str, int] = {}
    for o in failed:
        key = (o.error or "unknown")[:80]
        errors[key] = errors.get(key, 0) + 1
    itls = [x for o in ok for x in o.itls]
    good = None
    if goodput:
        good = sum(1 for o in ok if _meets(o, goodput))
    per_target: dict[str, dict[str, Any]] = {}
    for target in sorted({o.target for o in outcomes}):
        mine = [o for o in ok if o.target == target]
        ttfts = [o.ttft for o in mine if o.ttft is not None]
        per_target[target] = {
            "completed": len(mine),
            "failed": sum(1 for o in failed if o.target == target),
            "p99_ttft_ms": (percentile(ttfts, 99) or 0.0) * 1000 if ttfts else None,
            "median_ttft_ms": (percentile(ttfts, 50) or 0.0) * 1000 if ttfts else None,
        }
    return Summary(
        rate=rate, duration_s=duration_s, completed=len(ok), failed=len(failed), incomplete=incomplete,
        input_tokens=sum(o.prompt_tokens for o in ok), output_tokens=sum(o.output_tokens for o in ok), good=good,
        ttft=Stat.of([o.ttft for o in ok if o.ttft is not None]),
        tpot=Stat.of([t for o in ok if (t := o.tpot) is not None]),
        itl=Stat.of(itls), e2el=Stat.of([o.e2e for o in ok if o.e2e is not None]),
        errors=errors, per_target=per_target,
    )


def _meets(o: Outcome, limits: dict[str, float]) -> bool:
    values = {"ttft": o.ttft, "tpot": o.tpot or 0.0, "e2el": o.e2e}
    return all((v := values[k]) is not None and v <= limit for k, limit in limits.items())


def format_summary(s: Summary) -> str:
    lines = ["{s:{c}^{n}}".format(s=" Serving Benchmark Result ", n=50, c="=")]

    def row(label: str, value: Any, fmt: str = "") -> None:
        if value is None:
            lines.append("{:<40} {:<10}".format(label, "n/a"))
        else:
            lines.append(("{:<40} {:<10" + fmt + "}").format(label, value))

    row("Successful requests:", s.completed)
    row("Failed requests:", s.failed)
    if s.incomplete:
        row("Unfinished requests (cut at the end):", s.incomplete)
    row("Request rate configured (RPS):", s.rate, ".2f")
    row("Benchmark duration (s):", s.duration_s, ".2f")
    row("Total input tokens:", s.input_tokens)
    row("Total generated tokens:", s.output_tokens)
    row("Request throughput (req/s):", s.request_throughput, ".2f")
    if s.goodput is not None:
        row("Request goodput (req/s):", s.goodput, ".2f")
    row("Output token throughput (tok/s):", s.output_tokens / s.duration_s if s.duration_s else 0.0, ".2f")
    row("Total Token throughput (tok/s):",
        (s.input_tokens + s.output_tokens) / s.duration_s if s.duration_s else 0.0, ".2f")
    for title, name, short in (("Time to First Token", "ttft", "TTFT"),
                               ("Time per Output Token (excl. 1st token)", "tpot", "TPOT"),
                               ("Inter-token Latency", "itl", "ITL"), ("End-to-end Latency", "e2el", "E2EL")):
        lines.append("{s:{c}^{n}}".format(s=title, n=50, c="-"))
        stat: Stat = getattr(s, name)
        for label, value in (("Mean", stat.mean), ("Median", stat.median), ("P99", stat.p99)):
            row(f"{label} {short} (ms):", value * 1000 if value is not None else None, ".2f")
    if len(s.per_target) > 1:
        lines.append("{s:{c}^{n}}".format(s="Per target", n=50, c="-"))
        for target, t in s.per_target.items():
            p99 = f"{t['p99_ttft_ms']:.1f}" if t["p99_ttft_ms"] is not None else "n/a"
            lines.append(f"{target:<32} ok {t['completed']:<6} failed {t['failed']:<5} P99 TTFT {p99} ms")
    if s.errors:
        lines.append("{s:{c}^{n}}".format(s="Errors", n=50, c="-"))
        for message, count in sorted(s.errors.items(), key=lambda kv: -kv[1])[:5]:
            lines.append(f"{count:>6} x {message}")
    lines.append("=" * 50)
    return "\n".join(lines)
