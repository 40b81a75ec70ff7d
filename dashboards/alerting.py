"""Prometheus scrape configuration and the Alertmanager configuration, generated.

Two scrape configurations share their jobs: docker-compose.yml's (static service names) and
the local stack's (`sandmeter stack`: file_sd target files per job on 127.0.0.1, so targets
change without a reload). The collector job carries a `node` label per target: Alertmanager
groups by it and mutes a node's sandbox alerts while its collector is down. Files are JSON,
which is YAML.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any, Final

from dashboards.rules import API_JOB, COLLECTOR_JOB, PROCESSOR_JOB, SCALE_JOB

DEFAULT_WEBHOOK_URL: Final = "http://alert-webhook:9099/alerts"  # a placeholder: the team's receiver
CRITICAL, WARNING = "sandmeter-critical", "sandmeter-warning"  # receivers, one per severity
# Alerts that say a node is not observed: while one fires, the node's sandbox alerts are muted
NODE_DOWN_ALERTS: Final = ("SandmeterCollectorDown", "SandmeterCollectorNotSending")

# A collector target without a `node` label (a discovery that does not know the node id) is
# labelled with its host name; targets that name their node keep it.
NODE_FROM_HOST: Final = {
    "source_labels": ["node", "__address__"],
    "separator": ";",
    "regex": r";([^:]+):\d+",
    "target_label": "node",
    "replacement": "$1",
}


def duration(s: float) -> str:
    """Seconds as a Prometheus / Alertmanager duration ("0s", "1s", "250ms", "5m")."""
    if s != int(s):
        return f"{round(s * 1000)}ms"
    s = int(s)
    if s and s % 3600 == 0:
        return f"{s // 3600}h"
    if s and s % 60 == 0:
        return f"{s // 60}m"
    return f"{s}s"


def prometheus_yaml() -> str:
    """Scrape config for docker-compose.yml: processor, API, scale publisher, host-network collector."""
    doc = {
        "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
        "rule_files": ["/etc/prometheus/rules/*.yml"],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": ["alertmanager:9093"]}]}]},
        "scrape_configs": [
            {"job_name": PROCESSOR_JOB, "static_configs": [{"targets": ["processor:9465"]}]},
            {"job_name": API_JOB, "static_configs": [{"targets": ["api:8080"]}]},
            {"job_name": SCALE_JOB, "static_configs": [{"targets": ["scale:9466"]}]},
            {
                "job_name": COLLECTOR_JOB,
                # the label must be the collector's SANDMETER_COLLECTOR_NODE_ID (compose: its default)
                "static_configs": [{"targets": ["host.docker.internal:9464"], "labels": {"node": "node-local"}}],
                "relabel_configs": [NODE_FROM_HOST],
            },
        ],
    }
    return json.dumps(doc, indent=2) + "\n"


def stack_prometheus_yaml(jobs: Collection[str], alertmanager_port: int, interval_s: float) -> str:
    """The local stack's scrape config: each job in `jobs` reads its targets from
    `targets/<job>.json` next to the config; rules from `rules.yml`; one Alertmanager."""
    configs: list[dict[str, Any]] = []
    for job in sorted(jobs):
        c: dict[str, Any] = {"job_name": job, "file_sd_configs": [{"files": [f"targets/{job}.json"]}]}
        if job == COLLECTOR_JOB:
            c["relabel_configs"] = [NODE_FROM_HOST]
        configs.append(c)
    doc = {
        "global": {"scrape_interval": duration(interval_s), "evaluation_interval": duration(interval_s)},
        "rule_files": ["rules.yml"],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}]},
        "scrape_configs": configs,
    }
    return json.dumps(doc, indent=2) + "\n"


def alertmanager_yaml(
    webhook_url: str | None = DEFAULT_WEBHOOK_URL,
    group_wait_s: float = 30,
    group_interval_s: float = 300,
    repeat_interval_s: float = 4 * 3600,
) -> str:
    """Routes by severity, one notification group per node, a node's sandbox alerts muted while
    the node is not observed; both receivers post to `webhook_url` (None: no notification,
    the alerts are only in Alertmanager's UI and API). Alertmanager 0.25 expands no variables
    and reads no URL file, so the URL is written in."""
    hooks = {"webhook_configs": [{"url": webhook_url, "send_resolved": True}]} if webhook_url else {}
    doc = {
        "route": {
            "receiver": WARNING,  # an alert without a known severity still reaches someone
            "group_by": ["node"],  # alerts without a node (a service down) share one group
            "group_wait": duration(group_wait_s),
            # a group's next notification (new alerts, resolutions) waits for its next tick
            "group_interval": duration(group_interval_s),
            "repeat_interval": duration(repeat_interval_s),
            "routes": [
                {"matchers": ['severity="critical"'], "receiver": CRITICAL,
                 "repeat_interval": duration(min(repeat_interval_s, 3600))},
                {"matchers": ['severity="warning"'], "receiver": WARNING},
            ],
        },
        "inhibit_rules": [
            {
                "source_matchers": [f'alertname=~"{"|".join(NODE_DOWN_ALERTS)}"'],
                "target_matchers": ['sandbox_id=~".+"'],
                "equal": ["node"],
            }
        ],
        "receivers": [{"name": CRITICAL, **hooks}, {"name": WARNING, **hooks}],
    }  # fmt: skip
    return json.dumps(doc, indent=2) + "\n"
