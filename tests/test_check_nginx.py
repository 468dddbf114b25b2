"""`check` warns when `nginx.check` would validate an NGINX config that does not include the upstream
file (issue 13 item 4): such a check passes whatever the service writes, and the reload after it
serves the old upstreams. Real files in a temporary folder; no NGINX runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.cli import main
from monitor.cli.advice import nginx_check_warning

UPSTREAM = "./nginx/llm-upstreams.conf"


def conf(folder: Path, text: str, name: str = "nginx.conf") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_nginx_t_without_c_validates_the_default_config_and_is_named_when_that_lacks_the_file(tmp_path):
    default = conf(tmp_path / "etc", "events {}\nhttp { include /etc/nginx/conf.d/*.conf; }\n")
    warning = nginx_check_warning("nginx -t", UPSTREAM, cwd=tmp_path, default_conf=str(default))
    assert warning is not None
    assert warning.startswith(f"nginx.check: `nginx -t` validates NGINX's default config {default} (no -c), "
                              f"which does not include nginx.upstream_file {UPSTREAM}")
    assert f"add `include {tmp_path / 'nginx' / 'llm-upstreams.conf'};`" in warning


def test_a_c_file_that_does_not_mention_the_upstream_file_is_named(tmp_path):
    path = conf(tmp_path, "events {}\nhttp { server { listen 8080; } }\n")
    warning = nginx_check_warning(f"nginx -t -c {path}", UPSTREAM, cwd=tmp_path)
    assert warning is not None and f"validates {path}, which does not include" in warning


def test_a_commented_out_include_does_not_count(tmp_path):
    path = conf(tmp_path, f"http {{\n  # include {tmp_path}/nginx/llm-upstreams.conf;\n}}\n")
    assert nginx_check_warning(f"nginx -t -c {path}", UPSTREAM, cwd=tmp_path) is not None


@pytest.mark.parametrize("include", [
    "include {folder}/nginx/llm-upstreams.conf;",  # the file itself
    "include nginx/*.conf;",  # a glob relative to the config's folder, as NGINX reads it
    "include '{folder}/nginx/*.conf';",  # quoted
])
def test_a_c_file_that_includes_the_upstream_file_or_a_glob_matching_it_is_quiet(tmp_path, include):
    path = conf(tmp_path, "events {}\nhttp { " + include.format(folder=tmp_path) + " }\n")
    assert nginx_check_warning(f"nginx -t -q -c {path}", UPSTREAM, cwd=tmp_path) is None


def test_a_file_included_one_level_down_counts(tmp_path):
    conf(tmp_path, "upstream x { server 127.0.0.1:1; }\ninclude nginx/llm-upstreams.conf;\n", "sites/llm")
    path = conf(tmp_path, "http { include sites/*; }\n")
    assert nginx_check_warning(f"sudo nginx -t -c {path}", UPSTREAM, cwd=tmp_path) is None


def test_a_relative_c_is_read_under_the_p_prefix(tmp_path):
    conf(tmp_path / "prefix", f"http {{ include {tmp_path}/nginx/*.conf; }}\n", "conf/nginx.conf")
    check = f"nginx -p {tmp_path / 'prefix'} -c conf/nginx.conf -t"
    assert nginx_check_warning(check, UPSTREAM, cwd=tmp_path) is None


def test_a_config_that_cannot_be_read_is_said_so(tmp_path):
    warning = nginx_check_warning(f"nginx -t -c {tmp_path}/missing.conf", UPSTREAM, cwd=tmp_path)
    assert warning is not None and warning.startswith(f"nginx.check: cannot read {tmp_path}/missing.conf")


@pytest.mark.parametrize("check", [
    "docker exec proxy nginx -t",  # another machine's files: nothing to read here
    "./validate.sh",
    "nginx -s reload",  # not a test
])
def test_a_check_that_is_not_nginx_t_on_this_machine_is_left_alone(tmp_path, check):
    assert nginx_check_warning(check, UPSTREAM, cwd=tmp_path, default_conf=str(tmp_path / "none")) is None


def test_nginx_t_after_another_command_is_still_judged(tmp_path):
    path = conf(tmp_path, "http {}\n")
    assert nginx_check_warning(f"echo checking && nginx -t -c {path}", UPSTREAM, cwd=tmp_path) is not None


def test_check_prints_the_warning_and_still_passes(tmp_path, capsys, monkeypatch):
    nginx_conf = conf(tmp_path, "events {}\nhttp {}\n")
    config = tmp_path / "c.yaml"
    config.write_text(f"""
pools: [{{name: p, targets: [http://127.0.0.1:8000]}}]
nginx:
  upstream_file: {UPSTREAM}
  check: nginx -t -c {nginx_conf}
""")
    monkeypatch.chdir(tmp_path)
    assert main(["check", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert f"warning: nginx.check: `nginx -t -c {nginx_conf}` validates {nginx_conf}, which does not include" in out
