"""The per-instance families of /metrics written straight to text.

At 1,000 instances these are ~40,000 series; built as prometheus_client metric families and written by
its `generate_latest` (a dict and a sorted, escaped label string per sample) they took a tenth of the
service's CPU when scraped every 15 s. Here each instance's label text is escaped once and every line is
one f-string: the bytes are the same as `generate_latest(FleetCollector.instance_families(snap))`'s
(tests/test_fleet_text.py holds it to that over generated snapshots), only cheaper to make.
"""

from __future__ import annotations

from prometheus_client.utils import floatToGoString

from monitor.decide.verdicts import STATES
from monitor.publish.metrics import (
    AGE,
    BAD,
    DURATION,
    FAILURES,
    PLAIN_FIGURES,
    QUANTILE_FIGURES,
    REJECTION_REASONS,
    REJECTIONS,
    STATE,
    UP,
    FleetSnapshot,
)
from monitor.publish.state import NAMESPACE
from monitor.samples import BAD_SAMPLE_KINDS

_QUANTILES = (("p50", "0.50"), ("p90", "0.90"), ("p99", "0.99"))  # as published since the start


def _escape(value: str) -> str:
    """A label value as prometheus_client writes it."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _head(name: str, doc: str, kind: str = "gauge") -> str:
    help_text = doc.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n"


def fleet_text(snap: FleetSnapshot) -> str:
    """The text of `FleetCollector.instance_families(snap)` in the Prometheus text format."""
    ns = NAMESPACE
    up: list[str] = []
    state: list[str] = []
    duration: list[str] = []
    age: list[str] = []
    failures: list[str] = []
    bad: list[str] = []
    quantiles: dict[str, list[str]] = {key: [] for key in QUANTILE_FIGURES}
    plain: dict[str, list[str]] = {key: [] for key in PLAIN_FIGURES}
    rejections: list[str] = []
    quantile_names = {key: f"{ns}_{name}" for key, (name, _) in QUANTILE_FIGURES.items()}
    plain_names = {key: f"{ns}_{name}" for key, (name, _) in PLAIN_FIGURES.items()}
    fmt = floatToGoString
    for row in snap.rows:
        view = row.view
        instance, pool = _escape(view.instance), _escape(view.pool)
        who = f'instance="{instance}",pool="{pool}"'
        up.append(f"{ns}_{UP[0]}{{{who}}} {fmt(1.0 if row.up else 0.0)}\n")
        for s in STATES:
            state.append(f'{ns}_{STATE[0]}{{{who},state="{_escape(s)}"}} {fmt(1.0 if row.state == s else 0.0)}\n')
        if view.scrape_duration_s is not None:
            duration.append(f"{ns}_{DURATION[0]}{{{who}}} {fmt(view.scrape_duration_s)}\n")
        if row.last_success_at is not None:
            age.append(f"{ns}_{AGE[0]}{{{who}}} {fmt(max(0.0, snap.at - row.last_success_at))}\n")
        failures.append(f"{ns}_{FAILURES[0]}{{{who}}} {fmt(float(row.consecutive_failures))}\n")
        total_bad = float(sum(view.bad_samples_total.get(kind, 0) for kind in BAD_SAMPLE_KINDS))
        bad.append(f"{ns}_{BAD[0]}_total{{{who}}} {fmt(total_bad)}\n")
        for model, figures in view.models.items():
            series = f'instance="{instance}",model_name="{_escape(model)}",pool="{pool}"'
            for key, lines in quantiles.items():
                name = quantile_names[key]
                for q, label in _QUANTILES:
                    value = figures.get(f"{key}_{q}_s")
                    if value is not None:
                        lines.append(f'{name}{{{series},quantile="{label}"}} {fmt(value)}\n')
            for key, lines in plain.items():
                value = figures.get(key)
                if value is not None:
                    lines.append(f"{plain_names[key]}{{{series}}} {fmt(value)}\n")
            for reason in REJECTION_REASONS:
                value = figures.get(f"admission_rejections_{reason}_per_s")
                if value is not None:
                    rejections.append(f'{ns}_{REJECTIONS[0]}{{{series},reason="{reason}"}} {fmt(value)}\n')
    parts = [_head(f"{ns}_{UP[0]}", UP[1]), *up, _head(f"{ns}_{STATE[0]}", STATE[1]), *state,
             _head(f"{ns}_{DURATION[0]}", DURATION[1]), *duration, _head(f"{ns}_{AGE[0]}", AGE[1]), *age,
             _head(f"{ns}_{FAILURES[0]}", FAILURES[1]), *failures,
             _head(f"{ns}_{BAD[0]}_total", BAD[1], "counter"), *bad]
    for key, lines in quantiles.items():
        parts.append(_head(quantile_names[key], QUANTILE_FIGURES[key][1]))
        parts.extend(lines)
    for key, lines in plain.items():
        parts.append(_head(plain_names[key], PLAIN_FIGURES[key][1]))
        parts.extend(lines)
    parts.append(_head(f"{ns}_{REJECTIONS[0]}", REJECTIONS[1]))
    parts.extend(rejections)
    return "".join(parts)
