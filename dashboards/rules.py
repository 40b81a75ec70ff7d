"""Prometheus alert rules, generated from the metric names in code.

Every alert carries a severity, a summary, a description naming the sandbox / node / tenant
where it has them, and a runbook link into docs/operations.md ("Runbooks"). Each alert
belongs to the scrape job whose series it reads, so a Prometheus that scrapes only some of
the services (the local stack) loads only their alerts. Files are JSON, which is YAML, so no
YAML writer is needed and the output is byte-stable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Final

from contracts import names as n

RUNBOOK: Final = "https://github.com/sandmeter/sandmeter/blob/main/docs/operations.md#runbook-"
PROCESSOR_JOB: Final = "sandmeter-processor"
COLLECTOR_JOB: Final = "sandmeter-collector"
API_JOB: Final = "sandmeter-api"
SCALE_JOB: Final = "sandmeter-scale"
JOBS: Final = (PROCESSOR_JOB, COLLECTOR_JOB, API_JOB, SCALE_JOB)
LAG_MAX: Final = 50_000  # messages behind, summed over partitions
FRESHNESS_MAX_S: Final = 120
SPOOL_FILL_MAX: Final = 0.5
API_ERROR_RATIO_MAX: Final = 0.05  # of client requests answered 5xx
API_PROBES: Final = "/metrics|/healthz|/readyz"  # called by Prometheus and kubelet, not by clients
API_5XX: Final = 'status=~"5..",'
SCALE_STALE_AFTER_S: Final = 120  # the publisher ticks every 2 s
LATE_RATIO_MAX: Final = 0.01


@dataclass(frozen=True)
class Alert:
    name: str
    job: str  # the scrape job whose series the expression reads
    expr: str
    for_: str
    severity: str
    summary: str
    description: str

    def rule(self, for_max_s: float | None = None) -> dict[str, Any]:
        """The rule; `for_max_s` caps its `for:` (tests, the demo), the expression stays as it is."""
        for_ = self.for_
        if for_max_s is not None and seconds(for_) > for_max_s:
            for_ = f"{for_max_s:g}s"
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": for_,
            "labels": {"severity": self.severity},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": RUNBOOK + self.name.lower(),
            },
        }


def seconds(duration: str) -> float:
    """A one-unit Prometheus duration ("0m", "90s", "2m", "1h") in seconds."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", duration)
    if not m:
        raise ValueError(f"unsupported duration {duration!r}")
    return int(m[1]) * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[m[2]]


def _incident(kind: str) -> str:
    return f'max by (kind, node, sandbox_id, tenant, disk) ({n.HEALTH_INCIDENT}{{kind="{kind}"}}) == 1'


def _down(job: str) -> str:
    return f'up{{job="{job}"}} == 0 or absent(up{{job="{job}"}})'


def _api_requests(status: str = "") -> str:
    """Client requests per second by API instance (probes and scrapes left out)."""
    sel = f'{status}route!~"{API_PROBES}"'
    return f"sum by (instance) (rate({n.API_REQUEST_SECONDS}_count{{{sel}}}[2m]))"


def _ratio(part: str, whole: str, window: str) -> str:
    return f"sum by (instance) (rate({part}[{window}])) / sum by (instance) (rate({whole}[{window}]))"


