"""The units of SLO time and the alert vocabulary every SLO module shares."""

from __future__ import annotations

from typing import Literal

MINUTE = 60
DAY = 86400.0
DEFAULT_PERIOD = 30 * DAY

Alert = Literal["none", "ticket", "page"]
Severity = Literal["page", "ticket"]
