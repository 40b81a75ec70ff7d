-- Minute and hour rollups of usage_intervals, per sandbox. An interval counts whole in the
-- bucket holding its last millisecond (as the API's bucketing does). The processor
-- recomputes the buckets its flushes touched from the deduplicated intervals (FINAL) before
-- each checkpoint; `intervals` (how many deduplicated intervals a row sums) is the version,
-- so a recomputation that saw more intervals replaces one that saw fewer, and an identical
-- recomputation (a replay) replaces a row with itself. Readers use FINAL.
CREATE TABLE IF NOT EXISTS usage_minute (
    tenant String,
    sandbox_id String,
    node String,
    minute_ms UInt64,
    cpu_used_us UInt64,
    vcpu_alloc_mcpu_ms UInt64,
    mem_used_byte_ms UInt64,
    mem_alloc_byte_ms UInt64,
    io_read_bytes UInt64,
    io_write_bytes UInt64,
    net_rx_bytes UInt64,
    net_tx_bytes UInt64,
    intervals UInt64
) ENGINE = ReplacingMergeTree(intervals)
PARTITION BY toYYYYMM(toDateTime(intDiv(minute_ms, 1000)))
ORDER BY (tenant, minute_ms, sandbox_id);

CREATE TABLE IF NOT EXISTS usage_hour (
    tenant String,
    sandbox_id String,
    node String,
    hour_ms UInt64,
    cpu_used_us UInt64,
    vcpu_alloc_mcpu_ms UInt64,
    mem_used_byte_ms UInt64,
    mem_alloc_byte_ms UInt64,
    io_read_bytes UInt64,
    io_write_bytes UInt64,
    net_rx_bytes UInt64,
    net_tx_bytes UInt64,
    intervals UInt64
) ENGINE = ReplacingMergeTree(intervals)
PARTITION BY toYYYYMM(toDateTime(intDiv(hour_ms, 1000)))
ORDER BY (tenant, hour_ms, sandbox_id);
