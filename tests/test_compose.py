"""docker-compose.yml is validated (no engine here) and runs real sandmeter subcommands."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from sandmeter.cli import parser

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="make test installs docker-compose")
def test_compose_file_is_valid() -> None:
    r = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr


def test_project_services_run_real_subcommands() -> None:
    spec = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = spec["services"]
    subcommands = set(parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    own = {k: v for k, v in services.items() if k in ("collector", "processor", "api", "migrate")}
    assert set(own) >= {"collector", "processor", "api"}
    for name, svc in own.items():
        cmd = svc["command"]
        argv = cmd if isinstance(cmd, list) else cmd.split()
        assert argv[0] == "sandmeter" and argv[1] in subcommands, name
    assert {"kafka", "clickhouse", "grafana", "prometheus"} <= set(services)
