"""kata-monitor's /metrics for simulated sandboxes: the families billing and health use, and
(with `detail`) the rest a real kata-monitor exports, for load."""

from __future__ import annotations

import random

from collectors.sim.model import SimSandbox

GUEST_MEMINFO = [
    "mem_free",
    "mem_available",
    "buffers",
    "cached",
    "swap_cached",
    "active",
    "inactive",
    "active_anon",
    "inactive_anon",
    "active_file",
    "inactive_file",
    "unevictable",
    "mlocked",
    "swap_total",
    "swap_free",
    "dirty",
    "writeback",
    "anon_pages",
    "mapped",
    "shmem",
    "slab",
    "s_reclaimable",
    "s_unreclaim",
    "kernel_stack",
    "page_tables",
    "nfs_unstable",
    "bounce",
    "writeback_tmp",
    "commit_limit",
    "committed_as",
    "vmalloc_total",
    "vmalloc_used",
    "vmalloc_chunk",
    "hardware_corrupted",
    "anon_huge_pages",
    "huge_pages_total",
    "huge_pages_free",
    "huge_pages_rsvd",
    "huge_pages_surp",
    "hugepagesize",
]
GUEST_VMSTAT = [f"{k}{i}" for k in ("nr_", "pgpg", "pgfault_", "numa_", "workingset_", "compact_") for i in range(10)]
CPU_ITEMS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest", "guest_nice")
DISK_ITEMS = (
    "reads_merged", "read_sectors", "time_reading", "writes_merged", "write_sectors", "time_writing",
    "time_in_progress", "weighted_time_in_progress", "discards", "discards_merged", "discard_sectors",
)  # fmt: skip
NET_ITEMS = (
    "recv_packets", "recv_errs", "recv_drop", "recv_fifo", "recv_frame", "recv_compressed", "recv_multicast",
    "sent_packets", "sent_errs", "sent_drop", "sent_fifo", "sent_colls", "sent_carrier", "sent_compressed",
)  # fmt: skip
RPC_ACTIONS = (
    "grpc.CheckRequest",
    "grpc.CreateContainerRequest",
    "grpc.StatsContainerRequest",
    "grpc.ExecProcessRequest",
)
RPC_BUCKETS = ("1", "5", "10", "50", "100", "500", "1000", "5000", "+Inf")
PROC_STATUS = ("vmrss", "rssanon", "voluntary_ctxt_switches")
PROC_IO = ("rchar", "wchar", "syscr", "syscw", "readbytes", "writebytes")
RPC_HIST = "kata_shim_agent_rpc_durations_histogram_milliseconds"


