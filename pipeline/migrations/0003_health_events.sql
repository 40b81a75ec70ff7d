-- Incident opens and closes (qemu_hang, io_stall, host_disk_stall) with their evidence.
-- An incident is (kind, node, sandbox_id, opened_ms); a replay that decides the same writes
-- the same row, which the key deduplicates.
CREATE TABLE IF NOT EXISTS health_events (
    kind String,
    event String,
    node String,
    sandbox_id String,
    tenant String,
    ts_ms UInt64,
    opened_ms UInt64,
    incident_id String,
    evidence String
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(toDateTime(intDiv(ts_ms, 1000)))
ORDER BY (kind, node, sandbox_id, opened_ms, event);
