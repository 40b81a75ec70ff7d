"""`sandmeter stack up|down|status`: the local broker and ClickHouse (SANDMETER_STACK_*)."""

from __future__ import annotations

import argparse
import sys

from sandmeter.cli.common import Subparsers


def add(sub: Subparsers) -> None:
    p = sub.add_parser("stack", help="start/stop the local broker and ClickHouse (SANDMETER_STACK_*)")
    p.add_argument("action", choices=["up", "down", "status"])
    p.set_defaults(fn=run)


def run(a: argparse.Namespace) -> int:
    from sandmeter.stack import ServiceError, Stack, StackSettings

    stack = Stack(StackSettings())
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
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
