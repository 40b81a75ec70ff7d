"""Generated Grafana dashboards and provisioning, Prometheus scrape config and alert rules, and
the Alertmanager config."""

from dashboards.alerting import DEFAULT_WEBHOOK_URL, alertmanager_yaml, stack_prometheus_yaml
from dashboards.generate import files, write_all
from dashboards.rules import API_JOB, COLLECTOR_JOB, JOBS, PROCESSOR_JOB, SCALE_JOB, rules_yaml

__all__ = [
    "API_JOB",
    "COLLECTOR_JOB",
    "DEFAULT_WEBHOOK_URL",
    "JOBS",
    "PROCESSOR_JOB",
    "SCALE_JOB",
    "alertmanager_yaml",
    "files",
    "rules_yaml",
    "stack_prometheus_yaml",
    "write_all",
]
