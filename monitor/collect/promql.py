"""The `prometheus` source: the same per-instance samples as the scraper, read from a Prometheus API.

Where a fleet is already scraped by Prometheus (or Thanos, Mimir, VictoriaMetrics), asking that
backend spares the vLLM servers a second scraper per monitor replica and lets the monitor follow
a fleet spread over several Prometheus shards. The rest of the pipeline must not notice, so this
module returns exactly what `Scraper.scrape_all` returns: one `ScrapeResult` per target holding
*cumulative* `ModelSample`s, built by the same normalisation as a page (`samples_by_model`), and
windows, SLOs and decisions run unchanged.

Three things make that true rather than approximately true:

* **One instant query per batch of instances**, selecting the raw vLLM series, `up` and
  `scrape_duration_seconds` together. Prometheus (since 2.15) evaluates a query against one
  isolated snapshot of its head, so every series of an instance comes from the same scrape;
  separate queries could mix two scrapes (a `_count` newer than its buckets).
* **The sample's own timestamp**, not the query time: `timestamp(up)` rides along in the same query
  (renamed by `label_replace` so `or` keeps it), and becomes `started_at`. Rates and the SLO
  engine's intervals then use the moments Prometheus actually scraped, as direct scraping uses its
  own; with query times, a 1 s scrape jitter on a 10 s window would move rates by 10%.
* **Each Prometheus scrape counted once**: an instance whose timestamp has not moved since the
  last cycle (the monitor polls faster than Prometheus scrapes) yields no result this cycle, so a
  repeated sample can never look like a stalled counter (the hang rule) or an extra availability
  event.

What it cannot see: vLLM's `/health` (Prometheus does not probe it), so availability is `up`; and
the reason a scrape failed (`up == 0` says only that it did).

Bounded like the scraper: each query under `timeout`, each response read up to
`max_response_size`, at most `max_instances_per_query` instances per query (a 1,000-target fleet
is ten queries of about 3 MB instead of one of 30 MB).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections import defaultdict
from typing import Any, Iterable, Sequence

import httpx

from monitor.collect.scraper import BodyTooLarge, Target, read_capped
from monitor.collect.vllm import (
    AVERAGED_GAUGES,
    COUNTERS,
    ESCAPED_NAMES,
    ESCAPED_PREFIX,
    FINISHED,
    HISTOGRAMS,
    SUMMED_GAUGES,
    PageError,
    normalise,
)
from monitor.samples import ScrapeResult

log = logging.getLogger(__name__)

TIMESTAMP_LABEL = "slo_monitor_series"  # marks the timestamp(up) series inside the one query's result
TIMESTAMP_VALUE = "scrape_timestamp"
QUERY_CONCURRENCY = 4


def vllm_series_names() -> tuple[str, ...]:
    """Every raw series name the normaliser reads, V0 and V1 alike (histograms as their three parts)."""
    names: list[str] = []
    for candidates in HISTOGRAMS.values():
        for name in candidates:
            names += [name + "_bucket", name + "_sum", name + "_count"]
    for table in (COUNTERS, SUMMED_GAUGES, AVERAGED_GAUGES):
        for candidates in table.values():
            names.extend(candidates)
    names.append(FINISHED)
    return tuple(dict.fromkeys(names))


def promql_string(value: str) -> str:
    """A PromQL double-quoted string literal (Go escapes; JSON's are a subset Go accepts)."""
    return json.dumps(value)


def instance_regex(instances: Iterable[str]) -> str:
    """An RE2 alternation matching exactly these label values (Prometheus anchors regex matchers)."""
    return "|".join(re.escape(i) for i in sorted(set(instances)))


def build_query(instances: Sequence[str], *, instance_label: str = "instance", selector: str | None = None) -> str:
    """The one query for a batch: raw series + up + scrape_duration_seconds, or'ed with timestamp(up)."""
    matchers = f"{instance_label}=~{promql_string(instance_regex(instances))}"
    if selector:
        matchers += f", {selector}"
    # each name also as `vllm_...`: what Prometheus 2.x stored from prometheus_client's OpenMetrics pages
    # (escaping=underscores writes the colon as `_`, client_python#1177); read back under the `vllm:` name
    vllm = vllm_series_names()
    escaped = [ESCAPED_PREFIX + n.removeprefix("vllm:") for n in vllm]
    names = "|".join(re.escape(n) for n in ("up", "scrape_duration_seconds", *vllm, *escaped))
    data = f"{{__name__=~{promql_string(names)}, {matchers}}}"
    stamp = (f'label_replace(timestamp(up{{{matchers}}}), "{TIMESTAMP_LABEL}", "{TIMESTAMP_VALUE}", "", "")')
    return f"{data} or {stamp}"


class QueryError(Exception):
    """A query that did not give a usable answer; `kind` as ScrapeResult.error_kind."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class PrometheusSource:
    """`scrape_all(targets)` answered from a Prometheus-compatible `/api/v1/query`.

    State kept between cycles: the last sample timestamp handed on per instance (to count every
    Prometheus scrape once) and whether the backend was failing (to log changes, not every cycle).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        max_response_size: int = 64 * 2**20,
        instance_label: str = "instance",
        selector: str | None = None,
        max_instances_per_query: int = 100,
        max_age: float = 60.0,
        headers: dict[str, str] | None = None,
        bearer_token: str | None = None,
    ) -> None:
        self.endpoint = url.rstrip("/") + "/api/v1/query"
        self.timeout = timeout
        self.max_response_size = max_response_size
        self.instance_label = instance_label
        self.selector = selector
        self.batch = max_instances_per_query
        self.max_age = max_age
        self._last_seen: dict[str, float] = {}
        self._failing: str | None = None
        self.queries = 0
        self.query_errors = 0
        self.last_response_bytes = 0
        self._semaphore = asyncio.Semaphore(QUERY_CONCURRENCY)
        all_headers = {"User-Agent": "llm-slo-monitor", "Accept": "application/json", **(headers or {})}
        if bearer_token:
            all_headers["Authorization"] = f"Bearer {bearer_token}"
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(timeout), headers=all_headers, trust_env=False,
                                         follow_redirects=False)

    def keep_only(self, targets: Iterable[Target]) -> None:
        """Forget what is kept per instance for targets no longer queried (departed instances)."""
        wanted = {t.instance for t in targets}
        for instance in [i for i in self._last_seen if i not in wanted]:
            del self._last_seen[instance]

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- one cycle --------------------------------------------------------------------------------

    async def scrape_all(self, targets: list[Target]) -> list[ScrapeResult]:
        batches = [targets[i:i + self.batch] for i in range(0, len(targets), self.batch)]
        answers = await asyncio.gather(*(self._query_batch(b) for b in batches))
        return [result for batch in answers for result in batch]

    async def _query_batch(self, targets: list[Target]) -> list[ScrapeResult]:
        query = build_query([t.instance for t in targets], instance_label=self.instance_label, selector=self.selector)
        async with self._semaphore:
            started = time.time()
            clock = time.perf_counter()
            try:
                series = await self._query(query)
            except QueryError as exc:
                duration = time.perf_counter() - clock
                self.query_errors += 1
                if self._failing != str(exc):
                    log.warning("prometheus source %s: %s", self.endpoint, exc)
                    self._failing = str(exc)
                return [_failed(t, started, duration, exc.kind, f"prometheus: {exc}") for t in targets]
        if self._failing is not None:
            log.info("prometheus source %s answers again", self.endpoint)
            self._failing = None
        return self._results(targets, series, started, time.perf_counter() - clock)

    async def _query(self, query: str) -> list[dict[str, Any]]:
        """POST (the instance regex of a large batch is too long for a URL); the vector result."""
        self.queries += 1
        try:
            async with asyncio.timeout(self.timeout):
                async with self._client.stream("POST", self.endpoint, data={"query": query}) as response:
                    body = await read_capped(response, self.max_response_size)
                    status = response.status_code
        except (TimeoutError, httpx.TimeoutException):
            raise QueryError("timeout", f"query timed out after {self.timeout:g}s") from None
        except BodyTooLarge as exc:
            raise QueryError("oversized", f"response larger than {self.max_response_size} bytes "
                                          f"({exc.args[0]}+ read); lower source.max_instances_per_query") from None
        except (httpx.HTTPError, OSError) as exc:
            raise QueryError("down", f"cannot connect: {type(exc).__name__}: {exc}".rstrip(": ")) from None
        self.last_response_bytes = len(body)
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            kind = "http_status" if status != 200 else "malformed"
            raise QueryError(kind, f"HTTP {status}, not a Prometheus API answer: {body[:200]!r}")
        if status != 200 or answer.get("status") != "success":
            detail = ": ".join(str(p) for p in (answer.get("errorType"), answer.get("error")) if p)
            raise QueryError("http_status", f"HTTP {status}: {detail[:300] or 'no error given'}")
        for warning in answer.get("warnings") or ():
            log.warning("prometheus source %s: query warning: %s", self.endpoint, warning)
        data = answer.get("data")
        if not isinstance(data, dict) or data.get("resultType") != "vector" or not isinstance(data.get("result"), list):
            raise QueryError("malformed", "answer is not an instant vector")
        return data["result"]

    # -- from series to results -------------------------------------------------------------------

    def _results(self, targets: list[Target], series: list[dict[str, Any]], started: float,
                 duration: float) -> list[ScrapeResult]:
        per_instance: dict[str, _InstanceSeries] = defaultdict(_InstanceSeries)
        for item in series:
            try:
                labels = dict(item["metric"])
                value = float(item["value"][1])
                instance = labels.pop(self.instance_label)
            except (KeyError, IndexError, TypeError, ValueError):
                continue  # not a sample of ours; the query's shape makes this unreachable in practice
            per_instance[instance].add(labels, value)
        now = time.time()
        out = []
        for target in targets:
            found = per_instance.get(target.instance)
            result = self._result(target, found, now, started, duration)
            if result is not None:
                out.append(result)
        return out

    def _result(self, target: Target, found: _InstanceSeries | None, now: float, started: float,
                duration: float) -> ScrapeResult | None:
        """The target's result, or None when Prometheus has not scraped it since the last cycle."""
        where = f'{self.instance_label}="{target.instance}"'
        if found is None or not found.up:
            return _failed(target, started, duration, "down",
                           f"prometheus: no up{{{where}}} series (not scraped by it, or source.instance_label / "
                           "source.selector do not match)")
        if len(found.up) > 1:
            return _failed(target, started, duration, "malformed",
                           f"prometheus: {len(found.up)} up{{{where}}} series (several jobs scrape it); narrow "
                           'source.selector, e.g. job="vllm"')
        at = found.timestamp
        if at is None or not math.isfinite(at):
            return _failed(target, started, duration, "malformed",
                           "prometheus: no timestamp for the instance's up series")
        if now - at > self.max_age:
            return _failed(target, started, duration, "down",
                           f"prometheus: last sample {now - at:.0f}s old (source.max_age {self.max_age:g}s)")
        if self._last_seen.get(target.instance) == at:
            return None
        self._last_seen[target.instance] = at
        scrape_s = found.scrape_duration if found.scrape_duration is not None else 0.0
        if found.up[0] != 1.0:
            return _failed(target, at, scrape_s, "down", "down according to prometheus (up == 0)")
        error_kind = error = None
        models: list = []
        bad: tuple = ()
        if not found.values:
            error_kind, error = "not_vllm", "not a vLLM endpoint (prometheus holds no vllm: series for it)"
        else:
            try:
                # Prometheus stores NaN and ±Inf as they were scraped and answers them as "NaN",
                # "+Inf", "-Inf": the normaliser refuses them exactly as it does on a page
                page = normalise(found.values)
                models, bad = page.models, page.bad
            except PageError as exc:
                error = str(exc)
                error_kind = "not_vllm" if error.startswith("not a vLLM endpoint") else "malformed"
        return ScrapeResult(pool=target.pool, instance=target.instance, url=target.url, started_at=at,
                            duration_s=scrape_s, models=tuple(models), error=error, error_kind=error_kind,
                            bad_samples=bad)


