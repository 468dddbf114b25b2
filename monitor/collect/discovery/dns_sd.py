"""dns_sd: A, AAAA or SRV records of each configured name."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver

from monitor.collect.discovery.source import Source, dedupe
from monitor.collect.discovery.targets import (
    DiscoveredTarget,
    DiscoveryError,
    Parsed,
    Rejected,
    target,
)
from monitor.settings.discovery import (
    DiscoverySettings,
    DnsDiscovery,
    nameserver_address,
)
from monitor.units import TargetRefused, check_host, check_port


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
            elif self._take(name, answer):
                self._ok(name)
                self._by_name[name] = answer.targets
        merged = dedupe([self._by_name.get(n, []) for n in names])
        if len(merged) > self.max_targets:
            self._fail("", f"{len(merged)} targets, more than discovery.max_targets {self.max_targets}")
            return
        self._ok("")
        self._set(merged)

    async def _lookup(self, name: str) -> Parsed:
        where = f"dns {self.config.record} {name}"
        try:
            answer = await self._resolver.resolve(name, self._rdtype)
        except dns.resolver.NXDOMAIN:
            raise DiscoveryError(f"{where}: name does not exist (NXDOMAIN)") from None
        except dns.resolver.NoAnswer:
            return Parsed()  # the name exists and has no such records: an empty answer, not a failure
        except dns.exception.Timeout:
            raise DiscoveryError(f"{where}: no answer within timeout {self.config.timeout_s:g}s") from None
        except dns.resolver.NoNameservers as exc:
            raise DiscoveryError(f"{where}: no nameserver answered ({str(exc)[:200]})") from None
        except dns.exception.DNSException as exc:
            raise DiscoveryError(f"{where}: {type(exc).__name__}: {str(exc)[:200]}") from None
        return answer_targets(answer, self._rdtype, self.config.port, self.config.scheme, where, self.max_targets)


def answer_targets(records: Iterable[Any], rdtype: int, port: int | None, scheme: str, where: str,
                   max_targets: int) -> Parsed:
    """The targets of one name's records (SRV: each record's target and port; A/AAAA: each
    address and `port`), every host and port through the target grammar. A record outside it
    (an SRV target with escaped bytes, port 0) is dropped with its reason; the rest are kept.
    A record set bigger than `max_targets` is refused whole."""
    out = Parsed()
    kept: dict[str, DiscoveredTarget] = {}
    for rr in records:
        try:
            if rdtype == dns.rdatatype.SRV:
                host = rr.target.to_text(omit_final_dot=True)
                found = target(check_host(host), check_port(rr.port), "dns", scheme=scheme)
            else:
                assert port is not None  # the settings require it for A and AAAA
                found = target(check_host(str(rr.address)), check_port(port), "dns", scheme=scheme)
        except TargetRefused as exc:
            out.rejected.append(Rejected(exc.reason, f"{where}: record {str(rr)[:100]!r}: {exc}"))
            continue
        if found.address in kept:
            out.rejected.append(Rejected("duplicate", f"{where}: {found.address} is in more than one record"))
            continue
        kept[found.address] = found
        if len(kept) > max_targets:
            raise DiscoveryError(f"{where}: more than discovery.max_targets {max_targets} records")
    out.targets = list(kept.values())
    return out