def detail_lines(sb: SimSandbox, cri: str) -> list[str]:
    """The rest of a real kata-monitor's per-sandbox families (~290 series): for load, not for billing."""
    t = sb.alive_ms
    out = [f'kata_guest_meminfo{{item="{k}",{cri}}} {(t * (i + 3)) % sb.mem_max}' for i, k in enumerate(GUEST_MEMINFO)]
    out += [f'kata_guest_vm_stat{{item="{k}",{cri}}} {t // (i + 1)}' for i, k in enumerate(GUEST_VMSTAT)]
    cpus = [str(c) for c in range(max(1, -(-sb.vcpu_milli // 1000)))]
    out += [
        f'kata_guest_cpu_time{{cpu="{c}",item="{k}",{cri}}} {t // (j + 2)}'
        for c in cpus
        for j, k in enumerate(CPU_ITEMS)
    ]
    out += [f'kata_guest_diskstat{{disk="vda",item="{k}",{cri}}} {t // (i + 5)}' for i, k in enumerate(DISK_ITEMS)]
    for fam in ("kata_hypervisor_netdev", "kata_guest_netdev_stat"):
        out += [f'{fam}{{interface="eth0",item="{k}",{cri}}} {t // (i + 7)}' for i, k in enumerate(NET_ITEMS)]
    for proc in ("kata_shim", "kata_agent", "kata_virtiofsd"):
        out += [f'{proc}_proc_stat{{item="{k}",{cri}}} {t // 40}' for k in ("utime", "stime", "cutime", "cstime")]
        out += [f'{proc}_proc_status{{item="{k}",{cri}}} {t % 99991}' for k in PROC_STATUS]
        out += [f'{proc}_io_stat{{item="{k}",{cri}}} {t * 3}' for k in PROC_IO]
        out += [f"{proc}_threads{{{cri}}} 12", f"{proc}_fds{{{cri}}} 40"]
    for a in RPC_ACTIONS:
        out += [f'{RPC_HIST}_bucket{{action="{a}",le="{le}",{cri}}} {sb.check_count}' for le in RPC_BUCKETS]
        out.append(f'{RPC_HIST}_sum{{action="{a}",{cri}}} {sb.check_count * 3}')
    return out


def family(line: str) -> str:
    """The metric family of a sample line: a histogram's `_bucket`, `_sum` and `_count` are one."""
    name = line[: line.find("{")] if "{" in line else line.partition(" ")[0]
    return RPC_HIST if name.startswith(RPC_HIST) else name


def exposition(live: list[SimSandbox], rng: random.Random, detail: bool = False) -> str:
    """kata-monitor's /metrics for these sandboxes, in a real kata-monitor's order.

    A real one (src/runtime/pkg/kata-monitor/metrics.go, `aggregateSandboxMetrics`) fetches
    every shim's metrics concurrently, takes the answers as they arrive, appends each
    sandbox's families to one per family name in a Go map, then encodes the map: so each
    family comes once (HELP, TYPE, its samples), families in a new order every scrape (map
    iteration), sandboxes within every family in that scrape's arrival order, and each
    sandbox's lines of a family in the shim's own fixed order. `detail` adds the families a
    real kata-monitor also exports (~300 series per sandbox); billing and health use only the
    18 above, so tests leave it off and benchmarks turn it on.
    """
    lines = [
        "# HELP kata_monitor_running_shim_count Running shim count(running sandboxes).",
        "# TYPE kata_monitor_running_shim_count gauge",
        f"kata_monitor_running_shim_count {len(live)}",
    ]
    arrived = list(live)
    rng.shuffle(arrived)
    families: dict[str, list[str]] = {}
    for sb in arrived:
        if sb.hung:  # a wedged QEMU does not answer the shim: kata-monitor drops its series
            continue
        for line in sandbox_lines(sb, detail):
            families.setdefault(family(line), []).append(line)
    names = list(families)
    rng.shuffle(names)
    for name in names:
        kind = "histogram" if name == RPC_HIST else "gauge"
        lines += [f"# HELP {name} {name.replace('_', ' ')}.", f"# TYPE {name} {kind}", *families[name]]
    return "\n".join(lines) + "\n"


def sandbox_lines(sb: SimSandbox, detail: bool) -> list[str]:
    """One sandbox's samples with kata-monitor's labels appended, each family's in a fixed order."""
    cri = f'sandbox_id="{sb.id}",cri_uid="{sb.pod_uid}",cri_name="{sb.pod_name}",cri_namespace="{sb.tenant}"'
    ticks = sb.cpu_us // 10_000
    idle_ms = sb.alive_ms * sb.vcpu_milli // 1000 - sb.cpu_us // 1000
    out = [
        f'kata_hypervisor_proc_stat{{item="utime",{cri}}} {ticks * 3 // 4}',
        f'kata_hypervisor_proc_stat{{item="stime",{cri}}} {ticks - ticks * 3 // 4}',
        f'kata_hypervisor_proc_status{{item="vmrss",{cri}}} {sb.mem_bytes + (30 << 20)}',
        f'kata_hypervisor_proc_status{{item="voluntary_ctxt_switches",{cri}}} {sb.vctx}',
        f'kata_hypervisor_io_stat{{item="readbytes",{cri}}} {sb.io_read}',
        f'kata_hypervisor_io_stat{{item="writebytes",{cri}}} {sb.io_write}',
        f'kata_hypervisor_netdev{{interface="eth0",item="recv_bytes",{cri}}} {sb.net_rx}',
        f'kata_hypervisor_netdev{{interface="eth0",item="sent_bytes",{cri}}} {sb.net_tx}',
        f"kata_hypervisor_threads{{{cri}}} {sb.vcpu_milli // 1000 + 6}",
        f'kata_shim_agent_rpc_durations_histogram_milliseconds_count{{action="grpc.CheckRequest",{cri}}} '
        f"{sb.check_count}",
        f'kata_guest_cpu_time{{cpu="total",item="user",{cri}}} {sb.cpu_us // 1000}',
        f'kata_guest_cpu_time{{cpu="total",item="idle",{cri}}} {idle_ms}',
        f'kata_guest_meminfo{{item="mem_total",{cri}}} {sb.mem_max}',
        f'kata_guest_diskstat{{disk="vda",item="in_progress",{cri}}} {4 if sb.stalled else 0}',
        f'kata_guest_diskstat{{disk="vda",item="reads",{cri}}} {sb.io_read // 4096}',
        f'kata_guest_diskstat{{disk="vda",item="writes",{cri}}} {sb.io_write // 4096}',
        f'kata_guest_load{{item="load1",{cri}}} 0.25',
        f"kata_agent_scrape_count{{{cri}}} {sb.check_count}",
    ]
    return out + detail_lines(sb, cri) if detail else out
