-- The minute rollup per tenant, all sandboxes summed: what the API reads for a range on whole
-- minutes that is not split by sandbox (a day of minutes is 1,440 rows instead of 1,440 per
-- sandbox). Recomputed by the processor with the other rollups, before each checkpoint, from
-- `usage_minute FINAL` for the same dirty buckets; `intervals` (the sum of the minute rows'
-- `intervals`: how many deduplicated intervals the row sums) is the version, as in 0004.
-- The usage columns are Decimal128(0), not UInt64: one sandbox's minute fits a UInt64, but a
-- tenant has no documented cap on sandboxes, and a UInt64 sum of many would wrap silently.
-- Decimal128 holds the sum of 5e18 maximal UInt64 values. Readers use FINAL.
CREATE TABLE IF NOT EXISTS usage_tenant_minute (
    tenant String,
    minute_ms UInt64,
    cpu_used_us Decimal128(0),
    vcpu_alloc_mcpu_ms Decimal128(0),
    mem_used_byte_ms Decimal128(0),
    mem_alloc_byte_ms Decimal128(0),
    io_read_bytes Decimal128(0),
    io_write_bytes Decimal128(0),
    net_rx_bytes Decimal128(0),
    net_tx_bytes Decimal128(0),
    intervals UInt64
) ENGINE = ReplacingMergeTree(intervals)
PARTITION BY toYYYYMM(toDateTime(intDiv(minute_ms, 1000)))
ORDER BY (tenant, minute_ms);
