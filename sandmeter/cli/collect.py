"""`sandmeter collect`: the node collector (SANDMETER_COLLECTOR_*)."""

from __future__ import annotations

import argparse

from sandmeter.cli.common import Subparsers, no_args, served_registry, stop_on_signals


def add(sub: Subparsers) -> None:
    no_args(sub, "collect", "run the node collector (SANDMETER_COLLECTOR_*)", run)


def run(a: argparse.Namespace) -> int:
    from collectors import CollectorSettings, build_agent, run_agent

    s = CollectorSettings()
    reg = served_registry(s)
    agent = build_agent(s, reg)
    stop = stop_on_signals()
    try:
        run_agent(agent, s.interval_s, stop, s.status_every_s)
    finally:
        agent.close()
        agent.sink.close(timeout_s=10)
    return 0
