"""deploy/kubernetes, the kustomize base: every manifest against the Kubernetes schemas, the
kustomization built (by `kubectl kustomize` where kubectl exists, else its resources checked to exist
and parse), the config in its ConfigMap valid with the Secret's values, and the pieces agreeing with
each other and with the objects `generate --format prometheus-operator` writes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from monitor.config import load
from monitor.generate.kubernetes import KubernetesOptions, service_monitor, trigger_authentication

from tests.helpers.kube_schemas import validate

BASE = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes"
KUSTOMIZATION = yaml.safe_load((BASE / "kustomization.yaml").read_text())


def _objects() -> dict[str, dict]:
    """kind -> object, from the files the kustomization lists (each must exist and parse)."""
    out: dict[str, dict] = {}
    for name in KUSTOMIZATION["resources"]:
        path = BASE / name
        assert path.is_file(), f"kustomization.yaml lists {name}, which does not exist"
        for doc in yaml.safe_load_all(path.read_text()):
            assert isinstance(doc, dict) and doc.get("kind"), f"{name}: not a Kubernetes object"
            assert doc["kind"] not in out, f"two {doc['kind']} objects"
            out[doc["kind"]] = doc
    return out


def test_every_manifest_passes_the_kubernetes_schemas() -> None:
    assert KUSTOMIZATION["kind"] == "Kustomization"
    listed = set(KUSTOMIZATION["resources"])
    assert listed == {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}, "a manifest is not listed"
    objects = _objects()
    assert set(objects) == {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget"}  # no RBAC, no Secret
    for obj in objects.values():
        validate(obj)


@pytest.mark.e2e
def test_kubectl_kustomize_builds_the_base_and_its_output_is_valid() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:  # the checks above (every resource exists, parses and validates) stand in for the build
        pytest.skip("kubectl is not installed: kustomization resources were checked file by file instead")
    done = subprocess.run([kubectl, "kustomize", str(BASE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    built = [d for d in yaml.safe_load_all(done.stdout) if d]
    assert sorted(d["kind"] for d in built) == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service"]
    for obj in built:
        validate(obj)
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "llm-slo-monitor"


def test_the_config_runs_on_postgresql_with_the_secrets_values(tmp_path: Path) -> None:
    objects = _objects()
    config_file = tmp_path / "config.yaml"
    config_file.write_text(objects["ConfigMap"]["data"]["config.yaml"])
    environ = {"SLO_MONITOR_TOKEN": "s3cret", "SLO_MONITOR_DATABASE_URL": "postgresql+psycopg://slo:pw@pg:5432/slo"}
    loaded = load(config_file, environ=environ)
    assert not loaded.warnings, loaded.warnings
    config = loaded.config
    assert config.ha.enabled and config.storage.url == environ["SLO_MONITOR_DATABASE_URL"]
    assert config.api.token == "s3cret"
    # the Deployment fills exactly those variables, from the Secret
    (container,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert set(env) == set(environ)
    assert {ref["name"] for ref in env.values()} == {"slo-monitor"}
    port = int(config.api.listen.rpartition(":")[2])
    assert container["ports"] == [{"name": "http", "containerPort": port}]
    assert objects["Service"]["spec"]["ports"][0]["port"] == port
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert container["args"][container["args"].index("--config") + 1].startswith(mount["mountPath"] + "/")


def test_two_replicas_probes_a_budget_and_requests_from_the_benchmarks() -> None:
    objects = _objects()
    deployment = objects["Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert objects["PodDisruptionBudget"]["spec"]["minAvailable"] == 1
    assert objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert objects["Service"]["spec"]["selector"].items() <= pod_labels.items()
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # ready only once migrations ran and a first cycle completed (the service's /readyz)
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    requests = container["resources"]["requests"]
    # README's benchmark: 0.48 cores and ~330 MiB at 1,000 targets
    assert float(requests["cpu"].removesuffix("m")) / 1000 >= 0.48
    assert int(requests["memory"].removesuffix("Mi")) >= 330
    assert deployment["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_the_generated_operator_objects_find_this_service_and_secret() -> None:
    objects = _objects()
    options = KubernetesOptions()
    monitor = service_monitor("15s", options)
    assert monitor["spec"]["selector"]["matchLabels"].items() <= objects["Service"]["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == objects["Service"]["spec"]["ports"][0]["name"]
    assert options.monitor_service == objects["Service"]["metadata"]["name"]
    assert options.monitor_port == objects["Service"]["spec"]["ports"][0]["port"]
    (ref,) = trigger_authentication(options)["spec"]["secretTargetRef"]
    (container,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    token = next(e for e in container["env"] if e["name"] == "SLO_MONITOR_TOKEN")["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == (token["name"], token["key"])
