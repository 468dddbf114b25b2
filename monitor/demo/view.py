"""What the demo shows: the service's view of each instance (`GET /api/v1/instances`), side by side
with the fault the demo injected, as a rich table on a terminal and as plain lines otherwise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from rich.console import Group
from rich.table import Table
from rich.text import Text


@dataclass(frozen=True, slots=True)
class InstanceRow:
    instance: str
    state: str
    reasons: tuple[str, ...]
    ttft_p99_s: float | None
    tpot_p99_s: float | None
    e2e_p99_s: float | None
    kv_cache_usage: float | None
    running: float | None
    waiting: float | None
    requests_per_s: float | None
    fault: str

    @classmethod
    def from_api(cls, item: Mapping[str, Any], fault: str) -> InstanceRow:
        m = item.get("metrics") or {}
        return cls(
            instance=item["instance"], state=item.get("state", "unknown"), reasons=tuple(item.get("reasons") or ()),
            ttft_p99_s=m.get("ttft_p99_s"), tpot_p99_s=m.get("tpot_p99_s"), e2e_p99_s=m.get("e2e_p99_s"),
            kv_cache_usage=m.get("kv_cache_usage"), running=m.get("requests_running"),
            waiting=m.get("requests_waiting"), requests_per_s=m.get("requests_per_s"), fault=fault,
        )


def _s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f} s"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1000:.0f} ms"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.0f}%"


def _n(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


STATE_STYLE = {"healthy": "green", "degraded": "yellow", "ejected": "red", "unknown": "magenta",
               "starting": "cyan", "leaving": "dim", "sleeping": "blue"}


def table(rows: list[InstanceRow], title: str, width: int = 200) -> Table:
    """Narrow terminals (< 110 columns) get the essential columns only: instance, state, TTFT/TPOT p99,
    KV usage, running/waiting, fault and reasons."""
    wide = width >= 110
    t = Table(title=title, title_justify="left", expand=False, pad_edge=False)
    t.add_column("instance", no_wrap=True)
    t.add_column("state", no_wrap=True)
    for name in ("TTFT p99", "TPOT p99", *(("e2e p99",) if wide else ()), "KV", "run/wait",
                 *(("req/s",) if wide else ())):
        t.add_column(name, justify="right", no_wrap=True)
    t.add_column("fault", no_wrap=True)
    t.add_column("reasons")
    for r in rows:
        cells: list[str | Text] = [r.instance, Text(r.state, style=STATE_STYLE.get(r.state, "")), _ms(r.ttft_p99_s), _ms(r.tpot_p99_s)]
        if wide:
            cells.append(_s(r.e2e_p99_s))
        cells += [_pct(r.kv_cache_usage), f"{_n(r.running)}/{_n(r.waiting)}"]
        if wide:
            cells.append(_n(r.requests_per_s, 1))
        cells += [Text(r.fault, style="bold red" if r.fault != "none" else "dim"), "; ".join(r.reasons) or "-"]
        t.add_row(*cells)
    return t


def screen(rows: list[InstanceRow], title: str, status_lines: list[str], width: int = 200) -> Group:
    return Group(table(rows, title, width), *(Text(line) for line in status_lines))


def plain_line(prefix: str, r: InstanceRow) -> str:
    reasons = f" reasons={'; '.join(r.reasons)}" if r.reasons else ""
    return (f"{prefix}{r.instance:<21} {r.state:<8} TTFT p99 {_s(r.ttft_p99_s):>9}  TPOT p99 {_s(r.tpot_p99_s):>9}  "
            f"KV {_pct(r.kv_cache_usage):>4}  running {_n(r.running):>3}  waiting {_n(r.waiting):>3}  "
            f"fault {r.fault}{reasons}")


def result_line(r: InstanceRow) -> str:
    """One machine-readable line per instance at the end (tests and scripts parse these)."""
    def num(v: float | None) -> str:
        return "nan" if v is None else f"{v:.6f}"

    return (f"result instance={r.instance} state={r.state} fault={r.fault.replace(' ', '')} "
            f"ttft_p99_s={num(r.ttft_p99_s)} tpot_p99_s={num(r.tpot_p99_s)} e2e_p99_s={num(r.e2e_p99_s)} "
            f"kv_cache_usage={num(r.kv_cache_usage)}")
