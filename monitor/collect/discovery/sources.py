"""The four discovery mechanisms: each refresh reads its source, bounded in size and time, and
either replaces the source's target list or keeps the last good one and says why.

A source never raises out of `refresh`: a discovery source that fails must not stop collection,
and must not empty a pool. Each error is logged once, when it starts (or its item's error
changes from none to some), and once more when the item recovers, so a file broken for a week
logs two lines, not 120,000.
"""

from __future__ import annotations

import asyncio
import glob
import json
import logging
import os
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver
import httpx

from monitor.collect.discovery.targets import (
    DiscoveredTarget,
    DiscoveryError,
    compile_matchers,
    load_document,
    parse_active_targets,
    parse_target_groups,
    split_host_port,
    target,
)
from monitor.collect.scraper import ACCEPT_ENCODING, BodyTooLarge, BodyUndecodable, read_capped
from monitor.settings.discovery import (
    DiscoveryConfig,
    DiscoverySettings,
    DnsDiscovery,
    FileDiscovery,
    HttpDiscovery,
    PrometheusDiscovery,
    nameserver_address,
    parse_selector,
)
from monitor.units import redact_url

log = logging.getLogger("monitor.discovery")
_JSON_TYPE = ("application/json",)


@dataclass(slots=True)
class SourceStatus:
    """What /metrics shows per source (pool, kind, index): the service publishes these as is."""

    pool: str
    kind: str  # file, http, dns, prometheus
    index: int  # position in the pool's discovery list
    targets: int = 0  # in the list in use (the last good one when failing)
    refreshes: int = 0  # for files: checks (a glob and a stat per file), most of which read nothing
    failures: int = 0  # refreshes in which a read failed, in whole or for one of its files/names
    last_success: float | None = None  # unix time of the last refresh without any error
    last_error: str | None = None  # None while the source is healthy
    conflicts: int = 0  # targets left out because another pool has the same instance

    @property
    def name(self) -> str:
        return f"{self.pool}/{self.kind}[{self.index}]"

    @property
    def healthy(self) -> bool:
        return self.last_error is None


class Source:
    """One `pools[].discovery` item. `targets` is the list in use: the last good one."""

    kind = ""

    def __init__(self, pool: str, index: int, config: DiscoveryConfig, settings: DiscoverySettings) -> None:
        self.pool = pool
        self.index = index
        self.config = config
        self.max_targets = settings.max_targets
        self.status = SourceStatus(pool, self.kind, index)
        self.targets: tuple[DiscoveredTarget, ...] = ()
        self.changed = False  # set when `targets` changed; Discovery clears it
        self._failing: dict[str, str] = {}  # item (file, name, url) -> its error, while failing
        self._next_at = 0.0  # when a network source is next due
        self._failed_now = False  # an attempt in this refresh failed

    @property
    def name(self) -> str:
        return self.status.name

    @property
    def refresh_s(self) -> float:
        return float(self.config.refresh)

    def due(self, now: float) -> bool:
        return now >= self._next_at

    async def refresh(self, now: float) -> None:
        """Read the source once; never raises (but lets cancellation through)."""
        self._next_at = now + self.refresh_s
        self.status.refreshes += 1
        self._failed_now = False
        try:
            await self._refresh(now)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug here must not stop collection either
            log.exception("discovery %s: refresh failed", self.name)
            self._fail("*", f"{type(exc).__name__}: {exc}")
        else:
            self._ok("*")
        if self._failed_now:
            self.status.failures += 1
        if self._failing:
            self.status.last_error = "; ".join(self._failing.values())[:2000]
        else:
            self.status.last_error = None
            self.status.last_success = time.time()

    async def _refresh(self, now: float) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        pass

    def _set(self, targets: Sequence[DiscoveredTarget]) -> None:
        new = tuple(targets)
        if new != self.targets:
            self.targets = new
            self.changed = True
        self.status.targets = len(new)

    def _fail(self, item: str, message: str) -> None:
        self._failed_now = True
        if item not in self._failing:  # the message names the file, name or URL itself
            log.warning("discovery %s: %s; keeping the last good list (%d targets)", self.name, message,
                        len(self.targets))
        self._failing[item] = message

    def _ok(self, item: str) -> None:
        if self._failing.pop(item, None) is not None:
            log.info("discovery %s%s: reads again", self.name, f" {item}" if item else "")


def _dedupe(groups: Sequence[Sequence[DiscoveredTarget]]) -> list[DiscoveredTarget]:
    out: dict[str, DiscoveredTarget] = {}
    for group in groups:
        for t in group:
            out.setdefault(t.address, t)
    return list(out.values())


