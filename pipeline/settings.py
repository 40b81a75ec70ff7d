"""`sandmeter process` settings (SANDMETER_PROCESSOR_*) and `sandmeter migrate` settings (SANDMETER_MIGRATE_*)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from contracts.names import TOPIC_ALERTS, TOPIC_DEADLETTER, TOPIC_SAMPLES
from contracts.settings import ClickHousePart, KafkaPart, LogPart, MetricsPart


class ProcessorSettings(KafkaPart, ClickHousePart, MetricsPart, LogPart):
    """Kafka -> accounting -> ClickHouse."""

    model_config = SettingsConfigDict(env_prefix="SANDMETER_PROCESSOR_", frozen=True)

    topic: str = TOPIC_SAMPLES
    deadletter_topic: str = TOPIC_DEADLETTER
    alerts_topic: str = TOPIC_ALERTS
    group_id: str = "sandmeter-processor"
    # Tansu (and Kafka) hold a group join for about the session timeout: keep it short.
    session_timeout_ms: int = 6000
    # a flush blocked longer than this (ClickHouse away) leaves the group; the checkpoints make
    # the rejoin safe (docs/operations.md)
    max_poll_interval_ms: int = Field(300_000, gt=0)
    # how long the broker may hold a fetch that finds nothing new: Tansu answers a fetch only
    # when this runs out, not when data arrives (kafka-python's 500 ms default: 130 ms median
    # delivery, measured), so it bounds how late a record is seen; Kafka answers at once anyway
    fetch_max_wait_ms: int = Field(50, gt=0)
    flush_max_samples: int = Field(200_000, gt=0)
    flush_interval_s: float = Field(1.0, gt=0)
    keep_raw_samples: bool = True
    # raw-sample days older than this are dropped whole (checked hourly); 0 keeps them all
    raw_retention_days: int = Field(7, ge=0)
    # rules naming the function (workload) of each sandbox, for scale recommendations
    functions_file: Path | None = None
    # state and offsets go to ClickHouse this often; Kafka offsets are committed after them
    checkpoint_interval_s: float = Field(10.0, ge=0)
    # samples this much older than their series' state are late; stopped sandboxes' state is
    # dropped once they have been silent this long
    lateness_s: float = Field(600.0, gt=0)
    # byte counters (IO, network) cannot move faster than this; a faster rise is rejected (too_fast)
    max_counter_rate_per_s: float = Field(1e12, gt=0)
    # validation (docs/operations.md, "What the processor refuses"): a sandbox's physical limits
    max_sandbox_cpus: float = Field(512.0, gt=0)  # its spec's ceiling; CPU rate bound while the spec is unknown
    cpu_headroom_cores: float = Field(1.0, ge=0)  # CPU above the spec: QEMU and virtiofsd outside the guest
    max_sandbox_memory_bytes: int = Field(1 << 42, gt=0)  # 4 TiB
    # how much later than its stamp a counter may have been read: a collector stamps a source's
    # reading when it starts and reads sandbox after sandbox, for up to its SOURCE_TIMEOUT_S (2 s)
    counter_slack_ms: int = Field(2000, ge=0)
    # a batch stamped later than now + this is dead-lettered (bad_timestamp), as is one older than
    # LATENESS_S + RAW_RETENTION_DAYS (31 days when that is 0)
    max_clock_skew_s: float = Field(300.0, ge=0)
    max_message_bytes: int = Field(32 << 20, gt=0)  # larger records are dead-lettered (too_large)
    max_batch_samples: int = Field(5_000_000, gt=0)  # as are batches announcing more samples
    # SIGTERM (and a revocation) push what was read to ClickHouse for at most this long
    shutdown_timeout_s: float = Field(5.0, gt=0)
    metrics_port: int = Field(9465, ge=0, le=65535)


class MigrateSettings(ClickHousePart):
    """`sandmeter migrate`: the schema owner's ClickHouse user (DDL), never the processor's."""

    model_config = SettingsConfigDict(env_prefix="SANDMETER_MIGRATE_", frozen=True)

    # wait this long for ClickHouse to answer before giving up (a container starting next to it);
    # a refused login fails at once
    wait_s: float = Field(0.0, ge=0)


class RetentionSettings(ClickHousePart, LogPart):
    """`sandmeter retention`: the admin's ClickHouse user (dropping a partition is DDL)."""

    model_config = SettingsConfigDict(env_prefix="SANDMETER_RETENTION_", frozen=True)

    # raw samples are kept this many days (0: forever); keep it equal to the processor's
    # SANDMETER_PROCESSOR_RAW_RETENTION_DAYS, which refuses batches older than that
    raw_days: int = Field(7, ge=0)
    function_load_days: int = Field(2, ge=1)
