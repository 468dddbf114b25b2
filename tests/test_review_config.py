"""Hostile-review findings on config loading (issue 19, "config loading that cannot crash"): values
`check` passed that then broke `serve` every cycle."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.cli import main

POOL = "pools:\n  - name: chat\n    targets: [http://127.0.0.1:8000]\n"


@pytest.mark.parametrize("section, key, value", [
    ("scaling", "scale_up_max_percent", ".inf"),
    ("scaling", "target_waiting_per_replica", ".inf"),
    ("scaling", "target_ttft_burn_rate", ".inf"),
    ("health", "outlier_stdev_factor", ".inf"),
    ("health", "outlier_min_latency_ratio", ".nan"),
    ("cost", "gpu_hour", ".inf"),
])
def test_a_yaml_infinity_or_nan_in_a_number_setting_is_refused_with_exit_2(
        tmp_path: Path, capsys, section: str, key: str, value: str) -> None:
    # `.inf` passed `gt=0`; `serve` then failed the pool's decisions on every cycle
    # (OverflowError in ceil) or published `+Inf` costs on /metrics
    extra = f"    {section}: {{{key}: {value}}}\n"
    if section == "cost":
        extra = f"    cost: {{gpu_hour: {value}}}\n"
    path = tmp_path / "monitor.yaml"
    path.write_text(POOL + extra)
    code = main(["check", "--config", str(path)])
    out = capsys.readouterr()
    text = out.out + out.err
    assert code == 2, text
    assert f"pools[0].{section}.{key}" in text
    assert "finite" in text


@pytest.mark.parametrize("key", ["min_replicas", "max_replicas"])
def test_a_replica_bound_past_kubernetes_int32_is_refused(tmp_path: Path, capsys, key: str) -> None:
    # 10**29 passed and was served as desired_replicas, a number no ScaledObject or HPA can hold
    path = tmp_path / "monitor.yaml"
    path.write_text(POOL + f"    scaling: {{{key}: 100000000000000000000000000000}}\n")
    code = main(["check", "--config", str(path)])
    out = capsys.readouterr()
    assert code == 2, out.out + out.err
    assert f"pools[0].scaling.{key}" in out.out + out.err


@pytest.mark.parametrize("size", ['"0.5"', '"0.5B"', '"0.9B"'])
def test_a_size_under_one_byte_is_refused_not_rounded_to_zero(tmp_path: Path, capsys, size: str) -> None:
    # "0.5" read as int(0.5) = 0 bytes: every vLLM page would then be refused as too large
    path = tmp_path / "monitor.yaml"
    path.write_text(f"scrape: {{max_body_size: {size}}}\n" + POOL)
    code = main(["check", "--config", str(path)])
    out = capsys.readouterr()
    assert code == 2, out.out + out.err
    assert "scrape.max_body_size" in out.out + out.err and "at least 1 byte" in out.out + out.err