# --- file_sd -------------------------------------------------------------------------------------


@dataclass(slots=True)
class _FileState:
    signature: tuple[int, int, int] | None = None  # (mtime_ns, size, inode) of the last read
    targets: list[DiscoveredTarget] = field(default_factory=list)  # its last good list


class FileSource(Source):
    """Globs expanded at every check; a file is re-read when its mtime, size or inode changed
    (an atomic rename changes the inode) or every `refresh`.

    Polling beats a watcher here: a check is one glob and a stat per file, microseconds per scrape
    interval, and it also sees files on network filesystems and ConfigMap volumes (symlink swaps)
    where inotify misses changes.
    """

    kind = "file"
    config: FileDiscovery

    def __init__(self, pool: str, index: int, config: FileDiscovery, settings: DiscoverySettings) -> None:
        super().__init__(pool, index, config, settings)
        self._files: dict[str, _FileState] = {}
        self._full_at = 0.0

    def due(self, now: float) -> bool:
        return True  # a check without changes costs a glob and a few stats

    async def _refresh(self, now: float) -> None:
        full = now >= self._full_at
        if full:
            self._full_at = now + self.refresh_s
        paths = sorted({p for pattern in self.config.files for p in glob.glob(pattern)})
        new: dict[str, _FileState] = {}
        changed = set(self._files) - set(paths)  # files gone from the globs: their targets go too
        read_now: list[str] = []
        for path in paths:
            old = self._files.get(path) or _FileState()
            try:
                st = os.stat(path)
            except FileNotFoundError:
                changed.add(path)  # renamed away between the glob and the stat
                self._ok(path)
                continue
            except OSError as exc:
                self._fail(path, f"file {path}: cannot stat: {exc.strerror or exc}")
                new[path] = old
                continue
            if not stat.S_ISREG(st.st_mode):  # a FIFO would block the reader forever, a device never end
                self._fail(path, f"file {path}: not a regular file")
                new[path] = old
                continue
            signature = (st.st_mtime_ns, st.st_size, st.st_ino)
            if signature == old.signature and not full:
                new[path] = old
                continue
            changed.add(path)
            try:
                targets = await asyncio.to_thread(self._read, path, st.st_size)
            except FileNotFoundError:
                self._ok(path)
                continue
            except (OSError, DiscoveryError) as exc:
                message = str(exc) if isinstance(exc, DiscoveryError) else f"file {path}: {exc.strerror or exc}"
                self._fail(path, message)
                new[path] = _FileState(signature, old.targets)  # not re-read until it changes again
                continue
            new[path] = _FileState(signature, targets)
            read_now.append(path)
        for gone in set(self._failing) - set(new) - {"*"}:
            self._ok(gone)
        total = sum(len(s.targets) for s in new.values())
        if total > self.max_targets:
            # the files read now are refused as a bad file is: each keeps its last good list, and
            # is not read again until it changes
            for path in read_now:
                self._fail(path, f"file {path}: the files of this source list {total} targets, more than "
                                 f"discovery.max_targets {self.max_targets}")
                new[path] = _FileState(new[path].signature, self._files.get(path, _FileState()).targets)
        else:
            for path in read_now:
                self._ok(path)
        self._files = new
        if changed or full:
            self._set(_dedupe([s.targets for s in new.values()]))

    def _read(self, path: str, size: int) -> list[DiscoveredTarget]:
        """Read and parse one file (in a worker thread), refusing it before reading when too big."""
        where = f"file {path}"
        limit = self.config.max_size
        if size > limit:
            raise DiscoveryError(f"{where}: {size} bytes, more than max_size {limit}")
        with open(path, "rb") as f:
            data = f.read(limit + 1)  # it may have grown since the stat
        if len(data) > limit:
            raise DiscoveryError(f"{where}: more than max_size {limit} bytes")
        document, is_yaml = load_document(data, path, where)
        return parse_target_groups(document, "file", where, default_scheme=self.config.scheme,
                                   max_targets=self.max_targets, strict=is_yaml, allow_null=True)


# --- http_sd and Prometheus's targets ------------------------------------------------------------


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
            targets = parse_target_groups(document, "http", where, default_scheme=self.config.scheme,
                                          max_targets=self.max_targets)
        except DiscoveryError as exc:
            self._fail("", str(exc))
            return
        self._ok("")
        self._set(targets)


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
            targets = parse_active_targets(answer, where, self._matchers, max_targets=self.max_targets)
        except DiscoveryError as exc:
            self._fail("", str(exc))
            return
        self._ok("")
        self._set(targets)


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


