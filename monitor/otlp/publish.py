"""The trace figures on the service's `/metrics`: goodput per pool and model, and receiver counters.

A collector reading the store at scrape time (as the fleet collector does), so a pool that stops
sending traces simply ages out of the window.
"""

from __future__ import annotations

import time
from typing import Any, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from monitor.otlp.goodput import compute_goodput, latency_objectives
from monitor.otlp.receiver import TraceReceiver
from monitor.otlp.store import TraceStore

NAMESPACE = "slo_monitor"


class TraceMetricsCollector(Collector):
    """`slos` are the config's SloConfig list (latency SLOs per pool are picked from it)."""

    def __init__(self, store: TraceStore, slos: Sequence[Any], *, window_s: float,
                 receiver: TraceReceiver | None = None) -> None:
        self.store = store
        self.slos = slos
        self.window_s = window_s
        self.receiver = receiver

    def collect(self) -> Iterator:
        now = time.time()
        labels = ["pool", "model_name"]
        rps = GaugeMetricFamily(f"{NAMESPACE}_goodput_requests_per_second",
                                "Requests per second that met every latency SLO of the pool at once (from traces).",
                                labels=labels)
        ratio = GaugeMetricFamily(f"{NAMESPACE}_goodput_ratio",
                                  "Share of traced requests that met every latency SLO of the pool at once.",
                                  labels=labels)
        traced = GaugeMetricFamily(f"{NAMESPACE}_traced_requests",
                                   "Traced requests finished within the goodput window.", labels=labels)
        for pool in self.store.pools():
            records = self.store.records(pool, since=now - self.window_s)
            objectives = latency_objectives(self.slos, pool)
            first_at = self.store.first_at(pool)
            models = [None] + sorted({r.model for r in records if r.model is not None})
            for model in models:
                g = compute_goodput(records, objectives, pool=pool, now=now, window_s=self.window_s,
                                    first_at=first_at, model=model)
                who = [pool, model or ""]
                rps.add_metric(who, g.goodput_rps)
                traced.add_metric(who, float(g.requests))
                if g.good_ratio is not None:
                    ratio.add_metric(who, g.good_ratio)
        yield from (rps, ratio, traced)
        if self.receiver is not None:
            stats = self.receiver.stats
            requests = CounterMetricFamily(f"{NAMESPACE}_otlp_requests", "OTLP trace export requests by HTTP status.",
                                           labels=["code"])
            for code, count in sorted(stats.requests.items()):
                requests.add_metric([str(code)], float(count))
            spans = CounterMetricFamily(f"{NAMESPACE}_otlp_spans", "Spans received, by outcome.", labels=["outcome"])
            spans.add_metric(["accepted"], float(stats.spans_accepted))
            spans.add_metric(["rejected"], float(stats.spans_rejected))
            spans.add_metric(["ignored"], float(stats.spans_ignored))
            spans.add_metric(["duplicate"], float(self.store.duplicates))
            yield from (requests, spans)
