"""`sandmeter process`: the stream processor (SANDMETER_PROCESSOR_*)."""

from __future__ import annotations

import argparse

from sandmeter.cli.common import Subparsers, no_args, served_registry, stop_on_signals


def add(sub: Subparsers) -> None:
    no_args(sub, "process", "run the stream processor (SANDMETER_PROCESSOR_*)", run)


def run(a: argparse.Namespace) -> int:
    from pipeline import ProcessorSettings, build_processor

    s = ProcessorSettings()
    reg = served_registry(s)
    proc = build_processor(s, reg)
    try:
        proc.run(stop_on_signals())
    finally:
        proc.close()
    return 0
