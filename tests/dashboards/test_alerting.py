"""Generated Prometheus scrape configs and the Alertmanager config: the real tools accept
them, and the routes send each severity to its receiver. (Inhibition and delivery against a
running Alertmanager: tests/sandmeter/test_stack_alerting.py.)"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from dashboards import alerting, rules

needs_amtool = pytest.mark.skipif(shutil.which("amtool") is None, reason="make test installs prometheus-alertmanager")
needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="make test installs Debian's prometheus")


def amtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["amtool", *args], cwd=cwd, capture_output=True, text=True)


@pytest.mark.parametrize("s,text", [(0, "0s"), (1, "1s"), (0.25, "250ms"), (90, "90s"), (300, "5m"), (14400, "4h")])
def test_durations_are_written_as_prometheus_reads_them(s: float, text: str) -> None:
    assert alerting.duration(s) == text


@needs_amtool
@pytest.mark.parametrize("url", [alerting.DEFAULT_WEBHOOK_URL, "https://hooks.example.com/a?b=c", None])
def test_amtool_accepts_the_config(tmp_path: Path, url: str | None) -> None:
    (tmp_path / "am.yml").write_text(alerting.alertmanager_yaml(url, 0, 1, 3600))
    r = amtool("check-config", "am.yml", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout and "1 inhibit rules" in r.stdout and "2 receivers" in r.stdout


@needs_amtool
def test_each_severity_reaches_its_receiver(tmp_path: Path) -> None:
    (tmp_path / "am.yml").write_text(alerting.alertmanager_yaml())
    for labels, receiver in (
        (["severity=critical", "alertname=SandmeterQemuHang", "node=n1", "sandbox_id=sb1"], alerting.CRITICAL),
        (["severity=warning", "alertname=SandmeterIOStall", "node=n1"], alerting.WARNING),
        (["alertname=Other"], alerting.WARNING),  # no severity: still someone's
    ):
        r = amtool("config", "routes", "test", "--config.file=am.yml", f"--verify.receivers={receiver}", *labels,
                   cwd=tmp_path)  # fmt: skip
        assert r.returncode == 0, (labels, r.stdout + r.stderr)


def test_groups_by_node_and_mutes_a_nodes_sandbox_alerts_while_it_is_not_observed() -> None:
    doc = json.loads(alerting.alertmanager_yaml("http://127.0.0.1:1/x"))
    assert doc["route"]["group_by"] == ["node"]
    (inhibit,) = doc["inhibit_rules"]
    assert inhibit["equal"] == ["node"] and inhibit["target_matchers"] == ['sandbox_id=~".+"']
    names = {a.name for a in rules.ALERTS}
    assert set(alerting.NODE_DOWN_ALERTS) <= names
    for name in alerting.NODE_DOWN_ALERTS:
        assert name in inhibit["source_matchers"][0]
    assert {r["name"] for r in doc["receivers"]} == {alerting.CRITICAL, alerting.WARNING}
    assert all(r["webhook_configs"][0]["send_resolved"] for r in doc["receivers"])
    quiet = json.loads(alerting.alertmanager_yaml(None))
    assert all("webhook_configs" not in r for r in quiet["receivers"])


@needs_promtool
def test_promtool_accepts_both_scrape_configs(tmp_path: Path) -> None:
    (tmp_path / "compose.yml").write_text(alerting.prometheus_yaml())
    (tmp_path / "rules.yml").write_text(rules.rules_yaml())
    (tmp_path / "stack.yml").write_text(alerting.stack_prometheus_yaml(rules.JOBS, 19093, 1))
    for f in ("compose.yml", "stack.yml"):
        r = subprocess.run(["promtool", "check", "config", f], cwd=tmp_path, capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr


def test_the_stack_scrapes_each_job_from_its_targets_file_and_labels_collectors_by_node() -> None:
    doc = json.loads(alerting.stack_prometheus_yaml([rules.COLLECTOR_JOB, rules.PROCESSOR_JOB], 4321, 1))
    assert doc["global"] == {"scrape_interval": "1s", "evaluation_interval": "1s"}
    assert doc["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["127.0.0.1:4321"]
    jobs = {c["job_name"]: c for c in doc["scrape_configs"]}
    assert set(jobs) == {rules.COLLECTOR_JOB, rules.PROCESSOR_JOB}
    for job, c in jobs.items():
        assert c["file_sd_configs"] == [{"files": [f"targets/{job}.json"]}]
    # a processor target must not carry `node`: it would rename the incidents' own node label
    assert "relabel_configs" not in jobs[rules.PROCESSOR_JOB]
    assert jobs[rules.COLLECTOR_JOB]["relabel_configs"] == [alerting.NODE_FROM_HOST]