# --- dns_sd --------------------------------------------------------------------------------------


class DnsSource(Source):
    """A, AAAA or SRV records of each name, through dnspython's async resolver.

    Each name keeps its own last good list. NXDOMAIN is an error that keeps it (Prometheus takes
    NXDOMAIN as "no targets"; here a pool is never emptied by a name that vanished, which is what a
    broken DNS zone or a typo looks like). A name that exists with no record of the type (NOERROR,
    no answer) is a real empty answer and empties that name's list.
    """

    kind = "dns"
    config: DnsDiscovery

    def __init__(self, pool: str, index: int, config: DnsDiscovery, settings: DiscoverySettings) -> None:
        super().__init__(pool, index, config, settings)
        self._resolver_error: str | None = None
        if settings.nameservers:
            self._resolver = dns.asyncresolver.Resolver(configure=False)
            self._resolver.nameservers = [dns.nameserver.Do53Nameserver(*nameserver_address(ns))
                                          for ns in settings.nameservers]
        else:
            try:
                self._resolver = dns.asyncresolver.Resolver()
            except dns.exception.DNSException as exc:  # no /etc/resolv.conf: every refresh says so
                self._resolver = dns.asyncresolver.Resolver(configure=False)
                self._resolver_error = (f"dns: no system resolver ({exc}); set discovery.nameservers, "
                                        'e.g. ["10.96.0.10:53"]')
        self._resolver.lifetime = config.timeout_s
        self._resolver.timeout = min(2.0, config.timeout_s)  # per try; retried until lifetime
        self._rdtype = dns.rdatatype.from_text(config.record)
        self._by_name: dict[str, list[DiscoveredTarget]] = {}

    async def _refresh(self, now: float) -> None:
        if self._resolver_error is not None:
            self._fail("", self._resolver_error)
            return
        names = self.config.names
        async with asyncio.timeout(self.config.timeout_s + 1.0):  # the resolver's lifetime, and a margin
            answers = await asyncio.gather(*(self._lookup(n) for n in names), return_exceptions=True)
        for name, answer in zip(names, answers, strict=True):
            if isinstance(answer, BaseException):
                if isinstance(answer, asyncio.CancelledError):
                    raise answer
                self._fail(name, str(answer) if isinstance(answer, DiscoveryError)
                           else f"dns {name}: {type(answer).__name__}: {answer}")
            else:
                self._ok(name)
                self._by_name[name] = answer
        merged = _dedupe([self._by_name.get(n, []) for n in names])
        if len(merged) > self.max_targets:
            self._fail("", f"{len(merged)} targets, more than discovery.max_targets {self.max_targets}")
            return
        self._ok("")
        self._set(merged)

    async def _lookup(self, name: str) -> list[DiscoveredTarget]:
        where = f"dns {self.config.record} {name}"
        try:
            answer = await self._resolver.resolve(name, self._rdtype)
        except dns.resolver.NXDOMAIN:
            raise DiscoveryError(f"{where}: name does not exist (NXDOMAIN)") from None
        except dns.resolver.NoAnswer:
            return []  # the name exists and has no such records: an empty answer, not a failure
        except dns.exception.Timeout:
            raise DiscoveryError(f"{where}: no answer within timeout {self.config.timeout_s:g}s") from None
        except dns.resolver.NoNameservers as exc:
            raise DiscoveryError(f"{where}: no nameserver answered ({str(exc)[:200]})") from None
        except dns.exception.DNSException as exc:
            raise DiscoveryError(f"{where}: {type(exc).__name__}: {str(exc)[:200]}") from None
        scheme = self.config.scheme
        out = []
        for rr in answer:
            if self._rdtype == dns.rdatatype.SRV:
                host = rr.target.to_text(omit_final_dot=True)
                parsed = split_host_port(f"{host}:{rr.port}")
                if parsed is None:
                    raise DiscoveryError(f"{where}: SRV target {host}:{rr.port} is not host:port")
                out.append(target(*parsed, "dns", scheme=scheme))
            else:
                assert self.config.port is not None  # the settings require it for A and AAAA
                out.append(target(rr.address.lower(), self.config.port, "dns", scheme=scheme))
            if len(out) > self.max_targets:
                raise DiscoveryError(f"{where}: more than discovery.max_targets {self.max_targets} records")
        return out


_KINDS: dict[str, type[Source]] = {"file": FileSource, "http": HttpSource, "dns": DnsSource,
                                   "prometheus": PrometheusTargetsSource}


def make_source(pool: str, index: int, config: DiscoveryConfig, settings: DiscoverySettings) -> Source:
    return _KINDS[config.type](pool, index, config, settings)
