"""What every service subcommand does the same way: signals and the /metrics listener."""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Any, TypeAlias

from prometheus_client import CollectorRegistry, start_http_server

from contracts.settings import MetricsPart

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM: every service loop waits on it."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def served_registry(s: MetricsPart) -> CollectorRegistry:
    """The service's metrics registry, served on http://host:port/metrics (port 0: no listener)."""
    registry = CollectorRegistry()
    if s.metrics_port:
        start_http_server(s.metrics_port, addr=s.metrics_host, registry=registry)
    return registry


def no_args(sub: Any, name: str, help_: str, fn: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_)
    p.set_defaults(fn=fn)
    return p
