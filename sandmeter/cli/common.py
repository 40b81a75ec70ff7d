"""What every subcommand does the same way: settings, signals, /metrics, log level, and
errors a person can act on (one line naming the variable or the address; no traceback)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Any, TypeAlias, TypeVar

from prometheus_client import CollectorRegistry, start_http_server

from contracts.metrics import service_registry
from contracts.settings import (
    ClickHousePart,
    KafkaPart,
    LogPart,
    MetricsPart,
    Part,
    SettingsProblem,
    env_name,
    variables,
)
from contracts.settings import load as load_settings
from sandmeter import __version__

Subparsers: TypeAlias = "argparse._SubParsersAction[ServiceParser]"
P = TypeVar("P", bound=Part)
SETTINGS_ERROR, UNREACHABLE = 2, 3  # exit codes


class CliError(Exception):
    """Ends the command with `code` and one line on stderr."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class ServiceParser(argparse.ArgumentParser):
    """A subcommand's parser whose --help lists the environment variables of its settings,
    with their defaults, generated from the settings class (imported only when asked)."""

    def __init__(self, *args: Any, settings: Callable[[], type[Part]] | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        self._settings = settings

    def format_help(self) -> str:
        if self._settings is not None and self.epilog is None:
            rows = variables(self._settings())
            width = max(len(v) for v, _, _ in rows)
            self.epilog = "environment (default):\n" + "\n".join(
                f"  {var:<{width}}  {default or '-'}  ({kind})" for var, default, kind in rows
            )
        return super().format_help()


def settings(cls: type[P]) -> P:
    try:
        return load_settings(cls, os.environ)
    except SettingsProblem as exc:
        raise CliError(SETTINGS_ERROR, str(exc)) from None


def service(sub: Subparsers, name: str, help_: str, fn: Any, cls: Callable[[], type[Part]]) -> ServiceParser:
    """A subcommand run by `fn` whose --help lists `cls()`'s variables."""
    p = sub.add_parser(name, help=help_, description=help_, settings=cls)
    p.set_defaults(fn=fn)
    return p


def stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM: every service loop waits on it."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def apply_log_level(s: LogPart, verbose: bool) -> None:
    """The service's LOG_LEVEL, unless `-v` asked for everything."""
    logging.getLogger().setLevel(logging.DEBUG if verbose else s.log_level)


def served_registry(s: MetricsPart, name: str) -> CollectorRegistry:
    """The service's registry (build and process metrics included), served on
    http://host:port/metrics (port 0: no listener)."""
    registry = service_registry(name, __version__)
    if s.metrics_port:
        try:
            start_http_server(s.metrics_port, addr=s.metrics_host, registry=registry)
        except OSError as exc:
            var = env_name(type(s), "metrics_port")
            raise CliError(
                SETTINGS_ERROR,
                f"{var}={s.metrics_port}: cannot listen on {s.metrics_host}:{s.metrics_port} ({exc.strerror}); "
                "choose a free port, or 0 for no /metrics",
            ) from None
    return registry


def require_clickhouse(s: ClickHousePart) -> None:
    """Exits 3 when ClickHouse does not answer, naming its address and the settings."""
    try:
        s.clickhouse().execute("SELECT 1")
    except Exception as exc:
        host, port = env_name(type(s), "clickhouse_host"), env_name(type(s), "clickhouse_port")
        raise CliError(
            UNREACHABLE,
            f"ClickHouse at {s.clickhouse_host}:{s.clickhouse_port} does not answer ({_first_line(exc)}); "
            f"start it, or point {host} / {port} at it",
        ) from None


def require_kafka(s: KafkaPart) -> None:
    """Exits 3 when no Kafka broker answers, naming the bootstrap address and its setting."""
    from kafka import KafkaAdminClient

    try:
        KafkaAdminClient(bootstrap_servers=s.kafka_bootstrap, request_timeout_ms=5000).close()
    except Exception as exc:
        var = env_name(type(s), "kafka_bootstrap")
        raise CliError(
            UNREACHABLE,
            f"no Kafka broker answers at {s.kafka_bootstrap} ({_first_line(exc)}); start it, or set {var}",
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
