"""`sandmeter dashboards --out DIR`: Grafana dashboards and provisioning, from code.

Table, column and metric names are imported from the modules that define them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attr
from grafanalib._gen import DashboardEncoder
from grafanalib.core import Dashboard, GridPos, Table, Target, Template, Templating, TimeSeries

from collectors import agent as collector_metrics
from collectors import sink as sink_metrics
from pipeline import processor as pm
from sandmeter import names as n

CH_UID = "clickhouse"
PROM_UID = "prometheus"
CH_TYPE = "grafana-clickhouse-datasource"


@attr.s
class ClickHouseTarget:
    """A query in the grafana-clickhouse-datasource plugin's model."""

    rawSql: str = attr.ib()
    refId: str = attr.ib(default="A")
    format: int = attr.ib(default=0)  # 0 time series, 1 table

    def to_json_data(self) -> dict[str, Any]:
        return {
            "datasource": {"type": CH_TYPE, "uid": CH_UID},
            "editorType": "sql",
            "queryType": "timeseries" if self.format == 0 else "table",
            "format": self.format,
            "rawSql": self.rawSql,
            "refId": self.refId,
        }


def _ch_ts(title: str, sql: str, pid: int, x: int, y: int, unit: str = "short") -> TimeSeries:
    return TimeSeries(
        title=title, dataSource={"type": CH_TYPE, "uid": CH_UID}, targets=[ClickHouseTarget(sql)],
        id=pid, gridPos=GridPos(h=8, w=12, x=x, y=y), unit=unit,
    )  # fmt: skip


def _usage_sql(expr: str) -> str:
    return (
        "SELECT toDateTime(intDiv(end_ms, 60000) * 60) AS time, tenant, "
        f"{expr} AS value FROM {n.T_USAGE} FINAL "
        "WHERE end_ms >= $__fromTime_ms AND end_ms < $__toTime_ms AND tenant IN (${tenant:singlequote}) "
        "GROUP BY time, tenant ORDER BY time"
    )


def tenant_usage() -> Dashboard:
    panels = [
        _ch_ts("Used CPU (ms per minute)", _usage_sql("sum(cpu_used_us) / 1000"), 1, 0, 0, "ms"),
        _ch_ts("Allocated vCPU-ms per minute", _usage_sql("sum(vcpu_alloc_mcpu_ms) / 1000"), 2, 12, 0),
        _ch_ts("Used memory (GiB-ms per minute)", _usage_sql("sum(mem_used_byte_ms) / 1073741824"), 3, 0, 8),
        _ch_ts("Allocated memory (GiB-ms per minute)", _usage_sql("sum(mem_alloc_byte_ms) / 1073741824"), 4, 12, 8),
        _ch_ts("IO bytes per minute", _usage_sql("sum(io_read_bytes + io_write_bytes)"), 5, 0, 16, "bytes"),
        _ch_ts("Network bytes per minute", _usage_sql("sum(net_rx_bytes + net_tx_bytes)"), 6, 12, 16, "bytes"),
        Table(
            title="Sandboxes (drill-down)",
            dataSource={"type": CH_TYPE, "uid": CH_UID},
            id=7,
            gridPos=GridPos(h=10, w=24, x=0, y=24),
            targets=[
                ClickHouseTarget(
                    "SELECT tenant, sandbox_id, node, min(start_ms) AS first_ms, max(end_ms) AS last_ms, "
                    "sum(cpu_used_us) / 1000 AS cpu_used_ms, sum(vcpu_alloc_mcpu_ms) / 1000 AS vcpu_alloc_ms "
                    f"FROM {n.T_USAGE} FINAL WHERE end_ms >= $__fromTime_ms AND end_ms < $__toTime_ms "
                    "AND tenant IN (${tenant:singlequote}) GROUP BY tenant, sandbox_id, node "
                    "ORDER BY cpu_used_ms DESC LIMIT 100",
                    format=1,
                )
            ],
        ),
    ]
    tenant_var = Template(
        name="tenant", label="Tenant", query=f"SELECT DISTINCT tenant FROM {n.T_USAGE}",
        dataSource={"type": CH_TYPE, "uid": CH_UID}, type="query", multi=True, includeAll=True,
    )  # fmt: skip
    return Dashboard(
        title="sandmeter: tenant usage", uid="sandmeter-tenant-usage", panels=panels,
        templating=Templating(list=[tenant_var]), timezone="utc",
    ).auto_panel_ids()  # fmt: skip


