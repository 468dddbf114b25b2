"""`slo-monitor generate --format prometheus-operator`: the Kubernetes objects, golden files from a
fresh process, every object against its schema (Kubernetes' own and the vendored CRDs), the rules
inside every PrometheusRule through `promtool check rules` and the generated `promtool test rules`,
and the flags that place and label the objects."""

from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from monitor.cli import main
from monitor.decide.scaling import ScalingRecommendation
from monitor.generate.kubernetes import SCALING_FIELD, k8s_name

from tests.helpers.ci import require
from tests.helpers.golden import GOLDEN, compare_with_golden, generate_fresh
from tests.helpers.kube_schemas import validate

MATRIX = GOLDEN / "matrix" / "config.yaml"
# the golden's flags: what a kube-prometheus-stack user would pass
ARGS = ["--config", str(MATRIX), "--format", "prometheus-operator", "--format", "plain", "--namespace", "llm",
        "--rule-labels", "release=kube-prometheus-stack", "--rule-labels", "team=inference",
        "--monitor-labels", "release=kube-prometheus-stack"]
FOLDER = "prometheus-operator"

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("operator")
    generate_fresh(ARGS, root)
    return root


def _objects(folder: Path) -> dict[str, dict]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(folder.glob("*.yaml"))
            if p.name != "kustomization.yaml"}


def promtool() -> str:
    path = shutil.which("promtool") or "/usr/bin/promtool"
    require(Path(path).exists(), "promtool is not installed (Debian package prometheus)")
    return path


def test_a_fresh_process_writes_the_golden_objects(out: Path) -> None:
    """Refresh after an intended change: UPDATE_GOLDEN=1 (tests/helpers/golden.py)."""
    compare_with_golden(out, "matrix", (FOLDER,))


def test_the_plain_files_are_the_same_with_the_operator_format_beside_them(out: Path) -> None:
    compare_with_golden(out, "matrix", ("alerts", "dashboards"))


def test_every_object_passes_its_schema_and_the_kustomization_lists_them_all(out: Path) -> None:
    objects = _objects(out / FOLDER)
    for obj in objects.values():
        validate(obj)
    kinds = sorted(o["kind"] for o in objects.values())
    assert kinds.count("PrometheusRule") == 10 + 2 and kinds.count("ScaledObject") == 2
    assert kinds.count("ConfigMap") == 4  # the matrix has GPU exporters: four dashboards
    assert {"ServiceMonitor", "PodMonitor", "TriggerAuthentication"} <= set(kinds)
    kustomization = yaml.safe_load((out / FOLDER / "kustomization.yaml").read_text())
    assert kustomization["resources"] == sorted(objects)
    assert all(o["metadata"]["namespace"] == "llm" for o in objects.values())


def test_the_schema_check_refuses_a_misspelt_field(out: Path) -> None:
    """The check above can fail: a CRD field misspelt, a built-in one misspelt, a wrong type."""
    objects = _objects(out / FOLDER)
    scaled = objects["scaledobject-a.yaml"]
    scaled["spec"]["fallbak"] = scaled["spec"].pop("fallback")
    board = objects["dashboard-fleet.yaml"]
    board["metadata"]["lables"] = board["metadata"].pop("labels")
    rule = objects["prometheusrule-fleet.yaml"]
    rule["spec"]["groups"][0]["rules"][0]["for"] = 5
    for broken in (scaled, board, rule):
        with pytest.raises(AssertionError):
            validate(broken)


def test_the_fallback_behavior_is_checked_against_the_keda_schema_that_has_it(out: Path) -> None:
    """KEDA 2.17+ knows `fallback.behavior`; a value it does not know is refused, as the API server would."""
    scaled = _objects(out / FOLDER)["scaledobject-a.yaml"]
    validate(scaled)
    scaled["spec"]["fallback"]["behavior"] = "keepCurrent"
    with pytest.raises(AssertionError):
        validate(scaled)


def test_every_prometheusrule_holds_a_plain_rule_file_and_passes_promtool(out: Path, tmp_path: Path) -> None:
    """spec.groups of each PrometheusRule, written out as a rule file, is the plain format's file
    and passes `promtool check rules` and that file's generated `promtool test rules`."""
    tool = promtool()
    rules = {o["metadata"]["name"]: o for o in _objects(out / FOLDER).values() if o["kind"] == "PrometheusRule"}
    plain = sorted((out / "alerts").glob("*.rules.yml"))
    assert len(rules) == len(plain)
    for path in plain:
        stem = path.name.removesuffix(".rules.yml")
        obj = rules[f"slo-monitor-{k8s_name(stem)}"]
        assert obj["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert obj["metadata"]["labels"]["team"] == "inference"
        assert obj["spec"]["groups"] == yaml.safe_load(path.read_text())["groups"]
        (tmp_path / path.name).write_text(yaml.safe_dump({"groups": obj["spec"]["groups"]}, sort_keys=False))
        shutil.copy(out / "alerts" / f"{stem}.test.yml", tmp_path)
    files = sorted(p.name for p in tmp_path.glob("*.rules.yml"))
    check = subprocess.run([tool, "check", "rules", *files], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda f: (f, subprocess.run(
            [tool, "test", "rules", f.replace(".rules.", ".test.")], capture_output=True, text=True,
            cwd=tmp_path, timeout=300)), files))
    failed = [f"{f}:\n{r.stdout}{r.stderr}" for f, r in results if r.returncode != 0]
    assert not failed, "\n".join(failed)


