"""Topic, table and metric names, defined once and imported everywhere.

Dashboards and alert rules are generated from these, so they cannot drift from the code.
"""

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
T_BATCHES: Final = "ingested_batches"
T_HEALTH: Final = "health_events"
T_LATE: Final = "late_samples"
T_CHECKPOINTS: Final = "processor_checkpoints"
T_USAGE_MINUTE: Final = "usage_minute"
T_USAGE_HOUR: Final = "usage_hour"
T_API_KEYS: Final = "api_keys"
T_INVOICES: Final = "invoices"
T_FUNCTION_LOAD: Final = "function_load"

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
# host /proc
M_HOST_CPU_MS: Final = "host_cpu_ms"
M_HOST_PROCS_BLOCKED: Final = "host_procs_blocked"
M_HOST_MEMINFO: Final = "host_meminfo_bytes"
M_HOST_LOAD: Final = "host_load"
M_HOST_DISK: Final = "host_diskstat"
M_HOST_PRESSURE: Final = "host_pressure"
# kata-monitor families keep their own names (kata_hypervisor_*, kata_guest_*, ...)
M_KATA_NETDEV: Final = "kata_hypervisor_netdev"
# requests in flight in a sandbox, where something in the stream exports it per sandbox_id
# (e.g. an agent-side exporter behind kata-monitor); scale recommendations prefer it to CPU
M_INFLIGHT: Final = "kata_sandbox_inflight_requests"

# Counters that the processor turns into deltas; everything else is a gauge.
CUMULATIVE_METRICS: Final = frozenset(
    {
        M_CG_CPU_USAGE_US,
        M_CG_CPU_USER_US,
        M_CG_CPU_SYSTEM_US,
        M_CG_IO_RBYTES,
        M_CG_IO_WBYTES,
        M_KATA_NETDEV,
    }
)

# Tenant used when a sandbox carries no tenant: metered, never dropped.
UNATTRIBUTED: Final = "unattributed"
