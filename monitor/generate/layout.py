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
from dataclasses import dataclass
from pathlib import Path

import monitor.generate.expressions as q
from monitor.config import Config
import monitor.generate.configs as configs
import monitor.generate.dashboards as dashboards
import monitor.generate.rules as rules
from monitor.generate.docs import alerts_readme, dashboards_readme
from monitor.generate.rule_tests import fleet_test_file, service_test_file, slo_test_file
from monitor.generate.yaml_text import MARK, to_yaml


@dataclass(frozen=True)
class Options:
    rule_interval_s: float = 60.0  # evaluation interval of every generated rule group
    scrape_interval: str = "15s"  # in the example prometheus.yml and the Grafana datasource
    service_target: str | None = None  # host:port Prometheus scrapes slo-monitor at (default: api.listen)
    replica_metrics: tuple[str, str] | None = rules.REPLICA_METRICS


def pool_names(config: Config) -> list[str]:
    return [p.name for p in config.pools]


def rule_sets(config: Config, options: Options = Options()) -> dict[str, tuple[str, str]]:
    """File stem -> (rules YAML, promtool test YAML) for every alert set."""
    out: dict[str, tuple[str, str]] = {}
    interval = options.rule_interval_s
    pools = pool_names(config)
    for slo in config.slos:
        built = rules.slo_rules(pools, slo, interval)
        stem = built.file_stem
        out[stem] = (to_yaml({"groups": built.groups}), to_yaml(slo_test_file(built, f"{stem}.rules.yml")))
    fleet = rules.fleet_rules(pools, interval)
    out[rules.FLEET_FILE] = (to_yaml({"groups": fleet}),
                             to_yaml(fleet_test_file(pools, fleet, f"{rules.FLEET_FILE}.rules.yml")))
    alerts = rules.service_alerts(options.replica_metrics)
    service = rules.service_rules(alerts, interval)
    out[rules.SERVICE_FILE] = (to_yaml({"groups": service}), to_yaml(service_test_file(
        alerts, service, f"{rules.SERVICE_FILE}.rules.yml", options.replica_metrics)))
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


def render_all(config: Config, options: Options = Options()) -> dict[str, str]:
    """Relative path -> file content of everything `generate` writes."""
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
        evaluation_interval=q.duration(options.rule_interval_s), service_target=options.service_target))
    files["alerts/alertmanager.yml"] = to_yaml(configs.alertmanager_config())
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


# folder -> the patterns of files in it that `generate` may have written (and so may remove)
OWNED = {"alerts": ("*.rules.yml", "*.test.yml"), "dashboards": ("*.json",)}


def write(files: dict[str, str], out: str | Path, owned: dict[str, tuple[str, ...]] = OWNED) -> list[Path]:
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
    return write(render_all(config, options), out)


__all__ = ["Options", "generate", "gpus_configured", "left_out", "render_all", "rule_sets", "write"]
