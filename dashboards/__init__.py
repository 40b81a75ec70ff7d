"""Generated Grafana dashboards and provisioning, Prometheus scrape config and alert rules."""

from dashboards.generate import files, write_all

__all__ = ["files", "write_all"]
