"""Retention (`sandmeter retention`): drops day partitions past their keep, as the admin.

Raw samples keep `raw_days` days (0: forever) and function load two days (scale
recommendations look back minutes; two days are for inspection). Dropping a partition is DDL:
on ClickHouse 18.16 only the admin may (the processor's user has `allow_ddl = 0`, or it could
write into any database: docs/deployment.md, Users), so retention is a job of its own, run on a
schedule (hourly is plenty) rather than a thread of the processor. On a cluster it drops each
shard's local partitions on that shard's leader replica (pipeline/shards.py). Idempotent: a
run after a run drops nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

from contracts import names as n
from pipeline import shards

FUNCTION_LOAD_DAYS: Final = 2


def day_before(now_ms: int, days: int) -> int:
    """YYYYMMDD of the day `days` before now (UTC): partitions older than it go."""
    return int(time.strftime("%Y%m%d", time.gmtime(now_ms / 1000 - days * 86400)))


def retain(
    ch: Any, now_ms: int, raw_days: int, function_load_days: int = FUNCTION_LOAD_DAYS, cluster: str = "",
    connect: Callable[[str, int], Any] | None = None, progress: Callable[[str, str], None] | None = None,
) -> dict[str, list[str]]:  # fmt: skip
    """Drops the expired day partitions (on a cluster through `connect(host, port)` to each
    host); returns table -> the partitions it dropped."""
    keep = {n.T_FUNCTION_LOAD: function_load_days} | ({n.T_SAMPLES: raw_days} if raw_days else {})
    out: dict[str, list[str]] = {}
    for table, days in keep.items():
        out[table] = shards.drop_days_before(ch, table, day_before(now_ms, days), cluster, connect)
        for part in out[table]:
            if progress is not None:
                progress(table, part)
    return out