ALERTS: Final = (
    # -- health incidents (the processor's detectors carry the hysteresis: they fire at once)
    Alert(
        "SandmeterQemuHang", PROCESSOR_JOB, _incident(n.QEMU_HANG), "0m", "critical",
        "QEMU hang in sandbox {{ $labels.sandbox_id }} on {{ $labels.node }}",
        "The processor opened a qemu_hang incident for sandbox {{ $labels.sandbox_id }} of tenant "
        "{{ $labels.tenant }} on node {{ $labels.node }}: QEMU threads in D state, or QEMU stopped making "
        "progress while the sandbox is alive. Evidence is in the health_events table.",
    ),
    Alert(
        "SandmeterIOStall", PROCESSOR_JOB, _incident(n.IO_STALL), "0m", "warning",
        "IO stall in sandbox {{ $labels.sandbox_id }} on {{ $labels.node }}",
        "Sandbox {{ $labels.sandbox_id }} of tenant {{ $labels.tenant }} on node {{ $labels.node }} has had "
        "io.pressure full avg10 above 10, or guest IO in flight without progress, for over 60 s.",
    ),
    Alert(
        "SandmeterHostDiskStall", PROCESSOR_JOB, _incident(n.HOST_DISK_STALL), "0m", "critical",
        "Disk {{ $labels.disk }} on {{ $labels.node }} makes no progress",
        "Node {{ $labels.node }}: disk {{ $labels.disk }} has had IOs in flight and no completions for "
        "over 60 s; every sandbox using it will stall.",
    ),
    # -- the processor
    Alert(
        "SandmeterProcessorLagHigh", PROCESSOR_JOB, f"sum by (instance) ({n.PROCESSOR_LAG}) > {LAG_MAX}", "10m",
        "warning", "Processor {{ $labels.instance }} is {{ $value }} messages behind",
        f"Consumer lag summed over partitions has been above {LAG_MAX} messages for 10 minutes; usage and "
        "health reach ClickHouse late.",
    ),
    Alert(
        "SandmeterFreshnessHigh", PROCESSOR_JOB, f"max by (instance) ({n.PROCESSOR_FRESHNESS}) > {FRESHNESS_MAX_S}",
        "5m", "warning", "Newest usage written by {{ $labels.instance }} is {{ $value }} s old",
        f"The newest sample written to ClickHouse has been older than {FRESHNESS_MAX_S} s for 5 minutes: the "
        "processor is behind, blocked on ClickHouse, or the collectors stopped sending.",
    ),
    Alert(
        "SandmeterProcessorDown", PROCESSOR_JOB, _down(PROCESSOR_JOB), "2m", "critical",
        "sandmeter processor {{ $labels.instance }} is down",
        "Prometheus cannot scrape the processor; nothing is being metered or checked for hangs.",
    ),
    Alert(
        # the retry backs off to 10 s, so an outage keeps failing at least 6 times a minute
        "SandmeterClickHouseWritesFailing", PROCESSOR_JOB,
        f"sum by (instance) (increase({n.PROCESSOR_WRITE_FAILURES}[1m])) > 0", "2m", "critical",
        "Processor {{ $labels.instance }} cannot write to ClickHouse",
        "Every minute for 2 minutes a ClickHouse write (usage, health events, rollups or checkpoints) failed "
        "and is being retried; nothing is committed meanwhile, so usage waits in Kafka and dashboards, "
        "invoices and scale decisions fall behind.",
    ),
    Alert(
        "SandmeterDeadLetters", PROCESSOR_JOB, f"sum by (instance, reason) (increase({n.PROCESSOR_DLQ}[5m])) > 0",
        "0m", "warning", "Processor {{ $labels.instance }} dead-lettered messages ({{ $labels.reason }})",
        "Messages that could not be decoded or accounted went to the dead-letter topic with reason "
        "{{ $labels.reason }}; the usage in them is not billed until they are replayed.",
    ),
    Alert(
        "SandmeterLateSamplesRising", PROCESSOR_JOB,
        f"{_ratio(n.PROCESSOR_LATE, n.PROCESSOR_SAMPLES, '10m')} > {LATE_RATIO_MAX}", "10m", "warning",
        "Processor {{ $labels.instance }} sees {{ $value | humanizePercentage }} of samples late",
        f"More than {LATE_RATIO_MAX:.0%} of samples have arrived older than their series' state for 10 "
        "minutes; they are kept in late_samples but not billed. A node's clock jumped back, or batches are "
        "replayed out of order.",
    ),
    # -- the collectors: one target per node, labelled with it (Alertmanager groups by node)
    Alert(
        "SandmeterCollectorDown", COLLECTOR_JOB, f'up{{job="{COLLECTOR_JOB}"}} == 0', "2m", "critical",
        "Collector on {{ $labels.node }} is down",
        "Prometheus cannot scrape the collector on node {{ $labels.node }} ({{ $labels.instance }}): that "
        "node's usage, lifecycle and health signals are not collected, and its sandbox alerts are muted.",
    ),
    Alert(
        "SandmeterNoCollectors", COLLECTOR_JOB, f'absent(up{{job="{COLLECTOR_JOB}"}})', "2m", "critical",
        "Prometheus has no collector target",
        "No collector target exists at all: service discovery lost every node, so no node is collected or "
        "checked for hangs.",
    ),
    Alert(
        # alive (scraped) but nothing acknowledged by Kafka: a stuck scrape loop or delivery path
        "SandmeterCollectorNotSending", COLLECTOR_JOB,
        f"sum by (node, instance) (increase({n.COLLECTOR_BATCHES_SENT}[5m])) == 0 "
        f'and on (node, instance) up{{job="{COLLECTOR_JOB}"}} == 1', "1m", "critical",
        "Collector on {{ $labels.node }} has delivered nothing for 5 minutes",
        "The collector on node {{ $labels.node }} answers scrapes but Kafka acknowledged none of its batches "
        "for 5 minutes: usage waits in its spool (or is not collected) and the node is not checked for hangs.",
    ),
    Alert(
        "SandmeterCollectorScrapeFailing", COLLECTOR_JOB,
        f"sum by (node, instance, source) (rate({n.COLLECTOR_SCRAPE_ERRORS}[5m])) > 0", "10m", "warning",
        "Collector on {{ $labels.node }}: source {{ $labels.source }} keeps failing",
        "The {{ $labels.source }} source of the collector on node {{ $labels.node }} has failed or returned "
        "bad input for 10 minutes; that node's usage or health signals are incomplete.",
    ),
    Alert(
        "SandmeterCollectorSpoolFilling", COLLECTOR_JOB,
        f"max by (node, instance) ({n.COLLECTOR_SPOOL_BYTES} / {n.COLLECTOR_SPOOL_LIMIT}) > {SPOOL_FILL_MAX}",
        "5m", "warning", "Collector on {{ $labels.node }}: spool {{ $value | humanizePercentage }} full",
        "Batches are waiting on disk because Kafka does not take them; when the spool is full the oldest "
        "are dropped and that usage is lost.",
    ),
    Alert(
        # a healthy spool empties after every send; one never empty for 10 minutes and growing is not
        "SandmeterCollectorSpoolGrowing", COLLECTOR_JOB,
        f"min by (node, instance) (min_over_time({n.COLLECTOR_SPOOL_DEPTH}[10m])) > 0 "
        f"and max by (node, instance) (deriv({n.COLLECTOR_SPOOL_BYTES}[10m])) > 0", "5m", "warning",
        "Collector on {{ $labels.node }}: spool not drained for 10 minutes and growing",
        "The collector on node {{ $labels.node }} has had batches waiting for 10 minutes and more keep "
        "arriving than Kafka takes; usage reaches ClickHouse late, and is lost once the spool is full.",
    ),
    Alert(
        "SandmeterCollectorSpoolDropping", COLLECTOR_JOB,
        f"sum by (node, instance, reason) (increase({n.COLLECTOR_SPOOL_DROPPED}[5m])) > 0", "0m", "critical",
        "Collector on {{ $labels.node }} dropped spooled batches ({{ $labels.reason }})",
        "The collector on node {{ $labels.node }} dropped batches from its spool (reason {{ $labels.reason }}: "
        "full, or an unreadable file); the usage in them is lost.",
    ),
    # -- the billing API
    Alert(
        "SandmeterApiDown", API_JOB, _down(API_JOB), "2m", "critical",
        "Billing API {{ $labels.instance }} is down",
        "Prometheus cannot scrape the billing API: tenants and the orchestrator (/v1/scale) get no answers.",
    ),
    Alert(
        "SandmeterApiErrors", API_JOB,
        f"{_api_requests(API_5XX)} / {_api_requests()} > {API_ERROR_RATIO_MAX}", "5m",
        "critical", "Billing API {{ $labels.instance }} answers {{ $value | humanizePercentage }} of requests with 5xx",
        f"More than {API_ERROR_RATIO_MAX:.0%} of client requests (probes and scrapes left out) have been answered "
        "with a 5xx for 5 minutes.",
    ),
    # -- the scale publisher
    Alert(
        "SandmeterScalePublisherDown", SCALE_JOB, _down(SCALE_JOB), "2m", "warning",
        "Scale publisher {{ $labels.instance }} is down",
        "Prometheus cannot scrape `sandmeter scale`: no scale decisions are published; the orchestrator keeps "
        "the last ones.",
    ),
    Alert(
        "SandmeterScaleStale", SCALE_JOB,
        f"time() - max by (instance) ({n.SCALE_LAST_SUCCESS}) > {SCALE_STALE_AFTER_S}", "1m", "warning",
        "Scale publisher {{ $labels.instance }} has decided nothing for {{ $value | humanizeDuration }}",
        f"No tick of the scale publisher has decided from fresh load data for over {SCALE_STALE_AFTER_S} s: "
        "its ticks fail (ClickHouse or Kafka away) or the load data is stale (the processor is behind); "
        "scale decisions stand still.",
    ),
)  # fmt: skip


def rules_yaml(jobs: Collection[str] = JOBS, for_max_s: float | None = None) -> str:
    """The rule file: the alerts of the scrape jobs in `jobs`, their `for:` capped at `for_max_s`."""
    rules = [a.rule(for_max_s) for a in ALERTS if a.job in jobs]
    doc = {"groups": [{"name": "sandmeter", "rules": rules}]}
    return json.dumps(doc, indent=2) + "\n"
