"""The one place the processor is put together: its clients, its chain, its periodic work.

Every Kafka and ClickHouse client the processor uses is constructed here, from the settings,
so credentials and connection options have one home: the consumer, the producer (dead
letters and alerts), the write connection (plus one for raw samples) on the write worker, and
a maintenance connection (checkpoint loads; rollups and checkpoint saves) on a worker of its own.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry

from contracts.clock import wall_ms
from pipeline.account import AccountStep
from pipeline.accounting import Accountant
from pipeline.batching import BatchStep
from pipeline.commit import CommitStep
from pipeline.deadletter import DeadLetters
from pipeline.decode import DecodeStep
from pipeline.frame import FrameStep
from pipeline.functions import Functions
from pipeline.health import HealthDetector
from pipeline.kafka import Consumer, KafkaConsumerAdapter, KafkaProducerAdapter, Producer
from pipeline.metrics import ProcessorMetrics
from pipeline.partitions import PartitionLoader
from pipeline.periodic import Periodic
from pipeline.processor import Chain, Processor
from pipeline.screen import Limits
from pipeline.settings import ProcessorSettings
from pipeline.validate import Rules, ValidateStep
from pipeline.worker import Worker
from pipeline.write import WriteStep
from pipeline.writer import ClickHouseWriter, open_writer

KEEP_ALL_AGE_DAYS = 31  # the age window when raw samples are kept for ever (RAW_RETENTION_DAYS=0)


def rules(s: ProcessorSettings) -> Rules:
    """Batches older than the lateness window plus the raw retention hold nothing still kept."""
    return Rules(
        max_age_ms=int((s.lateness_s + 86400 * (s.raw_retention_days or KEEP_ALL_AGE_DAYS)) * 1000),
        max_skew_ms=int(s.max_clock_skew_s * 1000),
        max_samples=s.max_batch_samples,
        max_sandbox_cpus=s.max_sandbox_cpus,
        max_memory_bytes=s.max_sandbox_memory_bytes,
    )


def accountant(s: ProcessorSettings) -> Accountant:
    limits = Limits(s.max_sandbox_cpus, s.cpu_headroom_cores, s.max_counter_rate_per_s, s.counter_slack_ms)
    return Accountant(s.max_counter_rate_per_s, limits, Functions.from_file(s.functions_file))


def assemble(
    s: ProcessorSettings, consumer: Consumer, producer: Producer, writer: ClickHouseWriter,
    maintenance: ClickHouseWriter, registry: CollectorRegistry, clock_ms: Callable[[], int] = wall_ms,
) -> Processor:  # fmt: skip
    """The processor over these clients (tests pass their own)."""
    m = ProcessorMetrics(registry)
    dlq = DeadLetters(producer, s.deadletter_topic, m.dlq)
    commit = CommitStep(consumer)
    maintenance_worker = Worker("clickhouse-maintenance")
    # plans (rollups, checkpoints) run beside the rows on the maintenance connection; a caller
    # with one connection for both (a client serves one thread) has them take turns with the rows
    planner = (maintenance, maintenance_worker) if maintenance is not writer else None
    write = WriteStep(commit, writer, Worker("clickhouse-writer"), producer, s.alerts_topic, m, planner=planner)
    health = HealthDetector(forget_after_ms=int(s.lateness_s * 1000))
    frame = FrameStep(write, writer, Worker("raw-framer"))
    account = AccountStep(
        frame, accountant(s), health, dlq, m, clock_ms, s.checkpoint_interval_s, int(s.lateness_s * 1000)
    )
    batch = BatchStep(account, s.flush_max_samples, s.flush_interval_s)
    validate = ValidateStep(batch, dlq, rules(s), clock_ms)
    decode = DecodeStep(validate, dlq, s.max_message_bytes)
    chain = Chain(decode, validate, batch, account, frame, write, commit)
    loader = PartitionLoader(consumer, maintenance, maintenance_worker, account)
    holder: list[Processor] = []
    periodic = Periodic(
        s, consumer, m, lambda: write.newest_written_ms,
        lambda: holder[0].status(), clock_ms,
    )  # fmt: skip
    proc = Processor(consumer, producer, chain, loader, periodic, dlq, m, s.shutdown_timeout_s)
    holder.append(proc)
    return proc


def build_processor(s: ProcessorSettings, registry: CollectorRegistry) -> Processor:
    """The processor with real clients, subscribed to its topic."""
    from kafka import KafkaConsumer, KafkaProducer

    consumer = KafkaConsumerAdapter(
        KafkaConsumer(
            **s.kafka_kwargs(),
            group_id=s.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=max(500, s.session_timeout_ms // 3),
            max_poll_interval_ms=s.max_poll_interval_ms,
            max_partition_fetch_bytes=8 << 20,
            fetch_max_wait_ms=s.fetch_max_wait_ms,
        )
    )
    # a short max_block_ms: a send waits at most that long for metadata, so a stop is never stuck behind it
    producer = KafkaProducerAdapter(KafkaProducer(**s.kafka_kwargs(), acks="all", max_block_ms=2000))
    proc = assemble(
        s,
        consumer,
        producer,
        open_writer(s, s.keep_raw_samples),
        ClickHouseWriter(s.clickhouse(), keep_raw=False, cluster=s.clickhouse_cluster),
        registry,
    )
    consumer.subscribe(s.topic, proc)
    return proc
