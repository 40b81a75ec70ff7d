"""Alerts reach an operator: an injected QEMU hang and IO stall arrive at the webhook with
their node, sandbox, tenant and runbook link, resolve when the fault clears, and a killed
collector raises SandmeterCollectorDown for its node; nothing else is delivered.

The `fault_run` fixture (tests/e2e/conftest.py): simulator -> `sandmeter collect` children ->
Tansu -> the processor -> ClickHouse, the API and a `sandmeter scale` child, scraped by the
stack's real Prometheus (generated config and rules, `for:` capped at 2 s through the rule
setting) and notified through its real Alertmanager (generated config, group_wait 0 s,
group_interval 1 s) to a webhook receiver. Times are printed; speed claims are not asserted.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from dashboards import rules
from sandmeter.stack import Delivery, alert_time

pytestmark = pytest.mark.e2e
OPS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
ALERT_OF = {"qemu_hang": "SandmeterQemuHang", "io_stall": "SandmeterIOStall"}
# the stall's node also has its host disk stalled (the simulator stalls the disk), which is an alert too
EXPECTED = {*ALERT_OF.values(), "SandmeterHostDiskStall", "SandmeterCollectorDown"}


def first(ds: list[Delivery], name: str, status: str, **labels: str) -> Delivery | None:
    return next(
        (
            d
            for d in ds
            if d.name == name and d.status == status and all(d.labels.get(k) == v for k, v in labels.items())
        ),
        None,
    )


def incident_times(ch: Any, kind: str, sandbox: str) -> dict[str, float]:
    rows = ch.execute(
        "SELECT event, min(ts_ms) FROM health_events FINAL WHERE kind = %(k)s AND sandbox_id = %(s)s GROUP BY event",
        {"k": kind, "s": sandbox},
    )
    return {str(event): int(ts) / 1000 for event, ts in rows}


def test_hang_and_stall_reach_the_webhook_with_where_and_runbook_then_resolve(fault_run: Any) -> None:
    headings = re.findall(r"^### (Runbook: \w+)$", OPS.read_text(), flags=re.M)
    for f in fault_run.truth["faults"]:
        name, where = ALERT_OF[f["kind"]], {"sandbox_id": f["sandbox_id"]}
        fired = first(fault_run.alerts, name, "firing", **where)
        assert fired is not None, f"{name} for {where} never reached the webhook: {fault_run.alerts}"
        assert fired.labels["node"] == f["node"] and fired.labels["tenant"] == f["tenant"], fired.labels
        a = next(a for a in rules.ALERTS if a.name == name)
        assert fired.labels["severity"] == a.severity and fired.receiver == f"sandmeter-{a.severity}"
        url = fired.alert["annotations"]["runbook_url"]
        assert url == rules.RUNBOOK + name.lower() and f"Runbook: {name}" in headings
        assert f["sandbox_id"] in fired.alert["annotations"]["summary"]
        inc = incident_times(fault_run.ch, f["kind"], f["sandbox_id"])
        injected, starts = f["start_ms"] / 1000, alert_time(fired.alert["startsAt"])
        print(f"{name}: injection -> webhook {fired.at - injected:.1f} s "
              f"(injection -> incident opened {inc['open'] - injected:.1f} s in sample time, "
              f"-> firing in Prometheus {starts - injected:.1f} s, -> webhook {fired.at - starts:.2f} s)")  # fmt: skip
        assert f["end_ms"] is not None, f"{f['kind']} did not end"
        cleared = f["end_ms"] / 1000
        resolved = first([d for d in fault_run.alerts if d.at > fired.at], name, "resolved", **where)
        assert resolved is not None, f"{name} for {where} was not resolved after the fault cleared"
        assert resolved.at > cleared
        print(f"{name}: fault cleared -> resolved at the webhook {resolved.at - cleared:.1f} s "
              f"(-> incident closed {inc['close'] - cleared:.1f} s in sample time, "
              f"-> resolved in Prometheus {alert_time(resolved.alert['endsAt']) - cleared:.1f} s)")  # fmt: skip


def test_a_killed_collector_raises_collector_down_for_its_node(fault_run: Any) -> None:
    node, killed_at = fault_run.killed
    down = first([d for d in fault_run.alerts if d.at >= killed_at], "SandmeterCollectorDown", "firing", node=node)
    assert down is not None, f"no SandmeterCollectorDown for {node} after the kill"
    assert down.receiver == "sandmeter-critical" and down.labels["job"] == rules.COLLECTOR_JOB
    assert down.alert["annotations"]["runbook_url"] == rules.RUNBOOK + "sandmetercollectordown"
    print(f"collector on {node} SIGKILLed -> SandmeterCollectorDown at the webhook {down.at - killed_at:.1f} s "
          f"(for: capped at 2 s; 2m in production)")  # fmt: skip


def test_nothing_else_was_delivered(fault_run: Any) -> None:
    """No alert for what was not broken: no absent() at start, no noise from healthy services."""
    got = {d.name for d in fault_run.alerts}
    assert got <= EXPECTED, sorted(got - EXPECTED)
    injected = {(ALERT_OF[f["kind"]], f["sandbox_id"]) for f in fault_run.truth["faults"]}
    sandbox_alerts = {(d.name, d.labels["sandbox_id"]) for d in fault_run.alerts if "sandbox_id" in d.labels}
    assert sandbox_alerts == injected
    stall_node = next(f["node"] for f in fault_run.truth["faults"] if f["kind"] == "io_stall")
    assert {d.labels["node"] for d in fault_run.alerts if d.name == "SandmeterHostDiskStall"} <= {stall_node}
    for d in fault_run.alerts:  # a disk is named in `disk`, and is nobody's tenant or sandbox
        if d.name == "SandmeterHostDiskStall":
            assert d.labels.get("disk") and not {"tenant", "sandbox_id"} & set(d.labels), d.labels
            assert d.labels["disk"] in d.alert["annotations"]["summary"]
    assert {d.labels["node"] for d in fault_run.alerts if d.name == "SandmeterCollectorDown"} == {fault_run.killed[0]}
