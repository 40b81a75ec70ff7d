"""The local stack's Prometheus and Alertmanager: what `watch` makes Prometheus scrape and
load, and the generated Alertmanager config at work (routing, inhibition, resolution) against
the real Alertmanager the session stack runs. Delivery of the services' own alerts: the e2e
test tests/e2e/test_alert_delivery.py."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, start_http_server

from dashboards import rules
from sandmeter.stack import AlertReceiver, Delivery, Stack, Target
from sandmeter.stack.procs import ManagedProcess

pytestmark = pytest.mark.alerting


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


@pytest.fixture
def unwatch(stack: Stack) -> Iterator[None]:
    """The session stack watches nothing again after the test."""
    yield
    stack.watch({})


def test_watch_scrapes_the_targets_labels_collectors_by_node_and_loads_only_their_alerts(
    stack: Stack, unwatch: None
) -> None:
    assert stack.alerting is not None
    prom = stack.alerting.prometheus_url
    servers = []
    for _ in range(2):  # two collectors' /metrics, each on its own port
        reg = CollectorRegistry()
        Counter("sandmeter_collector_batches_sent", "stand-in", registry=reg).inc()
        servers.append(start_http_server(0, "127.0.0.1", reg)[0])
    ports = [srv.server_port for srv in servers]
    t0 = time.monotonic()
    stack.watch({rules.COLLECTOR_JOB: [Target(ports[0], "node-a"), Target(ports[1], "node-b")]})
    print(f"watch returned after {time.monotonic() - t0:.1f} s (Prometheus' discovery hands targets over every 5 s)")
    up = get(f"{prom}/api/v1/query?query=up")["data"]["result"]
    assert {(r["metric"]["node"], r["metric"]["instance"], r["value"][1]) for r in up} == {
        ("node-a", f"127.0.0.1:{ports[0]}", "1"), ("node-b", f"127.0.0.1:{ports[1]}", "1")
    }  # fmt: skip
    loaded = {r["name"] for g in get(f"{prom}/api/v1/rules")["data"]["groups"] for r in g["rules"]}
    assert loaded == {a.name for a in rules.ALERTS if a.job == rules.COLLECTOR_JOB}
    fors = {r["name"]: r["duration"] for g in get(f"{prom}/api/v1/rules")["data"]["groups"] for r in g["rules"]}
    assert fors["SandmeterCollectorDown"] == 2  # capped by the session's alert_for_max_s, 2m in production
    assert not get(f"{prom}/api/v1/alerts")["data"]["alerts"], "nothing may fire on a healthy start"
    stack.watch({})
    assert get(f"{prom}/api/v1/rules")["data"]["groups"][0]["rules"] == []
    assert stack.alerting.watched() == {}
    for srv in servers:
        srv.shutdown()


def post_alerts(stack: Stack, alerts: list[dict[str, Any]]) -> None:
    """Alerts straight into Alertmanager's API, as Prometheus sends them."""
    assert stack.alerting is not None
    req = urllib.request.Request(
        stack.alerting.alertmanager_url + "/api/v2/alerts", json.dumps(alerts).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    urllib.request.urlopen(req, timeout=5).close()


def alert(name: str, severity: str, ends_in_s: float = 300, **labels: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "labels": {"alertname": name, "severity": severity, **labels},
        "annotations": {"summary": name},
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(seconds=ends_in_s)).isoformat(),
    }


def test_a_nodes_sandbox_alerts_are_muted_while_its_collector_is_down_and_delivered_after(
    stack: Stack, alert_receiver: AlertReceiver
) -> None:
    a, b = f"node-{uuid.uuid4().hex[:6]}", f"node-{uuid.uuid4().hex[:6]}"

    def got(name: str, node: str, status: str = "firing") -> Any:
        return lambda d: d.name == name and d.labels.get("node") == node and d.status == status

    post_alerts(stack, [alert("SandmeterCollectorDown", "critical", node=a)])
    down = alert_receiver.wait(got("SandmeterCollectorDown", a), 15)
    assert down is not None and down.receiver == "sandmeter-critical"
    hang = {"sandbox_id": "sb-1", "tenant": "acme"}
    post_alerts(stack, [alert("SandmeterQemuHang", "critical", node=a, **hang),
                        alert("SandmeterQemuHang", "critical", node=b, **hang),
                        alert("SandmeterIOStall", "warning", node=b, **hang)])  # fmt: skip
    elsewhere = alert_receiver.wait(got("SandmeterQemuHang", b), 15)
    stall = alert_receiver.wait(got("SandmeterIOStall", b), 15)
    assert elsewhere is not None and elsewhere.receiver == "sandmeter-critical"
    assert stall is not None and stall.receiver == "sandmeter-warning"
    time.sleep(3)  # three group intervals: a muted alert would have been sent by now
    assert alert_receiver.wait(got("SandmeterQemuHang", a), 0) is None
    assert stack.alerting is not None
    held = get(stack.alerting.alertmanager_url + f'/api/v2/alerts?filter=node="{a}"')
    states = {x["labels"]["alertname"]: x["status"] for x in held}
    assert states["SandmeterQemuHang"]["state"] == "suppressed" and states["SandmeterQemuHang"]["inhibitedBy"]
    t_up = time.time()
    post_alerts(stack, [alert("SandmeterCollectorDown", "critical", ends_in_s=0, node=a)])  # it is back
    back = alert_receiver.wait(lambda d: got("SandmeterQemuHang", a)(d) and d.at >= t_up, 15)
    resolved = alert_receiver.wait(got("SandmeterCollectorDown", a, "resolved"), 15)
    assert back is not None and resolved is not None
    print(f"muted hang delivered {back.at - t_up:.2f} s after its node's collector came back")


def test_a_pid_counts_as_prometheus_only_with_its_own_config_path(tmp_path: Path) -> None:
    """A reused pid of another program whose command line says "prometheus" (e.g. Debian's
    prometheus-alertmanager) is not taken for our Prometheus."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "prometheus-alertmanager"])
    try:
        while b"prometheus-alertmanager" not in Path(f"/proc/{other.pid}/cmdline").read_bytes():
            time.sleep(0.01)  # until it has exec'd
        for marker, ours in (("", True), ("--config.file=/x/prometheus.yml", False)):
            p = ManagedProcess("prometheus", ["/usr/bin/prometheus"], tmp_path, [], lambda: True, marker)
            p.pidfile.write_text(f"{other.pid}\n")
            assert (p.pid() == other.pid) is ours, marker
    finally:
        other.kill()
        other.wait()


def test_the_receiver_keeps_each_alert_of_a_notification_and_rejects_garbage() -> None:
    r = AlertReceiver()
    try:
        body = {"receiver": "sandmeter-critical", "status": "firing",
                "alerts": [{"status": "resolved", "labels": {"alertname": "A"}}, {"status": "firing", "labels": {}},
                           "junk"]}  # fmt: skip
        for data in (json.dumps(body).encode(), b"\x00not json"):
            req = urllib.request.Request(r.url, data, method="POST")
            try:
                urllib.request.urlopen(req, timeout=5).close()
            except urllib.error.HTTPError as exc:
                assert exc.code == 400
        ds = r.deliveries()
        assert [(d.name, d.status, d.receiver) for d in ds] == [
            ("A", "resolved", "sandmeter-critical"), ("", "firing", "sandmeter-critical")
        ]  # fmt: skip
        assert isinstance(ds[0], Delivery) and r.wait(lambda d: d.name == "B", 0.1) is None
    finally:
        r.close()
