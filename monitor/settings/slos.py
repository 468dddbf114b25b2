"""`slos:`: what an SLO measures (its indicator), its objective and window, and how it alerts: the
burn-rate window set, labels and annotations on every alert, the metric-absent delay and the
maintenance windows (`exclusions`) its error budget does not pay for.

Also the top-level `alerting:` section (user window sets), and the built-in window sets as data.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Annotated, Any, Callable, Literal, Mapping, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BeforeValidator, Field, field_validator, model_validator

from monitor.settings.base import OptionalStr, OptionalUrl, Section
from monitor.units import Duration, Name, Ratio, format_duration, parse_duration


class LatencyIndicator(Section):
    type: Literal["latency"]
    metric: Literal["ttft", "tpot", "e2e", "queue", "itl"]
    threshold: Duration


class ErrorRatioIndicator(Section):
    type: Literal["error_ratio"]


class SaturationIndicator(Section):
    type: Literal["saturation"]
    metric: Literal["kv_cache_usage"] = "kv_cache_usage"
    threshold: Ratio


class AvailabilityIndicator(Section):
    type: Literal["availability"]


Indicator = Annotated[
    LatencyIndicator | ErrorRatioIndicator | SaturationIndicator | AvailabilityIndicator,
    Field(discriminator="type"),
]

# the `type` of each indicator, for error messages that name the member pydantic tried
INDICATOR_TYPES: dict[str, type[Section]] = {
    "latency": LatencyIndicator,
    "error_ratio": ErrorRatioIndicator,
    "saturation": SaturationIndicator,
    "availability": AvailabilityIndicator,
}


# --- burn-rate window sets ----------------------------------------------------------------------


def _window_name(value: Any) -> str:
    """A burn window in the config's notation, normalised (`60m` -> `1h`), so pairs name windows
    the same way the API's burn_rates do."""
    return format_duration(parse_duration(value))


WindowName = Annotated[str, BeforeValidator(_window_name)]


class BurnWindow(Section):
    """One multiwindow pair: pages (or tickets) when both windows burn faster than the rate that
    spends `budget_percent` of the SLO window's budget within `long` (Sloth's `errorBudgetPercent`,
    `longWindow`, `shortWindow`)."""

    severity: Literal["page", "ticket"]
    long: WindowName
    short: WindowName
    budget_percent: float = Field(gt=0, le=100)

    @model_validator(mode="after")
    def _short_is_shorter(self) -> BurnWindow:
        if parse_duration(self.short) >= parse_duration(self.long):
            raise ValueError(f"short ({self.short}) must be shorter than long ({self.long}); the Workbook's "
                             "short window is 1/12 of the long one")
        return self


class WindowSet(Section):
    """A named list of pairs; `period` says which SLO window it was written for (documentation and
    `check`: the factors always follow the SLO's own window)."""

    period: Duration | None = None
    pairs: list[BurnWindow] = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct(self) -> WindowSet:
        seen = [f"{p.long}/{p.short}" for p in self.pairs]
        if len(set(seen)) != len(seen):
            raise ValueError(f"pairs: the same long/short windows twice ({', '.join(seen)})")
        return self


def _pairs(*rows: tuple[str, str, str, float]) -> list[dict[str, Any]]:
    return [{"severity": s, "long": long, "short": short, "budget_percent": pct} for s, long, short, pct in rows]


# SRE Workbook Table 5-8 plus the 1d/2h ticket pair Sloth and Grafana ship: page on 2% of the budget
# in 1h or 5% in 6h, ticket on 10% in 1d or 3d. The 28-day set (Sloth's `28d` default) has the same
# shares; its factors come out 13.44 / 5.6 / 2.8 / 0.933 because they follow the SLO's window.
_GOOGLE = _pairs(("page", "1h", "5m", 2.0), ("page", "6h", "30m", 5.0),
                 ("ticket", "1d", "2h", 10.0), ("ticket", "3d", "6h", 10.0))
BUILTIN_WINDOW_SETS: dict[str, WindowSet] = {
    "google-30d": WindowSet.model_validate({"period": "30d", "pairs": _GOOGLE}),
    "google-28d": WindowSet.model_validate({"period": "28d", "pairs": _GOOGLE}),
}
DEFAULT_WINDOW_SET = "google-30d"


def default_window_set(window: float) -> str:
    """The built-in set for an SLO that names none: the 28-day one for a 28-day window."""
    return "google-28d" if window == parse_duration("28d") else DEFAULT_WINDOW_SET


