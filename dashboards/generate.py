"""`sandmeter dashboards --out DIR`: Grafana dashboards and provisioning, Prometheus config and
rules, the Alertmanager config.

Table, column, metric and label names are imported from the modules that define them, so a
rename breaks the tests instead of a dashboard. ClickHouse panels use the
grafana-clickhouse-datasource query model and only the `$__fromTime` / `$__toTime` /
`$__interval_s` macros, which expand to SQL that ClickHouse 18.16 and current releases both
run (the `_ms` macros expand to DateTime64 functions 18.16 lacks).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attr
from grafanalib._gen import DashboardEncoder
from grafanalib.core import Dashboard, GridPos, Table, Target, Template, Templating, TimeSeries

from billing import PlanBook, load_book
from contracts import names as n
from contracts.quantities import GIB, PLAN_METRIC, float_sum
from contracts.wire import sub_label
from dashboards import alerting, rules

CH_UID = "clickhouse"
PROM_UID = "prometheus"
CH_TYPE = "grafana-clickhouse-datasource"
CH_DS = {"type": CH_TYPE, "uid": CH_UID}
PROM_DS = {"type": "prometheus", "uid": PROM_UID}


@attr.s
class ClickHouseTarget:
    """A query in the grafana-clickhouse-datasource plugin's model (SQL editor)."""

    rawSql: str = attr.ib()
    refId: str = attr.ib(default="A")
    format: int = attr.ib(default=0)  # 0 time series, 1 table

    def to_json_data(self) -> dict[str, Any]:
        return {
            "datasource": CH_DS,
            "editorType": "sql",
            "queryType": "timeseries" if self.format == 0 else "table",
            "format": self.format,
            "rawSql": self.rawSql,
            "refId": self.refId,
        }


# -- SQL building blocks ---------------------------------------------------------------------
def in_range(col_ms: str) -> str:
    """The dashboard's time range over an epoch-ms column."""
    return f"{col_ms} >= toUInt64($__fromTime) * 1000 AND {col_ms} < toUInt64($__toTime) * 1000"


def bucket(col_ms: str, floor_s: int = 60) -> str:
    """A time column: `col_ms` floored to the panel interval, never finer than `floor_s`."""
    step = f"greatest({floor_s}, $__interval_s)"
    return f"toDateTime(intDiv({col_ms}, {step} * 1000) * {step}) AS time"


TENANTS = "tenant IN (${tenant:singlequote})"


def raw_series(t: n.Tables, metric: str, labels: str | None = None, host: bool = False, cond: str | None = None) -> str:
    """Raw samples of one metric (optionally one sub-label string), joined to their names.

    Portable between ClickHouse 18.16 and current releases: ANY INNER JOIN keeps one row per
    key on *both* sides since 20.x (one sample per series instead of all), so this is ALL
    INNER JOIN, over DISTINCT names so a name row not merged yet cannot double a sample;
    current releases also want the subquery aliased.
    """
    where = [f"metric = '{metric}'"]
    if labels is not None:
        where.append(f"labels = '{labels}'")
    if host:
        where.append("sandbox_id = ''")
    if cond is not None:
        where.append(cond)
    return (
        f"{t.samples} ALL INNER JOIN (SELECT DISTINCT series_id, node, sandbox_id, labels FROM {t.raw_series} "
        f"WHERE {' AND '.join(where)}) AS s USING series_id"
    )


def _ch_ts(title: str, sql: str, unit: str = "short", w: int = 12) -> TimeSeries:
    return TimeSeries(title=title, dataSource=CH_DS, targets=[ClickHouseTarget(sql)], unit=unit, gridPos=_pos(w, 8))


def _ch_table(title: str, sql: str, w: int = 24, h: int = 10) -> Table:
    return Table(title=title, dataSource=CH_DS, targets=[ClickHouseTarget(sql, format=1)], gridPos=_pos(w, h))


def _prom_ts(title: str, expr: str, unit: str = "short", legend: str = "", w: int = 12) -> TimeSeries:
    target = Target(expr=expr, refId="A", legendFormat=legend, datasource=PROM_DS)
    return TimeSeries(title=title, dataSource=PROM_DS, targets=[target], unit=unit, gridPos=_pos(w, 8))


