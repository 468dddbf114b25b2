"""promtool's notation: input series written so they expand to exactly the intended floats, and the
alerts a test expects, with their annotation templates filled in as Prometheus fills them."""

from __future__ import annotations

from typing import Any, Sequence

import monitor.generate.expressions as q


def exact(value: float) -> str:
    """A float written so that parsing it gives back the very same double (Python's repr)."""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def series_values(values: Sequence[float]) -> str:
    """promtool's expanding notation (`0+10x5 50+0x3`) for samples one step apart, exactly.

    promtool expands `a+bxn` by adding b to a running value n times, so a segment is only used
    where that repeated addition lands on every sample bit for bit; elsewhere samples are listed one
    by one. An approximate expansion could make a counter step back by one ulp at a segment joint,
    which `rate()` reads as a counter reset: a whole counter's worth of phantom events.
    """
    out: list[str] = []
    i = 0
    while i < len(values):
        j = i
        if i + 1 < len(values):
            step = values[i + 1] - values[i]
            running = values[i]
            while j + 1 < len(values) and running + step == values[j + 1]:
                running += step
                j += 1
        if j == i:
            out.append(exact(values[i]))
        else:
            step = values[i + 1] - values[i]
            sign = "-" if step < 0 else "+"
            out.append(f"{exact(values[i])}{sign}{exact(abs(step))}x{j - i}")
        i = j + 1
    return " ".join(out)


def labels_text(name: str, labels: dict[str, str]) -> str:
    inner = ", ".join(f"{k}={q.quote(v)}" for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def render(template: str, labels: dict[str, str]) -> str:
    """The `{{ $labels.x }}` templates of the generated annotations, filled in as Prometheus would."""
    out = template
    for key, value in labels.items():
        out = out.replace("{{ $labels." + key + " }}", value)
    return out


def expected_alert(rule: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    full = {**labels, **rule["labels"]}
    return {"exp_labels": full, "exp_annotations": {k: render(v, full) for k, v in rule["annotations"].items()}}


__all__ = ["exact", "expected_alert", "labels_text", "render", "series_values"]