class SloAlerting(Section):
    """`slos[].alerting`: which window set the SLO's burn-rate alerts use (`windows`: a built-in
    or user set's name), or its own `pairs`."""

    windows: Name | None = None
    pairs: list[BurnWindow] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _known(self) -> SloAlerting:
        if self.windows is not None and self.pairs is None and self.windows not in BUILTIN_WINDOW_SETS:
            raise ValueError(f"windows: unknown window set {self.windows!r} (built in: "
                             f"{', '.join(BUILTIN_WINDOW_SETS)}; define others under alerting.window_sets or in "
                             "alerting.window_sets_file)")
        if self.windows in BUILTIN_WINDOW_SETS and self.pairs is not None:
            raise ValueError("give `windows` (a window set's name) or `pairs`, not both")
        return self


class AlertingConfig(Section):
    """Top-level `alerting:`: window sets of one's own, inline or in a file, and the default set.

    The file holds the same `window_sets:` mapping, or Sloth `AlertWindows` documents (named by
    `metadata.name`, else `sloth-<sloPeriod>`).
    """

    window_sets_file: OptionalStr = Field(default=None, description="YAML file of window sets (relative "
                                                                      "to the working directory)")
    window_sets: dict[Name, WindowSet] = Field(default_factory=dict)
    default_windows: Name | None = Field(default=None, description="window set of SLOs that name none")

    @model_validator(mode="after")
    def _not_builtin(self) -> AlertingConfig:
        clash = sorted(set(self.window_sets) & set(BUILTIN_WINDOW_SETS))
        if clash:
            raise ValueError(f"window_sets: {', '.join(clash)} is a built-in window set's name; pick another")
        known = {*BUILTIN_WINDOW_SETS, *self.window_sets}
        if self.default_windows is not None and self.default_windows not in known:
            raise ValueError(f"default_windows: unknown window set {self.default_windows!r} "
                             f"(known: {', '.join(sorted(known))})")
        return self


