"""`generate --format prometheus-operator`: the same rules and dashboards as Kubernetes objects.

Most vLLM fleets run on Kubernetes with the Prometheus Operator, Grafana's dashboard sidecar and
KEDA; they apply objects, not rule files. Written under DIR/prometheus-operator/, one object per
file (a diff or a review shows one object at a time) plus a `kustomization.yaml` listing them all,
so `kubectl apply -k DIR/prometheus-operator` applies everything:

* `prometheusrule-<set>.yaml`: one `PrometheusRule` per rule file of the plain format (each SLO,
  `fleet`, `decisions`), its `spec.groups` exactly that file's `groups`; `--rule-labels` go on
  `metadata.labels`, where the operator's `ruleSelector` looks;
* `servicemonitor.yaml`: slo-monitor's own /metrics (job `slo-monitor`, `honorLabels`, as the
  plain prometheus.yml scrapes it);
* `podmonitor.yaml`: the vLLM pods, job `vllm`, with the `pool` label every rule groups by taken
  from a pod label (`--pool-label`, default `pool`, whose value is the pool's name);
* `triggerauthentication.yaml` and `scaledobject-<pool>.yaml`: a KEDA metrics-api scaler per pool
  on `/api/v1/pools/{pool}/scaling` (`desired_replicas`, target 1 per replica, so KEDA's
  AverageValue arithmetic lands on exactly the recommended count), the bearer token read from a
  Secret, and a `fallback` that keeps the replicas the pool has when the monitor cannot answer
  (`behavior: currentReplicasIfHigher`, KEDA 2.17+: the monitor's outage must not become the fleet's,
  as a static fallback to one replica would make it), the configured size only as a floor;
* `dashboard-<name>.yaml`: each Grafana dashboard in a ConfigMap labelled `grafana_dashboard: "1"`,
  the label Grafana's sidecar watches by default.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Sequence
from urllib.parse import quote as url_quote

import monitor.generate.expressions as q
from monitor.config import PoolConfig, parse_duration

FOLDER = "prometheus-operator"
APP = "slo-monitor"  # app.kubernetes.io/name of the monitor's pods and Service (deploy/kubernetes)
SCALING_FIELD = "desired_replicas"  # the JSON field of /api/v1/pools/{pool}/scaling KEDA reads
FALLBACK_FAILURES = 3  # failed reads of the scaling endpoint before KEDA holds the fallback size
# KEDA 2.17+: while the scaler fails, keep the current replica count, `replicas` only as a floor
# (`static`, the only behaviour before 2.17, scales to `replicas` whatever the fleet was serving)
FALLBACK_BEHAVIOR = "currentReplicasIfHigher"


@dataclass(frozen=True)
class KubernetesOptions:
    """Where the objects go and how they find what they watch; defaults fit deploy/kubernetes."""

    namespace: str = "default"  # every generated object; the vLLM pods' and their Deployments' namespace
    monitor_namespace: str | None = None  # where slo-monitor's Service runs (default: `namespace`)
    monitor_service: str = APP  # its Service name
    monitor_port: int = 9470  # its Service port (named `http`)
    rule_labels: tuple[tuple[str, str], ...] = ()  # on each PrometheusRule, for the operator's ruleSelector
    monitor_labels: tuple[tuple[str, str], ...] = ()  # on the ServiceMonitor and PodMonitor
    pool_label: str = "pool"  # pod label whose value names the vLLM pod's pool
    vllm_port: str = "http"  # named container port of vLLM's /metrics
    scale_target: str = "vllm-{pool}"  # the Deployment KEDA scales for a pool ({pool}: its name)
    token_secret: str = APP  # Secret holding the API token (the one deploy/kubernetes mounts)
    token_key: str = "token"
    dashboard_labels: tuple[tuple[str, str], ...] = (("grafana_dashboard", "1"),)

    @property
    def monitor_url(self) -> str:
        ns = self.monitor_namespace or self.namespace
        return f"http://{self.monitor_service}.{ns}.svc:{self.monitor_port}"


def k8s_name(text: str) -> str:
    """A DNS-1123 label from a pool, SLO or rule-set name: lower case, `-` for anything else, and a
    short hash when that changed it, so `a.b` and `a-b` never become the same object."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "x"
    if name != text:
        name = f"{name[:54].rstrip('-')}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"
    return name[:63]


def _label_name(key: str) -> str:
    """How Prometheus spells a Kubernetes pod label in service discovery meta labels."""
    return re.sub(r"[^A-Za-z0-9_]", "_", key)


def _meta(name: str, options: KubernetesOptions, labels: Sequence[tuple[str, str]] = (),
          annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": options.namespace,
                            "labels": {"app.kubernetes.io/part-of": "llm-slo-monitor",
                                       "app.kubernetes.io/managed-by": "slo-monitor-generate", **dict(labels)}}
    if annotations:
        meta["annotations"] = annotations
    return meta


def prometheus_rule(stem: str, groups: list[dict[str, Any]], options: KubernetesOptions) -> dict[str, Any]:
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": _meta(f"slo-monitor-{k8s_name(stem)}", options, options.rule_labels),
            "spec": {"groups": groups}}


