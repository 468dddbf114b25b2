"""Options every command shares: `--log-level` before or after the command (issue 13 item 2)."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from monitor.cli import build_parser, main


def every_command_parser(parser):
    """(name, parser) of each command and nested command (`db upgrade`)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                yield from every_command_parser(sub)


def test_log_level_is_accepted_after_the_command():
    parser = build_parser()
    assert parser.parse_args(["serve", "--config", "f", "--log-level", "DEBUG"]).log_level == "DEBUG"
    assert parser.parse_args(["db", "upgrade", "--log-level", "ERROR"]).log_level == "ERROR"


def test_log_level_before_the_command_still_works_and_after_wins():
    parser = build_parser()
    assert parser.parse_args(["--log-level", "WARNING", "check", "--config", "f"]).log_level == "WARNING"
    assert parser.parse_args(["check", "--config", "f"]).log_level == "INFO"
    assert parser.parse_args(["--log-level", "WARNING", "check", "--config", "f", "--log-level", "DEBUG"]
                             ).log_level == "DEBUG"


def test_every_command_lists_log_level_in_its_help(capsys):
    commands = dict(every_command_parser(build_parser()))
    assert {"serve", "check", "db", "upgrade", "generate", "simulate", "load", "demo", "exporter"} <= set(commands)
    for name, parser in commands.items():
        assert "--log-level {DEBUG,INFO,WARNING,ERROR}" in parser.format_help(), name


def test_a_bad_log_level_after_the_command_exits_2(capsys):
    assert main(["check", "--config", "f", "--log-level", "LOUD"]) == 2
    assert "invalid choice: 'LOUD'" in capsys.readouterr().err


@pytest.mark.e2e
def test_log_level_after_the_command_takes_effect(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(f'storage: {{url: "sqlite:///{tmp_path}/m.db"}}\npools: [{{name: p, targets: [http://a:1]}}]\n')

    def upgrade(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "monitor", "db", "upgrade", "--config", str(config), *extra],
                              capture_output=True, text=True, timeout=60)

    chatty, quiet = upgrade(), upgrade("--log-level", "WARNING")
    assert chatty.returncode == quiet.returncode == 0, chatty.stderr + quiet.stderr
    assert " INFO " in chatty.stderr  # alembic's migration lines
    assert " INFO " not in quiet.stderr
