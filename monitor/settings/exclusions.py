"""Maintenance windows an SLO's error budget does not pay for: `slos[].exclusions`, fixed (RFC 3339) or weekly."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BeforeValidator, Field, field_validator, model_validator

from monitor.settings.base import Section
from monitor.units import Name, Week

# --- maintenance windows ------------------------------------------------------------------------

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_NAMES = {d: d for d in DAYS} | {
    "monday": "mon", "tuesday": "tue", "wednesday": "wed", "thursday": "thu", "friday": "fri",
    "saturday": "sat", "sunday": "sun"}


def _day(value: Any) -> Any:
    return _DAY_NAMES.get(value.strip().lower(), value) if isinstance(value, str) else value


class WeeklyWindow(Section):
    """`{days: [sat], start: "02:00", duration: 2h}`: every week on those days, in `timezone`."""

    days: list[Annotated[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"], BeforeValidator(_day)]] = \
        Field(min_length=1)
    start: str = Field(description="HH:MM")
    duration: Week
    timezone: str = "UTC"

    @field_validator("start")
    @classmethod
    def _hh_mm(cls, value: str) -> str:
        match = re.fullmatch(r"(\d{1,2}):(\d{2})", value.strip())
        if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
            raise ValueError(f"not a time of day: {value!r} (use HH:MM, e.g. \"02:00\"; quote it in YAML)")
        return f"{int(match.group(1)):02d}:{match.group(2)}"

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as UTC or Europe/Berlin)") from None
        return value

    @field_validator("duration")
    @classmethod
    def _within_a_week(cls, value: float) -> float:
        if value > 7 * 86400:
            raise ValueError("a weekly window lasts at most 7d")
        return value


def _aware(value: Any) -> Any:
    """RFC 3339 needs an offset: a time without one would be read in whatever zone the host runs."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError(f"not an RFC 3339 time: {text!r} (e.g. 2026-05-01T02:00:00Z)") from None
    if isinstance(value, datetime) and value.tzinfo is None:
        raise ValueError(f"{value.isoformat()} has no time zone (RFC 3339 needs one: append Z for UTC, or +02:00)")
    return value


Rfc3339 = Annotated[datetime, BeforeValidator(_aware)]


class ExclusionConfig(Section):
    """One maintenance window: RFC 3339 `start`/`end`, or `weekly`; optionally only some `pools`."""

    start: Rfc3339 | None = None
    end: Rfc3339 | None = None
    weekly: WeeklyWindow | None = None
    reason: str = Field(default="", max_length=500)
    pools: list[Name] | None = Field(default=None, description="pools the window applies to; all when unset")

    @model_validator(mode="after")
    def _one_kind(self) -> ExclusionConfig:
        if self.weekly is not None:
            if self.start is not None or self.end is not None:
                raise ValueError("give `weekly` or `start` and `end`, not both")
            return self
        if self.start is None or self.end is None:
            raise ValueError("needs `start` and `end` (RFC 3339), or `weekly: {days: [sat], start: \"02:00\", "
                             "duration: 2h}`")
        if self.end <= self.start:
            raise ValueError(f"end ({self.end.isoformat()}) must be after start ({self.start.isoformat()})")
        return self

    def timestamps(self) -> tuple[float, float] | None:
        """(start, end) in Unix seconds for a one-off window; None for a weekly one."""
        if self.start is None or self.end is None:
            return None
        return self.start.astimezone(UTC).timestamp(), self.end.astimezone(UTC).timestamp()