def test_scaled_objects_read_the_scaling_endpoint_with_the_token(out: Path) -> None:
    objects = _objects(out / FOLDER)
    # the JSON field KEDA reads is the one the endpoint serves
    assert SCALING_FIELD in ScalingRecommendation("p", 0.0, 1, 2, "r").to_json()
    auth = objects["triggerauthentication.yaml"]
    assert auth["spec"]["secretTargetRef"] == [{"parameter": "token", "name": "slo-monitor", "key": "token"}]
    scaled = [o for o in objects.values() if o["kind"] == "ScaledObject"]
    assert sorted(o["spec"]["scaleTargetRef"]["name"] for o in scaled) == ["vllm-a", "vllm-b.x"]
    for obj in scaled:
        (trigger,) = obj["spec"]["triggers"]
        pool = "b.x" if obj["spec"]["scaleTargetRef"]["name"] == "vllm-b.x" else "a"
        assert trigger["type"] == "metrics-api" and trigger["metricType"] == "AverageValue"
        assert trigger["metadata"]["url"] == f"http://slo-monitor.llm.svc:9470/api/v1/pools/{pool}/scaling"
        assert trigger["metadata"]["valueLocation"] == SCALING_FIELD and trigger["metadata"]["targetValue"] == "1"
        assert trigger["metadata"]["authMode"] == "bearer"
        assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
        # when the monitor cannot answer KEDA keeps the replicas running, never scaling the fleet down
        # to a fixed count; the configured size is only a floor (pool a: two targets)
        assert obj["spec"]["fallback"] == {"failureThreshold": 3, "behavior": "currentReplicasIfHigher",
                                           "replicas": 2 if pool == "a" else 1}


def test_monitors_give_the_rules_their_job_and_pool_labels(out: Path) -> None:
    objects = _objects(out / FOLDER)
    pods = objects["podmonitor.yaml"]
    assert pods["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert pods["spec"]["selector"]["matchExpressions"] == [{"key": "pool", "operator": "In", "values": ["a", "b.x"]}]
    (endpoint,) = pods["spec"]["podMetricsEndpoints"]
    assert {"targetLabel": "job", "replacement": "vllm"} in endpoint["relabelings"]
    assert {"sourceLabels": ["__meta_kubernetes_pod_label_pool"], "targetLabel": "pool"} in endpoint["relabelings"]
    service = objects["servicemonitor.yaml"]
    (endpoint,) = service["spec"]["endpoints"]
    assert endpoint["honorLabels"] is True and endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    assert service["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/name": "slo-monitor"}}
    boards = [o for o in objects.values() if o["kind"] == "ConfigMap"]
    assert all(o["metadata"]["labels"]["grafana_dashboard"] == "1" for o in boards)
    assert (out / "dashboards" / "fleet.json").read_text() == objects["dashboard-fleet.yaml"]["data"]["fleet.json"]


def test_bad_flags_are_refused_and_a_removed_pool_loses_its_scaled_object(tmp_path: Path, capsys) -> None:
    base = ["generate", "--config", str(MATRIX), "--out", str(tmp_path), "--format", "prometheus-operator"]
    assert main(base + ["--rule-labels", "release"]) == 2
    assert "--rule-labels" in capsys.readouterr().err
    assert main(base + ["--namespace", "Bad_NS"]) == 2
    assert main(base + ["--scale-target", "vllm"]) == 2
    assert main(base) == 0
    assert not (tmp_path / "alerts").exists()  # only the format asked for
    mine = tmp_path / FOLDER / "extra.yaml"
    mine.write_text("kind: ConfigMap\n")
    one_pool = tmp_path / "one.yaml"
    one_pool.write_text(MATRIX.read_text().replace("pools: [b.x]", "pools: [a]").replace(
        "  - name: b.x\n    targets: [https://10.0.0.3:8443/v1prefix]\n", ""))
    assert main(["generate", "--config", str(one_pool), "--out", str(tmp_path), "--format", "prometheus-operator"]) == 0
    names = sorted(p.name for p in (tmp_path / FOLDER).glob("scaledobject-*.yaml"))
    assert names == ["scaledobject-a.yaml"] and mine.exists()


@pytest.mark.e2e
def test_monitor_port_sets_the_port_keda_calls(tmp_path: Path) -> None:
    generate_fresh([*ARGS, "--monitor-port", "8443"], tmp_path)
    scaled = [o for o in _objects(tmp_path / FOLDER).values() if o["kind"] == "ScaledObject"]
    assert scaled and all(o["spec"]["triggers"][0]["metadata"]["url"].startswith("http://slo-monitor.llm.svc:8443/")
                          for o in scaled)
