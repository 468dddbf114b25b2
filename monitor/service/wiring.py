"""Where the configuration meets the stages: each stage is built from the few fields it reads.

The only module (with the service itself) that knows both the config's shape and every stage, so
that a stage never takes the whole `Config` and a config change touches one place.
"""

from __future__ import annotations

from typing import Collection, Mapping, Sequence

from monitor.collect.discovery import Discovery, PoolSpec
from monitor.collect.discovery.targets import DiscoveredTarget
from monitor.collect.promql import PrometheusSource
from monitor.collect.scraper import Scraper, Target
from monitor.config import Config
from monitor.decide.fleet import PoolPolicy
from monitor.evaluate.slo.engine import PROMETHEUS_LAG_S, SloEngine
from monitor.gpu.collect import GpuScraper
from monitor.gpu.mapping import GpuMapper
from monitor.publish.alertmanager import AlertmanagerNotifier

Membership = Mapping[str, Mapping[str, DiscoveredTarget]]  # pool -> address -> target


def scrape_source(config: Config) -> Scraper | PrometheusSource:
    """The collector of per-instance signals: our own scraper, or PromQL against Prometheus."""
    s, source = config.scrape, config.source
    if source.type == "prometheus":
        assert source.url is not None  # the config refuses type prometheus without url
        return PrometheusSource(source.url, timeout=source.timeout or s.timeout,
                                max_response_size=source.max_response_size, instance_label=source.instance_label,
                                selector=source.selector, max_instances_per_query=source.max_instances_per_query,
                                max_age=source.max_age, headers=dict(source.headers),
                                bearer_token=source.bearer_token)
    return Scraper(timeout=s.timeout, max_body_size=s.max_body_size, metrics_path=s.metrics_path,
                   health_path=s.health_path, concurrency=s.concurrency)


def slo_engine(config: Config, *, keep_rows: bool = True) -> SloEngine:
    """The SLO engine for a config. The prometheus source cannot see /health (Prometheus does not
    probe it), so there `up` alone decides availability; a minute's spans settle after the scrape
    that counted its histograms (and Prometheus's own lag) had time to arrive."""
    s, traces = config.scrape, config.traces
    lag = PROMETHEUS_LAG_S if config.source.type == "prometheus" else 0.0
    return SloEngine(config.slos, [p.name for p in config.pools], keep_rows=keep_rows,
                     health_checked=health_checked(config),
                     trace_settle_s=max(traces.settle, s.interval + s.timeout + lag),
                     trace_min_coverage=traces.min_coverage, costs={p.name: p.cost for p in config.pools})


def health_checked(config: Config) -> bool:
    """Whether availability needs /health 200: only where we probe it ourselves."""
    return config.scrape.health_path is not None and config.source.type == "scrape"


# Prometheus samples reach the `prometheus` source up to one Prometheus scrape interval after
# their timestamp: a minute is rolled up only once they have had time to arrive
PROMETHEUS_SETTLE_S = 30.0


def settle_s(config: Config) -> float:
    """How long after a minute's end its last sample may still arrive (a scrape started before the
    minute ended finishes up to `timeout` later; Prometheus's samples arrive later still)."""
    settle = config.scrape.timeout + 1.0
    return settle + PROMETHEUS_SETTLE_S if config.source.type == "prometheus" else settle


def pool_policies(config: Config) -> dict[str, PoolPolicy]:
    return {p.name: PoolPolicy(p.health, p.scaling) for p in config.pools}


def pool_specs(config: Config) -> list[PoolSpec]:
    """What discovery reads of each pool: its static targets and its discovery sources."""
    return [PoolSpec(p.name, tuple(p.targets), tuple(p.discovery)) for p in config.pools]


def discovery(config: Config) -> Discovery:
    return Discovery(pool_specs(config), config.discovery)


def notifier(config: Config) -> AlertmanagerNotifier | None:
    am = config.alertmanager
    if not am.url:
        return None
    return AlertmanagerNotifier(am.url, resend_interval=am.resend_interval, timeout=am.timeout)


def gpu_scraper(config: Config) -> GpuScraper | None:
    if not config.gpu.exporters:
        return None
    return GpuScraper(config.gpu.exporters, timeout=config.scrape.timeout, max_body_size=config.scrape.max_body_size)


def gpu_mapper(config: Config, members: Mapping[str, Sequence[str]]) -> GpuMapper:
    return GpuMapper(config.gpu.mappings, members, auto_map=config.gpu.auto_map)


def scrape_targets(membership: Membership, judged_leaving: Collection[str] = frozenset()) -> list[Target]:
    """Every current member to scrape (leaving ones are drained and no longer scraped)."""
    return [Target(pool, t.url, t.metrics_path) for pool, members in membership.items()
            for address, t in members.items() if address not in judged_leaving]


def addresses(membership: Membership) -> dict[str, list[str]]:
    return {pool: list(members) for pool, members in membership.items()}


def urls(membership: Membership) -> dict[str, dict[str, str]]:
    return {pool: {a: t.url for a, t in members.items()} for pool, members in membership.items()}
