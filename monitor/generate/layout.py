"""What `slo-monitor generate` writes where, and the writing itself.

Output layout under DIR (the package docstring lists it for users): `dashboards/` with Grafana's
provisioning files, `alerts/` with one rule file and one promtool test file per set, the example
`prometheus.yml` and `alertmanager.yml`, and a README beside each folder.

Writing is deterministic (a diff of two runs on the same config is empty) and only touches what it
generated: a rule file or dashboard that carries this generator's mark and is no longer produced
(an SLO was removed) is deleted, anything else in DIR is left alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import monitor.generate.configs as configs
import monitor.generate.dashboards as dashboards
import monitor.generate.expressions as q
import monitor.generate.kubernetes as kubernetes
import monitor.generate.rollouts as rollouts
import monitor.generate.rules as rules
import monitor.generate.rules_fleet as rules_fleet
import monitor.generate.rules_service as rules_service
from monitor.config import Config
from monitor.generate.docs import alerts_readme, dashboards_readme, operator_readme
from monitor.generate.rule_tests import fleet_test_file, service_test_file, slo_test_file
from monitor.generate.scrape_discovery import warnings as discovery_warnings
from monitor.generate.yaml_text import MARK, to_yaml

PLAIN = "plain"  # alerts/ and dashboards/: rule files, promtool tests, dashboard JSON, example configs
OPERATOR = "prometheus-operator"  # prometheus-operator/: Kubernetes objects (monitor.generate.kubernetes)
FORMATS = (PLAIN, OPERATOR)


@dataclass(frozen=True)
class Options:
    rule_interval_s: float = 60.0  # evaluation interval of every generated rule group
    scrape_interval: str = "15s"  # in the example prometheus.yml and the Grafana datasource
    service_target: str | None = None  # host:port Prometheus scrapes slo-monitor at (default: api.listen)
    replica_metrics: tuple[str, str] | None = rules_service.REPLICA_METRICS
    formats: tuple[str, ...] = (PLAIN,)  # what to write (FORMATS)
    kubernetes: kubernetes.KubernetesOptions = field(default_factory=kubernetes.KubernetesOptions)
    # slo-monitor's working directory, which relative file_sd globs are read from (None: left relative)
    working_dir: str | None = None


def pool_names(config: Config) -> list[str]:
    return [p.name for p in config.pools]


def rule_groups(config: Config, options: Options = Options()) -> dict[str, list[dict[str, Any]]]:
    """File stem -> rule groups for every alert set: each SLO, the fleet, the service's decisions."""
    interval = options.rule_interval_s
    pools = pool_names(config)
    out = {f"slo-{slo.name}": rules.slo_rules(pools, slo, interval).groups for slo in config.slos}
    out[rules_fleet.FLEET_FILE] = rules_fleet.fleet_rules(pools, interval)
    alerts = rules_service.service_alerts(options.replica_metrics)
    out[rules_service.SERVICE_FILE] = rules_service.service_rules(alerts, interval)
    return out


def rule_sets(config: Config, options: Options = Options()) -> dict[str, tuple[str, str]]:
    """File stem -> (rules YAML, promtool test YAML) for every alert set."""
    out: dict[str, tuple[str, str]] = {}
    interval = options.rule_interval_s
    pools = pool_names(config)
    for slo in config.slos:
        built = rules.slo_rules(pools, slo, interval)
        stem = built.file_stem
        out[stem] = (to_yaml({"groups": built.groups}), to_yaml(slo_test_file(built, f"{stem}.rules.yml")))
    fleet = rules_fleet.fleet_rules(pools, interval)
    out[rules_fleet.FLEET_FILE] = (to_yaml({"groups": fleet}),
                                   to_yaml(fleet_test_file(pools, fleet, f"{rules_fleet.FLEET_FILE}.rules.yml")))
    alerts = rules_service.service_alerts(options.replica_metrics)
    service = rules_service.service_rules(alerts, interval)
    out[rules_service.SERVICE_FILE] = (to_yaml({"groups": service}), to_yaml(service_test_file(
        alerts, service, f"{rules_service.SERVICE_FILE}.rules.yml", options.replica_metrics)))
    return out


def gpus_configured(config: Config) -> bool:
    """GPU readings reach Prometheus only from the exporters in `gpu.exporters`; without one the GPU
    dashboard would be a page of empty panels."""
    return bool(config.gpu.exporters)


def left_out(config: Config) -> list[str]:
    """What `generate` did not write for this config, and why, in words for its output."""
    notes = []
    if not gpus_configured(config):
        notes.append("no GPU dashboard (dashboards/gpus.json): the config has no gpu.exporters; add the GPU "
                     "exporters (dcgm-exporter or `slo-monitor exporter`) under gpu.exporters to get it")
    return notes


def warnings(config: Config, options: Options = Options()) -> list[str]:
    """What the written files cannot do that the service does, in words for `generate` to print:
    the discovery prometheus.yml cannot mirror (only the plain format writes one; the operator's
    PodMonitor selects every pool's pods by their pool label, however slo-monitor finds them)."""
    if PLAIN not in options.formats:
        return []
    return discovery_warnings(config, options.working_dir)


