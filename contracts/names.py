"""Every name two parts of sandmeter must agree on, defined once and imported everywhere.

Kafka topics, ClickHouse tables, the sample metrics on the wire, the Prometheus metrics each
service exports, health incident kinds and identifier patterns. Dashboards and alert rules are
generated from these, so they cannot drift from the code.
"""

import re
from typing import Final

# Kafka topics
TOPIC_SAMPLES: Final = "sandmeter.samples.v1"
TOPIC_DEADLETTER: Final = "sandmeter.samples.dlq"
TOPIC_ALERTS: Final = "sandmeter.alerts"
TOPIC_SCALE: Final = "sandmeter.scale-decisions"
ALL_TOPICS: Final = (TOPIC_SAMPLES, TOPIC_DEADLETTER, TOPIC_ALERTS, TOPIC_SCALE)

# ClickHouse tables
T_MIGRATIONS: Final = "sandmeter_migrations"
T_SAMPLES: Final = "raw_samples"
T_RAW_SERIES: Final = "raw_series"
T_USAGE: Final = "usage_intervals"
T_LIFECYCLE: Final = "sandbox_lifecycle"
T_HEALTH: Final = "health_events"
T_LATE: Final = "late_samples"
T_CHECKPOINTS: Final = "processor_checkpoints"
T_USAGE_MINUTE: Final = "usage_minute"
T_USAGE_HOUR: Final = "usage_hour"
T_USAGE_TENANT_MINUTE: Final = "usage_tenant_minute"  # per tenant, not per sandbox: the API's unsplit reads
T_API_KEYS: Final = "api_keys"
T_INVOICES: Final = "invoices"
T_FUNCTION_LOAD: Final = "function_load"

# Which database each table lives in, as a suffix of the configured one (its prefix): ClickHouse
# 18.16 separates reads only per database, so tables are grouped by who may read them
# (docs/deployment.md, Users): metering (the API, scale, dashboards), raw (the processor and
# dashboards), internal (the processor only) and billing (the API's key and invoice user).
RAW_DB: Final = "_raw"
INTERNAL_DB: Final = "_internal"
BILLING_DB: Final = "_billing"
DATABASE_SUFFIX: Final = {
    T_USAGE: "", T_USAGE_MINUTE: "", T_USAGE_HOUR: "", T_USAGE_TENANT_MINUTE: "",
    T_HEALTH: "", T_LIFECYCLE: "", T_FUNCTION_LOAD: "",
    T_SAMPLES: RAW_DB, T_RAW_SERIES: RAW_DB, T_LATE: RAW_DB,
    T_CHECKPOINTS: INTERNAL_DB, T_MIGRATIONS: INTERNAL_DB,
    T_API_KEYS: BILLING_DB, T_INVOICES: BILLING_DB,
}  # fmt: skip


def databases(database: str) -> tuple[str, str, str, str]:
    """The four databases of one installation (or test), derived from the configured name."""
    return (database, database + RAW_DB, database + INTERNAL_DB, database + BILLING_DB)


