"""`sandmeter migrate`: apply the ClickHouse migrations (SANDMETER_PROCESSOR_CLICKHOUSE_*)."""

from __future__ import annotations

import argparse

from contracts.clock import wall_ms
from contracts.settings import Part
from sandmeter.cli.common import SETTINGS_ERROR, CliError, Subparsers, require_clickhouse, service, settings


def _settings_class() -> type[Part]:
    from pipeline import ProcessorSettings

    return ProcessorSettings


def add(sub: Subparsers) -> None:
    service(sub, "migrate", "apply ClickHouse migrations (SANDMETER_PROCESSOR_CLICKHOUSE_*)", run, _settings_class)


def run(a: argparse.Namespace) -> int:
    from pipeline import ProcessorSettings, SchemaError, migrate

    s = settings(ProcessorSettings)
    require_clickhouse(s)
    try:
        ran = migrate(s.clickhouse(), wall_ms())
    except SchemaError as exc:
        raise CliError(SETTINGS_ERROR, str(exc)) from None
    print(f"applied {len(ran)} migration(s): {', '.join(f'{m.version:04d}_{m.name}' for m in ran) or 'none needed'}")
    return 0
