"""The pq command, settings and the documents generated from them."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import click
import pytest
import yaml
from click.testing import CliRunner

from pq import __version__
from pq.cli import cli
from pq.config import Settings
from pq.cli.docs import ROOT, render

pytestmark = pytest.mark.timeout(120)


def run_pq(*args, env=None, cwd=None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PQ_")} | (env or {})
    return subprocess.run([sys.executable, "-m", "pq.cli", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=90)


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_bad_setting_is_one_line_and_nonzero(tmp_path):
    proc = run_pq("db", "info", env={"PQ_DB_POOL_SIZE": "lots"}, cwd=tmp_path)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("Error: setting PQ_DB_POOL_SIZE: got 'lots'")


def test_malformed_toml_names_the_file(tmp_path):
    (tmp_path / "pq.toml").write_text("database_url = \n")
    proc = run_pq("db", "info", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "pq.toml" in proc.stderr


def test_toml_file_is_read(tmp_path):
    (tmp_path / "pq.toml").write_text(f'database_url = "sqlite:///{tmp_path}/from-toml.db"\n')
    proc = run_pq("db", "upgrade", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "from-toml.db").exists()


def test_db_upgrade_and_info(tmp_path):
    env = {"PQ_DATABASE_URL": f"sqlite:///{tmp_path}/pq.db"}
    assert run_pq("db", "upgrade", env=env).returncode == 0
    proc = run_pq("db", "info", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "schema_version         0008" in proc.stdout and "samples" in proc.stdout


def test_unreachable_database_is_reported_not_a_traceback(tmp_path):
    env = {"PQ_DATABASE_URL": "postgresql+psycopg://pq:hunter22@127.0.0.1:1/pq", "PQ_DB_CONNECT_TIMEOUT_S": "1"}
    proc = run_pq("db", "info", env=env, cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "unreachable after" in proc.stderr and "hunter22" not in proc.stderr


def test_every_command_is_available():
    ctx = click.Context(cli)
    for group in (cli, cli.get_command(ctx, "bench")):
        for name in group.list_commands(ctx):
            assert group.get_command(ctx, name) is not None, name


def test_bench_without_the_extra_says_how_to_install_it(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "psutil" else find_spec(name, *a))
    listing = CliRunner().invoke(cli, ["bench", "--help"])
    assert listing.exit_code == 0 and "ingest" in listing.output  # the suites are still listed
    result = CliRunner().invoke(cli, ["bench", "ingest", "--quick"])
    assert result.exit_code == 1
    assert "pq bench needs the bench extra (psutil not installed): pip install -e '.[bench]'" in result.output


def _imported_modules(path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", ["pq", "connectors", "models", "ui", "simulators"])
def test_the_product_imports_neither_benchmarks_nor_their_dependencies(package):
    """psutil is a dependency of the bench extra only: a product module importing it would fail on a
    plant install; benchmarks/ is reached by `pq bench` through module names, never imported."""
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = {m for m in _imported_modules(path) if m.split(".")[0] in ("benchmarks", "psutil")}
        assert not bad, f"{path.relative_to(ROOT)} imports {', '.join(sorted(bad))}"


def test_readme_lists_every_setting():
    readme = (ROOT / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"`PQ_{name.upper()}`" in readme, f"PQ_{name.upper()} missing from README.md"


def test_generated_docs_are_current():
    for path, expected in render().items():
        assert path.read_text() == expected, f"{path.name} is stale: run `python -m pq.cli.docs`"


def _resolve(tokens: list[str]) -> click.Command:
    command, ctx = cli, click.Context(cli)
    rest = list(tokens)
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        command = command.get_command(ctx, rest.pop(0))
        assert command is not None, f"unknown command in {tokens}"
    known = {opt for p in command.params for opt in getattr(p, "opts", [])}
    for token in rest:
        if token.startswith("--"):
            assert token.split("=")[0] in known, f"{' '.join(tokens)}: unknown option {token}"
    return command


def test_docker_compose_is_valid_and_runs_real_commands():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert {"timescaledb", "ui", "migrate"} <= set(compose["services"])
    edge_services = [s for s in compose["services"] if s.startswith("edge-")]
    assert edge_services, "one edge service per line"
    for name, service in compose["services"].items():
        command = service.get("command")
        if name in ("timescaledb", "mosquitto"):
            assert "healthcheck" in service or name == "mosquitto"
            continue
        assert command and command[0] == "pq", f"service {name} must run a pq command"
        _resolve(command[1:])
    assert "timescale/timescaledb" in compose["services"]["timescaledb"]["image"]
    for name, service in compose["services"].items():  # secrets come from the environment only
        for key, value in (service.get("environment") or {}).items():
            if any(word in key for word in ("PASSWORD", "SECRET")) or "@" in str(value):
                assert "${" in str(value), f"{name}.{key} must come from the environment"