class Tables:
    """Every table's qualified name (`db.table`) for one configured database: the one place SQL
    gets a table name from. `Tables("sandmeter").usage_hour` is `sandmeter.usage_hour`,
    `.api_keys` is `sandmeter_billing.api_keys`."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.usage = self(T_USAGE)
        self.usage_minute = self(T_USAGE_MINUTE)
        self.usage_hour = self(T_USAGE_HOUR)
        self.usage_tenant_minute = self(T_USAGE_TENANT_MINUTE)
        self.health = self(T_HEALTH)
        self.lifecycle = self(T_LIFECYCLE)
        self.function_load = self(T_FUNCTION_LOAD)
        self.samples = self(T_SAMPLES)
        self.raw_series = self(T_RAW_SERIES)
        self.late = self(T_LATE)
        self.checkpoints = self(T_CHECKPOINTS)
        self.migrations = self(T_MIGRATIONS)
        self.api_keys = self(T_API_KEYS)
        self.invoices = self(T_INVOICES)

    def db(self, table: str) -> str:
        """The database `table` lives in."""
        return self.database + DATABASE_SUFFIX[table]

    def __call__(self, table: str) -> str:
        return f"{self.db(table)}.{table}"

    def __repr__(self) -> str:
        return f"Tables({self.database!r})"


# Sample metric names on the wire (the collector's own view, before accounting).
# cgroup v2, summed over the sandbox's pod cgroup and its kata_overhead cgroup.
M_CG_CPU_USAGE_US: Final = "cgroup_cpu_usage_usec"
M_CG_CPU_USER_US: Final = "cgroup_cpu_user_usec"
M_CG_CPU_SYSTEM_US: Final = "cgroup_cpu_system_usec"
M_CG_MEM_CURRENT: Final = "cgroup_memory_current_bytes"
M_CG_IO_RBYTES: Final = "cgroup_io_read_bytes"
M_CG_IO_WBYTES: Final = "cgroup_io_write_bytes"
M_CG_PRESSURE: Final = "cgroup_pressure"  # sub-labels resource=cpu|memory|io, kind=some|full, item
# instance spec
M_SPEC_VCPU_MILLI: Final = "spec_vcpu_millicores"
M_SPEC_MEM_BYTES: Final = "spec_memory_bytes"
# /proc of each sandbox's QEMU and virtiofsd; sub-label proc="qemu"|"virtiofsd"
M_PROC_COUNT: Final = "proc_processes"  # processes found in the sandbox's cgroups
M_PROC_CPU_TICKS: Final = "proc_cpu_ticks"  # item=utime|stime, USER_HZ ticks
M_PROC_CTXT: Final = "proc_ctxt_switches"  # item=voluntary|nonvoluntary
M_PROC_IO: Final = "proc_io_bytes"  # item=rchar|wchar|read_bytes|write_bytes
M_PROC_THREADS: Final = "proc_threads"  # state=all|D|Z: thread counts
M_PROC_THREAD_BLOCKED: Final = "proc_thread_blocked"  # one per thread in D state: thread, tid, wchan; value 1
# the host side of each pod's network (its veth, from the host's /proc/net/dev), in the guest's
# direction: rx = bytes the guest received. Outlives the VM until CNI DEL: billed network bytes.
M_NET_RX_BYTES: Final = "pod_net_rx_bytes"
M_NET_TX_BYTES: Final = "pod_net_tx_bytes"
# host /proc
M_HOST_CPU_MS: Final = "host_cpu_ms"
M_HOST_PROCS_BLOCKED: Final = "host_procs_blocked"
M_HOST_MEMINFO: Final = "host_meminfo_bytes"
M_HOST_LOAD: Final = "host_load"
M_HOST_DISK: Final = "host_diskstat"
M_HOST_PRESSURE: Final = "host_pressure"
# kata-monitor families keep their own names (kata_hypervisor_*, kata_guest_*, ...); their
# kata_hypervisor_netdev is QEMU's view and dies with it: network is billed from pod_net_* above
# requests in flight in a sandbox, where something in the stream exports it per sandbox_id
# (e.g. an agent-side exporter behind kata-monitor); scale recommendations prefer it to CPU
M_INFLIGHT: Final = "kata_sandbox_inflight_requests"

KATA_HYPERVISOR_PREFIX: Final = "kata_hypervisor_"  # QEMU's own series: missing while it hangs
# the agent's RPC count by action; the CheckRequest count is the sandbox's heartbeat
M_KATA_AGENT_RPC_COUNT: Final = "kata_shim_agent_rpc_durations_histogram_milliseconds_count"
M_KATA_GUEST_DISKSTAT: Final = "kata_guest_diskstat"

# Tenant used when a sandbox carries no tenant: metered, never dropped.
UNATTRIBUTED: Final = "unattributed"

# Function (workload) names, as scale recommendations and the API know them
FUNCTION_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")  # \Z: `$` lets a trailing newline in

# Health incident kinds (pipeline/health.py decides them, alert rules and the API name them)
QEMU_HANG: Final = "qemu_hang"
IO_STALL: Final = "io_stall"
HOST_DISK_STALL: Final = "host_disk_stall"
INCIDENT_KINDS: Final = (QEMU_HANG, IO_STALL, HOST_DISK_STALL)

# Why the processor dead-letters a whole record: the `sandmeter-dlq-reason` header and the
# `reason` label of PROCESSOR_DLQ. A closed set; docs/operations.md says what each means.
DLQ_EMPTY: Final = "empty"  # a null value (a tombstone) or no bytes at all
DLQ_TOO_LARGE: Final = "too_large"  # more bytes or samples than a batch may carry
DLQ_TRUNCATED: Final = "truncated"  # shorter than its envelope or header announces
DLQ_CORRUPT: Final = "corrupt"  # bad magic, checksum, compression, meta or indexes
DLQ_UNKNOWN_VERSION: Final = "unknown_version"  # a wire version this processor does not read
DLQ_BAD_KEY: Final = "bad_key"  # no key, or a key that is not the batch's (non-empty) node id
DLQ_BAD_TIMESTAMP: Final = "bad_timestamp"  # a time outside [now - max age, now + clock skew]
DLQ_PROCESSING_ERROR: Final = "processing_error"  # validating or accounting this batch raised
DLQ_REASONS: Final = (
    DLQ_EMPTY, DLQ_TOO_LARGE, DLQ_TRUNCATED, DLQ_CORRUPT, DLQ_UNKNOWN_VERSION, DLQ_BAD_KEY, DLQ_BAD_TIMESTAMP,
    DLQ_PROCESSING_ERROR,
)  # fmt: skip

# Why one sample of an accepted batch is not billed: `late_samples.reason` and the `reason`
# label of PROCESSOR_REJECTED (late samples keep their own counter, PROCESSOR_LATE).
REJECT_NOT_FINITE: Final = "not_finite"  # NaN or +-Inf, any metric
REJECT_NEGATIVE: Final = "negative"  # below 0 for a billed counter, gauge or spec
REJECT_OUT_OF_RANGE: Final = "out_of_range"  # above what a sandbox can physically have or count to
REJECT_COUNTER_DROP: Final = "counter_drop"  # a counter fell, and not to a value a reset could explain
REJECT_TOO_FAST: Final = "too_fast"  # a counter rose faster than the sandbox can use or move
LATE: Final = "older_than_series_state"  # older than its series' state: a replay, counted once
REJECT_REASONS: Final = (REJECT_NOT_FINITE, REJECT_NEGATIVE, REJECT_OUT_OF_RANGE, REJECT_COUNTER_DROP, REJECT_TOO_FAST)

# -- Prometheus metrics each service exports (counters carry their exposed `_total`) ----------
BUILD_INFO: Final = "sandmeter_build_info"  # every service: {service, version, python} = 1
# sandmeter collect
COLLECTOR_SCRAPE_SECONDS: Final = "sandmeter_collector_scrape_duration_seconds"
COLLECTOR_SCRAPE_ERRORS: Final = "sandmeter_collector_scrape_errors_total"
COLLECTOR_SAMPLES: Final = "sandmeter_collector_samples_total"
COLLECTOR_BATCHES_SENT: Final = "sandmeter_collector_batches_sent_total"
COLLECTOR_SEND_ERRORS: Final = "sandmeter_collector_send_errors_total"
COLLECTOR_SPOOL_DEPTH: Final = "sandmeter_collector_spool_batches"
COLLECTOR_SPOOL_BYTES: Final = "sandmeter_collector_spool_bytes"
COLLECTOR_SPOOL_LIMIT: Final = "sandmeter_collector_spool_limit_bytes"
COLLECTOR_SPOOL_DROPPED: Final = "sandmeter_collector_spool_dropped_total"
COLLECTOR_WIRE_BYTES: Final = "sandmeter_collector_wire_bytes_total"
COLLECTOR_LABEL_CONFLICTS: Final = "sandmeter_collector_label_conflicts_total"

# sandmeter process
PROCESSOR_SAMPLES: Final = "sandmeter_processor_samples_total"
PROCESSOR_BATCHES: Final = "sandmeter_processor_batches_total"
PROCESSOR_DLQ: Final = "sandmeter_processor_deadletter_total"
PROCESSOR_LATE: Final = "sandmeter_processor_late_samples_total"
PROCESSOR_DUPLICATES: Final = "sandmeter_processor_duplicate_samples_total"
PROCESSOR_CLAMPED: Final = "sandmeter_processor_clamped_deltas_total"
PROCESSOR_INSERT_SECONDS: Final = "sandmeter_processor_insert_duration_seconds"
PROCESSOR_FLUSH_SECONDS: Final = "sandmeter_processor_flush_duration_seconds"
PROCESSOR_FRESHNESS: Final = "sandmeter_processor_freshness_seconds"
PROCESSOR_LAG: Final = "sandmeter_processor_consumer_lag"
PROCESSOR_SERIES: Final = "sandmeter_processor_series"
PROCESSOR_WRITE_FAILURES: Final = "sandmeter_processor_write_failures_total"
PROCESSOR_CHECKPOINTS: Final = "sandmeter_processor_checkpoints_total"
PROCESSOR_CHECKPOINT_SECONDS: Final = "sandmeter_processor_checkpoint_duration_seconds"
PROCESSOR_EVICTED: Final = "sandmeter_processor_evicted_sandboxes_total"
PROCESSOR_STATE_BYTES: Final = "sandmeter_processor_state_bytes"
PROCESSOR_ROLLUP_SECONDS: Final = "sandmeter_processor_rollup_duration_seconds"
PROCESSOR_LABEL_CONFLICTS: Final = "sandmeter_processor_label_conflicts_total"
PROCESSOR_REJECTED: Final = "sandmeter_processor_rejected_samples_total"
# seconds since the oldest write still failing first failed; 0 while writes succeed
PROCESSOR_WRITE_OUTAGE: Final = "sandmeter_processor_write_outage_seconds"
PROCESSOR_PAUSED: Final = "sandmeter_processor_paused"  # 1 while backpressure pauses consumption
HEALTH_INCIDENTS_OPEN: Final = "sandmeter_health_open_incidents"
HEALTH_INCIDENT: Final = "sandmeter_health_incident_open"  # 1 per open incident, for Alertmanager
HEALTH_EVENTS: Final = "sandmeter_health_events_total"

# sandmeter api
API_REQUESTS: Final = "sandmeter_api_requests_total"  # {route, status}: every response
API_REQUEST_SECONDS: Final = "sandmeter_api_request_duration_seconds"  # {route}: latency histogram

# sandmeter scale
SCALE_PUBLISHED: Final = "sandmeter_scale_decisions_published_total"
SCALE_EVALUATIONS: Final = "sandmeter_scale_evaluations_total"
SCALE_STALE: Final = "sandmeter_scale_stale_ticks_total"
SCALE_TICK_FAILURES: Final = "sandmeter_scale_tick_failures_total"  # ClickHouse or Kafka away
# Unix time of the last tick that decided from fresh data (or had nothing to decide)
SCALE_LAST_SUCCESS: Final = "sandmeter_scale_last_success_timestamp_seconds"
