"""Whether a missing real part (a binary, the PostgreSQL server) skips a test or fails it.

Outside CI a missing part skips the test with the reason; with CI=true it fails it, so a broken CI
machine can never pass quietly.
"""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip locally, fail in CI, when a real dependency of the test is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true and a required part is missing: {reason}")
    pytest.skip(reason)
