"""JSON answers that are always JSON: a float that is not finite is written as null.

Starlette's JSONResponse refuses NaN and ±Inf (`allow_nan=False`, since JSON has no spelling for
them), so one such value anywhere in an answer made the whole endpoint answer 500. The pipeline
keeps them out (monitor/collect/vllm.py refuses them at the door, the windows and the SLO series
drop what is not finite); this is the defence behind that: the answer is rendered as usual, and
only when that fails is it walked once to put null where a number is not finite.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi.responses import JSONResponse


def finite_json(value: Any) -> Any:
    """`value` with every non-finite float inside dicts, lists and tuples replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


class FiniteJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except ValueError:  # "Out of range float values are not JSON compliant"
            return super().render(finite_json(content))