def render_all(config: Config, options: Options = Options()) -> dict[str, str]:
    """Relative path -> file content of everything `generate` writes, in every format asked for."""
    files: dict[str, str] = {}
    unknown = sorted(set(options.formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown output format(s) {', '.join(unknown)}; known: {', '.join(FORMATS)}")
    if PLAIN in options.formats:
        files.update(render_plain(config, options))
    if OPERATOR in options.formats:
        files.update(render_operator(config, options))
    return files


def render_operator(config: Config, options: Options = Options()) -> dict[str, str]:
    """prometheus-operator/: one Kubernetes object per file, a kustomization listing them, a README."""
    specs = dashboards.dashboard_specs(gpus=gpus_configured(config), replica_metrics=options.replica_metrics)
    built = kubernetes.objects(
        config.pools, rule_groups(config, options), {spec.file_stem: dashboards.render(spec) for spec in specs},
        metrics_path=config.scrape.metrics_path, scrape_interval=options.scrape_interval,
        timeout_s=config.scrape.timeout, options=options.kubernetes)
    for canary in config.canaries:  # Argo Rollouts and Flagger read each canary's verdict (generate/rollouts.py)
        for name, obj in rollouts.canary_objects(canary, options.kubernetes).items():
            built.add(name, obj)
    folder = kubernetes.FOLDER
    files = {f"{folder}/{name}": to_yaml(obj) for name, obj in built.files.items()}
    files[f"{folder}/kustomization.yaml"] = to_yaml(built.kustomization())
    files[f"{folder}/README.md"] = operator_readme(built.files, options.kubernetes)
    return files


def render_plain(config: Config, options: Options = Options()) -> dict[str, str]:
    """alerts/ and dashboards/: rule files with their promtool tests, dashboards, example configs."""
    files: dict[str, str] = {}
    specs = dashboards.dashboard_specs(gpus=gpus_configured(config), replica_metrics=options.replica_metrics)
    for spec in specs:
        files[f"dashboards/{spec.file_stem}.json"] = dashboards.render(spec)
    files["dashboards/provisioning/datasources/llm-slo-monitor.yml"] = to_yaml(
        configs.grafana_datasource(scrape_interval=options.scrape_interval))
    files["dashboards/provisioning/dashboards/llm-slo-monitor.yml"] = to_yaml(configs.grafana_dashboard_provider())
    sets = rule_sets(config, options)
    for stem, (rules_text, tests_text) in sets.items():
        files[f"alerts/{stem}.rules.yml"] = rules_text
        files[f"alerts/{stem}.test.yml"] = tests_text
    files["alerts/prometheus.yml"] = to_yaml(configs.prometheus_config(
        config, ["*.rules.yml"], scrape_interval=options.scrape_interval,
        evaluation_interval=q.duration(options.rule_interval_s), service_target=options.service_target,
        working_dir=options.working_dir))
    files["alerts/alertmanager.yml"] = to_yaml(configs.alertmanager_config())
    for canary in config.canaries:  # the same Argo AnalysisTemplate and Flagger MetricTemplate as the operator format
        for name, obj in rollouts.canary_objects(canary, options.kubernetes).items():
            files[f"rollouts/{name}"] = to_yaml(obj)
    files["dashboards/README.md"] = dashboards_readme(specs)
    files["alerts/README.md"] = alerts_readme(config.slos, options.rule_interval_s, sorted(sets))
    return files


def _ours(path: Path) -> bool:
    """A file this generator wrote (and may therefore delete when it is no longer produced)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    if path.suffix == ".json":
        try:
            return dashboards.TAG in json.loads(text).get("tags", [])
        except (ValueError, AttributeError):
            return False
    return text.startswith(MARK)


# format -> folder -> the patterns of files in it that `generate` may have written (and so may remove)
OWNED: dict[str, dict[str, tuple[str, ...]]] = {
    PLAIN: {"alerts": ("*.rules.yml", "*.test.yml"), "dashboards": ("*.json",), "rollouts": ("*.yaml",)},
    OPERATOR: {kubernetes.FOLDER: ("*.yaml",)},
}


def write(files: dict[str, str], out: str | Path, owned: dict[str, tuple[str, ...]]) -> list[Path]:
    """Write `files` under `out` (each atomically) and delete this generator's files in the `owned`
    folders that are no longer produced; returns the paths written, sorted."""
    root = Path(out)
    written = []
    for rel, text in sorted(files.items()):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        written.append(path)
    for folder, patterns in owned.items():
        for pattern in patterns:
            for path in sorted((root / folder).glob(pattern)):
                if f"{folder}/{path.name}" not in files and _ours(path):
                    path.unlink()
    return written


def generate(config: Config, out: str | Path, options: Options = Options()) -> list[Path]:
    """Write everything under `out`; returns the paths written, sorted."""
    owned = {folder: patterns for fmt in options.formats for folder, patterns in OWNED[fmt].items()}
    return write(render_all(config, options), out, owned)


__all__ = ["FORMATS", "OPERATOR", "PLAIN", "Options", "generate", "gpus_configured", "left_out", "render_all",
           "render_operator", "render_plain", "rule_groups", "rule_sets", "warnings", "write"]
