"""Renders simulated sandboxes as the files and exposition text a real Kata node has."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from collectors.sim.model import SimSandbox

PRESSURE_ZERO = "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
# what an IO-stalled cgroup (or host) reports: most of the time every task waits on IO
PRESSURE_STALLED = (
    "some avg10=92.10 avg60=75.40 avg300=30.20 total=190000000\n"
    "full avg10=85.30 avg60=70.10 avg300=28.00 total=180000000\n"
)
TICK_US = 10_000  # /proc/<pid>/stat counts in USER_HZ (100 Hz) ticks
CNI_NETWORK = "cbr0"  # the CNI network's name, the first part of libcni's cache file names
CNI_BRIDGE = "cni0"


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


@contextlib.contextmanager
def unpreempted() -> Iterator[None]:
    """Realtime priority for a moment, where allowed: the truth's clock read and the file
    operation it stamps are not split by the scheduler of a busy machine (the window the
    ground truth records says how close they were)."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        raised = True
    except (OSError, AttributeError):
        raised = False
    try:
        yield
    finally:
        if raised:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


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

        self._veths: dict[str, SimSandbox] = {}  # host veth -> its sandbox, from CNI ADD to CNI DEL
        self._ifindex = 10

        self.cgroup = root / "sys/fs/cgroup"
        self.proc = root / "proc"
        self.sbs = root / "run/vc/sbs"
        self.bundles = root / "run/containerd/io.containerd.runtime.v2.task/k8s.io"
        self.sysnet = root / "sys/class/net"
        self.cni = root / "var/lib/cni"
        self.cni_results = self.cni / "results"
        dirs = (
            self.cgroup / "kubepods.slice",
            self.cgroup / "kata_overhead",
            self.proc / "pressure",
            self.proc / "net",
            self.sbs,
            self.bundles,
            self.sysnet / CNI_BRIDGE / "bridge",
            self.cni_results,
        )
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)
        self.write_netdev()

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
        self.prepare(sb)
        self.publish(sb, lambda: sb.start_ms)

    def prepare(self, sb: SimSandbox) -> None:
        """Everything that exists before the sandbox directory appears: cgroups, the OCI bundle
        and the pod network (CNI ADD runs before the sandbox starts)."""
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
        self.attach_net(sb)

    def publish(self, sb: SimSandbox, clock_ms: Callable[[], int]) -> tuple[int, int]:
        """The sandbox directory appears (the shim's store makes it, then its socket in it);
        returns the clock read just before and how long (µs) the two took together."""
        d = os.fspath(self.sbs / sb.id)
        with unpreempted():
            c0 = time.perf_counter_ns()
            t = clock_ms()
            os.mkdir(d)
            window = (time.perf_counter_ns() - c0) // 1000
        (self.sbs / sb.id / "shim-monitor.sock").touch()
        return t, window

    # -- the pod network, as a bridge CNI plugin leaves it on the host ----------------------
    def attach_net(self, sb: SimSandbox) -> None:
        """CNI ADD: a veth pair (host side on the bridge) and libcni's cached result naming it."""
        self._ifindex += 1
        d = self.sysnet / sb.veth
        d.mkdir(parents=True, exist_ok=True)
        self._put(d / "ifindex", f"{self._ifindex}\n")
        self._put(d / "iflink", f"{self._ifindex + 100_000}\n")  # the peer, in the pod's namespace
        result = {
            "kind": "cniCacheV1",
            "containerId": sb.id,
            "ifName": "eth0",
            "networkName": CNI_NETWORK,
            "result": {
                "cniVersion": "1.0.0",
                "interfaces": [
                    {"name": CNI_BRIDGE, "mac": "aa:bb:cc:00:00:01"},
                    {"name": sb.veth, "mac": "aa:bb:cc:00:00:02"},
                    {"name": "eth0", "mac": "aa:bb:cc:00:00:03", "sandbox": f"/var/run/netns/cni-{sb.pod_uid}"},
                ],
                "ips": [{"address": "10.22.0.7/16", "gateway": "10.22.0.1", "interface": 2}],
            },
        }
        self._put(self.cni_results / f"{CNI_NETWORK}-{sb.id}-eth0", json.dumps(result))
        self._veths[sb.veth] = sb
        self.write_netdev()

    def detach_net(self, sb: SimSandbox) -> None:
        """CNI DEL: the veth and the cached result go."""
        self._veths.pop(sb.veth, None)
        self._rmtree(self.sysnet / sb.veth)
        (self.cni_results / f"{CNI_NETWORK}-{sb.id}-eth0").unlink(missing_ok=True)
        self._written.pop(os.fspath(self.cni_results / f"{CNI_NETWORK}-{sb.id}-eth0"), None)
        self.write_netdev()

    def write_netdev(self) -> None:
        """The host's /proc/net/dev: the host side of a veth receives what the guest sends."""
        lines = [
            "Inter-|   Receive                                                |  Transmit",
            " face |bytes    packets errs drop fifo frame compressed multicast|"
            "bytes    packets errs drop fifo colls carrier compressed",
            "    lo: 4096 40 0 0 0 0 0 0 4096 40 0 0 0 0 0 0",
            "  eth0: 9000000 9000 0 0 0 0 0 0 8000000 8000 0 0 0 0 0 0",
        ]
        bridge_rx = bridge_tx = 0
        for name, sb in sorted(self._veths.items()):
            rx, tx = sb.truth_net_tx, sb.truth_net_rx
            bridge_rx, bridge_tx = bridge_rx + rx, bridge_tx + tx
            lines.append(f"{name:>6}: {rx} {rx // 1500} 0 0 0 0 0 0 {tx} {tx // 1500} 0 0 0 0 0 0")
        lines.append(f"{CNI_BRIDGE:>6}: {bridge_rx} 0 0 0 0 0 0 0 {bridge_tx} 0 0 0 0 0 0 0")
        self._put(self.proc / "net" / "dev", "\n".join(lines) + "\n")

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

    def remove_sandbox_dir(self, sb: SimSandbox, clock_ms: Callable[[], int]) -> tuple[int, int]:
        """Empties the sandbox directory, then removes it; returns the clock read just before
        and how long (µs) the two took together."""
        d = self.sbs / sb.id
        for f in d.iterdir():
            f.unlink()
        path = os.fspath(d)
        with unpreempted():
            c0 = time.perf_counter_ns()
            t = clock_ms()
            os.rmdir(path)
            window = (time.perf_counter_ns() - c0) // 1000
        self._forget(d)
        return t, window

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
        self.write_netdev()


def _stat_line(pid: int, comm: str, state: str, utime: int, stime: int) -> str:
    """/proc/<pid>/stat: utime and stime are fields 14 and 15 (11 and 12 after the comm)."""
    return f"{pid} ({comm}) {state} 1 {pid} {pid} 0 -1 4194560 100 0 0 0 {utime} {stime} 0 0 20 0 1 0 100\n"
