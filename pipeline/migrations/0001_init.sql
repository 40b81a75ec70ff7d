-- Base schema. Runs on ClickHouse 18.16 and current ClickHouse: epoch-ms in UInt64, no
-- DateTime64/TTL/LowCardinality/codecs; retention drops whole partitions.

-- One row per sandbox per processed batch, covering [start_ms, end_ms).
-- Rows are a pure function of the samples, so a replay writes identical rows: the
-- ReplacingMergeTree key dedups them, and billing reads dedup again (FINAL). The batch id is
-- in the key: two batches (a stop's final one and the scrape before it) can end in one ms.
CREATE TABLE IF NOT EXISTS usage_intervals (
    tenant String,
    sandbox_id String,
    node String,
    start_ms UInt64,
    end_ms UInt64,
    cpu_used_us UInt64,
    vcpu_alloc_mcpu_ms UInt64,
    mem_used_byte_ms UInt64,
    mem_alloc_byte_ms UInt64,
    io_read_bytes UInt64,
    io_write_bytes UInt64,
    net_rx_bytes UInt64,
    net_tx_bytes UInt64,
    batch_id String
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(toDateTime(intDiv(end_ms, 1000)))
ORDER BY (tenant, sandbox_id, end_ms, batch_id);

CREATE TABLE IF NOT EXISTS sandbox_lifecycle (
    tenant String,
    sandbox_id String,
    node String,
    event String,
    ts_ms UInt64,
    vcpu_millicores UInt32,
    memory_bytes UInt64,
    batch_id String
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(toDateTime(intDiv(ts_ms, 1000)))
ORDER BY (tenant, sandbox_id, event, ts_ms);

CREATE TABLE IF NOT EXISTS late_samples (
    node String,
    sandbox_id String,
    tenant String,
    metric String,
    labels String,
    ts_ms UInt64,
    value Float64,
    batch_id String,
    reason String,
    received_ms UInt64
) ENGINE = MergeTree
PARTITION BY toYYYYMM(toDateTime(intDiv(ts_ms, 1000)))
ORDER BY (node, sandbox_id, ts_ms);