def _pos(w: int, h: int) -> GridPos:
    return GridPos(h=h, w=w, x=0, y=0)  # laid out by _layout


def _layout(panels: list[Any]) -> list[Any]:
    """Rows left to right, 24 columns wide; ids 1..n in order."""
    x = y = row_h = 0
    for pid, p in enumerate(panels, start=1):
        w, h = p.gridPos.w, p.gridPos.h
        if x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        p.gridPos = GridPos(h=h, w=w, x=x, y=y)
        p.id = pid
        x += w
        row_h = max(row_h, h)
    return panels


def _tenant_var(t: n.Tables) -> Template:
    return Template(
        name="tenant", label="Tenant", query=f"SELECT DISTINCT tenant FROM {t.usage_minute} ORDER BY tenant",
        dataSource=CH_DS, type="query", multi=True, includeAll=True, default="$__all",
    )  # fmt: skip


def _node_var(t: n.Tables) -> Template:
    return Template(
        name="node", label="Node", query=f"SELECT DISTINCT node FROM {t.usage_minute} ORDER BY node",
        dataSource=CH_DS, type="query", multi=True, includeAll=True, default="$__all",
    )  # fmt: skip


# plan metric -> its quantity over usage rows, in the plan's unit (what rating prices)
PLAN_SQL: dict[str, str] = {name: m.sql() for name, m in PLAN_METRIC.items()}
DEFAULT_PLANS = Path("plans")
DEFAULT_DATABASE = "sandmeter"  # what the deploy/ files are generated for


def list_price(book: PlanBook) -> tuple[str, str]:
    """(SQL, currency): the default plan's cost at its first-tier prices, before allowances.

    An operator's view of cost over time; tiers, allowances and minimums apply per month and
    only the invoice (the API) applies them.
    """
    plan = book.versions[book.default][-1]
    terms = [f"{PLAN_SQL[ln.metric]} * {ln.tiers[0].price}" for ln in plan.lines]
    return " + ".join(terms) or "0", plan.currency


# -- dashboards -------------------------------------------------------------------------------
def _usage(t: n.Tables, expr: str) -> str:
    return (
        f"SELECT {bucket('minute_ms')}, tenant, {expr} AS value FROM {t.usage_minute} FINAL "
        f"WHERE {in_range('minute_ms')} AND {TENANTS} GROUP BY time, tenant ORDER BY time"
    )


def tenant_usage(t: n.Tables, book: PlanBook | None = None) -> Dashboard:
    """Per-tenant usage and list-price cost over time from the minute rollups, the top tenants
    by cost, and a sandbox drill-down."""
    cost, currency = list_price(book or load_book(DEFAULT_PLANS))
    top_quantities = ", ".join(f"{PLAN_SQL[m]} AS {m}" for m in ("vcpu_alloc_ms", "cpu_used_ms", "mem_alloc_gib_ms"))
    panels = [
        _ch_ts(f"Cost at list price ({currency}, default plan, before allowances)", _usage(t, cost), w=24),
        _ch_ts("Used CPU (ms)", _usage(t, PLAN_SQL["cpu_used_ms"]), "ms"),
        _ch_ts("Allocated vCPU-ms", _usage(t, PLAN_SQL["vcpu_alloc_ms"])),
        _ch_ts("Used memory (GiB-ms)", _usage(t, f"{float_sum('mem_used_byte_ms')} / {GIB}")),
        _ch_ts("Allocated memory (GiB-ms)", _usage(t, PLAN_SQL["mem_alloc_gib_ms"])),
        _ch_ts("IO read + write", _usage(t, float_sum("io_read_bytes", "io_write_bytes")), "bytes"),
        _ch_ts("Network rx + tx", _usage(t, float_sum("net_rx_bytes", "net_tx_bytes")), "bytes"),
        _ch_table(
            "Top 10 tenants by cost at list price",
            f"SELECT tenant, {cost} AS list_cost, {top_quantities}, uniqExact(sandbox_id) AS sandboxes "
            f"FROM {t.usage_minute} FINAL WHERE {in_range('minute_ms')} "
            "GROUP BY tenant ORDER BY list_cost DESC LIMIT 10",
            w=12,
        ),
        _ch_table(
            "Sandboxes (drill-down)",
            "SELECT tenant, sandbox_id, node, toDateTime(intDiv(min(minute_ms), 1000)) AS first_minute, "
            f"toDateTime(intDiv(max(minute_ms), 1000)) AS last_minute, {PLAN_SQL['cpu_used_ms']} AS cpu_used_ms, "
            f"{PLAN_SQL['vcpu_alloc_ms']} AS vcpu_alloc_ms, "
            f"{float_sum('mem_used_byte_ms')} / {GIB} AS mem_used_gib_ms, "
            f"{float_sum('io_read_bytes', 'io_write_bytes')} AS io_bytes, "
            f"{float_sum('net_rx_bytes', 'net_tx_bytes')} AS net_bytes "
            f"FROM {t.usage_minute} FINAL WHERE {in_range('minute_ms')} AND {TENANTS} "
            "GROUP BY tenant, sandbox_id, node ORDER BY vcpu_alloc_ms DESC LIMIT 200",
            w=12,
        ),
    ]
    return Dashboard(
        title="sandmeter: tenant usage", uid="sandmeter-tenant-usage", panels=_layout(panels),
        templating=Templating(list=[_tenant_var(t)]), timezone="utc",
    )  # fmt: skip