class _InstanceSeries:
    """One instance's part of a query answer, grouped as the page normaliser expects."""

    __slots__ = ("up", "timestamp", "scrape_duration", "values")

    def __init__(self) -> None:
        self.up: list[float] = []
        self.timestamp: float | None = None
        self.scrape_duration: float | None = None
        self.values: dict[str, dict[str, list[tuple[dict[str, str], float]]]] = defaultdict(lambda: defaultdict(list))

    def add(self, labels: dict[str, str], value: float) -> None:
        name = labels.pop("__name__", None)
        if name is None:
            if labels.get(TIMESTAMP_LABEL) == TIMESTAMP_VALUE and math.isfinite(value):
                self.timestamp = value if self.timestamp is None else max(self.timestamp, value)
            return
        if name == "up":
            self.up.append(value)
        elif name == "scrape_duration_seconds":
            self.scrape_duration = value if math.isfinite(value) else None
        else:
            model = labels.pop("model_name", "")
            self.values[ESCAPED_NAMES.get(name, name)][model].append((labels, value))


def _failed(target: Target, started: float, duration: float, kind: str, message: str) -> ScrapeResult:
    return ScrapeResult(pool=target.pool, instance=target.instance, url=target.url, started_at=started,
                        duration_s=duration, error=message, error_kind=kind)
