"""Burn-rate window sets as data (`google-30d`, `google-28d`, a user's own, Sloth `AlertWindows` files), each
SLO's choice of one (`slos[].alerting`), and the top-level `alerting:` section."""

from __future__ import annotations

from typing import Annotated, Any, Callable, Literal, Mapping

from pydantic import BeforeValidator, Field, model_validator

from monitor.settings.base import OptionalStr, Section
from monitor.units import Name, SloPeriod, format_duration, parse_duration

# --- burn-rate window sets ----------------------------------------------------------------------


def _window_name(value: Any) -> str:
    """A burn window in the config's notation, normalised (`60m` -> `1h`), so pairs name windows
    the same way the API's burn_rates do."""
    return format_duration(parse_duration(value, at_most=400 * 86400.0))


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

    period: SloPeriod | None = None
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
