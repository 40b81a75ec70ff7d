"""`sandmeter demo`: the walking skeleton on the local stack.

simulator -> collectors -> Kafka -> processor -> ClickHouse -> billing API, for about a
minute; then it drains the fleet, prints each tenant's usage as the API reports it beside
the simulator's ground truth, writes the dashboards and stops everything it started.
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

from prometheus_client import CollectorRegistry

from billing import ApiSettings
from collectors import CollectorAgent, CollectorSettings
from collectors.sim import FleetSpec
from contracts.clock import wall_ms
from contracts.names import COLLECTOR_BATCHES_SENT, COLLECTOR_SAMPLES, COLLECTOR_WIRE_BYTES
from pipeline import ProcessorSettings
from sandmeter.stack import Stack, StackSettings, create_topics
from sandmeter.stack.procs import free_port

log = logging.getLogger("sandmeter.demo")
GIB = Decimal(1 << 30)
PLANS = Path(__file__).resolve().parents[1] / "plans"  # the repository's example price plans


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


def _total(agents: Sequence[CollectorAgent], metric: str) -> int:
    """A counter summed over the in-process collectors, read through their registries."""
    return sum(int(a.registry.get_sample_value(metric) or 0) for a in agents)


@contextlib.contextmanager
def serve_api(settings: ApiSettings, ch_factory: Any) -> Iterator[str]:
    import uvicorn

    from billing import create_app

    app = create_app(settings, ch_factory)
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


def run_pipeline(stack: Stack, seconds: float, spec: FleetSpec, workdir: Path, interval_s: float = 1.0) -> DemoResult:
    """Runs every component against an already-started stack; used by the demo and e2e test."""
    import httpx

    from collectors import build_agent, run_agent, wait_for_stops
    from collectors.sim import Simulator
    from contracts.clickhouse import client
    from dashboards import write_all
    from pipeline import build_processor, migrate

    st = stack.settings
    ch = client("127.0.0.1", st.clickhouse_tcp_port, "default")
    migrate(ch, wall_ms())
    create_topics(stack.kafka_bootstrap)

    sim = Simulator(workdir / "fleet", spec)
    sim.start()
    stop_collect, stop_process = threading.Event(), threading.Event()
    agents, sinks, threads = [], [], []
    for nd in sim.describe()["nodes"]:
        cs = CollectorSettings(
            node_id=nd["node_id"],
            kafka_bootstrap=stack.kafka_bootstrap,
            cgroup_root=Path(nd["cgroup_root"]),
            proc_root=Path(nd["proc_root"]),
            sandbox_dirs=(Path(nd["sandbox_dir"]),),
            bundle_dirs=(Path(nd["bundle_dir"]),),
            kata_monitor_url=nd["kata_monitor_url"],
            interval_s=interval_s,
            metrics_port=0,
            spool_dir=workdir / "spool",
            spool_fsync=False,
        )
        reg = CollectorRegistry()
        agent = build_agent(cs, reg)
        sink = agent.sink
        agents.append(agent)
        sinks.append(sink)
        th = threading.Thread(target=run_agent, args=(agent, cs.interval_s, stop_collect, 15.0), daemon=True)
        threads.append(th)
    ps = ProcessorSettings(
        kafka_bootstrap=stack.kafka_bootstrap, clickhouse_port=st.clickhouse_tcp_port, metrics_port=0,
        status_every_s=15.0,
    )  # fmt: skip
    proc = build_processor(ps, CollectorRegistry())
    pth = threading.Thread(target=proc.run, args=(stop_process,), name="processor", daemon=True)
    for th in (*threads, pth):
        th.start()
    t0 = time.monotonic()
    while (elapsed := time.monotonic() - t0) < seconds:
        time.sleep(min(10.0, seconds - elapsed))
        sent = _total(agents, COLLECTOR_BATCHES_SENT)
        print(f"  [{time.monotonic() - t0:5.1f}s] batches sent={sent} processed={proc.total_batches} "
              f"samples written={proc.total_samples}", flush=True)  # fmt: skip
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
    stop_process.set()
    pth.join(timeout=30)
    proc.close()
    truth = sim.stop()

    from billing import OPERATOR, create_key

    api_settings = ApiSettings(port=free_port(), clickhouse_port=st.clickhouse_tcp_port, plans_dir=PLANS)
    key = create_key(client("127.0.0.1", st.clickhouse_tcp_port, "default"), OPERATOR)[1]
    totals: dict[str, dict[str, Decimal]] = {}
    invoices: dict[str, str] = {}
    frm = "2000-01-01T00:00:00.000Z"
    to = "2100-01-01T00:00:00.000Z"
    with (
        serve_api(api_settings, lambda: client("127.0.0.1", st.clickhouse_tcp_port, "default")) as url,
        httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {key}"}) as http,
    ):
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


def main(seconds: float, nodes: int, sandboxes: int, tenants: int, out: Path) -> int:
    t0 = time.monotonic()
    state = Path(tempfile.mkdtemp(prefix="sandmeter-demo-"))
    stack = Stack(
        StackSettings(
            state_dir=state / "stack",
            kafka_port=free_port(),
            clickhouse_tcp_port=free_port(),
            clickhouse_http_port=free_port(),
        )
    )
    print(f"starting the local stack in {state} ...", flush=True)
    stack.up()
    try:
        print(f"running {nodes} nodes, {sandboxes} sandboxes, {tenants} tenants for {seconds:.0f} s", flush=True)
        res = run_pipeline(stack, seconds, FleetSpec(nodes=nodes, sandboxes=sandboxes, tenants=tenants), state)
    finally:
        stack.down()
    out.mkdir(parents=True, exist_ok=True)
    for p in res.dashboards:
        target = out / p.relative_to(state / "grafana")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(p.read_bytes())
    print("\nper-tenant usage from the billing API (truth: the simulator's exact figures)\n")
    print(format_table(res))
    print(
        f"\nwire: {res.samples} samples in {res.batches_sent} batches, {res.wire_bytes} bytes "
        f"= {res.wire_bytes / max(1, res.samples):.2f} bytes/sample; dead-lettered: {res.dlq}"
    )
    print(f"dashboards, provisioning and alert rules written to {out}/; wall time {time.monotonic() - t0:.1f} s")
    (out / "demo-result.json").write_text(
        json.dumps(
            {
                "api_totals": {t: {k: str(v) for k, v in m.items()} for t, m in res.api_totals.items()},
                "truth_tenants": res.truth["tenants"],
            },
            indent=2,
        )
    )
    return 0
