"""The simulator's canary flags: `--label KEY=VALUE` on the file_sd group, per-version factors."""

from __future__ import annotations

import argparse

import pytest

from monitor.errors import BadInput
from monitor.sim.cli import fleet_params, register, sim_labels


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["simulate", "--instances", "1", "--base-port", "0", *argv])


def test_labels_are_key_value_pairs_for_the_file_sd_group():
    assert sim_labels(["version=v2", "zone=a=b"]) == {"version": "v2", "zone": "a=b"}


@pytest.mark.parametrize("bad", ["version", "=v2", "1x=v", "a-b=c"])
def test_a_label_that_is_not_key_value_is_named(bad):
    with pytest.raises(BadInput, match="--label"):
        sim_labels([bad])


def test_a_version_flag_reaches_the_instance_parameters():
    params = fleet_params(parse("--tpot-factor", "1.5", "--ttft-factor", "1.2", "--mean-output-tokens", "400"))
    assert (params[0].tpot_factor, params[0].ttft_factor, params[0].mean_output_tokens) == (1.5, 1.2, 400)


def test_a_factor_that_is_not_positive_is_refused():
    with pytest.raises(BadInput, match="tpot_factor"):
        fleet_params(parse("--tpot-factor", "0"))
