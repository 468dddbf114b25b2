"""Reading the RFC 3339 timestamps the service and Alertmanager write."""

from __future__ import annotations

from datetime import datetime


def parse_rfc3339(text: str) -> float:
    """Unix seconds of an RFC 3339 time; a trailing `Z` is accepted on every Python version."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
