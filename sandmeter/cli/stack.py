"""`sandmeter stack up|down|status`: the local broker and ClickHouse (SANDMETER_STACK_*)."""

from __future__ import annotations

import argparse

from contracts.settings import Part
from sandmeter.cli.common import SETTINGS_ERROR, CliError, Subparsers, service, settings


def _settings_class() -> type[Part]:
    from sandmeter.stack import StackSettings

    return StackSettings


def add(sub: Subparsers) -> None:
    help_ = "start/stop the local broker and ClickHouse (SANDMETER_STACK_*)"
    service(sub, "stack", help_, run, _settings_class).add_argument("action", choices=["up", "down", "status"])


def run(a: argparse.Namespace) -> int:
    from sandmeter.stack import ServiceError, Stack, StackSettings

    stack = Stack(settings(StackSettings))
    try:
        if a.action == "up":
            started = stack.up()
            print(f"started: {', '.join(started) or 'nothing (already running)'}; kafka {stack.kafka_bootstrap}, "
                  f"clickhouse 127.0.0.1:{stack.settings.clickhouse_tcp_port}")  # fmt: skip
        elif a.action == "down":
            print(f"stopped: {', '.join(stack.down()) or 'nothing was running'}")
        else:
            ok = True
            for s in stack.status():
                ok &= s.answering
                print(f"{s.name:<11} pid={s.pid or '-':<8} port={s.port:<6} {'answering' if s.answering else 'DOWN'}")
            return 0 if ok else 1
    except ServiceError as exc:
        raise CliError(SETTINGS_ERROR, str(exc)) from None
    return 0