NODES = "node IN (${node:singlequote})"


def fleet_health(t: n.Tables) -> Dashboard:
    """Nodes, sandboxes, incidents with their evidence, host pressure, disks, blocked QEMU threads."""
    psi = sub_label(item="avg10", kind="some", resource="io")
    io_ms = f"labels LIKE '%{sub_label(item='io_ms')}%'"
    d_threads = sub_label(proc="qemu", state="D")
    panels = [
        _ch_ts(
            "Nodes reporting",
            f"SELECT {bucket('minute_ms')}, uniqExact(node) AS nodes FROM {t.usage_minute} "
            f"WHERE {in_range('minute_ms')} GROUP BY time ORDER BY time",
            w=8,
        ),
        _ch_ts(
            "Sandboxes per node",
            f"SELECT {bucket('minute_ms')}, node, uniqExact(sandbox_id) AS sandboxes FROM {t.usage_minute} "
            f"WHERE {in_range('minute_ms')} AND {NODES} GROUP BY time, node ORDER BY time",
            w=8,
        ),
        _prom_ts("Open incidents", f"sum by (kind) ({n.HEALTH_INCIDENTS_OPEN})", legend="{{kind}}", w=8),
        _ch_table(
            "Incidents (qemu hang, IO stall, host disk stall) with evidence",
            "SELECT incident_id, kind, node, sandbox_id, tenant, disk, "
            "toDateTime(intDiv(min(opened_ms), 1000)) AS opened, "
            "if(countIf(event = 'close') > 0, toString(toDateTime(intDiv(maxIf(ts_ms, event = 'close'), 1000))), "
            "'open') AS closed, argMax(evidence, ts_ms) AS evidence "
            f"FROM {t.health} WHERE {in_range('ts_ms')} AND {NODES} "
            "GROUP BY incident_id, kind, node, sandbox_id, tenant, disk ORDER BY opened DESC LIMIT 200",
        ),
        _ch_ts(
            "Incident timeline (opens and closes)",
            f"SELECT {bucket('ts_ms')}, concat(kind, ' ', event) AS what, count() AS events FROM {t.health} "
            f"WHERE {in_range('ts_ms')} AND {NODES} GROUP BY time, what ORDER BY time",
            w=24,
        ),
        _ch_ts(
            "Host IO pressure (some avg10, %)",
            f"SELECT {bucket('ts_ms', 10)}, node, max(value) AS psi FROM {raw_series(t, n.M_HOST_PRESSURE, psi, True)} "
            f"WHERE {in_range('ts_ms')} AND {NODES} GROUP BY time, node ORDER BY time",
            "percent",
            w=8,
        ),
        _ch_ts(
            "Disk busy (fraction of time with IO in flight)",
            "SELECT time, node, max(busy) AS busiest FROM ("
            f"SELECT {bucket('ts_ms')}, node, labels, (max(value) - min(value)) / (max(ts_ms) - min(ts_ms)) AS busy "
            f"FROM {raw_series(t, n.M_HOST_DISK, cond=io_ms)} "
            f"WHERE {in_range('ts_ms')} AND {NODES} GROUP BY time, node, labels HAVING max(ts_ms) > min(ts_ms)"
            ") GROUP BY time, node ORDER BY time",
            "percentunit",
            w=8,
        ),
        _ch_ts(
            "QEMU threads in D state",
            "SELECT time, node, sum(d) AS threads FROM ("
            f"SELECT {bucket('ts_ms', 10)}, node, sandbox_id, max(value) AS d "
            f"FROM {raw_series(t, n.M_PROC_THREADS, d_threads)} WHERE {in_range('ts_ms')} AND {NODES} "
            "GROUP BY time, node, sandbox_id) GROUP BY time, node ORDER BY time",
            w=8,
        ),
    ]
    return Dashboard(
        title="sandmeter: fleet health", uid="sandmeter-fleet-health", panels=_layout(panels),
        templating=Templating(list=[_node_var(t)]), timezone="utc",
    )  # fmt: skip


