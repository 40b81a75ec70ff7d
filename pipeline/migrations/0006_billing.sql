-- API keys: only a SHA-256 of each key's secret is stored. A revocation is a newer row
-- (version = the time of the change); readers take the newest row per key (FINAL).
CREATE TABLE IF NOT EXISTS api_keys (
    key_id String,
    secret_sha256 String,
    role String,
    tenant String,
    created_ms UInt64,
    revoked_ms UInt64,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY key_id;

-- Finalized invoices, frozen: the body is stored as served, byte for byte. `keep` is
-- 2^63 - finalized_ms, so if two API replicas finalize the same month at once the earlier
-- one survives merges; readers take the earliest finalization too.
CREATE TABLE IF NOT EXISTS invoices (
    tenant String,
    period String,
    finalized_ms UInt64,
    keep UInt64,
    body String,
    sha256 String
) ENGINE = ReplacingMergeTree(keep)
ORDER BY (tenant, period);
