"""The fleet dashboard: what vLLM itself reports, per pool, model and instance (targets up, traffic,
errors, latency quantiles, queues, KV cache, preemptions, prefix-cache hits)."""

from __future__ import annotations

import monitor.generate.expressions as q
from monitor.generate.panels import RATE, TOKENS_PER_S, VLLM, DashboardSpec, PanelSpec, pool_variables, quantiles, query


def fleet_dashboard() -> DashboardSpec:
    success = q.SUCCESS
    finished = f"rate({q.selector(success, [VLLM])}[{RATE}])"
    rejected = f"rate({q.selector(q.REJECTIONS, [VLLM])}[{RATE}])"
    errors = f'rate({q.selector(success, [VLLM, "finished_reason=" + q.quote("error")])}[{RATE}])'
    hits = q.rate_any(q.PREFIX_HITS, [VLLM], RATE)
    queries = q.rate_any(q.PREFIX_QUERIES, [VLLM], RATE)
    by_instance = ("pool", "model_name", "instance")
    spec = DashboardSpec(
        uid="llm-slo-fleet", title="LLM fleet (vLLM)", file_stem="fleet", time_from="now-3h",
        description="Traffic, latency, load and cache of every vLLM server, per pool, model and instance, read "
                    "straight from vLLM's /metrics (V0 and V1 names).",
        variables=pool_variables(q.RUNNING, q.RUNNING, q.RUNNING),
    )
    spec.rows = [
        ("Traffic", [
            PanelSpec("vLLM targets up", (query(f'sum by (pool) (up{{job={q.quote(q.VLLM_JOB)}, pool=~"$pool", '
                                             f'instance=~"$instance"}})', "{{pool}}"),),
                      "none", "Targets Prometheus scraped successfully at the last scrape, per pool.",
                      kind="stat", width=6, height=6),
            PanelSpec("Requests per second", (query(q.sum_by(by_instance, finished), "{{instance}} {{model_name}}"),),
                      "reqps", "Finished requests per second (every finished_reason), per instance.",
                      width=18, height=6),
            PanelSpec("Tokens per second", (
                query(q.sum_by(("pool", "model_name"), f"rate({q.selector(q.PROMPT_TOKENS, [VLLM])}[{RATE}])"),
                   "prompt {{pool}} {{model_name}}"),
                query(q.sum_by(("pool", "model_name"), f"rate({q.selector(q.GENERATION_TOKENS, [VLLM])}[{RATE}])"),
                   "generation {{pool}} {{model_name}}"),
            ), TOKENS_PER_S, "Prompt (prefill) and generated tokens per second."),
            PanelSpec("Errors and aborts by reason", (
                query(f"sum by (pool, model_name, finished_reason) "
                   f'(rate({q.selector(success, [VLLM, "finished_reason=~" + q.quote("error|abort")])}[{RATE}]))',
                   "{{finished_reason}} {{pool}} {{model_name}}"),
                query(f"sum by (pool, model_name, reason) ({rejected})", "rejected ({{reason}}) {{pool}} {{model_name}}"),
            ), "reqps", "Requests that finished with an error or were aborted by the client, and requests "
                        "rejected at admission (vLLM ≥ 0.33), per reason."),
            PanelSpec("Error ratio", (
                query(f"{q.sum_by(('pool', 'model_name'), errors + ' or ' + rejected)}\n/\n"
                   f"{q.sum_by(('pool', 'model_name'), finished + ' or ' + rejected)}",
                   "{{pool}} {{model_name}}"),
            ), "percentunit", "Errors and admission rejections over all finished and rejected requests: the "
                              "error_ratio SLI. Client aborts count as requests, not errors.", min=0),
        ]),
        ("Latency", [
            PanelSpec("Time to first token", quantiles(q.histogram_names("ttft")), "s",
                      "TTFT p50 / p90 / p99 per pool and model, from vllm:time_to_first_token_seconds."),
            PanelSpec("Time per output token", quantiles(q.histogram_names("tpot")), "s",
                      "Inter-token latency p50 / p90 / p99 (vllm:inter_token_latency_seconds, or "
                      "vllm:time_per_output_token_seconds on older servers)."),
            PanelSpec("End-to-end request latency", quantiles(q.histogram_names("e2e")), "s",
                      "Request latency p50 / p90 / p99, arrival to last token."),
            PanelSpec("Queue time", quantiles(q.histogram_names("queue")), "s",
                      "Time requests waited before being scheduled, p50 / p90 / p99."),
            PanelSpec("TTFT p99 per instance", (
                query(f"histogram_quantile(0.99, sum by (le, pool, instance) "
                   f"({q.rate_any(q.histogram_names('ttft'), [VLLM], RATE, '_bucket')}))", "{{instance}}"),
            ), "s", "One slow instance hides in a pool-wide percentile; this is where it shows.", width=24),
        ]),
        ("Load and cache", [
            PanelSpec("Requests running and waiting", (
                query(q.sum_by(by_instance, q.selector(q.RUNNING, [VLLM])), "running {{instance}}"),
                query(q.sum_by(by_instance, q.selector(q.WAITING, [VLLM])), "waiting {{instance}}"),
            ), "short", "Requests in the running batch and in the queue, per instance."),
            PanelSpec("KV-cache usage", (
                query(f"avg by (pool, model_name, instance) ({q.any_of(q.KV_USAGE, [VLLM])})", "{{instance}}"),
            ), "percentunit", "vllm:kv_cache_usage_perc (vllm:gpu_cache_usage_perc before 0.9.2); 1 = full.",
                min=0, max=1),
            PanelSpec("Preemptions per second", (
                query(q.sum_by(by_instance, f"rate({q.selector(q.PREEMPTIONS, [VLLM])}[{RATE}])"), "{{instance}}"),
            ), "ops", "Requests preempted (KV cache exhausted) per second, per instance."),
            PanelSpec("Prefix-cache hit rate", (
                query(f"{q.sum_by(by_instance, hits)}\n/\n{q.sum_by(by_instance, queries)}\nor\n"
                   f"avg by (pool, model_name, instance) ({q.selector(q.PREFIX_HIT_RATE_V0, [VLLM])} >= 0)",
                   "{{instance}}"),
            ), "percentunit", "Prefix-cache hits over queries (tokens; blocks before vLLM 0.9), or V0's hit-rate "
                              "gauge (−1, prefix caching disabled, is left out).", min=0, max=1),
        ]),
    ]
    return spec