def _p99(hist: str, by: str = "") -> str:
    return f"histogram_quantile(0.99, sum by (le{by}) (rate({hist}_bucket[5m])))"


def pipeline_health() -> Dashboard:
    """The processor's and the collectors' own metrics, from Prometheus."""
    panels = [
        _prom_ts(
            "Consumer lag (messages)", f"sum by (partition) ({n.PROCESSOR_LAG})", legend="partition {{partition}}"
        ),
        _prom_ts("Samples/s (processor, collectors)", f"sum(rate({n.PROCESSOR_SAMPLES}[1m]))", legend="processor"),
        _prom_ts("Freshness (now - newest sample written)", f"max({n.PROCESSOR_FRESHNESS})", "s"),
        _prom_ts("Dead-lettered /s by reason", f"sum by (reason) (rate({n.PROCESSOR_DLQ}[5m]))", legend="{{reason}}"),
        _prom_ts("Late and duplicate samples /s", f"sum(rate({n.PROCESSOR_LATE}[5m]))", legend="late"),
        _prom_ts(
            "Rejected samples /s by reason", f"sum by (reason) (rate({n.PROCESSOR_REJECTED}[5m]))", legend="{{reason}}"
        ),
        _prom_ts("Insert latency p99", _p99(n.PROCESSOR_INSERT_SECONDS), "s"),
        _prom_ts("Flush latency p99", _p99(n.PROCESSOR_FLUSH_SECONDS), "s"),
        _prom_ts("ClickHouse write failures /s", f"sum(rate({n.PROCESSOR_WRITE_FAILURES}[5m]))"),
        _prom_ts("Writes failing for", f"max by (instance) ({n.PROCESSOR_WRITE_OUTAGE})", "s", "{{instance}}"),
        _prom_ts("Checkpoint and rollup p99", _p99(n.PROCESSOR_CHECKPOINT_SECONDS), "s"),
        _prom_ts("Series with state", f"sum({n.PROCESSOR_SERIES})"),
        _prom_ts(
            "Collector scrape errors /s by source",
            f"sum by (source) (rate({n.COLLECTOR_SCRAPE_ERRORS}[5m]))",
            legend="{{source}}",
        ),
        _prom_ts("Collector scrape p99 by source", _p99(n.COLLECTOR_SCRAPE_SECONDS, ", source"), "s", "{{source}}"),
        _prom_ts(
            "Collector spool depth (batches)", f"max by (instance) ({n.COLLECTOR_SPOOL_DEPTH})", legend="{{instance}}"
        ),
        _prom_ts(
            "Collector spool fill",
            f"max by (instance) ({n.COLLECTOR_SPOOL_BYTES} / {n.COLLECTOR_SPOOL_LIMIT})",
            "percentunit",
            "{{instance}}",
        ),
        _prom_ts("Collector batches sent /s", f"sum(rate({n.COLLECTOR_BATCHES_SENT}[1m]))"),
        _prom_ts(
            "Collector send errors /s",
            f"sum by (instance) (rate({n.COLLECTOR_SEND_ERRORS}[5m]))",
            legend="{{instance}}",
        ),
    ]
    return Dashboard(
        title="sandmeter: pipeline health", uid="sandmeter-pipeline", panels=_layout(panels), timezone="utc"
    )


