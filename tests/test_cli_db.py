"""`slo-monitor db upgrade` applies the migrations to the configured database."""

import pytest
from sqlalchemy import create_engine, inspect

from monitor.cli import main


def test_db_upgrade_creates_the_schema(db_url, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(f'storage: {{url: "{db_url}"}}\npools: [{{name: p, targets: [http://127.0.0.1:8000]}}]\n')
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    assert "is at the latest schema" in capsys.readouterr().out
    engine = create_engine(db_url)
    try:
        assert {"pools", "instances", "scrape_outcomes", "instance_rollups"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_db_upgrade_with_a_bad_config_exits_2(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("storage: {url: 'oracle://x'}\npools: [{name: p, targets: [http://127.0.0.1:8000]}]\n")
    assert main(["db", "upgrade", "--config", str(config)]) == 2
    assert "storage.url" in capsys.readouterr().err


@pytest.mark.e2e
def test_serve_with_an_unreachable_database_exits_1_with_one_clear_line(tmp_path):
    import subprocess
    import sys

    config = tmp_path / "c.yaml"
    config.write_text('storage: {url: "postgresql+psycopg://mon:s3cret@127.0.0.1:1/none"}\n'
                      "pools: [{name: p, targets: [http://127.0.0.1:9]}]\n")
    done = subprocess.run([sys.executable, "-m", "monitor", "serve", "--config", str(config), "--listen",
                           "127.0.0.1:1"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "error: database postgresql+psycopg://mon:***@127.0.0.1:1/none: connection" in done.stderr
    assert "s3cret" not in done.stderr + done.stdout and "Traceback" not in done.stderr
