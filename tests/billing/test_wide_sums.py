"""A tenant's sums past 2^64 (many large sandboxes over a month) are exact from every table the
cost, the invoices and the usage route read: ClickHouse's sum of UInt64 is a UInt64 and would
wrap silently, so every read sums as Decimal128."""

from __future__ import annotations

from typing import Any

import pytest
from billing_seed import interval, write_usage

from billing.invoices import usage_sums
from billing.usage import UsageQuery, run_usage, source
from contracts.names import T_USAGE, T_USAGE_HOUR, T_USAGE_TENANT_MINUTE
from contracts.quantities import HOUR_MS, MINUTE_MS

pytestmark = pytest.mark.clickhouse
T0 = 1_790_000_000_000 // HOUR_MS * HOUR_MS
BIG, SANDBOXES = 2**62 + 12345, 5  # one interval's allocated byte-ms (the writer stores < 2^63), in five sandboxes


def test_sums_beyond_uint64_are_exact_from_every_table(db: tuple[str, Any]) -> None:
    _, ch = db
    rows = [interval("wide", f"s{i}", T0 + 1000, T0 + 6000, 7) | {"mem_alloc_byte_ms": BIG} for i in range(SANDBOXES)]
    write_usage(ch, rows)
    assert SANDBOXES * BIG > 2**64
    for lo, hi, table in (
        (T0, T0 + HOUR_MS, T_USAGE_HOUR),
        (T0, T0 + MINUTE_MS, T_USAGE_TENANT_MINUTE),
        (T0 + 1, T0 + MINUTE_MS, T_USAGE),
    ):
        assert source(lo, hi, None, per_sandbox=False)[0] == table
        sums = usage_sums(ch, "wide", lo, hi)
        assert sums["mem_alloc_byte_ms"] == SANDBOXES * BIG, table
        assert sums["cpu_used_us"] == SANDBOXES * 7, table
        page = run_usage(ch, UsageQuery("wide", lo, hi, "second", ("mem_alloc_byte_ms",), False), 10, None)
        assert page.totals["mem_alloc_byte_ms"] == str(SANDBOXES * BIG), table  # its API unit is the byte-ms
