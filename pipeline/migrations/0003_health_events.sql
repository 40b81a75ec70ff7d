-- Incident opens and closes (qemu_hang, io_stall, host_disk_stall) with their evidence.
-- An incident is (kind, node, sandbox_id, disk, opened_ms): a sandbox's has disk '', a host
-- disk's has sandbox_id and tenant '' (amended in place on 2026-11-30, see docs/architecture.md).
-- A replay that decides the same writes the same row, which the key deduplicates.
CREATE TABLE IF NOT EXISTS health_events (
    kind String,
    event String,
    node String,
    sandbox_id String,
    tenant String,
    disk String DEFAULT '',
    ts_ms UInt64,
    opened_ms UInt64,
    incident_id String,
    evidence String
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(toDateTime(intDiv(ts_ms, 1000)))
ORDER BY (kind, node, sandbox_id, disk, opened_ms, event);
