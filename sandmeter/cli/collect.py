"""`sandmeter collect`: the node collector (SANDMETER_COLLECTOR_*)."""

from __future__ import annotations

import argparse
import threading

from contracts.settings import Part
from sandmeter.cli.common import (
    Subparsers,
    apply_log_level,
    served_registry,
    service,
    settings,
    stop_on_signals,
    warn_if_kafka_refuses,
)


def _settings_class() -> type[Part]:
    from collectors import CollectorSettings

    return CollectorSettings


def add(sub: Subparsers) -> None:
    service(sub, "collect", "run the node collector (SANDMETER_COLLECTOR_*)", run, _settings_class)


def run(a: argparse.Namespace) -> int:
    stop = stop_on_signals()  # first: a SIGTERM during start-up ends it cleanly
    from collectors import CollectorSettings, build_agent, run_agent

    s = settings(CollectorSettings)
    apply_log_level(s, a.verbose)
    reg = served_registry(s, "collector")
    agent = build_agent(s, reg)  # Kafka may be away: batches wait in the spool
    # ...but a refused login or TLS handshake will not pass by itself: say so once, and run on
    threading.Thread(target=warn_if_kafka_refuses, args=(s,), name="kafka-check", daemon=True).start()
    try:
        run_agent(agent, s.interval_s, stop, s.status_every_s)
    finally:
        agent.close()
        agent.sink.close(timeout_s=10)
    return 0
