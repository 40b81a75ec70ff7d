"""What every subcommand does the same way: settings, signals, /metrics, log level, and
errors a person can act on (one line naming the variable or the address; no traceback)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, NoReturn, TypeAlias, TypeVar

from prometheus_client import CollectorRegistry, start_http_server

from contracts import kafka
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


def default_signals() -> None:
    """SIGINT and SIGTERM end the process again (after a wait that `stop_on_signals` covered)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def stopped_while_starting() -> NoReturn:
    """A SIGTERM or SIGINT while a service waited for a dependency: a clean exit, said once."""
    logging.getLogger("sandmeter.cli").info("stopped while waiting for a dependency at start-up")
    raise SystemExit(0)


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


def require_clickhouse(
    s: ClickHousePart, wait_s: float = 0.0, home: str = "", stop: threading.Event | None = None
) -> None:
    """Exits 3 when ClickHouse does not answer within `wait_s` (at once when it refuses the
    login), naming its address and the settings to change; `home`: as `s.clickhouse(home)`;
    exits 0 when `stop` is set meanwhile (a SIGTERM while it waits)."""
    from contracts.clickhouse import refused_login

    deadline = time.monotonic() + wait_s
    while True:
        try:
            s.clickhouse(home).execute("SELECT 1")
            return
        except Exception as exc:
            if refused_login(exc):
                user, pw = env_name(type(s), "clickhouse_user"), env_name(type(s), "clickhouse_password")
                raise CliError(
                    UNREACHABLE,
                    f"ClickHouse at {s.clickhouse_host}:{s.clickhouse_port} refused user {s.clickhouse_user!r} "
                    f"({_first_line(exc)}); check {user} and {pw} (or {pw}_FILE)",
                ) from None
            if time.monotonic() >= deadline:
                host, port = env_name(type(s), "clickhouse_host"), env_name(type(s), "clickhouse_port")
                raise CliError(
                    UNREACHABLE,
                    f"ClickHouse at {s.clickhouse_host}:{s.clickhouse_port} does not answer ({_first_line(exc)}); "
                    f"start it, or point {host} / {port} at it",
                ) from None
        pause = min(1.0, max(0.0, deadline - time.monotonic()))
        if stop is None:
            time.sleep(pause)
        elif stop.wait(pause):
            stopped_while_starting()


def require_kafka(s: KafkaPart, timeout_s: float = 10.0, stop: threading.Event | None = None) -> None:
    """Exits 3 when no Kafka broker answers within `timeout_s`, or at once when one refuses the
    TLS handshake or the login, naming the bootstrap address and the settings to change; exits
    0 at once when `stop` is set meanwhile (a SIGTERM during start-up)."""
    refusal = kafka.probe(s.kafka_kwargs(), timeout_s, stop)
    if refusal is not None and refusal.kind == "stopped":
        stopped_while_starting()
    if refusal is not None:
        raise CliError(UNREACHABLE, kafka_problem(s, refusal))


def warn_if_kafka_refuses(s: KafkaPart, timeout_s: float = 30.0) -> None:
    """For a service that runs on without Kafka (the collector spools): one ERROR line when
    the broker refuses the TLS handshake or the login, which no retry will fix."""
    refusal = kafka.probe(s.kafka_kwargs(), timeout_s)
    if refusal is not None and refusal.kind != "unreachable":
        logging.getLogger("sandmeter.cli").error("%s; batches stay spooled until then", kafka_problem(s, refusal))


def kafka_problem(s: KafkaPart, r: kafka.Refusal) -> str:
    """One line: the broker's address, what went wrong, and which variables to change."""

    def v(field: str) -> str:
        return env_name(type(s), f"kafka_{field}")

    where = f"Kafka at {s.kafka_bootstrap}"
    if r.kind == "sasl":
        return (
            f"{where} refused the {s.kafka_sasl_mechanism} login of {s.kafka_username!r} ({r.detail}); check "
            f"{v('username')}, {v('password')} (or {v('password_file')}) and {v('sasl_mechanism')}"
        )
    if r.kind == "tls":
        return (
            f"{where}: TLS handshake failed ({r.detail}); check {v('ca_file')} (the CA that signed the broker's "
            f"certificate), {v('check_hostname')}, and that {v('bootstrap')} names a TLS listener"
        )
    return (
        f"no Kafka broker answers at {s.kafka_bootstrap} ({r.detail}); start it, or set {v('bootstrap')} "
        f"(and {v('security_protocol')}, now {s.kafka_security_protocol}, to what that listener speaks)"
    )


def _first_line(exc: BaseException) -> str:
    """The exception's message up to the server's stack trace, on one line."""
    text = " ".join(str(exc).split()).split(" Stack trace:")[0][:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
