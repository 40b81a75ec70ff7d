"""`sandmeter migrate`: apply the ClickHouse migrations (SANDMETER_PROCESSOR_CLICKHOUSE_*)."""

from __future__ import annotations

import argparse
import sys

from contracts.clock import wall_ms
from sandmeter.cli.common import Subparsers, no_args


def add(sub: Subparsers) -> None:
    no_args(sub, "migrate", "apply ClickHouse migrations (SANDMETER_PROCESSOR_CLICKHOUSE_*)", run)


def run(a: argparse.Namespace) -> int:
    from pipeline import ProcessorSettings, SchemaError, migrate

    s = ProcessorSettings()
    try:
        ran = migrate(s.clickhouse(), wall_ms())
    except SchemaError as exc:
        print(f"sandmeter migrate: {exc}", file=sys.stderr)
        return 2
    print(f"applied {len(ran)} migration(s): {', '.join(f'{m.version:04d}_{m.name}' for m in ran) or 'none needed'}")
    return 0
