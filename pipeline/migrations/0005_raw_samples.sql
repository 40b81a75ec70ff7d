-- Raw samples, narrow: a series id, a time and a value per row, all numbers, so a million
-- samples a second insert and sort cheaply. The id is a 64-bit hash of (node, sandbox,
-- metric, labels) computed by the processor; `raw_series` names each id once. Retention
-- drops whole days (the processor's RAW_RETENTION_DAYS). (0001 had a wide `samples_raw`
-- with five String columns per sample; fresh installs no longer create it.)
CREATE TABLE IF NOT EXISTS raw_samples (
    series_id UInt64,
    ts_ms UInt64,
    value Float64
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(toDateTime(intDiv(ts_ms, 1000)))
ORDER BY (series_id, ts_ms);

CREATE TABLE IF NOT EXISTS raw_series (
    series_id UInt64,
    node String,
    sandbox_id String,
    tenant String,
    metric String,
    labels String,
    first_ms UInt64
) ENGINE = ReplacingMergeTree
ORDER BY series_id;
