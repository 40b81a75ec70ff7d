"""Which table answers a usage read: the smallest one that answers it exactly."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from billing.usage import GRANULARITY_MS, source
from contracts.names import T_USAGE, T_USAGE_HOUR, T_USAGE_MINUTE, T_USAGE_TENANT_MINUTE
from contracts.quantities import HOUR_MS, MINUTE_MS

T0 = 1_790_000_000_000 // HOUR_MS * HOUR_MS


@given(
    lo=st.integers(0, 3 * HOUR_MS), span=st.integers(1, 3 * HOUR_MS),
    g=st.sampled_from([None, *GRANULARITY_MS.values()]), per_sandbox=st.booleans(),
)  # fmt: skip
def test_the_table_matches_the_bounds_the_granularity_and_the_split(
    lo: int, span: int, g: int | None, per_sandbox: bool
) -> None:
    f, t = T0 + lo, T0 + lo + span
    table, _, _ = source(f, t, g, per_sandbox=per_sandbox)
    on = lambda size: f % size == 0 and t % size == 0 and (g or 0) % size == 0  # noqa: E731
    if on(HOUR_MS):
        assert table == T_USAGE_HOUR  # hours: the per-sandbox hour rollup, split or not
    elif on(MINUTE_MS):
        assert table == (T_USAGE_MINUTE if per_sandbox else T_USAGE_TENANT_MINUTE)
    else:
        assert table == T_USAGE


def test_a_day_of_minutes_not_split_by_sandbox_reads_the_tenant_minutes() -> None:
    table, bucket, cond = source(T0 + MINUTE_MS, T0 + MINUTE_MS + 86_400_000, MINUTE_MS, per_sandbox=False)
    assert (table, bucket) == (T_USAGE_TENANT_MINUTE, f"intDiv(minute_ms, {MINUTE_MS}) * {MINUTE_MS}")
    assert cond == "minute_ms >= %(lo)s AND minute_ms < %(to_ms)s"
