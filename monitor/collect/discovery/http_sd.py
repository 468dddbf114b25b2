"""http_sd and a Prometheus's active targets: one bounded GET each refresh, the answer parsed as
Prometheus parses it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from monitor.collect.discovery.source import Source
from monitor.collect.discovery.targets import (
    DiscoveryError,
    compile_matchers,
    load_document,
    read_active_targets,
    read_target_groups,
)
from monitor.collect.scraper import ACCEPT_ENCODING, BodyTooLarge, BodyUndecodable, read_capped
from monitor.settings.discovery import DiscoverySettings, HttpDiscovery, PrometheusDiscovery, parse_selector
from monitor.units import redact_url

_JSON_TYPE = ("application/json",)


class _HttpSource(Source):
    """GET one URL, the whole exchange under `timeout` and the body under `max_size`."""

    config: HttpDiscovery | PrometheusDiscovery

    def __init__(self, pool: str, index: int, config: HttpDiscovery | PrometheusDiscovery,
                 settings: DiscoverySettings) -> None:
        super().__init__(pool, index, config, settings)
        headers = {"User-Agent": "llm-slo-monitor", "Accept": "application/json",
                   "Accept-Encoding": ACCEPT_ENCODING, **config.headers}
        if config.bearer_token:
            headers["Authorization"] = f"Bearer {config.bearer_token}"
        # redirects followed as Prometheus's HTTP clients do by default; a few at most
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(config.timeout_s), headers=headers,
                                         trust_env=False, follow_redirects=True, max_redirects=5)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _get(self, url: str, where: str, extra_headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
        timeout = self.config.timeout_s
        try:
            async with asyncio.timeout(timeout):
                async with self._client.stream("GET", url, headers=extra_headers) as response:
                    body = await read_capped(response, self.config.max_size)
                    return response.status_code, response.headers.get("content-type", ""), body
        except (TimeoutError, httpx.TimeoutException):
            raise DiscoveryError(f"{where}: no complete answer within timeout {timeout:g}s") from None
        except BodyTooLarge as exc:
            raise DiscoveryError(f"{where}: answer larger than max_size {self.config.max_size} bytes "
                                 f"({exc.args[0]}+)") from None
        except BodyUndecodable as exc:
            raise DiscoveryError(f"{where}: {exc}") from None
        except (httpx.HTTPError, OSError) as exc:
            raise DiscoveryError(f"{where}: {type(exc).__name__}: {exc}".rstrip(": ")) from None


class HttpSource(_HttpSource):
    """Prometheus `http_sd`: 200, `application/json`, a target-group list."""

    kind = "http"
    config: HttpDiscovery

    async def _refresh(self, now: float) -> None:
        where = f"http {redact_url(self.config.url)}"
        try:
            status, content_type, body = await self._get(
                self.config.url, where, {"X-Prometheus-Refresh-Interval-Seconds": f"{self.refresh_s:g}"})
            if status != 200:
                raise DiscoveryError(f"{where}: HTTP {status} (expected 200): {body[:200]!r}")
            if content_type.split(";", 1)[0].strip().lower() not in _JSON_TYPE:
                raise DiscoveryError(f"{where}: Content-Type {content_type[:80]!r}, expected application/json")
            document, _ = await asyncio.to_thread(load_document, body, "answer.json", where)
            parsed = read_target_groups(document, "http", where, default_scheme=self.config.scheme,
                                        max_targets=self.max_targets)
        except DiscoveryError as exc:
            self._fail("", str(exc))
            return
        if self._take("", parsed):
            self._ok("")
            self._set(parsed.targets)


class PrometheusTargetsSource(_HttpSource):
    """The active targets of a Prometheus, filtered by `selector` on our side (the API has no
    label filter; `scrapePool` would tie the config to Prometheus's job names)."""

    kind = "prometheus"
    config: PrometheusDiscovery

    def __init__(self, pool: str, index: int, config: PrometheusDiscovery, settings: DiscoverySettings) -> None:
        super().__init__(pool, index, config, settings)
        self._matchers = compile_matchers(parse_selector(config.selector))
        self._endpoint = config.url.rstrip("/") + "/api/v1/targets?state=active"

    async def _refresh(self, now: float) -> None:
        where = f"prometheus {redact_url(self.config.url)}"
        try:
            status, _, body = await self._get(self._endpoint, where)
            answer = await asyncio.to_thread(_json_or_none, body)
            if status != 200 and not isinstance(answer, dict):
                raise DiscoveryError(f"{where}: HTTP {status}: {body[:200]!r}")
            if answer is None:
                raise DiscoveryError(f"{where}: answer is not JSON: {body[:200]!r}")
            parsed = read_active_targets(answer, where, self._matchers, max_targets=self.max_targets)
        except DiscoveryError as exc:
            self._fail("", str(exc))
            return
        if self._take("", parsed):
            self._ok("")
            self._set(parsed.targets)


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser recurses
        return None
