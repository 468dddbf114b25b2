"""`generate --format prometheus-operator` writes an Argo Rollouts AnalysisTemplate and a Flagger
MetricTemplate per canary, valid against their CRD schemas (tests/fixtures/crds/)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from monitor.config import validate as validate_config
from monitor.generate.layout import Options, generate
from tests.helpers.kube_schemas import validate

CONFIG = {
    "pools": [{"name": "chat", "discovery": [{"type": "file", "files": ["/tmp/chat.json"]}]}],
    "canaries": [{"name": "llama-v2", "pool": "chat", "baseline": {"labels": {"version": "v1"}},
                  "candidate": {"labels": {"version": "v2"}}, "min_duration": "10m"}],
}


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("generated")
    config = validate_config(CONFIG, environ={}).config
    generate(config, out, Options(formats=("prometheus-operator",)))
    folder = Path(out) / "prometheus-operator"
    return {p.name: yaml.safe_load(p.read_text()) for p in folder.glob("*.yaml")}


def test_each_canary_gets_an_argo_analysis_template_reading_the_verdict(objects):
    template = objects["analysistemplate-llama-v2.yaml"]
    validate(template)
    metric = template["spec"]["metrics"][0]
    assert metric["provider"]["web"]["jsonPath"] == "{$.verdict}"
    assert metric["provider"]["web"]["url"].endswith("/api/v1/canaries/llama-v2")
    assert metric["successCondition"] == 'result == "pass"'
    assert metric["failureCondition"] == 'result == "fail"'
    assert metric["inconclusiveLimit"] >= 10  # ten minutes of evidence at one measurement a minute


def test_each_canary_gets_a_flagger_metric_template_on_the_verdict_gauge(objects):
    template = objects["metrictemplate-llama-v2.yaml"]
    validate(template)
    assert 'slo_monitor_canary_verdict{canary="llama-v2",verdict="fail"}' in template["spec"]["query"]


def test_the_kustomization_lists_the_rollout_objects(objects):
    resources = objects["kustomization.yaml"]["resources"]
    assert "analysistemplate-llama-v2.yaml" in resources and "metrictemplate-llama-v2.yaml" in resources


def test_the_schemas_refuse_a_template_without_a_provider():
    with pytest.raises(AssertionError):
        validate({"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate", "metadata": {"name": "x"},
                  "spec": {"query": "up"}})
    with pytest.raises(AssertionError):
        validate({"apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisTemplate", "metadata": {"name": "x"},
                  "spec": {"metrics": [{"name": "m"}]}})


def test_plain_generate_writes_the_same_rollout_templates_without_the_operator_format(tmp_path, objects):
    config = validate_config(CONFIG, environ={}).config
    generate(config, tmp_path, Options())  # the default: alerts/, dashboards/ and rollouts/
    plain = {p.name: yaml.safe_load(p.read_text()) for p in (tmp_path / "rollouts").glob("*.yaml")}
    assert plain == {name: obj for name, obj in objects.items()
                     if name.startswith(("analysistemplate-", "metrictemplate-"))}
    for obj in plain.values():
        validate(obj)
