"""`sandmeter process`: the stream processor (SANDMETER_PROCESSOR_*)."""

from __future__ import annotations

import argparse

from contracts.settings import Part
from sandmeter.cli.common import (
    Subparsers,
    apply_log_level,
    require_clickhouse,
    require_kafka,
    served_registry,
    service,
    settings,
    stop_on_signals,
)


def _settings_class() -> type[Part]:
    from pipeline import ProcessorSettings

    return ProcessorSettings


def add(sub: Subparsers) -> None:
    service(sub, "process", "run the stream processor (SANDMETER_PROCESSOR_*)", run, _settings_class)


def run(a: argparse.Namespace) -> int:
    # first: a SIGTERM while the heavy imports and the clients start ends the start-up cleanly
    stop = stop_on_signals()
    from pipeline import ProcessorSettings, build_processor

    s = settings(ProcessorSettings)
    apply_log_level(s, a.verbose)
    require_kafka(s, stop=stop)
    require_clickhouse(s, stop=stop)
    reg = served_registry(s, "processor")
    proc = build_processor(s, reg)
    try:
        proc.run(stop)
    finally:
        proc.close()
    return 0
