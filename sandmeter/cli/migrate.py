"""`sandmeter migrate`: apply the ClickHouse migrations (SANDMETER_MIGRATE_*)."""

from __future__ import annotations

import argparse

from contracts.clock import wall_ms
from contracts.settings import Part
from sandmeter.cli.common import (
    SETTINGS_ERROR,
    CliError,
    Subparsers,
    default_signals,
    require_clickhouse,
    service,
    settings,
    stop_on_signals,
)


def _settings_class() -> type[Part]:
    from pipeline import MigrateSettings

    return MigrateSettings


def add(sub: Subparsers) -> None:
    help_ = "apply ClickHouse migrations, to every host of a cluster (SANDMETER_MIGRATE_*)"
    service(sub, "migrate", help_, run, _settings_class)


def run(a: argparse.Namespace) -> int:
    from pipeline import MigrateSettings, SchemaError, migrate

    s = settings(MigrateSettings)
    # waiting for ClickHouse: a SIGTERM ends it cleanly; a migration itself runs to its end or dies whole
    require_clickhouse(s, s.wait_s, home="system", stop=stop_on_signals())
    default_signals()
    try:
        # connected to `system`: the databases are the migrations' to create
        connect = lambda host, port: s.clickhouse_on(host, port, home="system")  # noqa: E731
        ran = migrate(s.clickhouse(home="system"), wall_ms(), s.clickhouse_cluster, connect)
    except (SchemaError, ValueError) as exc:  # an old key; an unknown cluster name
        raise CliError(SETTINGS_ERROR, str(exc)) from None
    print(f"applied {len(ran)} migration(s): {', '.join(f'{m.version:04d}_{m.name}' for m in ran) or 'none needed'}")
    return 0