def service_monitor(scrape_interval: str, options: KubernetesOptions) -> dict[str, Any]:
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
            "metadata": _meta("slo-monitor", options, options.monitor_labels),
            "spec": {
                "selector": {"matchLabels": {"app.kubernetes.io/name": APP}},
                "namespaceSelector": {"matchNames": [options.monitor_namespace or options.namespace]},
                "endpoints": [{
                    "port": "http", "path": "/metrics", "interval": scrape_interval,
                    # its series name vLLM instances in their own `instance` label
                    "honorLabels": True,
                    "relabelings": [{"targetLabel": "job", "replacement": q.SERVICE_JOB}],
                }],
            }}


def pod_monitor(pools: Sequence[str], metrics_path: str, scrape_interval: str, timeout_s: float,
                options: KubernetesOptions) -> dict[str, Any]:
    """Every vLLM pod whose pool label names a configured pool, scraped as job `vllm` with that pool."""
    timeout = q.duration(min(timeout_s, parse_duration(scrape_interval)))
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
            "metadata": _meta("vllm", options, options.monitor_labels),
            "spec": {
                "selector": {"matchExpressions": [{"key": options.pool_label, "operator": "In",
                                                   "values": sorted(pools)}]},
                "podMetricsEndpoints": [{
                    "port": options.vllm_port, "path": metrics_path, "interval": scrape_interval,
                    "scrapeTimeout": timeout,
                    "relabelings": [
                        {"sourceLabels": [f"__meta_kubernetes_pod_label_{_label_name(options.pool_label)}"],
                         "targetLabel": "pool"},
                        {"targetLabel": "job", "replacement": q.VLLM_JOB},
                    ],
                }],
            }}


TRIGGER_AUTH = "slo-monitor-token"


def trigger_authentication(options: KubernetesOptions) -> dict[str, Any]:
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication",
            "metadata": _meta(TRIGGER_AUTH, options),
            "spec": {"secretTargetRef": [{"parameter": "token", "name": options.token_secret,
                                          "key": options.token_key}]}}


def scaled_object(pool: PoolConfig, options: KubernetesOptions) -> dict[str, Any]:
    """KEDA's metrics-api scaler on the pool's recommendation: with AverageValue 1, KEDA's HPA wants
    `desired_replicas / 1` replicas in total, the monitor's number itself."""
    scaling = pool.scaling
    name = k8s_name(pool.name)
    # while the monitor cannot answer, keep what runs; never fewer than the configured size (within the bounds)
    size = max(len(pool.targets), scaling.min_replicas, 1)
    if scaling.max_replicas is not None:
        size = min(size, scaling.max_replicas)
    spec: dict[str, Any] = {
        "scaleTargetRef": {"name": options.scale_target.format(pool=pool.name)},
        "minReplicaCount": scaling.min_replicas,
    }
    if scaling.max_replicas is not None:
        spec["maxReplicaCount"] = scaling.max_replicas
    spec["fallback"] = {"failureThreshold": FALLBACK_FAILURES, "behavior": FALLBACK_BEHAVIOR, "replicas": size}
    spec["triggers"] = [{
        "type": "metrics-api",
        "metricType": "AverageValue",
        "metadata": {
            "url": f"{options.monitor_url}/api/v1/pools/{url_quote(pool.name, safe='')}/scaling",
            "valueLocation": SCALING_FIELD,
            "targetValue": "1",
            "authMode": "bearer",
        },
        "authenticationRef": {"name": TRIGGER_AUTH},
    }]
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": _meta(f"slo-monitor-{name}", options), "spec": spec}


def dashboard_config_map(stem: str, text: str, options: KubernetesOptions) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": _meta(f"slo-monitor-dashboard-{k8s_name(stem)}", options, options.dashboard_labels,
                              {"grafana_folder": "LLM SLOs"}),
            "data": {f"{stem}.json": text}}


@dataclass
class Objects:
    """File name under DIR/prometheus-operator/ -> one Kubernetes object."""

    files: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, file: str, obj: dict[str, Any]) -> None:
        if file in self.files:
            raise ValueError(f"two generated objects would both be {FOLDER}/{file}")
        self.files[file] = obj

    def kustomization(self) -> dict[str, Any]:
        return {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                "resources": sorted(self.files)}


def objects(pools: Sequence[PoolConfig], rule_groups: dict[str, list[dict[str, Any]]],
            dashboards: dict[str, str], *, metrics_path: str, scrape_interval: str, timeout_s: float,
            options: KubernetesOptions) -> Objects:
    """Every object, from the rule groups (rule-set stem -> groups) and dashboard JSON (stem -> text)
    the plain format renders, so both formats always carry the very same rules and panels."""
    out = Objects()
    for stem, groups in rule_groups.items():
        out.add(f"prometheusrule-{k8s_name(stem)}.yaml", prometheus_rule(stem, groups, options))
    out.add("servicemonitor.yaml", service_monitor(scrape_interval, options))
    out.add("podmonitor.yaml", pod_monitor([p.name for p in pools], metrics_path, scrape_interval, timeout_s, options))
    out.add("triggerauthentication.yaml", trigger_authentication(options))
    for pool in pools:
        out.add(f"scaledobject-{k8s_name(pool.name)}.yaml", scaled_object(pool, options))
    for stem, text in dashboards.items():
        out.add(f"dashboard-{k8s_name(stem)}.yaml", dashboard_config_map(stem, text, options))
    return out


__all__ = ["FOLDER", "KubernetesOptions", "Objects", "k8s_name", "objects", "scaled_object"]
