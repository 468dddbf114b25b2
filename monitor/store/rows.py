"""Conversions between the evaluate stage's plain records and database values (UTC datetimes, JSON)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any, Mapping, cast

from sqlalchemy import CursorResult, Result


def utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=UTC)


def histogram_json(stats) -> dict[str, Any]:
    out = {}
    for key, hist in stats.histograms.items():
        out[key] = {
            "bounds": [b for b in hist.bounds if not math.isinf(b)],  # +Inf is implied as the last count
            "counts": list(hist.cumulative),
            "sum": hist.sum,
            "count": hist.count,
        }
    return out


def json_text(value: Any) -> str:
    """What every JSON column stores (the engines' `json_serializer`): the C encoder's text, and only
    for a value it refuses (inf or nan, a key that is not a string) the slower `jsonable` walk first.
    A pool's health state is 1,000 instances of about 70 fields, written on every change of state."""
    try:
        return json.dumps(value, allow_nan=False)
    except (ValueError, TypeError):
        return json.dumps(jsonable(value), allow_nan=False, default=str)


def jsonable(value: Any) -> Any:
    """Signals hold floats that may be inf/nan, which JSON columns refuse: store those as strings."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def aware(dt: datetime) -> datetime:
    """SQLite returns naive datetimes; they were stored as UTC."""
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def rowcount(result: Result[Any]) -> int:
    """Rows a DELETE or UPDATE touched: `Session.execute` is typed to answer a `Result`; for DML it is a
    `CursorResult`."""
    return cast("CursorResult[Any]", result).rowcount
