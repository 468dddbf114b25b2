"""Push SLO and cost alerts to Alertmanager over its API v2 (`POST /api/v2/alerts`), as Prometheus does.

Alert names, the same on the service path and in the generated Prometheus rules: `SloErrorBudgetBurn`
(page | ticket), `SLOMetricAbsent` (page: the SLI's series are gone, so the SLO would look perfect),
`ErrorBudgetExhausted` (ticket), and per pool with a daily budget `CostBudgetWarning` (ticket, 80% of
today's budget spent) and `CostBudgetExceeded` (page, 100%). An SLO's `labels` are added to every
one of its alerts (a `severity` there replaces ours), its `annotations` and `runbook_url` too.

One alert per SLO, pool (and model) and severity. Labels are stable while an alert fires, so
Alertmanager sees one alert whose annotations (the current numbers) update, never a new one per
evaluation: `alertname`, `slo`, `pool`, `severity` (`page` | `ticket`), `burnrate_tier` (`fast` for
the page pairs 1h/5m and 6h/30m, `slow` for the ticket pairs 1d/2h and 3d/6h: the label an
inhibit rule matches so a page silences the ticket of the same SLO) and `model_name` when the
pool serves several models.

Delivery follows Prometheus's notifier: every firing alert is re-sent each `resend_interval` with
`endsAt` four intervals ahead, so an Alertmanager that restarted learns it again and an alert from
a monitor that died expires by itself; a cleared alert is sent once more with `endsAt` = the time it
cleared (and re-sent for a while, in case that POST was lost). Sending never blocks evaluation:
the service runs it as a background task, each POST is bounded by `timeout`, and a failure is
logged, counted on /metrics and retried with exponential backoff.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Iterable

import httpx

from monitor.evaluate.slo import WINDOW_NAMES, CostBudgetStatus
from monitor.evaluate.slo.engine import SloStatus
from monitor.settings import SloConfig
from monitor.units import format_duration, redact_url, rfc3339

log = logging.getLogger(__name__)

ALERTNAME = "SloErrorBudgetBurn"
TIERS = {"page": "fast", "ticket": "slow"}
ABSENT_ALERT = "SLOMetricAbsent"
ABSENT_SEVERITY = "page"
EXHAUSTED_ALERT = "ErrorBudgetExhausted"
EXHAUSTED_SEVERITY = "ticket"
COST_WARNING_ALERT = "CostBudgetWarning"
COST_EXCEEDED_ALERT = "CostBudgetExceeded"
COST_SEVERITIES = {COST_WARNING_ALERT: "ticket", COST_EXCEEDED_ALERT: "page"}
RESOLVED_RETENTION_S = 900.0  # Prometheus re-sends resolved alerts for 15 minutes
ENDS_AT_INTERVALS = 4  # endsAt of a firing alert, in resend intervals from now (Prometheus: 4)


@dataclass(slots=True)
class _Alert:
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: float
    resolved_at: float | None = None


@dataclass(slots=True)
class NotifierStats:
    """What /metrics reports about delivery."""

    posts: int = 0  # successful POSTs
    errors: int = 0  # failed POSTs
    consecutive_failures: int = 0
    last_success_at: float | None = None
    last_error: str | None = None
    alerts_sent: int = 0  # alerts carried by successful POSTs (each resend counts)
    last_latency_s: float | None = None


def _pct(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value * 100:.{digits}f}%"


def _rate(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def slo_alert_labels(status: SloStatus, alertname: str, severity: str, **extra: str) -> dict[str, str]:
    """The labels of any alert of an SLO: its own `labels` first (team, a `severity` that replaces
    ours), then the ones that say which alert it is."""
    labels = {"severity": severity, **status.config.labels, "alertname": alertname, "slo": status.key.slo,
              "pool": status.key.pool, **extra}
    if status.model_name:
        labels["model_name"] = status.model_name
    return labels


def alert_labels(status: SloStatus, severity: str) -> dict[str, str]:
    return slo_alert_labels(status, ALERTNAME, severity, burnrate_tier=TIERS[severity])


def with_slo_annotations(slo: SloConfig, annotations: dict[str, str]) -> dict[str, str]:
    """runbook_url and the SLO's own annotations (which win over ours)."""
    if slo.runbook_url:
        annotations["runbook_url"] = slo.runbook_url
    return {**annotations, **slo.annotations}


