"""`sandmeter stack` settings (SANDMETER_STACK_*)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from contracts.settings import Part


class StackSettings(Part):
    """The local broker and ClickHouse server, Prometheus and Alertmanager, on loopback."""

    model_config = SettingsConfigDict(env_prefix="SANDMETER_STACK_", frozen=True)

    state_dir: Path = Path(".sandmeter/stack")
    host: Literal["127.0.0.1"] = "127.0.0.1"
    kafka_port: int = Field(19092, ge=1, le=65535)
    clickhouse_tcp_port: int = Field(19000, ge=1, le=65535)
    clickhouse_http_port: int = Field(18123, ge=1, le=65535)
    # ZooKeeper and a 2 shards x 2 replicas ClickHouse cluster instead of the single server
    # (`stack up --cluster`); node i of s1r1, s1r2, s2r1, s2r2 listens on clickhouse_tcp_port + i,
    # clickhouse_http_port + i and cluster_interserver_port + i
    cluster: bool = False
    zookeeper_port: int = Field(12181, ge=1, le=65535)
    cluster_interserver_port: int = Field(19010, ge=1, le=65535)
    start_timeout_s: float = 30.0
    # Prometheus (generated scrape config and rules) and Alertmanager; false: neither runs
    alerting: bool = True
    prometheus_port: int = Field(19090, ge=1, le=65535)
    alertmanager_port: int = Field(19093, ge=1, le=65535)
    # where Alertmanager posts notifications; none: alerts only in its UI and API
    alert_webhook_url: str | None = Field(None, pattern=r"^https?://\S+$")
    scrape_interval_s: float = Field(15.0, gt=0)  # also the rule evaluation interval
    alert_group_wait_s: float = Field(30.0, ge=0)
    alert_group_interval_s: float = Field(300.0, gt=0)  # Alertmanager refuses 0
    # caps every rule's `for:` (tests and the demo wait seconds, not minutes); none: as written
    alert_for_max_s: float | None = Field(None, ge=0)
