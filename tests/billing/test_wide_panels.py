"""The tenant usage dashboard stays right when a tenant's sums pass 2^64, as the billing reads do
(test_wide_sums): ClickHouse's sum of UInt64 is a UInt64 and wraps silently (a busy tenant's month
of allocated byte-ms is past 2^64), so the panels sum as Float64. Each panel query runs as
Grafana would send it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from billing_seed import interval, write_usage
from grafana_macros import render_sql, targets

from contracts.quantities import GIB, HOUR_MS
from dashboards import generate as g

pytestmark = pytest.mark.clickhouse
T0 = 1_790_000_000_000 // HOUR_MS * HOUR_MS
WIDE = ("Used memory (GiB-ms)", "Allocated memory (GiB-ms)", "IO read + write", "Network rx + tx")
BIG, SANDBOXES = 2**62 + 12345, 5  # one interval's byte-ms (the writer stores < 2^63), in five sandboxes


def test_memory_and_byte_panels_do_not_wrap_past_uint64(db: tuple[str, Any]) -> None:
    name, ch = db
    wide = {"mem_alloc_byte_ms": BIG, "mem_used_byte_ms": BIG, "io_read_bytes": BIG, "net_tx_bytes": BIG}
    rows = [interval("wide", f"s{i}", T0 + 1000, T0 + 6000, 7) | wide for i in range(SANDBOXES)]
    write_usage(ch, rows)
    truth = SANDBOXES * BIG
    assert truth > 2**64
    board = json.loads(json.dumps(g.dashboard_json("tenant-usage", database=name)))
    seen: dict[str, float] = {}
    for panel, target in targets(board):
        sql = render_sql(target["rawSql"], T0 // 1000, T0 // 1000 + 3600, 60, {"tenant": ["wide"]})
        if "mem_used_gib_ms" in sql and "LIMIT 200" in sql:  # the drill-down: one row per sandbox
            continue
        got = ch.execute(sql)
        if panel["title"] in WIDE:
            assert len(got) == 1, panel["title"]
            seen[panel["title"]] = float(got[0][-1])
    assert seen["Used memory (GiB-ms)"] == pytest.approx(truth / GIB, rel=1e-12)
    assert seen["Allocated memory (GiB-ms)"] == pytest.approx(truth / GIB, rel=1e-12)
    io = sum(r["io_read_bytes"] + r["io_write_bytes"] for r in rows)
    net = sum(r["net_rx_bytes"] + r["net_tx_bytes"] for r in rows)
    assert seen["IO read + write"] == pytest.approx(io, rel=1e-12)
    assert seen["Network rx + tx"] == pytest.approx(net, rel=1e-12)