def alert_annotations(status: SloStatus, severity: str) -> dict[str, str]:
    """summary and description with the numbers an on-call engineer needs first; runbook_url."""
    ev = status.evaluation
    slo = status.config
    pairs = [p for p in ev.pairs if p.severity == severity and p.name in ev.fired]
    lead = pairs[0] if pairs else None
    where = f"pool {status.key.pool}" + (f", model {status.model_name}" if status.model_name else "")
    burn = ev.burn_rates.get(lead.long) if lead else None
    summary = (f"SLO {status.key.slo} ({where}) is burning its error budget at {_rate(burn)}x "
               f"({severity}: {lead.name if lead else '?'} above {ev.factors.get(lead.name, 0):.3g}x)"
               if lead else f"SLO {status.key.slo} ({where}) is burning its error budget ({severity})")
    fired = ", ".join(f"{p.name} (burn {_rate(ev.burn_rates.get(p.long))}/{_rate(ev.burn_rates.get(p.short))}"
                      f" > {ev.factors.get(p.name, 0):.3g})" for p in pairs)
    rates = ", ".join(f"{w}={_rate(ev.burn_rates.get(w))}" for w in WINDOW_NAMES)
    exact = "" if ev.exact else " The SLI is interpolated inside a histogram bucket (exact: false)."
    description = (
        f"Objective {_pct(slo.objective)} over {format_duration(slo.window)}; SLI {_pct(ev.sli, 4)} "
        f"({ev.good:.0f} good of {ev.total:.0f} events) over {ev.covered} with data; error budget remaining "
        f"{_pct(ev.error_budget_remaining, 1)}. "
        f"Firing: {fired or 'none'}. Burn rates: {rates}.{exact}"
    )
    return with_slo_annotations(slo, {"summary": summary, "description": description})


def _since(t: float | None) -> str:
    return "never since the monitor started" if t is None else f"last at {rfc3339(t)}"


def absent_annotations(status: SloStatus) -> dict[str, str]:
    slo = status.config
    return with_slo_annotations(slo, {
        "summary": f"SLO {slo.name} cannot be evaluated for pool {status.key.pool}: its metrics are absent",
        "description": (
            f"No successfully scraped instance of pool {status.key.pool} has had the series the SLI reads "
            f"({slo.indicator.type}{' ' + getattr(slo.indicator, 'metric', '') if hasattr(slo.indicator, 'metric') else ''}) "
            f"for {format_duration(slo.absent_for)} ({_since(status.metric_last_seen)}), while the instances "
            "answer. A renamed or disabled vLLM metric reads as no events, which would look like a perfect SLO; "
            "the SLI, its budget and its burn-rate alerts are blind until it is back."),
    })


def exhausted_annotations(status: SloStatus) -> dict[str, str]:
    slo, ev = status.config, status.evaluation
    return with_slo_annotations(slo, {
        "summary": f"SLO {slo.name} (pool {status.key.pool}) has exhausted its error budget",
        "description": (
            f"Objective {_pct(slo.objective)} over {format_duration(slo.window)}: {ev.bad:.0f} bad of "
            f"{ev.total:.0f} events over {ev.covered} with data, error budget remaining "
            f"{_pct(ev.error_budget_remaining, 1)}. Until it "
            "recovers, every further bad event breaks the objective."),
    })


def cost_labels(budget: CostBudgetStatus, alertname: str) -> dict[str, str]:
    return {"alertname": alertname, "pool": budget.pool, "severity": COST_SEVERITIES[alertname]}


