"""Dashboards and alert rules against what a real run produced (the `fault_run` fixture):
every ClickHouse panel query returns rows, every variable resolves, and every metric a
Prometheus panel or rule names is exported on the real /metrics of a collector, the processor,
the API or the scale publisher."""

from __future__ import annotations

import re
from typing import Any

import pytest
from grafana_macros import render_sql, targets

from contracts.clickhouse import tables
from dashboards import generate as g
from dashboards import rules

pytestmark = pytest.mark.e2e
PROMETHEUS_OWN = {"up"}  # made by Prometheus for every target, not by a service
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}


def promql_metrics(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords or labels."""
    e = re.sub(r'"[^"]*"', "", expr)
    e = re.sub(r"\{[^}]*\}", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", e)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e):
        rest = e[m.end() :].lstrip()
        if not rest.startswith("(") and m[0] not in PROMQL_WORDS:
            names.add(m[0])
    return names


def exported(text: str) -> set[str]:
    """Every name /metrics serves: sample names, and each declared family with its suffixes."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, fam, kind = line.split()[:4]
            suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}.get(kind, ("",))
            names |= {fam + s for s in suffixes}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_promql_metrics_finds_names_and_skips_functions_and_labels() -> None:
    expr = 'histogram_quantile(0.99, sum by (le, source) (rate(a_seconds_bucket{x="y"}[5m]))) / b_total or up == 0'
    assert promql_metrics(expr) == {"a_seconds_bucket", "b_total", "up"}


def test_every_clickhouse_panel_query_returns_rows(fault_run: Any) -> None:
    ch = fault_run.ch
    from_s, to_s = fault_run.from_ms // 1000 - 60, fault_run.to_ms // 1000 + 60
    variables: dict[str, list[str]] = {}
    db = tables(ch).database
    for name in g.DASHBOARDS:
        for v in g.dashboard_json(name, database=db).get("templating", {}).get("list", []):
            values = [str(r[0]) for r in ch.execute(v["query"])]
            assert values, (name, v["name"], "variable resolves to nothing")
            variables[v["name"]] = values
    checked = 0
    for name in g.DASHBOARDS:
        for panel, t in targets(g.dashboard_json(name, database=db)):
            if panel["datasource"]["uid"] != g.CH_UID:
                continue
            sql = render_sql(t["rawSql"], from_s, to_s, 10, variables)
            try:
                rows = ch.execute(sql)
            except Exception as exc:  # name the panel, not only ClickHouse's stack trace
                pytest.fail(f"{name} / {panel['title']}: {str(exc).splitlines()[0]}\n{sql}")
            assert rows, (name, panel["title"], sql)
            checked += 1
    print(f"{checked} ClickHouse panel queries returned rows; variables {sorted(variables)}")
    assert checked >= 12


def test_every_metric_a_panel_or_rule_names_is_on_a_real_metrics_page(fault_run: Any) -> None:
    served = set().union(*(exported(text) for text in fault_run.metrics_text.values()))
    assert set(fault_run.metrics_text) == {"processor", "collector", "api", "scale"}
    exprs = [a.expr for a in rules.ALERTS] + [
        t["expr"]
        for name in g.DASHBOARDS
        for panel, t in targets(g.dashboard_json(name))
        if panel["datasource"]["uid"] == g.PROM_UID
    ]
    used = set().union(*(promql_metrics(e) for e in exprs)) - PROMETHEUS_OWN
    assert len(used) >= 15
    assert used <= served, sorted(used - served)
