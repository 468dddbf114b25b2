"""Objects rollout tools read a canary's verdict with (prometheus-operator format): an Argo Rollouts
`AnalysisTemplate` (a `web` metric on /api/v1/canaries/{name}, `jsonPath: "{$.verdict}"`) and a
Flagger `MetricTemplate` (a Prometheus query on `slo_monitor_canary_verdict`), one of each per canary
(docs/canaries.md shows how a Rollout and a Canary reference them)."""

from __future__ import annotations

import math
from typing import Any

from monitor.generate.kubernetes import KubernetesOptions, _meta, k8s_name
from monitor.settings.canaries import CanaryConfig

# where Flagger finds Prometheus unless told: the Service the operator's `Prometheus` object gets
PROMETHEUS_ADDRESS = "http://prometheus-operated.monitoring:9090"
INTERVAL_S = 60  # how often Argo asks for the verdict
EXTRA_INCONCLUSIVE = 10  # measurements past min_duration that may stay inconclusive (the requests arriving)
PASSES_NEEDED = 5  # measurements beyond the inconclusive allowance: a `pass` must hold this long


def analysis_template(canary: CanaryConfig, options: KubernetesOptions) -> dict[str, Any]:
    """`successCondition: result == "pass"`, `failureCondition: result == "fail"`; `inconclusive`
    is neither, and Argo tolerates `inconclusiveLimit` of those (min_duration's worth of
    measurements, and some for the requests to arrive) before it pauses the rollout for a person.
    `count` ends the metric (Argo measures a metric with an `interval` and no `count` for ever, so an
    analysis step would never complete on `pass`): the allowance plus PASSES_NEEDED measurements."""
    limit = math.ceil(canary.min_duration / INTERVAL_S) + EXTRA_INCONCLUSIVE
    return {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisTemplate",
        "metadata": _meta(f"slo-monitor-canary-{k8s_name(canary.name)}", options),
        "spec": {
            "args": [{"name": "token", "valueFrom": {"secretKeyRef": {"name": options.token_secret,
                                                                      "key": options.token_key}}}],
            "metrics": [{
                "name": "slo-monitor-verdict",
                "interval": f"{INTERVAL_S}s",
                "count": limit + PASSES_NEEDED,
                "successCondition": 'result == "pass"',
                "failureCondition": 'result == "fail"',
                "failureLimit": 0,
                "inconclusiveLimit": limit,
                "provider": {"web": {
                    "url": f"{options.monitor_url}/api/v1/canaries/{canary.name}",
                    "headers": [{"key": "Authorization", "value": "Bearer {{args.token}}"}],
                    "timeoutSeconds": 10,
                    "jsonPath": "{$.verdict}",
                }},
            }],
        },
    }


def metric_template(canary: CanaryConfig, options: KubernetesOptions) -> dict[str, Any]:
    """1 while the canary fails, else 0: the Canary's analysis gives it `thresholdRange: {max: 0}`."""
    return {
        "apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
        "metadata": _meta(f"slo-monitor-canary-{k8s_name(canary.name)}", options),
        "spec": {
            "provider": {"type": "prometheus", "address": PROMETHEUS_ADDRESS},
            "query": f'max(slo_monitor_canary_verdict{{canary="{canary.name}",verdict="fail"}}) or vector(0)',
        },
    }


def canary_objects(canary: CanaryConfig, options: KubernetesOptions) -> dict[str, dict[str, Any]]:
    """File name -> object, for one canary."""
    stem = k8s_name(canary.name)
    return {f"analysistemplate-{stem}.yaml": analysis_template(canary, options),
            f"metrictemplate-{stem}.yaml": metric_template(canary, options)}
