"""`sandmeter stack up|down|status|watch`: the local broker, ClickHouse, Prometheus and
Alertmanager (SANDMETER_STACK_*)."""

from __future__ import annotations

import argparse
import re
from typing import Any

from contracts.settings import Part
from sandmeter.cli.common import SETTINGS_ERROR, CliError, Subparsers, service, settings

WATCH_ARG = re.compile(r"(processor|collector|api|scale)(?::([A-Za-z0-9._-]+))?=(\d{1,5})")


def _settings_class() -> type[Part]:
    from sandmeter.stack import StackSettings

    return StackSettings


def add(sub: Subparsers) -> None:
    help_ = (
        "start/stop the local broker, ClickHouse (or a ClickHouse cluster), Prometheus and Alertmanager "
        "(SANDMETER_STACK_*)"
    )
    p = service(sub, "stack", help_, run, _settings_class)
    p.add_argument("action", choices=["up", "down", "status", "watch"])
    p.add_argument(
        "targets",
        nargs="*",
        metavar="SERVICE[:NODE]=PORT",
        help="watch: the services Prometheus scrapes on 127.0.0.1, e.g. processor=9465 api=8080 scale=9466 "
        "collector:node-local=9464 (none: stop watching)",
    )
    p.add_argument(
        "--cluster", action="store_true",
        help="ZooKeeper and a 2 shards x 2 replicas ClickHouse cluster instead of the single server "
        "(as SANDMETER_STACK_CLUSTER=true); `down` stops either",
    )  # fmt: skip


def _targets(args: list[str]) -> dict[str, list[Any]]:
    from dashboards import API_JOB, COLLECTOR_JOB, PROCESSOR_JOB, SCALE_JOB
    from sandmeter.stack import Target

    jobs = {"processor": PROCESSOR_JOB, "collector": COLLECTOR_JOB, "api": API_JOB, "scale": SCALE_JOB}
    out: dict[str, list[Any]] = {}
    for arg in args:
        m = WATCH_ARG.fullmatch(arg)
        if not m or not 0 < int(m[3]) < 65536 or (m[2] is not None) != (m[1] == "collector"):
            raise CliError(SETTINGS_ERROR, f"{arg!r}: expected SERVICE=PORT, or collector:NODE=PORT for a collector")
        out.setdefault(jobs[m[1]], []).append(Target(int(m[3]), m[2]))
    return out


def run(a: argparse.Namespace) -> int:
    from sandmeter.stack import CLUSTER, ServiceError, Stack, StackSettings
    from sandmeter.stack.users import DASHBOARDS, exports

    if a.targets and a.action != "watch":
        raise CliError(SETTINGS_ERROR, f"`stack {a.action}` takes no targets")
    s = settings(StackSettings)
    if a.cluster:
        s = s.model_copy(update={"cluster": True})
    try:
        stack = Stack(s)  # a missing binary is a one-line error too
        if a.action == "up":
            started = stack.up()
            where = f"clickhouse 127.0.0.1:{stack.settings.clickhouse_tcp_port}"
            if stack.settings.cluster:
                ports = ", ".join(str(n.tcp_port) for n in stack.cluster.nodes)
                where = (
                    f"clickhouse cluster '{CLUSTER}' on 127.0.0.1:{ports} (set SANDMETER_<SERVICE>_CLICKHOUSE_"
                    f"CLUSTER={CLUSTER}), zookeeper 127.0.0.1:{stack.settings.zookeeper_port}"
                )
            started_ = ", ".join(started) or "nothing (already running)"
            print(f"started: {started_}; kafka {stack.kafka_bootstrap}, {where}")
            if stack.alerting:
                print(f"prometheus {stack.alerting.prometheus_url}, alertmanager {stack.alerting.alertmanager_url}")
            print(f"clickhouse users (no `default`; passwords in {stack.users.dir}, docs/deployment.md):")
            print("\n".join(exports(stack.users)))
            print(f"grafana: {DASHBOARDS}, password in {stack.users.password_file(DASHBOARDS)}")
        elif a.action == "down":
            print(f"stopped: {', '.join(stack.down()) or 'nothing was running'}")
        elif a.action == "watch":
            stack.watch(_targets(a.targets))
            print(f"watching: {_describe(stack)}")
        else:
            ok = True
            for st in stack.status():
                ok &= st.answering
                print(
                    f"{st.name:<12} pid={st.pid or '-':<8} port={st.port:<6} {'answering' if st.answering else 'DOWN'}"
                )
            if stack.alerting:
                print(f"watching: {_describe(stack)}")
            return 0 if ok else 1
    except ServiceError as exc:
        raise CliError(SETTINGS_ERROR, str(exc)) from None
    return 0


def _describe(stack: Any) -> str:
    watched = stack.alerting.watched()
    return ", ".join(f"{job} {[t.port for t in ts]}" for job, ts in watched.items()) or "nothing"
