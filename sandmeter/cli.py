"""The `sandmeter` command: one subcommand per module; settings come from SANDMETER_* env."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path

from sandmeter.clock import wall_ms
from sandmeter.settings import ApiSettings, CollectorSettings, ProcessorSettings, ScaleSettings, StackSettings


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _serve_metrics(host: str, port: int, registry: object) -> None:
    from prometheus_client import start_http_server

    if port:
        start_http_server(port, addr=host, registry=registry)  # type: ignore[arg-type]


def cmd_stack(a: argparse.Namespace) -> int:
    from sandmeter.stack import ServiceError, Stack

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


def cmd_migrate(a: argparse.Namespace) -> int:
    from pipeline.migrate import SchemaError, migrate
    from pipeline.writer import client

    s = ProcessorSettings()
    try:
        ran = migrate(client(s.clickhouse_host, s.clickhouse_port, s.clickhouse_database), wall_ms())
    except SchemaError as exc:
        print(f"sandmeter migrate: {exc}", file=sys.stderr)
        return 2
    print(f"applied {len(ran)} migration(s): {', '.join(f'{m.version:04d}_{m.name}' for m in ran) or 'none needed'}")
    return 0


def cmd_collect(a: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry

    from collectors.agent import build_agent, run_agent

    s = CollectorSettings()
    reg = CollectorRegistry()
    _serve_metrics(s.metrics_host, s.metrics_port, reg)
    agent = build_agent(s, reg)
    stop = _stop_on_signals()
    try:
        run_agent(agent, s.interval_s, stop, s.status_every_s)
    finally:
        agent.close()
        agent.sink.close(timeout_s=10)
    return 0


def cmd_simulate(a: argparse.Namespace) -> int:
    from collectors.sim.model import FaultSpec, FleetSpec
    from collectors.sim.runner import Simulator

    try:
        faults = tuple(FaultSpec.parse(f) for f in a.fault)
    except ValueError as exc:
        print(f"sandmeter simulate: --fault {exc}", file=sys.stderr)
        return 2
    spec = FleetSpec(
        nodes=a.nodes, sandboxes=a.sandboxes, tenants=a.tenants, seed=a.seed, faults=faults, kata_detail=a.kata_detail
    )
    sim = Simulator(a.root, spec)
    sim.start()
    print(f"simulating {a.nodes} nodes under {a.root}; node roots and URLs in {a.root / 'fleet.json'}", flush=True)
    stop = _stop_on_signals()
    deadline = time.monotonic() + a.seconds if a.seconds else None
    while not stop.wait(1.0):
        if deadline and time.monotonic() >= deadline:
            break
    sim.drain()
    sim.stop()
    print(f"ground truth written to {a.root / 'ground-truth.json'}")
    return 0


def cmd_process(a: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry

    from pipeline.processor import build_processor

    s = ProcessorSettings()
    reg = CollectorRegistry()
    _serve_metrics(s.metrics_host, s.metrics_port, reg)
    proc = build_processor(s, reg)
    try:
        proc.run(_stop_on_signals())
    finally:
        proc.close()
    return 0


def cmd_api(a: argparse.Namespace) -> int:
    from pipeline.writer import client

    s = ApiSettings()

    def ch() -> object:
        return client(s.clickhouse_host, s.clickhouse_port, s.clickhouse_database)

    if getattr(a, "keys_cmd", None):
        return _api_keys(a, ch())
    import uvicorn

    from billing.app import create_app
    from billing.plans import PlanError

    try:
        app = create_app(s, ch)
    except PlanError as exc:
        print(f"sandmeter api: bad price plan: {exc}", file=sys.stderr)
        return 2
    threading.Thread(target=_api_status, args=(app, s.status_every_s), daemon=True).start()
    uvicorn.run(app, host=s.host, port=s.port, log_level=s.log_level.lower())
    return 0


def _api_status(app: object, every_s: float) -> None:
    log = logging.getLogger("billing.app")
    while True:
        time.sleep(every_s)
        log.info("api: requests=%d errors=%d", app.state.requests, app.state.errors)  # type: ignore[attr-defined]


def _api_keys(a: argparse.Namespace, ch: object) -> int:
    from billing.keys import OPERATOR, TENANT, create_key, list_keys, revoke_key

    if a.keys_cmd == "create":
        if bool(a.tenant) == a.operator:
            print("give exactly one of --tenant T or --operator", file=sys.stderr)
            return 2
        key_id, key = create_key(ch, OPERATOR if a.operator else TENANT, a.tenant or "")
        print(f"key id {key_id}; the key (shown once): {key}")
        return 0
    if a.keys_cmd == "revoke":
        if not revoke_key(ch, a.key_id):
            print(f"no key {a.key_id}", file=sys.stderr)
            return 1
        print(f"revoked {a.key_id}")
        return 0
    for k in list_keys(ch):
        state = "revoked" if k["revoked_ms"] else "active"
        print(f"{k['key_id']}  {k['role']:<8}  {k['tenant'] or '-':<24}  {state}")
    return 0


def cmd_scale(a: argparse.Namespace) -> int:
    from kafka import KafkaProducer
    from prometheus_client import CollectorRegistry

    from pipeline.autoscale import Publisher
    from pipeline.kpa import KpaConfig
    from pipeline.writer import client

    s = ScaleSettings()
    logging.basicConfig(level=s.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    reg = CollectorRegistry()
    _serve_metrics(s.metrics_host, s.metrics_port, reg)
    producer = KafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all")
    ch = client(s.clickhouse_host, s.clickhouse_port, s.clickhouse_database)
    pub = Publisher(ch, producer, s.topic, s.stale_s, wall_ms, KpaConfig(), reg)
    stop = _stop_on_signals()
    pub.run(stop, s.status_every_s)
    producer.close(timeout=5)
    return 0


def cmd_dashboards(a: argparse.Namespace) -> int:
    from dashboards.generate import write_all

    for p in write_all(a.out, a.plans):
        print(p)
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from sandmeter.demo import main

    return main(a.seconds, a.nodes, a.sandboxes, a.tenants, a.out)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sandmeter", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="cmd", required=True)
    st = sub.add_parser("stack", help="start/stop the local broker and ClickHouse (SANDMETER_STACK_*)")
    st.add_argument("action", choices=["up", "down", "status"])
    st.set_defaults(fn=cmd_stack)
    sub.add_parser("migrate", help="apply ClickHouse migrations (SANDMETER_PROCESSOR_CLICKHOUSE_*)").set_defaults(
        fn=cmd_migrate
    )
    sub.add_parser("collect", help="run the node collector (SANDMETER_COLLECTOR_*)").set_defaults(fn=cmd_collect)
    sm = sub.add_parser("simulate", help="run a simulated fleet of Kata nodes")
    sm.add_argument("--root", type=Path, required=True, help="directory for the nodes' trees")
    sm.add_argument("--nodes", type=int, default=3)
    sm.add_argument("--sandboxes", type=int, default=20)
    sm.add_argument("--tenants", type=int, default=3)
    sm.add_argument("--seed", type=int, default=7)
    sm.add_argument("--seconds", type=float, default=0, help="stop after this long (0: until Ctrl-C)")
    sm.add_argument(
        "--kata-detail", action="store_true", help="export every kata-monitor family (~300 series per sandbox)"
    )
    sm.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="KIND:AT_S[:DURATION_S[:NODE]]",
        help="inject qemu_hang or io_stall into a random sandbox of node NODE (repeatable)",
    )
    sm.set_defaults(fn=cmd_simulate)
    sub.add_parser("process", help="run the stream processor (SANDMETER_PROCESSOR_*)").set_defaults(fn=cmd_process)
    sub.add_parser("scale", help="publish changed scale decisions to Kafka (SANDMETER_SCALE_*)").set_defaults(
        fn=cmd_scale
    )
    api = sub.add_parser("api", help="run the billing API (SANDMETER_API_*), or manage its keys")
    api.set_defaults(fn=cmd_api)
    keys = (
        api.add_subparsers(dest="keys_cmd")
        .add_parser("keys", help="API keys")
        .add_subparsers(dest="keys_cmd", required=True)
    )
    kc = keys.add_parser("create", help="a key for one tenant (--tenant) or the operator (--operator)")
    kc.add_argument("--tenant", default="")
    kc.add_argument("--operator", action="store_true")
    keys.add_parser("revoke", help="revoke a key by its id").add_argument("key_id")
    keys.add_parser("list", help="key ids, roles, tenants, state (never the keys)")
    d = sub.add_parser("dashboards", help="write Grafana dashboards and provisioning, Prometheus config and rules")
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--plans", type=Path, default=Path("plans"), help="price plans for the list-price cost panels")
    d.set_defaults(fn=cmd_dashboards)
    dm = sub.add_parser("demo", help="run the whole pipeline on a local stack and print per-tenant usage")
    dm.add_argument("--seconds", type=float, default=60)
    dm.add_argument("--nodes", type=int, default=3)
    dm.add_argument("--sandboxes", type=int, default=20)
    dm.add_argument("--tenants", type=int, default=3)
    dm.add_argument("--out", type=Path, default=Path("out"))
    dm.set_defaults(fn=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if a.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # the driver logs each refused connection with a traceback; callers report failures themselves
    logging.getLogger("clickhouse_driver").setLevel(logging.ERROR)
    rc: int = a.fn(a)
    return rc


if __name__ == "__main__":
    sys.exit(main())
