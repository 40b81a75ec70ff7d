"""`sandmeter demo`: the walking skeleton on the local stack.

simulator -> collectors -> Kafka -> processor -> ClickHouse -> billing API, for about a
minute, watched by the stack's Prometheus and Alertmanager, with one QEMU hang injected; then
it drains the fleet, prints each tenant's usage as the API reports it beside the simulator's
ground truth, then the hang's alert as Alertmanager delivered it to a webhook, writes the
dashboards and stops everything it started.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from billing import ApiSettings
from collectors import CollectorAgent
from collectors.sim import FaultSpec, FleetSpec
from contracts.clock import wall_ms
from contracts.names import COLLECTOR_BATCHES_SENT, COLLECTOR_SAMPLES, COLLECTOR_WIRE_BYTES, QEMU_HANG
from dashboards import API_JOB, COLLECTOR_JOB, PROCESSOR_JOB
from pipeline import ProcessorSettings
from sandmeter.stack import AlertReceiver, Delivery, Stack, StackSettings, Target, create_topics
from sandmeter.stack.procs import free_port
from sandmeter.stack.users import API, BILLING, WRITER

log = logging.getLogger("sandmeter.demo")
GIB = Decimal(1 << 30)
PLANS = Path(__file__).resolve().parents[1] / "plans"  # the repository's example price plans
HANG = FaultSpec(QEMU_HANG, at_s=5, node=0)  # until the drain; detected ~30 s later (hysteresis)
HANG_ALERT = "SandmeterQemuHang"


@dataclass
class DemoResult:
    api_totals: dict[str, dict[str, Decimal]]
    invoices: dict[str, str]  # tenant -> this month's invoice total, as the API gives it
    truth: dict[str, Any]
    wire_bytes: int
    samples: int
    batches_sent: int
    dlq: int
    dashboards: list[Path] = field(default_factory=list)
    alerts: list[Delivery] = field(default_factory=list)  # what Alertmanager delivered, in order


def _total(agents: Sequence[CollectorAgent], metric: str) -> int:
    """A counter summed over the in-process collectors, read through their registries."""
    return sum(int(a.registry.get_sample_value(metric) or 0) for a in agents)


@contextlib.contextmanager
def serve_api(settings: ApiSettings, ch_factory: Any) -> Iterator[str]:
    import uvicorn

    from billing import create_app

    app = create_app(settings, ch_factory, billing_factory=settings.billing_clickhouse)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="warning"))
    t = threading.Thread(target=server.run, name="api", daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{settings.port}"
    finally:
        server.should_exit = True
        t.join(timeout=10)


def _serve(registry: CollectorRegistry) -> Any:
    """A registry on its own /metrics port, as `sandmeter collect|process` serve theirs."""
    return start_http_server(0, addr="127.0.0.1", registry=registry)[0]


def _hang_alert(alerts: AlertReceiver, status: str, wait_s: float = 0) -> Delivery | None:
    return alerts.wait(lambda d: d.name == HANG_ALERT and d.status == status, wait_s)


def run_pipeline(
    stack: Stack, seconds: float, spec: FleetSpec, workdir: Path, interval_s: float = 1.0,
    alerts: AlertReceiver | None = None,
) -> DemoResult:  # fmt: skip
    """Runs every component against an already-started stack; used by the demo and e2e test.
    With `alerts` (the webhook the stack's Alertmanager posts to) the stack's Prometheus
    watches every service meanwhile, and a hang in `spec` is waited for until it is alerted."""
    import httpx

    from billing import OPERATOR, create_key
    from collectors import build_agent, run_agent, wait_for_stops
    from collectors.sim import Simulator, collector_settings
    from dashboards import write_all
    from pipeline import build_processor, migrate

    st = stack.settings
    db = ApiSettings().clickhouse_database  # every component's default (sandmeter)
    migrate(stack.ch(db, home="system"), wall_ms())  # as the admin: each component as its own user
    create_topics(stack.kafka_bootstrap)

    sim = Simulator(workdir / "fleet", spec)
    sim.start()
    stop_collect, stop_process = threading.Event(), threading.Event()
    agents, sinks, threads = [], [], []
    for nd in sim.describe()["nodes"]:
        cs = collector_settings(
            nd,
            kafka_bootstrap=stack.kafka_bootstrap,
            interval_s=interval_s,
            metrics_port=0,
            spool_dir=workdir / "spool",
            spool_fsync=False,
        )
        agent = build_agent(cs, CollectorRegistry())
        sink = agent.sink
        agents.append(agent)
        sinks.append(sink)
        th = threading.Thread(target=run_agent, args=(agent, cs.interval_s, stop_collect, 15.0), daemon=True)
        threads.append(th)
    ps = ProcessorSettings(
        kafka_bootstrap=stack.kafka_bootstrap, clickhouse_port=st.clickhouse_tcp_port, metrics_port=0,
        status_every_s=15.0, clickhouse_database=db, **stack.users.settings(WRITER),
    )  # fmt: skip
    proc_registry = CollectorRegistry()
    proc = build_processor(ps, proc_registry)
    pth = threading.Thread(target=proc.run, args=(stop_process,), name="processor", daemon=True)
    for th in (*threads, pth):
        th.start()
    api_settings = ApiSettings(
        port=free_port(), clickhouse_port=st.clickhouse_tcp_port, clickhouse_database=db, plans_dir=PLANS,
        **stack.users.settings(API), **stack.users.settings(BILLING, "billing_"),
    )  # fmt: skip

    def ch_factory() -> Any:
        return stack.ch(db, API)

    t0 = time.monotonic()
    with contextlib.ExitStack() as running:
        url = running.enter_context(serve_api(api_settings, ch_factory))
        if alerts is not None:
            servers = {a.node: _serve(a.registry) for a in agents}
            proc_server = _serve(proc_registry)
            for srv in (*servers.values(), proc_server):
                running.callback(srv.shutdown)
            running.callback(stack.watch, {})  # unwatched before the services stop serving
            stack.watch({
                PROCESSOR_JOB: [Target(proc_server.server_port)],
                COLLECTOR_JOB: [Target(srv.server_port, node) for node, srv in servers.items()],
                API_JOB: [Target(api_settings.port)],
            })  # fmt: skip
            print(f"  [{time.monotonic() - t0:5.1f}s] Prometheus scrapes every service; alerts armed", flush=True)
        while (elapsed := time.monotonic() - t0) < seconds:
            time.sleep(min(10.0, seconds - elapsed))
            sent = _total(agents, COLLECTOR_BATCHES_SENT)
            delivered = f" alerts delivered={len(alerts.deliveries())}" if alerts else ""
            print(f"  [{time.monotonic() - t0:5.1f}s] batches sent={sent} processed={proc.total_batches} "
                  f"samples written={proc.total_samples}{delivered}", flush=True)  # fmt: skip
        hang = next((f for f in spec.faults if f.kind == QEMU_HANG), None)
        if alerts is not None and hang is not None and _hang_alert(alerts, "firing") is None:
            wait_s = max(0.0, hang.at_s + 75 - (time.monotonic() - t0))  # detection takes ~30 s
            print(f"  waiting up to {wait_s:.0f} s for the hang's alert ...", flush=True)
            _hang_alert(alerts, "firing", wait_s)
        sim.drain()
        if not wait_for_stops(agents, 30):  # the watchers see the stops and queue the final samples
            log.warning("some sandbox stops were not seen within 30 s")
        stop_collect.set()
        for th in threads:
            th.join(timeout=10)
        for a in agents:
            a.close()
        for s in sinks:
            s.close(timeout_s=30)
        sent = _total(agents, COLLECTOR_BATCHES_SENT)
        deadline = time.monotonic() + 60
        while proc.total_batches + proc.total_dlq < sent and time.monotonic() < deadline:
            time.sleep(0.2)
        if alerts is not None and _hang_alert(alerts, "firing") is not None:
            _hang_alert(alerts, "resolved", 15)  # the hung sandbox stopped: its incident closes
        stop_process.set()
        pth.join(timeout=30)
        proc.close()
        truth = sim.stop()

        key = create_key(stack.ch(db, BILLING), OPERATOR)[1]
        totals: dict[str, dict[str, Decimal]] = {}
        invoices: dict[str, str] = {}
        now_s = wall_ms() // 1000  # whole days around the run: the API refuses a range over a year
        frm = time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(now_s - 2 * 86_400))
        to = time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(now_s + 86_400))
        with httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {key}"}) as http:
            r = http.get("/v1/tenants", params={"from": frm, "to": to})
            r.raise_for_status()
            for tenant in r.json()["tenants"]:
                u = http.get(f"/v1/tenants/{tenant}/usage", params={"from": frm, "to": to, "granularity": "day"})
                u.raise_for_status()
                totals[tenant] = {k: Decimal(v) for k, v in u.json()["totals"].items()}
                month = time.strftime("%Y-%m", time.gmtime())
                inv = http.get(f"/v1/tenants/{tenant}/invoices/{month}")
                inv.raise_for_status()
                invoices[tenant] = f"{inv.json()['total']} {inv.json()['currency']} ({inv.json()['status']})"
    dash = write_all(workdir / "grafana", PLANS)
    return DemoResult(
        api_totals=totals,
        invoices=invoices,
        truth=truth,
        wire_bytes=_total(agents, COLLECTOR_WIRE_BYTES),
        samples=_total(agents, COLLECTOR_SAMPLES),
        batches_sent=sent,
        dlq=proc.total_dlq,
        dashboards=dash,
        alerts=alerts.deliveries() if alerts else [],
    )


def format_table(res: DemoResult) -> str:
    head = (
        f"{'tenant':<14}{'CPU ms':>14}{'truth CPU ms':>14}{'alloc vCPU-ms':>16}{'truth vCPU-ms':>16}"
        f"{'alloc GiB-ms':>16}{'used GiB-ms':>14}  {'invoice (this month)'}"
    )
    lines = [head, "-" * len(head)]
    for tenant, t in sorted(res.api_totals.items()):
        truth = res.truth["tenants"].get(tenant, {})
        lines.append(
            f"{tenant:<14}{t['cpu_used_ms']:>14.3f}{Decimal(truth.get('cpu_used_us', 0)) / 1000:>14.3f}"
            f"{t['vcpu_alloc_ms']:>16.3f}{Decimal(truth.get('vcpu_alloc_mcpu_ms', 0)) / 1000:>16.3f}"
            f"{t['mem_alloc_byte_ms'] / GIB:>16.1f}{t['mem_used_byte_ms'] / GIB:>14.1f}  {res.invoices.get(tenant, '')}"
        )
    return "\n".join(lines)


def format_alerts(res: DemoResult) -> str:
    """The hang's alert as Alertmanager delivered it, when it came, and everything else delivered."""
    hang = next((f for f in res.truth["faults"] if f["kind"] == QEMU_HANG), None)
    fired = next((d for d in res.alerts if d.name == HANG_ALERT and d.status == "firing"), None)
    if hang is None or fired is None:
        return "no QEMU hang alert reached the webhook (a hang is detected ~30 s after it starts: run longer?)"
    lines = [
        f"the injected QEMU hang (sandbox {hang['sandbox_id']} of {hang['tenant']} on {hang['node']}) as Alertmanager "
        f"delivered it to the webhook (receiver {fired.receiver}), {fired.at - hang['start_ms'] / 1000:.1f} s after "
        "it began:",
        json.dumps(fired.alert, indent=2),
    ]
    resolved = next((d for d in res.alerts if d.name == HANG_ALERT and d.status == "resolved"), None)
    if resolved is not None and hang["end_ms"] is not None:
        lines.append(f"resolved at the webhook {resolved.at - hang['end_ms'] / 1000:.1f} s after the sandbox stopped")
    others = sorted({f"{d.name} ({d.status})" for d in res.alerts if d.name != HANG_ALERT})
    lines.append(f"other alerts delivered: {', '.join(others) or 'none'}")
    return "\n".join(lines)


def main(seconds: float, nodes: int, sandboxes: int, tenants: int, out: Path) -> int:
    t0 = time.monotonic()
    state = Path(tempfile.mkdtemp(prefix="sandmeter-demo-"))
    receiver = AlertReceiver()
    stack = Stack(
        StackSettings(
            state_dir=state / "stack",
            kafka_port=free_port(),
            clickhouse_tcp_port=free_port(),
            clickhouse_http_port=free_port(),
            prometheus_port=free_port(),
            alertmanager_port=free_port(),
            alert_webhook_url=receiver.url,
            # the production rules, `for:` included; only scraping and notifying go faster
            scrape_interval_s=1,
            alert_group_wait_s=0,
            alert_group_interval_s=1,
        )
    )
    print(f"starting the local stack in {state} ...", flush=True)
    stack.up()
    try:
        print(f"running {nodes} nodes, {sandboxes} sandboxes, {tenants} tenants for {seconds:.0f} s; "
              f"a QEMU hang is injected on node {HANG.node} at {HANG.at_s:.0f} s", flush=True)  # fmt: skip
        spec = FleetSpec(nodes=nodes, sandboxes=sandboxes, tenants=tenants, faults=(HANG,))
        res = run_pipeline(stack, seconds, spec, state, alerts=receiver)
    finally:
        stack.down()
        receiver.close()
    out.mkdir(parents=True, exist_ok=True)
    for p in res.dashboards:
        target = out / p.relative_to(state / "grafana")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(p.read_bytes())
    print("\nper-tenant usage from the billing API (truth: the simulator's exact figures)\n")
    print(format_table(res))
    print(
        f"\nwire: {res.samples} samples in {res.batches_sent} batches, {res.wire_bytes} bytes "
        f"= {res.wire_bytes / max(1, res.samples):.2f} bytes/sample; dead-lettered: {res.dlq}\n"
    )
    print(format_alerts(res))
    print(f"\ndashboards, provisioning and alert rules written to {out}/; wall time {time.monotonic() - t0:.1f} s")
    (out / "demo-result.json").write_text(
        json.dumps(
            {
                "api_totals": {t: {k: str(v) for k, v in m.items()} for t, m in res.api_totals.items()},
                "truth_tenants": res.truth["tenants"],
                "alerts": [{"at": d.at, "receiver": d.receiver, **d.alert} for d in res.alerts],
            },
            indent=2,
        )
    )
    return 0
