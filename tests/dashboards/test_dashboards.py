"""Generated dashboards: well-formed, committed as generated, provisioned by compose, documented."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from grafana_macros import render_sql, targets

from dashboards import alerting
from dashboards import generate as g

ROOT = Path(__file__).resolve().parents[2]
MACROS = {"__fromTime", "__toTime", "__interval_s", "__all"}


def test_every_panel_has_a_data_source_a_query_and_a_unique_id() -> None:
    for name in g.DASHBOARDS:
        d = g.dashboard_json(name)
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids), name
        variables = {v["name"] for v in d.get("templating", {}).get("list", [])}
        for panel, t in targets(d):
            uid = panel["datasource"]["uid"]
            assert uid in (g.CH_UID, g.PROM_UID) and t["datasource"]["uid"] == uid, (name, panel["title"])
            query = t.get("rawSql") if uid == g.CH_UID else t.get("expr")
            assert query and query.strip(), (name, panel["title"])
            used = set(re.findall(r"\$\{?(\w+)", query)) - MACROS
            assert used <= variables, (name, panel["title"], used - variables)
        assert all(p["targets"] for p in d["panels"]), name


def test_variables_are_queries_on_the_clickhouse_source() -> None:
    for name in g.DASHBOARDS:
        for v in g.dashboard_json(name).get("templating", {}).get("list", []):
            assert v["datasource"]["uid"] == g.CH_UID and v["query"].startswith("SELECT DISTINCT"), (name, v)


def test_the_committed_deploy_directory_is_what_the_code_generates() -> None:
    for rel, text in g.files().items():
        path = ROOT / "deploy" / rel
        assert path.exists(), f"{rel} missing: run `sandmeter dashboards --out deploy`"
        assert path.read_text() == text, f"{rel} is stale: run `sandmeter dashboards --out deploy`"


def test_compose_mounts_the_generated_dashboards_provisioning_and_rules() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    mounts = {
        v.split(":")[0]: v.split(":")[1]
        for s in ("grafana", "prometheus", "alertmanager")
        for v in services[s]["volumes"]
    }
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert mounts["./deploy/grafana/dashboards"] == "/var/lib/grafana/dashboards"
    assert mounts["./deploy/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert mounts["./deploy/prometheus/rules"] == "/etc/prometheus/rules"
    assert mounts["./deploy/alertmanager/alertmanager.yml"] == "/etc/alertmanager/alertmanager.yml"
    provider = yaml.safe_load(g.provisioning()["grafana/provisioning/dashboards/sandmeter.yaml"])
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    prom = yaml.safe_load(alerting.prometheus_yaml())
    assert prom["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    am = prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"][0]
    assert am.split(":")[0] == "alertmanager" and any(
        p.endswith(":" + am.split(":")[1]) for p in services["alertmanager"]["ports"]
    )
    # the plugin the dashboards use is baked into the Grafana image compose builds
    assert services["grafana"]["build"] == "./deploy/grafana"
    assert f"plugins install {g.CH_TYPE} " in (ROOT / "deploy" / "grafana" / "Dockerfile").read_text()


def test_operations_doc_gives_each_dashboard_its_purpose() -> None:
    ops = (ROOT / "docs" / "operations.md").read_text()
    for name in g.DASHBOARDS:
        title = g.dashboard_json(name)["title"]
        assert f"**{title}**" in ops, title
        assert (g.DASHBOARDS[name].__doc__ or "").strip(), name


def test_render_sql_expands_macros_and_variables_as_grafana_does() -> None:
    sql = "SELECT $__interval_s FROM t WHERE " + g.in_range("ts_ms") + " AND " + g.TENANTS
    out = render_sql(sql, 100, 200, 60, {"tenant": ["a", "o'b"]})
    assert out == (
        "SELECT 60 FROM t WHERE ts_ms >= toUInt64(toDateTime(100)) * 1000 AND ts_ms < toUInt64(toDateTime(200)) "
        "* 1000 AND tenant IN ('a','o\\'b')"
    )


def test_cost_panels_price_every_plan_metric_from_the_plan_files() -> None:
    from billing.plans import PLAN_METRICS, load_book

    assert set(g.PLAN_SQL) == set(PLAN_METRICS)
    sql, currency = g.list_price(load_book(ROOT / "plans"))
    plan = load_book(ROOT / "plans").versions["standard"][-1]
    assert currency == plan.currency and all(str(ln.tiers[0].price) in sql for ln in plan.lines)
    titles = [p["title"] for p in g.dashboard_json("tenant-usage")["panels"]]
    assert any(t.startswith("Cost at list price") for t in titles)
    assert "Top 10 tenants by cost at list price" in titles


def test_joins_are_portable_between_clickhouse_18_16_and_current() -> None:
    """ANY JOIN keeps one row per key on both sides on current ClickHouse (not on 18.16), and a
    joined subquery needs an alias there: neither may appear in a generated query."""
    for name in g.DASHBOARDS:
        for panel, t in targets(g.dashboard_json(name)):
            sql = t.get("rawSql") or ""
            assert " ANY " not in sql.upper(), (name, panel["title"])
            for m in re.finditer(r"JOIN \(", sql):
                depth, i = 1, m.end()
                while depth:
                    depth += {"(": 1, ")": -1}.get(sql[i], 0)
                    i += 1
                assert re.match(r"\s+AS \w+", sql[i:]), (name, panel["title"], "a joined subquery without an alias")
