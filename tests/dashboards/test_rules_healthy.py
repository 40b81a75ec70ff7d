"""An hour of a healthy fleet, with the noise a real one has, fires no alert.

Asserted three ways: every alert name at several times (firing), `ALERTS` at those times
(firing or pending), and `count_over_time(ALERTS{alertstate="firing"}[61m])` over the whole
hour, which also catches an alert firing between the sampled times.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from promtool import API, PROC, SCALE, coll, needs_promtool, run_promtool, series

from contracts import names as n
from dashboards import rules

MINUTES = 61  # samples at 0m .. 60m
TIMES = (5, 15, 30, 45, 60)


def healthy_hour() -> list[dict[str, str]]:
    spool = [1.0 if m % 7 == 3 else 0.0 for m in range(MINUTES)]  # a scrape sometimes sees a batch in flight
    reqs = n.API_REQUEST_SECONDS + "_count"
    out = [series("up", labels, f"1x{MINUTES - 1}") for labels in (PROC, API, SCALE, coll("n1"), coll("n2"))]
    out += [
        series(reqs, {**API, "route": "/v1/tenants/{tenant}/usage", "status": "200"}, "0+30x60"),
        series(reqs, {**API, "route": "/v1/tenants/{tenant}/usage", "status": "404"}, "0+1x60"),
        # a trickle of 500s (one every 2 minutes, 1.6%) under the 5% line, and one burst of 3
        series(reqs, {**API, "route": "/v1/tenants/{tenant}/usage", "status": "500"}, "0+0.5x30 18 18+0.5x29"),
        series(reqs, {**API, "route": "/metrics", "status": "200"}, "0+4x60"),
        # kubelet's probes while ClickHouse restarted: /readyz is not a client
        series(reqs, {**API, "route": "/readyz", "status": "503"}, "0x40 0+6x20"),
        # the publisher's last success falls three minutes behind once (load data briefly stale)
        series(n.SCALE_LAST_SUCCESS, SCALE, "0+60x29 1740 1740 1740 1980+60x27"),
        series(n.PROCESSOR_WRITE_FAILURES, PROC, "0x20 1 2x39"),  # one write retried twice
        series(n.PROCESSOR_SAMPLES, PROC, "0+10000x60"),
        series(n.PROCESSOR_LATE, PROC, "0+2x60"),
        series(n.PROCESSOR_DLQ, {**PROC, "reason": "corrupt"}, "0x60"),
        series(n.PROCESSOR_LAG, {**PROC, "partition": "0"}, "0 120 40 2000 300x57"),
        series(n.PROCESSOR_FRESHNESS, PROC, "3 2 4 90 3x57"),
    ]
    for node in ("n1", "n2"):
        out += [
            series(n.COLLECTOR_BATCHES_SENT, coll(node), "0+12x60"),
            series(n.COLLECTOR_SPOOL_DEPTH, coll(node), spool),
            series(n.COLLECTOR_SPOOL_BYTES, coll(node), [70_000 * v for v in spool]),
            series(n.COLLECTOR_SPOOL_LIMIT, coll(node), f"{256 << 20}x60"),
            series(n.COLLECTOR_SPOOL_DROPPED, {**coll(node), "reason": "full"}, "0x60"),
            # one malformed kata-monitor line at minute 20, nothing after
            series(n.COLLECTOR_SCRAPE_ERRORS, {**coll(node), "source": "kata_monitor"}, "0x20 1x40"),
        ]
    return out


def healthy_test() -> dict[str, Any]:
    return {
        "name": "a healthy hour fires nothing",
        "interval": "1m",
        "input_series": healthy_hour(),
        "alert_rule_test": [
            {"eval_time": f"{m}m", "alertname": a.name, "exp_alerts": []} for m in TIMES for a in rules.ALERTS
        ],
        "promql_expr_test": [{"expr": "ALERTS", "eval_time": f"{m}m", "exp_samples": []} for m in TIMES]
        + [{"expr": 'count_over_time(ALERTS{alertstate="firing"}[61m])', "eval_time": "60m", "exp_samples": []}],
    }


def test_the_healthy_hour_has_series_for_every_metric_the_rules_read() -> None:
    """Every service metric a rule reads, but open incidents: a healthy fleet has none."""
    exprs = " ".join(a.expr for a in rules.ALERTS)
    read = {v for v in vars(n).values() if isinstance(v, str) and v.startswith("sandmeter_") and v in exprs}
    given = {s["series"].split("{")[0].removesuffix("_count") for s in healthy_hour()}
    assert read - given == {n.HEALTH_INCIDENT}


@needs_promtool
def test_a_healthy_hour_fires_nothing(tmp_path: Path) -> None:
    run = run_promtool(tmp_path, rules.rules_yaml(), [healthy_test()])
    assert run.returncode == 0, run.stdout + run.stderr


@needs_promtool
def test_the_healthy_hour_catches_a_rule_made_too_eager(tmp_path: Path) -> None:
    """The hour has the noise each threshold must tolerate: lowering one makes it fire."""
    eager = {
        "SandmeterApiErrors": (f"> {rules.API_ERROR_RATIO_MAX}", "> 0.01"),
        "SandmeterScaleStale": (f"> {rules.SCALE_STALE_AFTER_S}", "> 100"),
        "SandmeterCollectorSpoolGrowing": ("[10m])) > 0 and", "[10m])) >= 0 and"),
    }
    for name, (old, new) in eager.items():
        doc = json.loads(rules.rules_yaml())
        for r in doc["groups"][0]["rules"]:
            if r["alert"] == name:
                assert old in r["expr"], (name, r["expr"])
                r["expr"] = r["expr"].replace(old, new)
        run = run_promtool(tmp_path, json.dumps(doc), [healthy_test()])
        assert run.returncode != 0 and name in run.stdout + run.stderr, name
