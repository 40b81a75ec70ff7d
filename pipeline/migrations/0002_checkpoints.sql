-- Processor checkpoints: the accounting state of one Kafka partition's nodes and the next
-- offset to read, written after the flush they follow. The newest offset wins, so a
-- processor that lost its partitions cannot roll a newer checkpoint back. `health` holds the
-- health detector's state of those nodes (JSON), so an incident open across a restart or a
-- rebalance keeps its start and is not reported twice.
CREATE TABLE IF NOT EXISTS processor_checkpoints (
    topic String,
    partition UInt32,
    offset UInt64,
    saved_ms UInt64,
    series UInt64,
    state String,
    health String
) ENGINE = ReplacingMergeTree(offset)
PARTITION BY topic
ORDER BY (topic, partition);