def _sloth_alert_windows(doc: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """A Sloth `AlertWindows` document as (name, our window set)."""
    spec = doc.get("spec") or {}
    period = spec.get("sloPeriod")
    name = (doc.get("metadata") or {}).get("name") or f"sloth-{period}"
    pairs = []
    for severity in ("page", "ticket"):
        for speed in ("quick", "slow"):
            w = (spec.get(severity) or {}).get(speed)
            if isinstance(w, Mapping):
                pairs.append({"severity": severity, "long": w.get("longWindow"), "short": w.get("shortWindow"),
                              "budget_percent": w.get("errorBudgetPercent")})
    return str(name), {"period": period, "pairs": pairs}


def _file_window_sets(docs: Any, path: str) -> dict[str, Any]:
    """The window sets of a parsed file: one `window_sets:` mapping, or Sloth AlertWindows documents."""
    found: dict[str, Any] = {}
    for doc in docs if isinstance(docs, list) else [docs]:
        if doc is None:
            continue
        if isinstance(doc, Mapping) and doc.get("kind") == "AlertWindows":
            name, window_set = _sloth_alert_windows(doc)
            found[name] = window_set
        elif isinstance(doc, Mapping) and isinstance(doc.get("window_sets"), Mapping):
            found.update(doc["window_sets"])
        else:
            raise ValueError(f"alerting.window_sets_file: {path} holds neither `window_sets:` nor Sloth "
                             "AlertWindows documents")
    return found


def resolve_window_sets(data: Any, read_file: Callable[[str], Any]) -> Any:
    """The raw config with every SLO's user window set in place (before the SLOs are validated).

    `alerting.window_sets_file` is read with `read_file(path)` (parsed YAML documents) and its sets
    join `alerting.window_sets`; an SLO whose `alerting.windows` names one of them gets its `pairs`;
    an SLO naming none gets `alerting.default_windows`. Names that are not user sets are left to
    `SloAlerting`, which knows the built-in ones and names the unknown ones.
    """
    if not isinstance(data, dict):
        return data
    alerting = data.get("alerting")
    if not isinstance(alerting, dict):
        alerting = {}
    sets: dict[str, Any] = {}
    path = alerting.get("window_sets_file")
    if isinstance(path, str) and path:
        try:
            docs = read_file(path)
        except OSError as exc:
            raise ValueError(f"alerting.window_sets_file: cannot read {path} ({exc.strerror or exc})") from None
        except ValueError as exc:  # yaml.YAMLError is not one; the caller turns it into this
            raise ValueError(f"alerting.window_sets_file: {path}: {exc}") from None
        sets.update(_file_window_sets(docs, path))
    inline = alerting.get("window_sets")
    if isinstance(inline, dict):
        both = sorted(set(sets) & set(inline))
        if both:
            raise ValueError(f"alerting.window_sets: {', '.join(both)} is also defined in "
                             f"alerting.window_sets_file; keep one")
        sets.update(inline)
    if sets:
        # the file's sets are validated where the inline ones are, so their errors carry key paths
        data = {**data, "alerting": {**alerting, "window_sets": sets}}
    default = alerting.get("default_windows")
    slos = data.get("slos")
    if not isinstance(slos, list):
        return data
    out = []
    for slo in slos:
        if not isinstance(slo, dict):
            out.append(slo)
            continue
        own = slo.get("alerting")
        own = dict(own) if isinstance(own, dict) else ({} if own is None else own)
        if isinstance(own, dict):
            name = own.get("windows")
            if name is None and own.get("pairs") is None and isinstance(default, str):
                name = own["windows"] = default
            if isinstance(name, str) and name in sets and isinstance(sets[name], dict):
                if own.get("pairs") is not None:
                    raise ValueError(f"slos: SLO {slo.get('name')!r}: give alerting.windows or alerting.pairs, "
                                     "not both")
                own["pairs"] = sets[name].get("pairs")
            slo = {**slo, "alerting": own} if own else slo
        out.append(slo)
    return {**data, "slos": out}


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
    duration: Duration
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
        return self.start.astimezone(timezone.utc).timestamp(), self.end.astimezone(timezone.utc).timestamp()


# --- the SLO ------------------------------------------------------------------------------------

LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# labels that say which alert it is: an SLO's own labels may not replace them (`severity` may)
RESERVED_LABELS = frozenset({"alertname", "slo", "pool", "model_name", "burnrate_tier"})
DEFAULT_ABSENT_FOR = 600.0


class SloConfig(Section):
    name: Name
    indicator: Indicator
    objective: Ratio
    window: Duration = 30 * 86400.0
    pools: list[Name] | None = Field(default=None, description="pools this SLO applies to; all when unset")
    runbook_url: OptionalUrl = Field(default=None, description="sent as the alerts' runbook_url annotation")
    # Grafana SLO's `min_failures`: a burn-rate pair fires only with at least this many bad events in
    # its long window, so one failed request out of ten at night does not wake anybody.
    min_bad_events: float = Field(default=5.0, ge=0.0)
    absent_for: Duration = Field(default=DEFAULT_ABSENT_FOR, description="SLOMetricAbsent after the SLI's "
                                 "series have been missing this long while instances are up")
    labels: dict[str, str] = Field(default_factory=dict, description="added to every alert of the SLO")
    annotations: dict[str, str] = Field(default_factory=dict, description="added to every alert of the SLO")
    exclusions: list[ExclusionConfig] = Field(default_factory=list, description="maintenance windows the "
                                              "error budget does not pay for")
    alerting: SloAlerting = SloAlerting()

    @field_validator("objective")
    @classmethod
    def _objective_open_interval(cls, value: float) -> float:
        if not 0.0 < value < 1.0:
            raise ValueError("objective must be above 0% and below 100% (a 100% objective has no error budget; "
                             "use e.g. 99.9%)")
        return value

    @field_validator("labels", "annotations")
    @classmethod
    def _label_names(cls, value: dict[str, str], info: Any) -> dict[str, str]:
        for key in value:
            if not LABEL_NAME.match(key):
                raise ValueError(f"{key!r} is not a Prometheus label name (letters, digits, '_'; not starting "
                                 "with a digit)")
            if info.field_name == "labels" and key in RESERVED_LABELS:
                raise ValueError(f"{key!r} names the alert itself and cannot be replaced (reserved: "
                                 f"{', '.join(sorted(RESERVED_LABELS))}; `severity` may be)")
        return value

    @property
    def window_set(self) -> str:
        """The name of the window set the burn alerts use (`custom` for the SLO's own pairs)."""
        if self.alerting.windows is not None:
            return self.alerting.windows
        return "custom" if self.alerting.pairs is not None else default_window_set(self.window)

    @property
    def burn_windows(self) -> list[BurnWindow]:
        """The pairs of the SLO's window set."""
        if self.alerting.pairs is not None:
            return self.alerting.pairs
        return BUILTIN_WINDOW_SETS[self.window_set].pairs


def alerting_problems(slos: Sequence[SloConfig], pools: Sequence[str]) -> list[str]:
    """Cross-section checks: an exclusion naming a pool the SLO does not cover."""
    problems = []
    for i, slo in enumerate(slos):
        covered = set(slo.pools or pools)
        for j, exclusion in enumerate(slo.exclusions):
            for k, pool in enumerate(exclusion.pools or ()):
                if pool not in covered:
                    problems.append(f"slos[{i}].exclusions[{j}].pools[{k}]: SLO {slo.name!r} does not cover a "
                                    f"pool named {pool!r} (it covers: {', '.join(sorted(covered)) or 'none'})")
    return problems
