"""Alert rules: promtool accepts them, and each alert fires in its case and only there."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from contracts import names as n
from contracts.names import COLLECTOR_SCRAPE_ERRORS as SCRAPE_ERRORS
from contracts.names import COLLECTOR_SPOOL_BYTES as SPOOL_BYTES
from contracts.names import COLLECTOR_SPOOL_LIMIT as SPOOL_LIMIT
from dashboards import rules

ROOT = Path(__file__).resolve().parents[2]
PROC = {"instance": "processor:9465", "job": rules.PROCESSOR_JOB}
COLL = {"instance": "node-1:9464", "job": rules.COLLECTOR_JOB}
MIB = 1 << 20


def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    body = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return {"series": f"{name}{{{body}}}", "values": values}


@dataclass
class Case:
    """Input series, then (minute, labels of the alert expected then, or None for silence)."""

    alert: str
    inputs: list[dict[str, str]]
    checks: list[tuple[int, dict[str, str] | None]]
    value: float = 0.0  # the alert's $value when it fires
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def incident(kind: str, node: str = "n1", sandbox: str = "sb1", tenant: str = "acme", values: str = "0 0 1 1") -> Any:
    labels = {"kind": kind, "node": node, "sandbox_id": sandbox, "tenant": tenant, **PROC}
    return series(n.HEALTH_INCIDENT, labels, values)


def fired(kind: str, node: str = "n1", sandbox: str = "sb1", tenant: str = "acme") -> dict[str, str]:
    labels = {"kind": kind, "node": node, "sandbox_id": sandbox, "tenant": tenant}
    return {k: v for k, v in labels.items() if v}  # Prometheus drops empty labels


CASES = [
    # the incident gauge already carries the detector's hysteresis: fire at once, and only for its kind
    Case("SandmeterQemuHang", [incident("qemu_hang"), incident("io_stall", sandbox="sb2")],
         [(1, None), (2, fired("qemu_hang"))], 1),
    Case("SandmeterIOStall", [incident("io_stall"), incident("qemu_hang", sandbox="sb2")],
         [(1, None), (3, fired("io_stall"))], 1),
    Case("SandmeterHostDiskStall", [incident("host_disk_stall", sandbox="", tenant="vda"), incident("io_stall")],
         [(1, None), (2, fired("host_disk_stall", sandbox="", tenant="vda"))], 1),
    Case("SandmeterProcessorLagHigh",
         [series(n.PROCESSOR_LAG, {"partition": p, **PROC}, "30000x20") for p in ("0", "1")],
         [(5, None), (11, {"instance": PROC["instance"]})], 60000),
    Case("SandmeterProcessorLagHigh", [series(n.PROCESSOR_LAG, {"partition": "0", **PROC}, "40000x20")], [(15, None)],
         note="below the threshold"),
    Case("SandmeterFreshnessHigh", [series(n.PROCESSOR_FRESHNESS, PROC, "200x12")],
         [(3, None), (6, {"instance": PROC["instance"]})], 200),
    Case("SandmeterFreshnessHigh", [series(n.PROCESSOR_FRESHNESS, PROC, "60x12")], [(10, None)], note="fresh enough"),
    Case("SandmeterProcessorDown", [series("up", PROC, "1 1 0 0 0 0 0")], [(2, None), (5, PROC)], 0),
    Case("SandmeterProcessorDown", [series("up", PROC, "1x10")], [(8, None)], note="up"),
    Case("SandmeterProcessorDown", [series("up", {"job": "other", "instance": "x"}, "1x10")],
         [(1, None), (4, {"job": rules.PROCESSOR_JOB})], 1, note="absent"),
    Case("SandmeterCollectorScrapeFailing", [series(SCRAPE_ERRORS, {"source": "kata_monitor", **COLL}, "0+6x30")],
         [(8, None), (16, {"instance": COLL["instance"], "source": "kata_monitor"})], 0.1),
    Case("SandmeterCollectorScrapeFailing", [series(SCRAPE_ERRORS, {"source": "kata_monitor", **COLL}, "5x30")],
         [(20, None)], note="errors long ago, none now"),
    Case("SandmeterCollectorSpoolFilling",
         [series(SPOOL_BYTES, COLL, f"{192 * MIB}x10"), series(SPOOL_LIMIT, COLL, f"{256 * MIB}x10")],
         [(3, None), (7, {"instance": COLL["instance"]})], 0.75),
    Case("SandmeterCollectorSpoolFilling",
         [series(SPOOL_BYTES, COLL, f"{10 * MIB}x10"), series(SPOOL_LIMIT, COLL, f"{256 * MIB}x10")],
         [(9, None)], note="mostly empty"),
    Case("SandmeterDeadLetters",
         [series(n.PROCESSOR_DLQ, {"reason": "corrupt", **PROC}, "0 0 1 1 1 1 1 1 1 1 1 1"),
          series(n.PROCESSOR_DLQ, {"reason": "truncated", **PROC}, "0x11")],
         [(1, None), (3, {"instance": PROC["instance"], "reason": "corrupt"}), (11, None)], 1),
]  # fmt: skip


def expand(template: str, labels: dict[str, str], value: float) -> str:
    """The few Go-template forms the rules use, as Prometheus renders them."""
    out = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m[1], ""), template)
    out = out.replace("{{ $value | humanizePercentage }}", f"{value * 100:.4g}%")
    return out.replace("{{ $value }}", f"{value:g}")


def promtool_tests(rules_file: str) -> dict[str, Any]:
    by_name = {a.name: a for a in rules.ALERTS}
    tests = []
    for c in CASES:
        a = by_name[c.alert]
        checks = []
        for minute, labels in c.checks:
            exp = []
            if labels is not None:
                exp.append(
                    {
                        "exp_labels": {"severity": a.severity, **labels},
                        "exp_annotations": {
                            "summary": expand(a.summary, labels, c.value),
                            "description": expand(a.description, labels, c.value),
                            "runbook_url": rules.RUNBOOK + a.name.lower(),
                        },
                    }
                )
            checks.append({"eval_time": f"{minute}m", "alertname": c.alert, "exp_alerts": exp})
        tests.append({"name": f"{c.alert} {c.note}".strip(), "interval": "1m", "input_series": c.inputs,
                      "alert_rule_test": checks})  # fmt: skip
    return {"rule_files": [rules_file], "evaluation_interval": "1m", "tests": tests}


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
        assert r["labels"]["severity"] in ("critical", "warning") and r["annotations"]["summary"]
        assert f"### Runbook: {a.name}\n" in ops, a.name  # GitHub's anchor: #runbook-<name lowercased>
    # incident alerts say where: sandbox, node and tenant
    for a in rules.ALERTS[:2]:
        assert all(f"$labels.{k}" in a.description for k in ("sandbox_id", "node", "tenant")), a.name


@pytest.mark.skipif(shutil.which("promtool") is None, reason="make test installs Debian's prometheus")
def test_promtool_checks_the_rules_and_runs_their_unit_tests(tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text(rules.rules_yaml())
    (tmp_path / "tests.yml").write_text(json.dumps(promtool_tests("rules.yml"), indent=1))
    check = subprocess.run(["promtool", "check", "rules", "rules.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(rules.ALERTS)} rules found" in check.stdout
    run = subprocess.run(["promtool", "test", "rules", "tests.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout


@pytest.mark.skipif(shutil.which("promtool") is None, reason="make test installs Debian's prometheus")
def test_a_broken_rule_fails_the_promtool_tests(tmp_path: Path) -> None:
    """The harness can fail: a rule whose threshold moved makes its case fail."""
    doc = json.loads(rules.rules_yaml())
    for r in doc["groups"][0]["rules"]:
        if r["alert"] == "SandmeterFreshnessHigh":
            r["expr"] = r["expr"].replace(f"> {rules.FRESHNESS_MAX_S}", "> 500")
    (tmp_path / "rules.yml").write_text(json.dumps(doc))
    (tmp_path / "tests.yml").write_text(json.dumps(promtool_tests("rules.yml")))
    run = subprocess.run(["promtool", "test", "rules", "tests.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode != 0 and "SandmeterFreshnessHigh" in run.stdout + run.stderr