def cost_annotations(budget: CostBudgetStatus, alertname: str) -> dict[str, str]:
    share = "80%" if alertname == COST_WARNING_ALERT else "100%"
    assert budget.daily_budget is not None and budget.ratio is not None  # only budgets fire
    return {
        "summary": f"Pool {budget.pool} has spent {share} or more of today's GPU budget",
        "description": (
            f"Spent {budget.spend_today:.2f} {budget.currency} of {budget.daily_budget:.2f} {budget.currency} "
            f"today (UTC), {budget.ratio * 100:.0f}% of the daily budget: "
            f"{budget.replica_seconds_today / 3600.0:.2f} replica-hours since midnight UTC."),
    }


def wanted_alerts(statuses: Iterable[SloStatus],
                  budgets: Iterable[CostBudgetStatus] = ()) -> list[tuple[dict[str, str], dict[str, str]]]:
    """Every alert an evaluation asks for, as (labels, annotations)."""
    out = []
    for status in statuses:
        for severity in status.fired_severities():
            out.append((alert_labels(status, severity), alert_annotations(status, severity)))
        if status.absent:
            out.append((slo_alert_labels(status, ABSENT_ALERT, ABSENT_SEVERITY), absent_annotations(status)))
        if status.exhausted:
            out.append((slo_alert_labels(status, EXHAUSTED_ALERT, EXHAUSTED_SEVERITY),
                        exhausted_annotations(status)))
    for budget in budgets:
        for alertname, firing in ((COST_WARNING_ALERT, budget.warning), (COST_EXCEEDED_ALERT, budget.exceeded)):
            if firing:
                out.append((cost_labels(budget, alertname), cost_annotations(budget, alertname)))
    return out


