"""`sandmeter retention` (pipeline/retention.py): which days go, as which user, and that the
processor no longer drops anything."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import numpy as np
import pandas as pd
import pytest

from contracts.clock import wall_ms
from contracts.names import Tables
from pipeline.retention import retain
from sandmeter.stack import Stack
from sandmeter.stack.users import ADMIN, WRITER

NOW = 1_795_773_600_000  # 2026-11-27T10:00Z
DAY_MS = 86_400_000


class Parts:
    """A connection that lists the same day partitions for every table and notes each drop."""

    def __init__(self, days: list[str]) -> None:
        self.days, self.dropped = days, list[str]()
        self.tables = Tables("sm")

    def execute(self, sql: str, params: Any = None, settings: Any = None) -> Any:
        if sql.startswith("SELECT DISTINCT partition"):
            assert params["db"] in ("sm", "sm_raw")
            return [(d,) for d in self.days]
        self.dropped.append(sql)
        return []


def test_raw_days_past_the_setting_and_function_load_past_two_days_go() -> None:
    ch = Parts(["20261119", "20261120", "20261124", "20261125", "20261126", "all"])
    out = retain(ch, NOW, raw_days=7)
    assert out == {"function_load": ["20261119", "20261120", "20261124"], "raw_samples": ["20261119"]}
    assert "ALTER TABLE sm_raw.raw_samples DROP PARTITION 20261119" in ch.dropped
    assert len(ch.dropped) == 4


def test_zero_raw_days_keeps_the_raw_samples() -> None:
    ch = Parts(["20261101"])
    assert retain(ch, NOW, raw_days=0) == {"function_load": ["20261101"]}


def sandmeter(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SANDMETER_")}
    return subprocess.run(
        [sys.executable, "-m", "sandmeter.cli", *args], env={**clean, **env}, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.clickhouse
def test_the_command_drops_old_days_as_the_admin_only_and_nothing_on_a_second_run(
    stack: Stack, db: tuple[str, Any]
) -> None:
    name, ch = db
    now = wall_ms()
    days = [now - 3 * DAY_MS, now - 2 * DAY_MS, now]
    samples = pd.DataFrame(
        {"series_id": np.arange(1, 31, dtype=np.uint64), "ts_ms": np.array([days[i % 3] for i in range(30)], np.uint64),
         "value": np.ones(30)}
    )  # fmt: skip
    ch.insert_dataframe(f"INSERT INTO {Tables(name).samples} (series_id, ts_ms, value) VALUES", samples)
    env = {"SANDMETER_RETENTION_CLICKHOUSE_PORT": str(stack.settings.clickhouse_tcp_port),
           "SANDMETER_RETENTION_CLICKHOUSE_DATABASE": name, "SANDMETER_RETENTION_RAW_DAYS": "1"}  # fmt: skip
    as_writer = sandmeter("retention", **env, **stack.users.env("RETENTION", WRITER))
    assert as_writer.returncode == 2, as_writer.stderr  # DDL: not the processor's user
    line = as_writer.stderr.strip()
    assert "\n" not in line and "sandmeter_writer" in line and "SANDMETER_RETENTION_CLICKHOUSE_USER" in line, line
    r = sandmeter("retention", **env, **stack.users.env("RETENTION", ADMIN))
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("dropped raw_samples day") == 2, r.stdout
    assert r.stdout.splitlines()[-1].startswith("retention: dropped 2 day partition(s)")
    assert int(ch.execute(f"SELECT count() FROM {Tables(name).samples}")[0][0]) == 10  # today's
    again = sandmeter("retention", **env, **stack.users.env("RETENTION", ADMIN))
    assert again.returncode == 0 and "dropped 0 day partition(s)" in again.stdout
