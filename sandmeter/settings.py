"""One frozen settings class per deployable, read from SANDMETER_* variables.

Each is built once at the entry point (`sandmeter.cli`) and passed down; nothing below
the entry point reads os.environ.
"""

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class _Base(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore")


class StackSettings(_Base):
    """`sandmeter stack`: the local broker and ClickHouse server on loopback."""

    model_config = SettingsConfigDict(env_prefix="SANDMETER_STACK_", frozen=True)

    state_dir: Path = Path(".sandmeter/stack")
    host: Literal["127.0.0.1"] = "127.0.0.1"
    kafka_port: int = Field(19092, ge=1, le=65535)
    clickhouse_tcp_port: int = Field(19000, ge=1, le=65535)
    clickhouse_http_port: int = Field(18123, ge=1, le=65535)
    start_timeout_s: float = 30.0


class CollectorSettings(_Base):
    """`sandmeter collect`: one agent per bare-metal node."""

    model_config = SettingsConfigDict(env_prefix="SANDMETER_COLLECTOR_", frozen=True)

    node_id: str = "node-local"
    kafka_bootstrap: str = "127.0.0.1:19092"
    topic: str = "sandmeter.samples.v1"
    interval_s: float = Field(5.0, gt=0)
    source_timeout_s: float = Field(2.0, gt=0)
    kata_monitor_url: str = "http://127.0.0.1:8090"
    cgroup_root: Path = Path("/sys/fs/cgroup")
    proc_root: Path = Path("/proc")
    sandbox_dirs: tuple[Path, ...] = (Path("/run/vc/sbs"), Path("/run/kata"))
    # containerd's OCI bundles: CRI labels at sandbox creation, before kata-monitor knows it
    bundle_dirs: tuple[Path, ...] = (Path("/run/containerd/io.containerd.runtime.v2.task/k8s.io"),)
    tenant_label: str = "cri_namespace"
    tenant_map_file: Path | None = None
    # batches wait here until Kafka acknowledges them; one subdirectory per node id
    spool_dir: Path = Path("/var/lib/sandmeter/spool")
    spool_max_bytes: int = Field(256 << 20, gt=0)
    spool_max_batches: int = Field(100_000, gt=0)
    spool_fsync: bool = True
    metrics_host: str = "0.0.0.0"  # the /metrics listener; tests use 127.0.0.1, metrics_port 0 runs none
    metrics_port: int = Field(9464, ge=0, le=65535)
    status_every_s: float = 30.0
    log_level: LogLevel = "INFO"


class ProcessorSettings(_Base):
    """`sandmeter process`: Kafka -> accounting -> ClickHouse."""

    model_config = SettingsConfigDict(env_prefix="SANDMETER_PROCESSOR_", frozen=True)

    kafka_bootstrap: str = "127.0.0.1:19092"
    topic: str = "sandmeter.samples.v1"
    deadletter_topic: str = "sandmeter.samples.dlq"
    alerts_topic: str = "sandmeter.alerts"
    group_id: str = "sandmeter-processor"
    # Tansu (and Kafka) hold a group join for about the session timeout: keep it short.
    session_timeout_ms: int = 6000
    # a flush blocked longer than this (ClickHouse away) leaves the group; the checkpoints make
    # the rejoin safe (docs/operations.md)
    max_poll_interval_ms: int = Field(300_000, gt=0)
    clickhouse_host: str = "127.0.0.1"
    clickhouse_port: int = 19000
    clickhouse_database: str = "default"
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
    max_counter_rate_per_s: float = 1e12
    metrics_host: str = "0.0.0.0"
    metrics_port: int = Field(9465, ge=0, le=65535)
    status_every_s: float = 30.0
    log_level: LogLevel = "INFO"


class ScaleSettings(_Base):
    """`sandmeter scale`: publishes changed scale decisions (docs/autoscaling.md)."""

    model_config = SettingsConfigDict(env_prefix="SANDMETER_SCALE_", frozen=True)

    kafka_bootstrap: str = "127.0.0.1:19092"
    topic: str = "sandmeter.scale-decisions"
    clickhouse_host: str = "127.0.0.1"
    clickhouse_port: int = 19000
    clickhouse_database: str = "default"
    # no decision when the newest load data anywhere is older than this
    stale_s: float = Field(15.0, gt=0)
    metrics_host: str = "0.0.0.0"
    metrics_port: int = Field(9466, ge=0, le=65535)
    status_every_s: float = 30.0
    log_level: LogLevel = "INFO"


class ApiSettings(_Base):
    """`sandmeter api`: the billing API."""

    model_config = SettingsConfigDict(env_prefix="SANDMETER_API_", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    clickhouse_host: str = "127.0.0.1"
    clickhouse_port: int = 19000
    clickhouse_database: str = "default"
    max_rows: int = Field(100_000, gt=0)
    # price plans: *.toml plan versions plus assignments.toml (docs/billing.md)
    plans_dir: Path = Path("plans")
    # a month's invoice stays a draft this long after the month ends, then is finalized
    invoice_grace_s: float = Field(3600.0, ge=0)
    # API keys are re-read from ClickHouse this often: a revocation takes effect within it
    key_cache_s: float = Field(5.0, ge=0)
    # /v1/scale answers 503 when the newest load data anywhere is older than this
    scale_stale_s: float = Field(15.0, gt=0)
    status_every_s: float = 30.0
    log_level: LogLevel = "INFO"
