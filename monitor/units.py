"""Value types of the configuration: durations, ratios, sizes, URLs, listen addresses.

Kept apart from the config model so that every stage's settings models (health, scaling, ...) can
use the same parsing without importing the whole config.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BeforeValidator, Field

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(value: Any) -> float:
    """Seconds from a Prometheus-style duration (``500ms``, ``5s``, ``1h30m``, ``30d``).

    A bare number is refused: ``interval: 5`` could mean seconds or minutes, and guessing wrong
    silently changes what an SLO window means.
    """
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f"not a duration: {value!r} (use a unit, e.g. 500ms, 5s, 1m, 30d)")
    text = value.strip()
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if not text or pos != len(text):
        raise ValueError(f"not a duration: {value!r} (use e.g. 500ms, 5s, 1m, 30d)")
    if total <= 0:
        raise ValueError(f"duration must be positive: {value!r}")
    return total


def parse_ratio(value: Any) -> float:
    """A fraction in [0, 1] from ``99.9%`` or ``0.999``."""
    if isinstance(value, bool):
        raise ValueError(f"not a ratio: {value!r}")
    if isinstance(value, str):
        text = value.strip()
        try:
            # Decimal, so "99.9%" is the double nearest 0.999 (float division gives 0.9990000000000001,
            # which the API would then print as the objective)
            number = float(Decimal(text[:-1]) / 100) if text.endswith("%") else float(text)
        except (ValueError, ArithmeticError):
            raise ValueError(f"not a ratio: {value!r} (use e.g. 99.9% or 0.999)") from None
    elif isinstance(value, (int, float)):
        number = float(value)
    else:
        raise ValueError(f"not a ratio: {value!r} (use e.g. 99.9% or 0.999)")
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"ratio out of range [0, 1]: {value!r}")
    return number


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_size(value: Any) -> int:
    """Bytes from ``16MiB``, ``512KiB``, ``1MB`` or a plain integer."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and (match := _SIZE.fullmatch(value.strip())):
        number = int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()])
    else:
        raise ValueError(f"not a size: {value!r} (use e.g. 16MiB, 512KiB or a number of bytes)")
    if number <= 0:
        raise ValueError(f"size must be positive: {value!r}")
    return number


def parse_http_url(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"not an http(s) URL: {value!r}")
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s) URL")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ValueError("not an http(s) URL (bad port)") from None
    return value.strip().rstrip("/")


def parse_listen(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"\[?[\w.:-]*\]?:\d{1,5}", value.strip()):
        raise ValueError(f"not HOST:PORT: {value!r}")
    if not 0 < int(value.rsplit(":", 1)[1]) < 65536:
        raise ValueError(f"port out of range: {value!r}")
    return value.strip()


Duration = Annotated[float, BeforeValidator(parse_duration)]
Ratio = Annotated[float, BeforeValidator(parse_ratio)]
Size = Annotated[int, BeforeValidator(parse_size)]
HttpUrl = Annotated[str, BeforeValidator(parse_http_url)]
Listen = Annotated[str, BeforeValidator(parse_listen)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)]

def redact_url(url: str) -> str:
    """The URL with any user:password@ replaced by `***@`, for logs and error messages: an
    Alertmanager (or target) URL may carry basic-auth credentials, which must never be printed."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


def instance_address(url: str) -> str:
    """The ``host:port`` that names an instance in the API, NGINX and traces."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname or ""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
