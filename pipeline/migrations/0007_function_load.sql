-- Per-function load for scale recommendations: one row per usage interval of a sandbox,
-- with the function it belongs to (pipeline/functions.py), its spec and, where the sandbox
-- exports one, its in-flight requests gauge (`inflight` < 0: none). Deterministic rows,
-- deduplicated like usage_intervals. Days older than two are dropped by the processor.
CREATE TABLE IF NOT EXISTS function_load (
    tenant String,
    function String,
    sandbox_id String,
    node String,
    start_ms UInt64,
    end_ms UInt64,
    cpu_used_us UInt64,
    vcpu_milli UInt32,
    inflight Float64,
    batch_id String
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(toDateTime(intDiv(end_ms, 1000)))
ORDER BY (tenant, function, end_ms, sandbox_id, batch_id);