def _prom_ts(title: str, expr: str, pid: int, x: int, y: int, unit: str = "short") -> TimeSeries:
    return TimeSeries(
        title=title, dataSource={"type": "prometheus", "uid": PROM_UID},
        targets=[Target(expr=expr, refId="A", datasource={"type": "prometheus", "uid": PROM_UID})],
        id=pid, gridPos=GridPos(h=8, w=12, x=x, y=y), unit=unit,
    )  # fmt: skip


def pipeline_health() -> Dashboard:
    panels = [
        _prom_ts("Consumer lag (messages)", f"sum by (partition) ({pm.LAG})", 1, 0, 0),
        _prom_ts("Samples/s", f"rate({pm.SAMPLES}[1m])", 2, 12, 0),
        _prom_ts("Freshness", pm.FRESHNESS, 3, 0, 8, "s"),
        _prom_ts("Dead-letter and late /s", f"sum(rate({pm.DLQ}[5m])) or vector(0)", 4, 12, 8),
        _prom_ts(
            "Insert latency p99",
            f"histogram_quantile(0.99, sum by (le) (rate({pm.INSERT_SECONDS}_bucket[5m])))",
            5,
            0,
            16,
            "s",
        ),
        _prom_ts(
            "Collector scrape errors /s", f"sum by (source) (rate({collector_metrics.SCRAPE_ERRORS}[5m]))", 6, 12, 16
        ),
        _prom_ts("Collector spool depth", f"max by (instance) ({sink_metrics.SPOOL_DEPTH})", 7, 0, 24),
    ]
    return Dashboard(title="sandmeter: pipeline health", uid="sandmeter-pipeline", panels=panels, timezone="utc")


DASHBOARDS = {"tenant-usage": tenant_usage, "pipeline-health": pipeline_health}


def provisioning(
    clickhouse_host: str = "clickhouse", clickhouse_port: int = 9000, prometheus_url: str = "http://prometheus:9090"
) -> dict[str, str]:
    datasources = {
        "apiVersion": 1,
        "datasources": [
            {
                "name": "ClickHouse",
                "uid": CH_UID,
                "type": CH_TYPE,
                "jsonData": {"host": clickhouse_host, "port": clickhouse_port, "protocol": "native"},
            },
            {
                "name": "Prometheus",
                "uid": PROM_UID,
                "type": "prometheus",
                "url": prometheus_url,
                "access": "proxy",
                "isDefault": True,
            },
        ],
    }  # fmt: skip
    providers = {
        "apiVersion": 1,
        "providers": [
            {"name": "sandmeter", "folder": "sandmeter", "type": "file", "disableDeletion": True,
             "options": {"path": "/var/lib/grafana/dashboards"}},
        ],
    }  # fmt: skip
    return {
        "provisioning/datasources/sandmeter.json": json.dumps(datasources, indent=2),
        "provisioning/dashboards/sandmeter.json": json.dumps(providers, indent=2),
    }


def write_all(out: Path) -> list[Path]:
    written = []
    for name, make in DASHBOARDS.items():
        p = out / "dashboards" / f"{name}.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(make().to_json_data(), cls=DashboardEncoder, indent=2, sort_keys=True))
        written.append(p)
    for rel, text in provisioning().items():
        p = out / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        written.append(p)
    return written
