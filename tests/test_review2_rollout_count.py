"""The Argo AnalysisTemplate's metric ends: Argo measures a metric with an `interval` and no `count`
for ever, so an inline analysis step would never complete on a `pass` verdict."""

from __future__ import annotations

from monitor.config import validate as validate_config
from monitor.generate.kubernetes import KubernetesOptions
from monitor.generate.rollouts import analysis_template
from tests.helpers.kube_schemas import validate


def test_the_analysis_metric_has_a_count_beyond_its_inconclusive_allowance():
    config = validate_config({
        "pools": [{"name": "chat", "targets": ["http://10.0.0.1:8000"]}],
        "canaries": [{"name": "llama-v2", "pool": "chat", "baseline": {"labels": {"version": "v1"}},
                      "candidate": {"labels": {"version": "v2"}}, "min_duration": "10m"}],
    }, environ={}).config
    template = analysis_template(config.canaries[0], KubernetesOptions())
    validate(template)
    metric = template["spec"]["metrics"][0]
    assert isinstance(metric["count"], int)
    assert metric["count"] > metric["inconclusiveLimit"]  # a pass after the allowance still completes
