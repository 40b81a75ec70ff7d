"""The usage quantities: what is metered, in which integer unit, and how it is billed.

One definition for the processor's usage columns, the rollups, the API's metrics, the plan
metrics that rating prices and the dashboards' cost SQL. Column values are exact integers;
every conversion to an API or plan unit is a division by an exact integer divisor.
"""

from dataclasses import dataclass
from typing import Final

MINUTE_MS: Final = 60_000
HOUR_MS: Final = 3_600_000
GIB: Final = 1 << 30


@dataclass(frozen=True)
class Quantity:
    """One metered quantity: a UInt64 column of usage_intervals and of the rollups."""

    column: str
    api_name: str  # the metric the API serves
    api_divisor: int  # column units per API unit, a power of ten (so the API value is exact)


QUANTITIES: Final = (
    Quantity("cpu_used_us", "cpu_used_ms", 1000),
    Quantity("vcpu_alloc_mcpu_ms", "vcpu_alloc_ms", 1000),
    Quantity("mem_used_byte_ms", "mem_used_byte_ms", 1),
    Quantity("mem_alloc_byte_ms", "mem_alloc_byte_ms", 1),
    Quantity("io_read_bytes", "io_read_bytes", 1),
    Quantity("io_write_bytes", "io_write_bytes", 1),
    Quantity("net_rx_bytes", "net_rx_bytes", 1),
    Quantity("net_tx_bytes", "net_tx_bytes", 1),
)
COLUMNS: Final = tuple(q.column for q in QUANTITIES)
BY_API_NAME: Final = {q.api_name: q for q in QUANTITIES}


@dataclass(frozen=True)
class PlanMetric:
    """A priced metric: the sum of `columns` divided by `divisor`, in `unit`."""

    name: str
    unit: str
    description: str
    columns: tuple[str, ...]
    divisor: int

    def sql(self) -> str:
        """Its quantity over a group of usage rows, as ClickHouse SQL (a float, for charts).

        Summed as Float64: a UInt64 `sum()` wraps silently past 2**64 (a busy tenant's month of
        allocated memory in byte-ms is past it), and a chart needs no more than a float's digits."""
        return f"{float_sum(*self.columns)} / {self.divisor}"


def exact_sum(column: str) -> str:
    """ClickHouse SQL summing a UInt64 usage column over a group exactly: as Decimal128, since a
    UInt64 `sum()` wraps silently past 2**64 (many sandboxes, a month) and Decimal128 holds the
    sum of 5e18 maximal UInt64 values."""
    return f"sum(toDecimal128({column}, 0))"


def float_sum(*columns: str) -> str:
    """ClickHouse SQL summing UInt64 usage columns over a group as Float64, which cannot wrap."""
    return f"sum({' + '.join(f'toFloat64({c})' for c in columns)})"


PLAN_METRICS: Final = (
    PlanMetric("vcpu_alloc_ms", "vCPU-ms", "allocated vCPU time", ("vcpu_alloc_mcpu_ms",), 1000),
    PlanMetric("cpu_used_ms", "CPU-ms", "CPU time used", ("cpu_used_us",), 1000),
    PlanMetric("mem_alloc_gib_ms", "GiB-ms", "allocated memory time", ("mem_alloc_byte_ms",), GIB),
    PlanMetric("io_gb", "GB", "disk IO read + written", ("io_read_bytes", "io_write_bytes"), 10**9),
    PlanMetric("net_gb", "GB", "network received + sent", ("net_rx_bytes", "net_tx_bytes"), 10**9),
)
PLAN_METRIC: Final = {m.name: m for m in PLAN_METRICS}
# the usage columns some plan metric prices (memory used is metered and served, not priced)
PRICED_COLUMNS: Final = tuple(c for c in COLUMNS if any(c in m.columns for m in PLAN_METRICS))
