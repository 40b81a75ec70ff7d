"""Alert rules: promtool accepts them, each alert fires in its case and only there, and every
runbook link lands on a section of docs/operations.md. (A healthy hour: test_rules_healthy.py.)"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promtool import API, PROC, SCALE, coll, expected, needs_promtool, run_promtool, series

from contracts import names as n
from dashboards import rules

ROOT = Path(__file__).resolve().parents[2]
COLL = coll("n1")
MIB = 1 << 20
REQS = n.API_REQUEST_SECONDS + "_count"


@dataclass
class Case:
    """Input series, then (minute, labels of the alert expected then, or None for silence)."""

    alert: str
    inputs: list[dict[str, str]]
    checks: list[tuple[int, dict[str, str] | None]]
    value: float = 0.0  # the alert's $value when it fires
    note: str = ""


def incident(
    kind: str, node: str = "n1", sandbox: str = "sb1", tenant: str = "acme", disk: str = "", values: str = "0 0 1 1"
) -> Any:
    labels = {"kind": kind, "node": node, "sandbox_id": sandbox, "tenant": tenant, "disk": disk, **PROC}
    return series(n.HEALTH_INCIDENT, labels, values)


def fired(kind: str, node: str = "n1", sandbox: str = "sb1", tenant: str = "acme", disk: str = "") -> dict[str, str]:
    labels = {"kind": kind, "node": node, "sandbox_id": sandbox, "tenant": tenant, "disk": disk}
    return {k: v for k, v in labels.items() if v}  # Prometheus drops empty labels


def at(labels: dict[str, str], *keep: str) -> dict[str, str]:
    return {k: labels[k] for k in keep}


def requests(route: str, status: str, values: str) -> dict[str, str]:
    return series(REQS, {**API, "route": route, "status": status}, values)


CASES = [
    # the incident gauge already carries the detector's hysteresis: fire at once, and only for its kind
    Case("SandmeterQemuHang", [incident("qemu_hang"), incident("io_stall", sandbox="sb2")],
         [(1, None), (2, fired("qemu_hang"))], 1),
    Case("SandmeterIOStall", [incident("io_stall"), incident("qemu_hang", sandbox="sb2")],
         [(1, None), (3, fired("io_stall"))], 1),
    # a host disk is nobody's: sandbox_id and tenant empty (so absent), the disk in `disk`
    Case("SandmeterHostDiskStall",
         [incident("host_disk_stall", sandbox="", tenant="", disk="vda"), incident("io_stall")],
         [(1, None), (2, fired("host_disk_stall", sandbox="", tenant="", disk="vda"))], 1),
    Case("SandmeterProcessorLagHigh",
         [series(n.PROCESSOR_LAG, {"partition": p, **PROC}, "30000x20") for p in ("0", "1")],
         [(5, None), (11, at(PROC, "instance"))], 60000),
    Case("SandmeterProcessorLagHigh", [series(n.PROCESSOR_LAG, {"partition": "0", **PROC}, "40000x20")], [(15, None)],
         note="below the threshold"),
    Case("SandmeterFreshnessHigh", [series(n.PROCESSOR_FRESHNESS, PROC, "200x12")],
         [(3, None), (6, at(PROC, "instance"))], 200),
    Case("SandmeterFreshnessHigh", [series(n.PROCESSOR_FRESHNESS, PROC, "60x12")], [(10, None)], note="fresh enough"),
    Case("SandmeterProcessorDown", [series("up", PROC, "1 1 0 0 0 0 0")], [(2, None), (5, PROC)], 0),
    Case("SandmeterProcessorDown", [series("up", PROC, "1x10")], [(8, None)], note="up"),
    Case("SandmeterProcessorDown", [series("up", {"job": "other", "instance": "x"}, "1x10")],
         [(1, None), (4, {"job": rules.PROCESSOR_JOB})], 1, note="absent"),
    # an outage: the retry fails at least 6 times a minute; one transient failure stays pending
    Case("SandmeterClickHouseWritesFailing", [series(n.PROCESSOR_WRITE_FAILURES, PROC, "0x3 1+6x10")],
         [(4, None), (8, at(PROC, "instance"))], 6),
    Case("SandmeterClickHouseWritesFailing", [series(n.PROCESSOR_WRITE_FAILURES, PROC, "0x3 1x10")],
         [(4, None), (5, None), (8, None)], note="one transient failure"),
    Case("SandmeterDeadLetters",
         [series(n.PROCESSOR_DLQ, {"reason": "corrupt", **PROC}, "0 0 1 1 1 1 1 1 1 1 1 1"),
          series(n.PROCESSOR_DLQ, {"reason": "truncated", **PROC}, "0x11")],
         [(1, None), (3, {"instance": PROC["instance"], "reason": "corrupt"}), (11, None)], 1),
    Case("SandmeterLateSamplesRising",
         [series(n.PROCESSOR_LATE, PROC, "0+200x30"), series(n.PROCESSOR_SAMPLES, PROC, "0+10000x30")],
         [(9, None), (21, at(PROC, "instance"))], 0.02),
    Case("SandmeterLateSamplesRising",
         [series(n.PROCESSOR_LATE, PROC, "0+50x30"), series(n.PROCESSOR_SAMPLES, PROC, "0+10000x30")],
         [(21, None)], note="0.5% late"),
    # collectors: every alert keeps the node
    Case("SandmeterCollectorDown", [series("up", COLL, "1 1 0 0 0 0 0"), series("up", coll("n2"), "1x6")],
         [(3, None), (5, COLL)], 0),
    Case("SandmeterCollectorDown", [series("up", COLL, "1x6")], [(5, None)], note="up"),
    Case("SandmeterNoCollectors", [series("up", API, "1x6")], [(1, None), (4, {"job": rules.COLLECTOR_JOB})], 1),
    Case("SandmeterNoCollectors", [series("up", COLL, "0x6")], [(4, None)], note="a target exists, down"),
    Case("SandmeterCollectorNotSending",
         [series(n.COLLECTOR_BATCHES_SENT, COLL, "0+12x5 60x10"), series("up", COLL, "1x15")],
         [(8, None), (12, at(COLL, "instance", "node"))], 0),
    Case("SandmeterCollectorNotSending",
         [series(n.COLLECTOR_BATCHES_SENT, COLL, "0+12x15"), series("up", COLL, "1x15")], [(12, None)],
         note="sending"),
    # stuck for its last minutes, then down: SandmeterCollectorDown says so, this one stops
    Case("SandmeterCollectorNotSending",
         [series(n.COLLECTOR_BATCHES_SENT, COLL, "0+12x3 36x3"), series("up", COLL, "1x6 0x10")],
         [(8, None), (10, None)], note="down"),
    Case("SandmeterCollectorScrapeFailing",
         [series(n.COLLECTOR_SCRAPE_ERRORS, {"source": "kata_monitor", **COLL}, "0+6x30")],
         [(8, None), (16, {**at(COLL, "instance", "node"), "source": "kata_monitor"})], 0.1),
    Case("SandmeterCollectorScrapeFailing", [series(n.COLLECTOR_SCRAPE_ERRORS, {"source": "kata_monitor", **COLL},
                                                    "5x30")],
         [(20, None)], note="errors long ago, none now"),
    Case("SandmeterCollectorSpoolFilling",
         [series(n.COLLECTOR_SPOOL_BYTES, COLL, f"{192 * MIB}x10"),
          series(n.COLLECTOR_SPOOL_LIMIT, COLL, f"{256 * MIB}x10")],
         [(3, None), (7, at(COLL, "instance", "node"))], 0.75),
    Case("SandmeterCollectorSpoolFilling",
         [series(n.COLLECTOR_SPOOL_BYTES, COLL, f"{10 * MIB}x10"),
          series(n.COLLECTOR_SPOOL_LIMIT, COLL, f"{256 * MIB}x10")],
         [(9, None)], note="mostly empty"),
    Case("SandmeterCollectorSpoolGrowing",
         [series(n.COLLECTOR_SPOOL_DEPTH, COLL, "0 1 0 1+1x30"),
          series(n.COLLECTOR_SPOOL_BYTES, COLL, "0 4096 0 4096+4096x30")],
         [(12, None), (20, at(COLL, "instance", "node"))], 1),
    Case("SandmeterCollectorSpoolGrowing",
         [series(n.COLLECTOR_SPOOL_DEPTH, COLL, "60-1x40"), series(n.COLLECTOR_SPOOL_BYTES, COLL, "245760-4096x40")],
         [(20, None), (30, None)], note="draining after an outage"),
    Case("SandmeterCollectorSpoolDropping",
         [series(n.COLLECTOR_SPOOL_DROPPED, {**COLL, "reason": "full"}, "0x3 5x10"),
          series(n.COLLECTOR_SPOOL_DROPPED, {**COLL, "reason": "corrupt"}, "0x13")],
         [(3, None), (5, {**at(COLL, "instance", "node"), "reason": "full"}), (12, None)], 5),
    # the billing API
    Case("SandmeterApiDown", [series("up", API, "1 1 0 0 0 0 0")], [(3, None), (5, API)], 0),
    Case("SandmeterApiDown", [series("up", PROC, "1x6")], [(1, None), (4, {"job": rules.API_JOB})], 1, note="absent"),
    Case("SandmeterApiDown", [series("up", API, "1x6")], [(5, None)], note="up"),
    Case("SandmeterApiErrors",
         [requests("/v1/tenants", "200", "0+30x20"), requests("/v1/tenants", "500", "0x5 0+15x15")],
         [(8, None), (13, at(API, "instance"))], 1 / 3),
    Case("SandmeterApiErrors", [requests("/v1/tenants", "200", "0+30x20"), requests("/readyz", "503", "0+60x20"),
                                requests("/metrics", "500", "0+4x20")],
         [(13, None)], note="probes and scrapes are not clients"),
    # the scale publisher
    Case("SandmeterScalePublisherDown", [series("up", SCALE, "1 1 0 0 0 0 0")], [(3, None), (5, SCALE)], 0),
    Case("SandmeterScalePublisherDown", [series("up", SCALE, "1x6")], [(5, None)], note="up"),
    Case("SandmeterScaleStale", [series(n.SCALE_LAST_SUCCESS, SCALE, "0+60x3 180x10")],
         [(6, None), (8, at(SCALE, "instance"))], 300),
    Case("SandmeterScaleStale", [series(n.SCALE_LAST_SUCCESS, SCALE, "0+60x10")], [(8, None)], note="ticking"),
]  # fmt: skip


def promtool_tests() -> list[dict[str, Any]]:
    by_name = {a.name: a for a in rules.ALERTS}
    tests = []
    for c in CASES:
        checks = [
            {"eval_time": f"{minute}m", "alertname": c.alert,
             "exp_alerts": [] if labels is None else [expected(by_name[c.alert], labels, c.value)]}
            for minute, labels in c.checks
        ]  # fmt: skip
        tests.append({"name": f"{c.alert} {c.note}".strip(), "interval": "1m", "input_series": c.inputs,
                      "alert_rule_test": checks})  # fmt: skip
    return tests


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    names = {a.name for a in rules.ALERTS}
    assert {c.alert for c in CASES} == names
    for name in names:
        checks = [chk for c in CASES if c.alert == name for chk in c.checks]
        assert any(labels is None for _, labels in checks) and any(labels for _, labels in checks), name


def test_every_alert_has_severity_summary_description_and_a_runbook_section() -> None:
    ops = (ROOT / "docs" / "operations.md").read_text()
    for a in rules.ALERTS:
        r = a.rule()
        assert r["labels"]["severity"] in ("critical", "warning") and r["annotations"]["summary"], a.name
        assert r["annotations"]["description"] and a.job in rules.JOBS, a.name
        assert f"### Runbook: {a.name}\n" in ops, a.name
        row = f"| `{a.name}` | {a.severity} | `{a.expr.replace('|', chr(92) + '|')}` for {a.for_} |"
        assert row in ops, f"the alert table's row differs from the rule: {row}"
    # incident alerts say where: sandbox, node and tenant
    for a in rules.ALERTS[:2]:
        assert all(f"$labels.{k}" in a.description for k in ("sandbox_id", "node", "tenant")), a.name
    # a host disk's alert names its disk and node; a disk is nobody's tenant
    disk = next(a for a in rules.ALERTS if a.name == "SandmeterHostDiskStall")
    assert all("$labels.disk" in t and "$labels.node" in t for t in (disk.summary, disk.description))
    assert "tenant" not in disk.summary + disk.description + disk.expr.replace("tenant, disk", "")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation gone, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_runbook_url_lands_on_a_heading_of_operations_md() -> None:
    doc = "docs/operations.md"
    anchors = {github_anchor(h) for h in re.findall(r"^#+ (.+)$", (ROOT / doc).read_text(), flags=re.M)}
    assert github_anchor("Runbook: SandmeterQemuHang") == "runbook-sandmeterqemuhang"
    for a in rules.ALERTS:
        url = a.rule()["annotations"]["runbook_url"]
        page, _, anchor = url.partition("#")
        assert page.endswith("/blob/main/" + doc), url
        assert anchor in anchors, f"{a.name}: {url} has no heading in {doc}"


def test_collector_alerts_keep_the_node_for_grouping_and_inhibition() -> None:
    for a in rules.ALERTS:
        if a.job == rules.COLLECTOR_JOB and a.name != "SandmeterNoCollectors":
            assert "{{ $labels.node }}" in a.summary, a.name
            assert all("node" in by for by in re.findall(r"by \(([^)]*)\)", a.expr)), a.name


def test_capping_for_changes_only_for_and_only_downwards() -> None:
    full, capped = json.loads(rules.rules_yaml()), json.loads(rules.rules_yaml(for_max_s=2))
    for r, c in zip(full["groups"][0]["rules"], capped["groups"][0]["rules"], strict=True):
        assert {**c, "for": r["for"]} == r
        assert c["for"] == (r["for"] if rules.seconds(r["for"]) <= 2 else "2s")
    assert {r["for"] for r in capped["groups"][0]["rules"]} == {"0m", "2s"}


def test_a_prometheus_that_scrapes_some_jobs_loads_only_their_alerts() -> None:
    doc = json.loads(rules.rules_yaml(jobs=[rules.PROCESSOR_JOB, rules.COLLECTOR_JOB]))
    names = {r["alert"] for r in doc["groups"][0]["rules"]}
    assert "SandmeterQemuHang" in names and "SandmeterCollectorDown" in names
    assert not names & {"SandmeterApiDown", "SandmeterApiErrors", "SandmeterScaleStale"}
    assert json.loads(rules.rules_yaml(jobs=[]))["groups"][0]["rules"] == []


@needs_promtool
def test_promtool_checks_the_rules_and_runs_their_unit_tests(tmp_path: Path) -> None:
    (tmp_path / "check.yml").write_text(rules.rules_yaml())
    check = subprocess.run(["promtool", "check", "rules", "check.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(rules.ALERTS)} rules found" in check.stdout
    run = run_promtool(tmp_path, rules.rules_yaml(), promtool_tests())
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout


@needs_promtool
def test_a_broken_rule_fails_the_promtool_tests(tmp_path: Path) -> None:
    """The harness can fail: a rule whose threshold moved makes its case fail."""
    doc = json.loads(rules.rules_yaml())
    for r in doc["groups"][0]["rules"]:
        if r["alert"] == "SandmeterFreshnessHigh":
            r["expr"] = r["expr"].replace(f"> {rules.FRESHNESS_MAX_S}", "> 500")
        if r["alert"] == "SandmeterCollectorNotSending":
            r["expr"] = r["expr"].replace("== 0 and", ">= 0 and")
    run = run_promtool(tmp_path, json.dumps(doc), promtool_tests())
    out = run.stdout + run.stderr
    assert run.returncode != 0 and "SandmeterFreshnessHigh" in out and "SandmeterCollectorNotSending" in out
