"""Renders simulated sandboxes as the files and exposition text a real Kata node has."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

from collectors.sim.model import SimSandbox

PRESSURE_ZERO = "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
# what an IO-stalled cgroup (or host) reports: most of the time every task waits on IO
PRESSURE_STALLED = (
    "some avg10=92.10 avg60=75.40 avg300=30.20 total=190000000\n"
    "full avg10=85.30 avg60=70.10 avg300=28.00 total=180000000\n"
)
TICK_US = 10_000  # /proc/<pid>/stat counts in USER_HZ (100 Hz) ticks


def qemu_threads(sb: SimSandbox) -> list[tuple[int, str, str]]:
    """(tid, name, wchan when blocked) of the sandbox's QEMU, then of its virtiofsd."""
    p = sb.qemu_pid
    vcpus = max(1, -(-sb.vcpu_milli // 1000))
    q = [(p, "qemu-system-x86", "io_schedule"), (p + 2, "IO mon_iothread", "io_schedule")]
    q += [(p + 3 + i, f"CPU {i}/KVM", "kvm_vcpu_block") for i in range(vcpus)]
    q.append((p + 7, f"vhost-{p}", "vhost_worker"))
    return q


def virtiofsd_threads(sb: SimSandbox) -> list[tuple[int, str, str]]:
    p = sb.qemu_pid + 1
    return [(p, "virtiofsd", "fuse_dev_do_read"), (p + 7, "virtiofsd", "fuse_dev_do_read")]


def write_atomic(path: Path | str, text: str) -> None:
    """Readers never see a half-written file, as with the kernel's own files."""
    p = os.fspath(path)
    head, _, name = p.rpartition("/")
    tmp = f"{head}/.{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, p)


class NodeTree:
    """One node's filesystem roots: cgroup, proc and the kata sandbox directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.disk_ios = 0  # the host disk's completed IOs: frozen while a stall is injected
        self.disk_busy_ms = 0
        self._last_ms: int | None = None
        self._hung: dict[str, bool] = {}  # sandbox -> hung state its thread files show
        self._written: dict[str, str] = {}  # path -> content: unchanged files are not rewritten

        self.cgroup = root / "sys/fs/cgroup"
        self.proc = root / "proc"
        self.sbs = root / "run/vc/sbs"
        self.bundles = root / "run/containerd/io.containerd.runtime.v2.task/k8s.io"
        dirs = (
            self.cgroup / "kubepods.slice",
            self.cgroup / "kata_overhead",
            self.proc / "pressure",
            self.sbs,
            self.bundles,
        )
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)

    def _put(self, path: Path, text: str) -> None:
        key = os.fspath(path)
        if self._written.get(key) != text:
            write_atomic(key, text)
            self._written[key] = text

    def _forget(self, *dirs: Path) -> None:
        prefixes = tuple(os.fspath(d) + "/" for d in dirs)
        for k in [k for k in self._written if k.startswith(prefixes)]:
            del self._written[k]

    def pod_dir(self, sb: SimSandbox) -> Path:
        return self.cgroup / "kubepods.slice" / f"pod{sb.pod_uid}"

    def sandbox_cgroups(self, sb: SimSandbox) -> list[Path]:
        if sb.overhead_layout:
            return [self.pod_dir(sb), self.cgroup / "kata_overhead" / sb.id]
        return [self.pod_dir(sb) / f"kata_{sb.id}"]

    def create(self, sb: SimSandbox) -> None:
        for d in self.sandbox_cgroups(sb):
            d.mkdir(parents=True, exist_ok=True)
        self.update(sb)
        bundle = self.bundles / sb.id
        bundle.mkdir(exist_ok=True)
        notes = {
            "io.kubernetes.cri.container-type": "sandbox",
            "io.kubernetes.cri.sandbox-id": sb.id,
            "io.kubernetes.cri.sandbox-name": sb.pod_name,
            "io.kubernetes.cri.sandbox-namespace": sb.tenant,
            "io.kubernetes.cri.sandbox-uid": sb.pod_uid,
        }
        self._put(bundle / "config.json", json.dumps({"ociVersion": "1.1.0", "annotations": notes}))
        procs = f"{sb.qemu_pid}\n{sb.qemu_pid + 1}\n"
        for i, cg in enumerate(self.sandbox_cgroups(sb)):  # QEMU and virtiofsd live in the last one
            self._put(cg / "cgroup.procs", procs if i == len(self.sandbox_cgroups(sb)) - 1 else "")
        # made aside and moved in whole, so a watcher never sees it before its mtime is the start
        staged = self.sbs.parent / ".sbs-staging" / sb.id
        staged.mkdir(parents=True, exist_ok=True)
        (staged / "shim-monitor.sock").touch()
        os.utime(staged, ns=(sb.start_ms * 1_000_000, sb.start_ms * 1_000_000))
        os.replace(staged, self.sbs / sb.id)

    def update(self, sb: SimSandbox) -> None:
        dirs = self.sandbox_cgroups(sb)
        over = sb.cpu_overhead_us
        parts = [(dirs[0], sb.cpu_us - over, 1.0)]
        if len(dirs) == 2:
            parts.append((dirs[1], over, 0.0))
        for d, cpu, share in parts:
            user = cpu * 3 // 4
            self._put(d / "cpu.stat", f"usage_usec {cpu}\nuser_usec {user}\nsystem_usec {cpu - user}\n")
            if share:
                self._put(d / "cpu.max", f"{sb.vcpu_milli * 100} 100000\n")
                self._put(d / "memory.max", f"{sb.mem_max}\n")
                self._put(d / "memory.current", f"{sb.mem_bytes}\n")
                self._put(
                    d / "io.stat",
                    f"253:0 rbytes={sb.io_read} wbytes={sb.io_write} rios={sb.io_read // 4096} "
                    f"wios={sb.io_write // 4096} dbytes=0 dios=0\n",
                )
            else:
                self._put(d / "cpu.max", "max 100000\n")
                self._put(d / "memory.max", "max\n")
                self._put(d / "memory.current", "0\n")
                self._put(d / "io.stat", "")
            for res in ("cpu", "memory", "io"):
                stalled = sb.stalled and res == "io" and share
                self._put(d / f"{res}.pressure", PRESSURE_STALLED if stalled else PRESSURE_ZERO)
        self.update_proc(sb)

    def update_proc(self, sb: SimSandbox) -> None:
        """QEMU's and virtiofsd's /proc/<pid>: counters every tick, thread states when they change."""
        ticks = sb.cpu_us // TICK_US
        q_ticks, v_ticks = ticks * 7 // 8, ticks - ticks * 7 // 8
        for pid, threads, comm, cpu, ctx, rd, wr in (
            (sb.qemu_pid, qemu_threads(sb), "qemu-system-x86", q_ticks, sb.vctx, sb.io_read, sb.io_write),
            (sb.qemu_pid + 1, virtiofsd_threads(sb), "virtiofsd", v_ticks, sb.vctx // 4, sb.io_read // 2, 0),
        ):
            d = self.proc / str(pid)
            fresh = not d.is_dir()
            if fresh:
                (d / "task").mkdir(parents=True)
                self._put(d / "comm", comm + "\n")
            user = cpu * 3 // 4
            self._put(d / "stat", _stat_line(pid, comm, "D" if sb.hung else "S", user, cpu - user))
            self._put(
                d / "status",
                f"Name:\t{comm}\nState:\tS (sleeping)\nTgid:\t{pid}\nPid:\t{pid}\nThreads:\t{len(threads)}\n"
                f"voluntary_ctxt_switches:\t{ctx}\nnonvoluntary_ctxt_switches:\t{ctx // 50}\n",
            )
            self._put(
                d / "io",
                f"rchar: {rd + 4096}\nwchar: {wr + 512}\nsyscr: {rd // 4096}\nsyscw: {wr // 4096}\n"
                f"read_bytes: {rd}\nwrite_bytes: {wr}\ncancelled_write_bytes: 0\n",
            )
            if fresh or self._hung.get(sb.id) != sb.hung:
                for tid, name, wchan in threads:
                    t = d / "task" / str(tid)
                    t.mkdir(exist_ok=True)
                    self._put(t / "comm", name + "\n")
                    self._put(t / "stat", _stat_line(tid, name, "D" if sb.hung else "S", 0, 0))
                    self._put(t / "wchan", wchan if sb.hung else "0")
        self._hung[sb.id] = sb.hung

    def _rmtree(self, *dirs: Path) -> None:
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
        self._forget(*dirs)

    def remove_proc(self, sb: SimSandbox) -> None:
        """The sandbox's processes exit."""
        self._rmtree(self.proc / str(sb.qemu_pid), self.proc / str(sb.qemu_pid + 1))
        self._hung.pop(sb.id, None)

    def remove_sandbox_dir(self, sb: SimSandbox) -> None:
        self._rmtree(self.sbs / sb.id)

    def remove_cgroups(self, sb: SimSandbox) -> None:
        self._rmtree(self.bundles / sb.id, *self.sandbox_cgroups(sb))
        if sb.overhead_layout is False:
            self._rmtree(self.pod_dir(sb))

    def write_host(self, now_ms: int, live: list[SimSandbox]) -> None:
        stalled = any(s.stalled for s in live)
        dt = 0 if self._last_ms is None else max(0, now_ms - self._last_ms)
        self._last_ms = now_ms
        self.disk_busy_ms += dt if stalled else dt // 2  # a stalled disk is busy all the time
        if not stalled:
            self.disk_ios += dt // 10
        blocked = sum(len(qemu_threads(s)) for s in live if s.hung) + (4 if stalled else 0)
        busy = sum(s.cpu_us for s in live) // 10_000
        self._put(
            self.proc / "stat",
            f"cpu  {busy} 0 {busy // 4} {now_ms // 10} 0 0 0 0 0 0\n"
            f"cpu0 {busy // 2} 0 {busy // 8} {now_ms // 20} 0 0 0 0 0 0\n"
            f"intr 0\nctxt {now_ms}\nbtime 1700000000\nprocesses {len(live)}\n"
            f"procs_running 1\nprocs_blocked {blocked}\n",
        )
        self._put(
            self.proc / "meminfo",
            "MemTotal:       263921108 kB\nMemFree:        123456789 kB\n"
            "MemAvailable:   200000000 kB\nBuffers:          1024 kB\nCached:        4096000 kB\n",
        )
        self._put(self.proc / "loadavg", f"{len(live) / 10:.2f} 0.50 0.40 2/{len(live) * 8} 4242\n")
        ios, inflight = self.disk_ios, 32 if stalled else 0
        self._put(
            self.proc / "diskstats",
            f" 259       0 nvme0n1 {ios} 0 {ios * 8} {ios} {ios} 0 {ios * 8} {ios} "
            f"{inflight} {self.disk_busy_ms} {ios} 0 0 0 0\n",
        )
        for res in ("cpu", "memory", "io"):
            self._put(self.proc / "pressure" / res, PRESSURE_STALLED if stalled and res == "io" else PRESSURE_ZERO)


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


def exposition(live: list[SimSandbox], rng: random.Random, detail: bool = False) -> str:
    """kata-monitor's /metrics for these sandboxes: its labels appended, lines in random order.

    `detail` adds the families a real kata-monitor also exports (~300 series per sandbox);
    billing and health use only the 18 above, so tests leave it off and benchmarks turn it on.
    """
    lines = [
        "# HELP kata_monitor_running_shim_count Running shim count(running sandboxes).",
        "# TYPE kata_monitor_running_shim_count gauge",
        f"kata_monitor_running_shim_count {len(live)}",
    ]
    body: list[str] = []
    for sb in live:
        if sb.hung:  # a wedged QEMU does not answer the shim: kata-monitor drops its series
            continue
        cri = f'sandbox_id="{sb.id}",cri_uid="{sb.pod_uid}",cri_name="{sb.pod_name}",cri_namespace="{sb.tenant}"'
        ticks = sb.cpu_us // 10_000
        idle_ms = sb.alive_ms * sb.vcpu_milli // 1000 - sb.cpu_us // 1000
        body += [
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
        if detail:
            body += detail_lines(sb, cri)
    rng.shuffle(body)
    lines += ["# TYPE kata_hypervisor_proc_stat gauge", *body]
    return "\n".join(lines) + "\n"


def _stat_line(pid: int, comm: str, state: str, utime: int, stime: int) -> str:
    """/proc/<pid>/stat: utime and stime are fields 14 and 15 (11 and 12 after the comm)."""
    return f"{pid} ({comm}) {state} 1 {pid} {pid} 0 -1 4194560 100 0 0 0 {utime} {stime} 0 0 20 0 1 0 100\n"