class AlertmanagerNotifier:
    """Keeps the set of alerts to deliver and delivers it; one `send` at a time (the caller's job)."""

    def __init__(
        self,
        url: str,
        *,
        resend_interval: float = 60.0,
        timeout: float = 5.0,
        resolved_retention: float = RESOLVED_RETENTION_S,
        max_backoff: float | None = None,
    ) -> None:
        self.endpoint = url.rstrip("/") + "/api/v2/alerts"
        self.shown_endpoint = redact_url(self.endpoint)  # for logs: basic-auth credentials never printed
        self.resend_interval = resend_interval
        self.timeout = timeout
        self.resolved_retention = resolved_retention
        # never wait longer than a resend interval (nor a minute) between tries
        self.max_backoff = max_backoff if max_backoff is not None else min(60.0, resend_interval)
        self.stats = NotifierStats()
        self._alerts: dict[tuple[tuple[str, str], ...], _Alert] = {}
        self._changed = False
        self._last_sent_at: float | None = None
        self._next_attempt_at = 0.0
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            headers={"User-Agent": "llm-slo-monitor"},
            trust_env=False,
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- state ------------------------------------------------------------------------------------

    def update(self, statuses: Iterable[SloStatus], now: float, budgets: Iterable[CostBudgetStatus] = (),
               extra: Iterable[tuple[dict[str, str], dict[str, str]]] = ()) -> None:
        """Match the alert set to an evaluation (and the pools' cost budgets, and `extra` alerts as
        (labels, annotations): failing canaries, monitor/publish/canary_alerts.py): new alerts fire,
        missing ones resolve."""
        wanted: dict[tuple[tuple[str, str], ...], tuple[dict[str, str], dict[str, str]]] = {}
        for labels, notes in [*wanted_alerts(statuses, budgets), *extra]:
            wanted[tuple(sorted(labels.items()))] = (labels, notes)
        for key, (labels, notes) in wanted.items():
            alert = self._alerts.get(key)
            if alert is None or alert.resolved_at is not None:
                self._alerts[key] = _Alert(labels, notes, starts_at=now)
                self._changed = True
                log.warning("alert firing: %s", notes["summary"])
            else:
                alert.annotations = notes  # the numbers go out with the next resend
        for key, alert in list(self._alerts.items()):
            if key not in wanted and alert.resolved_at is None:
                alert.resolved_at = now
                self._changed = True
                log.info("alert resolved: %s", alert.labels)
            elif alert.resolved_at is not None and now - alert.resolved_at > self.resolved_retention:
                del self._alerts[key]

    def resend_all(self) -> None:
        """Send the whole set at the next tick, backoff or not: a replica that has just become the
        leader cannot know what its predecessor delivered before it died."""
        self._changed = True
        self._next_attempt_at = 0.0

    @property
    def firing(self) -> list[dict[str, str]]:
        return [a.labels for a in self._alerts.values() if a.resolved_at is None]

    def due(self, now: float) -> bool:
        """A change to deliver, a resend that is due, or a retry whose backoff has passed."""
        if not self._alerts or now < self._next_attempt_at:
            return False
        return self._changed or self._last_sent_at is None or now - self._last_sent_at >= self.resend_interval

    def payload(self, now: float) -> list[dict[str, Any]]:
        out = []
        for alert in self._alerts.values():
            ends = alert.resolved_at if alert.resolved_at is not None else now + ENDS_AT_INTERVALS * self.resend_interval
            out.append({
                "labels": alert.labels,
                "annotations": alert.annotations,
                "startsAt": rfc3339(alert.starts_at),
                "endsAt": rfc3339(ends),
            })
        return out

    # -- delivery ---------------------------------------------------------------------------------

    async def tick(self, now: float) -> bool | None:
        """Send if due; True/False for a POST that succeeded/failed, None when nothing was due."""
        if not self.due(now):
            return None
        return await self.send(now)

    async def send(self, now: float) -> bool:
        """POST every alert (firing and recently resolved); never raises."""
        payload = self.payload(now)
        changed_before = self._changed
        self._changed = False  # an update during the POST sets it again and is sent next tick
        clock = time.perf_counter()
        try:
            # httpx's timeout bounds each read, not the exchange: an Alertmanager (or a proxy) that
            # trickles its answer a byte at a time would hold this task, and every later alert, forever
            async with asyncio.timeout(self.timeout):
                async with self._client.stream("POST", self.endpoint, json=payload) as response:
                    error = None if 200 <= response.status_code < 300 else (
                        f"HTTP {response.status_code}: {await _head(response, 200)}")
        except TimeoutError:
            error = f"TimeoutError: no complete answer within {self.timeout:g}s"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}".rstrip(": ")
        except OSError as exc:
            error = f"{type(exc).__name__}: {exc}"
        self.stats.last_latency_s = time.perf_counter() - clock
        if error is None:
            self.stats.posts += 1
            self.stats.alerts_sent += len(payload)
            self.stats.consecutive_failures = 0
            self.stats.last_success_at = now
            self.stats.last_error = None
            self._last_sent_at = now
            self._next_attempt_at = 0.0
            return True
        self._changed = self._changed or changed_before
        self.stats.errors += 1
        self.stats.consecutive_failures += 1
        self.stats.last_error = error
        backoff = min(self.max_backoff, 2.0 ** (self.stats.consecutive_failures - 1))
        self._next_attempt_at = now + backoff
        log.warning("alertmanager %s: POST of %d alerts failed (%d in a row), retrying in %gs: %s",
                    self.shown_endpoint, len(payload), self.stats.consecutive_failures, backoff, error)
        return False


async def _head(response: httpx.Response, limit: int) -> str:
    """The start of an error answer for the log, reading no more than `limit` bytes of it (raw: an
    error body is text, and inflating a compressed one is not worth a bomb)."""
    data = b""
    async for chunk in response.aiter_raw():
        data += chunk
        if len(data) >= limit:
            break
    return data[:limit].decode("utf-8", errors="replace").strip()
