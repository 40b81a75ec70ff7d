"""`sandmeter retention`: drop expired day partitions as the admin (SANDMETER_RETENTION_*)."""

from __future__ import annotations

import argparse

from contracts.clock import wall_ms
from contracts.settings import Part, env_name
from sandmeter.cli.common import (
    SETTINGS_ERROR,
    CliError,
    Subparsers,
    apply_log_level,
    require_clickhouse,
    service,
    settings,
)


def _settings_class() -> type[Part]:
    from pipeline import RetentionSettings

    return RetentionSettings


def add(sub: Subparsers) -> None:
    help_ = (
        "drop raw-sample and function-load days past their keep; run hourly as the admin user (SANDMETER_RETENTION_*)"
    )
    service(sub, "retention", help_, run, _settings_class)


def run(a: argparse.Namespace) -> int:
    from pipeline import RetentionSettings, retain

    s = settings(RetentionSettings)
    apply_log_level(s, a.verbose)
    require_clickhouse(s)

    def dropped(table: str, part: str) -> None:
        print(f"dropped {table} day {part}", flush=True)

    from clickhouse_driver.errors import ServerException

    try:
        out = retain(
            s.clickhouse(), wall_ms(), s.raw_days, s.function_load_days, s.clickhouse_cluster, s.clickhouse_on, dropped
        )
    except ServerException as exc:
        if exc.code not in (164, 392):  # readonly, DDL not allowed: the wrong user
            raise
        first = str(exc).splitlines()[1 if str(exc).startswith("Code") else 0].strip()
        raise CliError(
            SETTINGS_ERROR,
            f"ClickHouse refused {s.clickhouse_user!r} to drop partitions ({first}): dropping is DDL, run "
            f"retention as the admin user ({env_name(type(s), 'clickhouse_user')})",
        ) from None
    kept = f"raw samples {s.raw_days or 'forever'} days, function load {s.function_load_days}"
    print(f"retention: dropped {sum(len(v) for v in out.values())} day partition(s) ({kept})")
    return 0