# the builders over ClickHouse take the tables of the database they chart (dashboard_json)
DASHBOARDS: dict[str, Callable[..., Dashboard]] = {
    "tenant-usage": tenant_usage,
    "fleet-health": fleet_health,
    "pipeline-health": pipeline_health,
}


def dashboard_json(name: str, plans: Path = DEFAULT_PLANS, database: str = DEFAULT_DATABASE) -> dict[str, Any]:
    """One dashboard, its SQL over the tables of `database` (the configured name the four
    databases derive from: contracts/names.py)."""
    t = n.Tables(database)
    if name == "tenant-usage":
        d = tenant_usage(t, load_book(plans))
    elif name == "pipeline-health":
        d = pipeline_health()
    else:
        d = DASHBOARDS[name](t)
    data: dict[str, Any] = json.loads(json.dumps(d.to_json_data(), cls=DashboardEncoder))
    return data


# -- provisioning -------------------------------------------------------------------------------
def provisioning(
    clickhouse_host: str = "clickhouse", clickhouse_port: int = 9000, prometheus_url: str = "http://prometheus:9090",
    database: str = DEFAULT_DATABASE,
) -> dict[str, str]:  # fmt: skip
    # Grafana runs any SQL a dashboard editor types: its ClickHouse user is read only and sees
    # no keys or invoices (deploy/clickhouse/users-sandmeter.xml); Grafana expands the password
    # variable from its environment (docker-compose.yml)
    clickhouse = {"host": clickhouse_host, "port": clickhouse_port, "protocol": "native",
                  "username": "sandmeter_dashboards", "defaultDatabase": database}  # fmt: skip
    datasources = {
        "apiVersion": 1,
        "datasources": [
            {"name": "ClickHouse", "uid": CH_UID, "type": CH_TYPE, "jsonData": clickhouse,
             "secureJsonData": {"password": "$CLICKHOUSE_DASHBOARDS_PASSWORD"}},
            {"name": "Prometheus", "uid": PROM_UID, "type": "prometheus", "url": prometheus_url, "access": "proxy",
             "isDefault": True},
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
        "grafana/provisioning/datasources/sandmeter.yaml": json.dumps(datasources, indent=2) + "\n",
        "grafana/provisioning/dashboards/sandmeter.yaml": json.dumps(providers, indent=2) + "\n",
    }


def files(
    plans: Path = DEFAULT_PLANS, webhook_url: str = alerting.DEFAULT_WEBHOOK_URL, database: str = DEFAULT_DATABASE
) -> dict[str, str]:
    """Every generated file, by path relative to the output directory."""
    out = {
        f"grafana/dashboards/{name}.json": json.dumps(dashboard_json(name, plans, database), indent=2, sort_keys=True)
        + "\n"
        for name in DASHBOARDS
    }
    out.update(provisioning(database=database))
    out["prometheus/rules/sandmeter.rules.yml"] = rules.rules_yaml()
    out["prometheus/prometheus.yml"] = alerting.prometheus_yaml()
    out["alertmanager/alertmanager.yml"] = alerting.alertmanager_yaml(webhook_url)
    return out


def write_all(
    out: Path, plans: Path = DEFAULT_PLANS, webhook_url: str = alerting.DEFAULT_WEBHOOK_URL,
    database: str = DEFAULT_DATABASE,
) -> list[Path]:  # fmt: skip
    written = []
    for rel, text in files(plans, webhook_url, database).items():
        p = out / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        written.append(p)
    return written
