"""Prometheus alert rules and scrape configuration, generated from the metric names in code.

Every alert carries a severity, a summary, a description naming the sandbox / node / tenant
where it has them, and a runbook link into docs/operations.md ("Runbooks"). Files are JSON,
which is YAML, so no YAML writer is needed and the output is byte-stable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from contracts import names as n

RUNBOOK: Final = "https://github.com/sandmeter/sandmeter/blob/main/docs/operations.md#runbook-"
PROCESSOR_JOB: Final = "sandmeter-processor"
COLLECTOR_JOB: Final = "sandmeter-collector"
API_JOB: Final = "sandmeter-api"
SCALE_JOB: Final = "sandmeter-scale"
LAG_MAX: Final = 50_000  # messages behind, summed over partitions
FRESHNESS_MAX_S: Final = 120
SPOOL_FILL_MAX: Final = 0.5


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str

    def rule(self) -> dict[str, Any]:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": RUNBOOK + self.name.lower(),
            },
        }


def _incident(kind: str) -> str:
    return f'max by (kind, node, sandbox_id, tenant) ({n.HEALTH_INCIDENT}{{kind="{kind}"}}) == 1'


ALERTS: Final = (
    Alert(
        "SandmeterQemuHang", _incident(n.QEMU_HANG), "0m", "critical",
        "QEMU hang in sandbox {{ $labels.sandbox_id }} on {{ $labels.node }}",
        "The processor opened a qemu_hang incident for sandbox {{ $labels.sandbox_id }} of tenant "
        "{{ $labels.tenant }} on node {{ $labels.node }}: QEMU threads in D state, or QEMU stopped making "
        "progress while the sandbox is alive. Evidence is in the health_events table.",
    ),
    Alert(
        "SandmeterIOStall", _incident(n.IO_STALL), "0m", "warning",
        "IO stall in sandbox {{ $labels.sandbox_id }} on {{ $labels.node }}",
        "Sandbox {{ $labels.sandbox_id }} of tenant {{ $labels.tenant }} on node {{ $labels.node }} has had "
        "io.pressure full avg10 above 10, or guest IO in flight without progress, for over 60 s.",
    ),
    Alert(
        "SandmeterHostDiskStall", _incident(n.HOST_DISK_STALL), "0m", "critical",
        "Disk {{ $labels.tenant }} on {{ $labels.node }} makes no progress",
        "Node {{ $labels.node }}: disk {{ $labels.tenant }} has had IOs in flight and no completions for "
        "over 60 s; every sandbox using it will stall.",
    ),
    Alert(
        "SandmeterProcessorLagHigh", f"sum by (instance) ({n.PROCESSOR_LAG}) > {LAG_MAX}", "10m", "warning",
        "Processor {{ $labels.instance }} is {{ $value }} messages behind",
        f"Consumer lag summed over partitions has been above {LAG_MAX} messages for 10 minutes; usage and "
        "health reach ClickHouse late.",
    ),
    Alert(
        "SandmeterFreshnessHigh", f"max by (instance) ({n.PROCESSOR_FRESHNESS}) > {FRESHNESS_MAX_S}", "5m", "warning",
        "Newest usage written by {{ $labels.instance }} is {{ $value }} s old",
        f"The newest sample written to ClickHouse has been older than {FRESHNESS_MAX_S} s for 5 minutes: the "
        "processor is behind, blocked on ClickHouse, or the collectors stopped sending.",
    ),
    Alert(
        "SandmeterProcessorDown",
        f'up{{job="{PROCESSOR_JOB}"}} == 0 or absent(up{{job="{PROCESSOR_JOB}"}})',
        "2m", "critical",
        "sandmeter processor {{ $labels.instance }} is down",
        "Prometheus cannot scrape the processor; nothing is being metered or checked for hangs.",
    ),
    Alert(
        "SandmeterCollectorScrapeFailing",
        f"sum by (instance, source) (rate({n.COLLECTOR_SCRAPE_ERRORS}[5m])) > 0", "10m", "warning",
        "Collector {{ $labels.instance }}: source {{ $labels.source }} keeps failing",
        "The {{ $labels.source }} source of the collector on {{ $labels.instance }} has failed or returned "
        "bad input for 10 minutes; that node's usage or health signals are incomplete.",
    ),
    Alert(
        "SandmeterCollectorSpoolFilling",
        f"max by (instance) ({n.COLLECTOR_SPOOL_BYTES} / {n.COLLECTOR_SPOOL_LIMIT}) > {SPOOL_FILL_MAX}",
        "5m", "warning",
        "Collector {{ $labels.instance }} spool is {{ $value | humanizePercentage }} full",
        "Batches are waiting on disk because Kafka does not take them; when the spool is full the oldest "
        "are dropped and that usage is lost.",
    ),
    Alert(
        "SandmeterDeadLetters", f"sum by (instance, reason) (increase({n.PROCESSOR_DLQ}[5m])) > 0", "0m", "warning",
        "Processor {{ $labels.instance }} dead-lettered messages ({{ $labels.reason }})",
        "Messages that could not be decoded or accounted went to the dead-letter topic with reason "
        "{{ $labels.reason }}; the usage in them is not billed until they are replayed.",
    ),
)  # fmt: skip


def rules_yaml() -> str:
    doc = {"groups": [{"name": "sandmeter", "rules": [a.rule() for a in ALERTS]}]}
    return json.dumps(doc, indent=2) + "\n"


def prometheus_yaml() -> str:
    """Scrape config for docker-compose.yml: processor, API, scale publisher, host-network collector."""
    doc = {
        "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
        "rule_files": ["/etc/prometheus/rules/*.yml"],
        "scrape_configs": [
            {"job_name": PROCESSOR_JOB, "static_configs": [{"targets": ["processor:9465"]}]},
            {"job_name": API_JOB, "static_configs": [{"targets": ["api:8080"]}]},
            {"job_name": SCALE_JOB, "static_configs": [{"targets": ["scale:9466"]}]},
            {"job_name": COLLECTOR_JOB, "static_configs": [{"targets": ["host.docker.internal:9464"]}]},
        ],
    }
    return json.dumps(doc, indent=2) + "\n"
