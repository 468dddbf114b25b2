"""`check` explains a canary whose groups, by the labels in the file_sd files it reads, are empty or
overlap: the verdict would otherwise stay `inconclusive` with nobody told why."""

from __future__ import annotations

import argparse
import json

import yaml

from monitor.cli.check import cmd_check


def run_check(tmp_path, groups: list[dict], baseline: dict, candidate: dict) -> None:
    sd = tmp_path / "sd.json"
    sd.write_text(json.dumps(groups))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "pools": [{"name": "chat", "discovery": [{"type": "file", "files": [str(sd)]}]}],
        "canaries": [{"name": "llama-v2", "pool": "chat", "baseline": baseline, "candidate": candidate}]}))
    assert cmd_check(argparse.Namespace(config=str(config))) == 0



def test_a_candidate_label_no_file_sd_instance_carries_is_named_empty(tmp_path, capsys):
    run_check(tmp_path, [{"targets": ["10.0.0.1:8000"], "labels": {"version": "v1"}}],
              {"labels": {"version": "v1"}}, {"labels": {"version": "v2"}})
    out = capsys.readouterr().out
    assert "canaries[0].candidate:" in out and "version=v2" in out and "empty" in out
    assert "canaries[0].baseline:" not in out


def test_an_instance_both_groups_select_is_named(tmp_path, capsys):
    run_check(tmp_path, [{"targets": ["10.0.0.1:8000"], "labels": {"version": "v1", "team": "a"}},
                         {"targets": ["10.0.0.2:8000"], "labels": {"version": "v2"}}],
              {"labels": {"version": "v1"}}, {"labels": {"team": "a"}})
    out = capsys.readouterr().out
    assert "match both baseline and candidate" in out and "10.0.0.1:8000" in out


def test_groups_that_each_find_instances_draw_no_canary_warning(tmp_path, capsys):
    run_check(tmp_path, [{"targets": ["10.0.0.1:8000"], "labels": {"version": "v1"}},
                         {"targets": ["10.0.0.2:8000"], "labels": {"version": "v2"}}],
              {"labels": {"version": "v1"}}, {"labels": {"version": "v2"}})
    assert "canaries[" not in capsys.readouterr().out
