"""Renders simulated sandboxes as the files and exposition text a real Kata node has."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

from collectors.sim.model import SimSandbox

PRESSURE_ZERO = "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"


def write_atomic(path: Path, text: str) -> None:
    """Readers never see a half-written file, as with the kernel's own files."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class NodeTree:
    """One node's filesystem roots: cgroup, proc and the kata sandbox directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
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
        write_atomic(bundle / "config.json", json.dumps({"ociVersion": "1.1.0", "annotations": notes}))
        d = self.sbs / sb.id
        d.mkdir(exist_ok=True)
        (d / "shim-monitor.sock").touch()
        os.utime(d, ns=(sb.start_ms * 1_000_000, sb.start_ms * 1_000_000))

    def update(self, sb: SimSandbox) -> None:
        dirs = self.sandbox_cgroups(sb)
        over = sb.cpu_overhead_us
        parts = [(dirs[0], sb.cpu_us - over, 1.0)]
        if len(dirs) == 2:
            parts.append((dirs[1], over, 0.0))
        for d, cpu, share in parts:
            user = cpu * 3 // 4
            write_atomic(d / "cpu.stat", f"usage_usec {cpu}\nuser_usec {user}\nsystem_usec {cpu - user}\n")
            if share:
                write_atomic(d / "cpu.max", f"{sb.vcpu_milli * 100} 100000\n")
                write_atomic(d / "memory.max", f"{sb.mem_max}\n")
                write_atomic(d / "memory.current", f"{sb.mem_bytes}\n")
                write_atomic(
                    d / "io.stat",
                    f"253:0 rbytes={sb.io_read} wbytes={sb.io_write} rios={sb.io_read // 4096} "
                    f"wios={sb.io_write // 4096} dbytes=0 dios=0\n",
                )
            else:
                write_atomic(d / "cpu.max", "max 100000\n")
                write_atomic(d / "memory.max", "max\n")
                write_atomic(d / "memory.current", "0\n")
                write_atomic(d / "io.stat", "")
            for res in ("cpu", "memory", "io"):
                write_atomic(d / f"{res}.pressure", PRESSURE_ZERO)

    def remove_sandbox_dir(self, sb: SimSandbox) -> None:
        shutil.rmtree(self.sbs / sb.id, ignore_errors=True)

    def remove_cgroups(self, sb: SimSandbox) -> None:
        shutil.rmtree(self.bundles / sb.id, ignore_errors=True)
        for d in self.sandbox_cgroups(sb):
            shutil.rmtree(d, ignore_errors=True)
        if sb.overhead_layout is False:
            shutil.rmtree(self.pod_dir(sb), ignore_errors=True)

    def write_host(self, now_ms: int, live: list[SimSandbox]) -> None:
        busy = sum(s.cpu_us for s in live) // 10_000
        write_atomic(
            self.proc / "stat",
            f"cpu  {busy} 0 {busy // 4} {now_ms // 10} 0 0 0 0 0 0\n"
            f"cpu0 {busy // 2} 0 {busy // 8} {now_ms // 20} 0 0 0 0 0 0\n"
            f"intr 0\nctxt {now_ms}\nbtime 1700000000\nprocesses {len(live)}\n"
            f"procs_running 1\nprocs_blocked 0\n",
        )
        write_atomic(
            self.proc / "meminfo",
            "MemTotal:       263921108 kB\nMemFree:        123456789 kB\n"
            "MemAvailable:   200000000 kB\nBuffers:          1024 kB\nCached:        4096000 kB\n",
        )
        write_atomic(self.proc / "loadavg", f"{len(live) / 10:.2f} 0.50 0.40 2/{len(live) * 8} 4242\n")
        ios = now_ms // 100
        write_atomic(
            self.proc / "diskstats",
            f" 259       0 nvme0n1 {ios} 0 {ios * 8} {ios} {ios} 0 {ios * 8} {ios} 0 {ios // 2} {ios} 0 0 0 0\n",
        )
        for res in ("cpu", "memory", "io"):
            write_atomic(self.proc / "pressure" / res, PRESSURE_ZERO)


def exposition(live: list[SimSandbox], rng: random.Random) -> str:
    """kata-monitor's /metrics for these sandboxes: its labels appended, lines in random order."""
    lines = [
        "# HELP kata_monitor_running_shim_count Running shim count(running sandboxes).",
        "# TYPE kata_monitor_running_shim_count gauge",
        f"kata_monitor_running_shim_count {len(live)}",
    ]
    body: list[str] = []
    for sb in live:
        cri = f'sandbox_id="{sb.id}",cri_uid="{sb.pod_uid}",cri_name="{sb.pod_name}",cri_namespace="{sb.tenant}"'
        ticks = sb.cpu_us // 10_000
        idle_ms = (sb.last_ms - sb.start_ms) * sb.vcpu_milli // 1000 - sb.cpu_us // 1000
        body += [
            f'kata_hypervisor_proc_stat{{item="utime",{cri}}} {ticks * 3 // 4}',
            f'kata_hypervisor_proc_stat{{item="stime",{cri}}} {ticks - ticks * 3 // 4}',
            f'kata_hypervisor_proc_status{{item="vmrss",{cri}}} {sb.mem_bytes + (30 << 20)}',
            f'kata_hypervisor_proc_status{{item="voluntary_ctxt_switches",{cri}}} {sb.cpu_us // 1000}',
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
            f'kata_guest_diskstat{{disk="vda",item="in_progress",{cri}}} 0',
            f'kata_guest_diskstat{{disk="vda",item="reads",{cri}}} {sb.io_read // 4096}',
            f'kata_guest_load{{item="load1",{cri}}} 0.25',
            f"kata_agent_scrape_count{{{cri}}} {sb.check_count}",
        ]
    rng.shuffle(body)
    lines += ["# TYPE kata_hypervisor_proc_stat gauge", *body]
    return "\n".join(lines) + "\n"
