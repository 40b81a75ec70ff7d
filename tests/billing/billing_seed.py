"""Data for the billing tests, written the way the processor writes it (usage + its rollups)."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from contracts import names as n
from contracts.clickhouse import tables
from contracts.names import databases
from pipeline.accounted import Accounted
from pipeline.accounting import USAGE_COLUMNS
from pipeline.rollup import DirtyBuckets
from pipeline.writer import ClickHouseWriter

DAY = 86_400_000


def interval(tenant: str, sandbox: str, start: int, end: int, cpu_us: int, mcpu: int = 1000) -> dict[str, Any]:
    return {
        "tenant": tenant, "sandbox_id": sandbox, "node": "n1", "start_ms": start, "end_ms": end, "cpu_used_us": cpu_us,
        "vcpu_alloc_mcpu_ms": mcpu * (end - start), "mem_used_byte_ms": 0,
        "mem_alloc_byte_ms": (1 << 30) * (end - start),
        "io_read_bytes": 250_000_000, "io_write_bytes": 250_000_000, "net_rx_bytes": 1_000_000, "net_tx_bytes": 0,
        "batch_id": f"{sandbox}/{end}",
    }  # fmt: skip


def write_usage(ch: Any, rows: list[dict[str, Any]]) -> None:
    """Usage intervals and the minute and hour rollups over them."""
    df = pd.DataFrame(rows, columns=list(USAGE_COLUMNS))
    writer = ClickHouseWriter(ch, keep_raw=False)
    writer.write(writer.prepare(Accounted(usage=df)))
    dirty = DirtyBuckets()
    dirty.note(df)
    writer.roll(dirty.take())


def daily_usage(tenants: tuple[str, ...], sandboxes: int, start_ms: int, days: int) -> list[dict[str, Any]]:
    """One 5 s interval per tenant, sandbox and day, each a little different."""
    return [
        {**interval(t, f"{t}-sb{s}", start_ms + d * DAY + s * 1000, start_ms + d * DAY + s * 1000 + 5000,
                    1234 * (d + 1) + s),
         "batch_id": f"{t}/{s}/{d}"}
        for t in tenants for s in range(sandboxes) for d in range(days)
    ]  # fmt: skip


def write_incidents(ch: Any, tenant: str, count: int, opened_ms: int) -> None:
    """`count` io_stall incidents of the tenant's sandboxes, every other one closed."""
    rows = []
    for i in range(count):
        opened = opened_ms + i * 1000
        base = {"kind": "io_stall", "node": "n1", "sandbox_id": f"{tenant}-sb{i}", "tenant": tenant, "disk": "",
                "opened_ms": opened, "incident_id": f"io_stall/n1/{tenant}-sb{i}/{opened}"}  # fmt: skip
        rows.append({**base, "event": "open", "ts_ms": opened + 60_000, "evidence": json.dumps({"avg10": 12.5})})
        if i % 2:
            rows.append({**base, "event": "close", "ts_ms": opened + 120_000, "evidence": "{}"})
    ch.execute(f"INSERT INTO {n.T_HEALTH} VALUES", rows, settings={"use_numpy": False})


def write_load(ch: Any, tenant: str, function: str, now_ms: int) -> None:
    """Three sandboxes of one function, busy over the 200 s before `now_ms`."""
    rows = [
        {"tenant": tenant, "function": function, "sandbox_id": f"s{i}", "node": "n",
         "start_ms": now_ms - 2000 - s * 1000, "end_ms": now_ms - 1000 - s * 1000, "cpu_used_us": 500_000,
         "vcpu_milli": 1000, "inflight": -1.0, "batch_id": f"n-{s}"}
        for i in range(3) for s in range(200)
    ]  # fmt: skip
    ch.execute(f"INSERT INTO {n.T_FUNCTION_LOAD} VALUES", rows, settings={"use_numpy": False})


def footprint(ch: Any) -> dict[str, tuple[int, int]]:
    """Per table of the database: (rows, newest block number). Any insert raises the table's
    block number, even if merged away since; merges keep it, and rows are counted as readers
    see them (FINAL where the engine deduplicates), so a background merge changes neither."""
    parts = ch.execute(
        "SELECT database, table, max(max_block_number) FROM system.parts WHERE database IN %(d)s "
        "GROUP BY database, table",
        {"d": databases(tables(ch).database)},
        settings={"use_numpy": False},
    )
    blocks = {f"{d}.{t}": int(b) for d, t, b in parts}
    found = ch.execute(
        "SELECT database, name, engine FROM system.tables WHERE database IN %(d)s",
        {"d": databases(tables(ch).database)},
        settings={"use_numpy": False},
    )
    out = {}
    for d, t, engine in found:
        final = " FINAL" if "Replacing" in str(engine) else ""
        rows = int(ch.execute(f"SELECT count() FROM {d}.{t}{final}", settings={"use_numpy": False})[0][0])
        out[f"{d}.{t}"] = (rows, blocks.get(f"{d}.{t}", -1))
    return out
