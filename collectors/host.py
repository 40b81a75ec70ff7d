"""Host kernel files: /proc/stat, meminfo, diskstats, loadavg and pressure."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from collectors.base import Reading, SourceError
from collectors.cgroup import pressure
from contracts import names as n
from contracts.wire import sub_label

CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
MEMINFO_KEYS = {"MemTotal", "MemFree", "MemAvailable", "Buffers", "Cached", "Dirty", "Writeback"}
DISK_FIELDS = (
    "reads",
    "reads_merged",
    "read_sectors",
    "read_ms",
    "writes",
    "writes_merged",
    "write_sectors",
    "write_ms",
    "in_progress",
    "io_ms",
    "weighted_io_ms",
)
USER_HZ_MS = 10  # /proc/stat counts in USER_HZ (100 Hz) ticks


class HostSource:
    name = "host"

    def __init__(self, proc: Path, clock_ms: Callable[[], int]) -> None:
        self.proc = proc
        self.clock_ms = clock_ms

    def read(self, sandboxes: frozenset[str]) -> Reading:
        out = Reading(self.name, self.clock_ms())
        if not self.proc.is_dir():
            raise SourceError(self.name, f"{self.proc} is not a directory")
        for part in (self._stat, self._meminfo, self._loadavg, self._diskstats, self._pressure):
            try:
                part(out)
            except (OSError, ValueError, IndexError) as exc:
                out.error(f"{part.__name__.strip('_')}: {exc}")
        return out

    def _stat(self, out: Reading) -> None:
        for line in (self.proc / "stat").read_text().splitlines():
            f = line.split()
            if f and f[0] == "cpu":
                for mode, v in zip(CPU_MODES, f[1:], strict=False):
                    out.rows.add("", n.M_HOST_CPU_MS, sub_label(mode=mode), int(v) * USER_HZ_MS)
            elif f and f[0] == "procs_blocked":
                out.rows.add("", n.M_HOST_PROCS_BLOCKED, "", int(f[1]))

    def _meminfo(self, out: Reading) -> None:
        for line in (self.proc / "meminfo").read_text().splitlines():
            k, _, rest = line.partition(":")
            if k in MEMINFO_KEYS:
                out.rows.add("", n.M_HOST_MEMINFO, sub_label(item=k), int(rest.split()[0]) * 1024)

    def _loadavg(self, out: Reading) -> None:
        f = (self.proc / "loadavg").read_text().split()
        for item, v in zip(("load1", "load5", "load15"), f, strict=False):
            out.rows.add("", n.M_HOST_LOAD, sub_label(item=item), float(v))

    def _diskstats(self, out: Reading) -> None:
        for line in (self.proc / "diskstats").read_text().splitlines():
            f = line.split()
            if len(f) < 14 or f[2].startswith(("loop", "ram")):
                continue
            for item, v in zip(DISK_FIELDS, f[3:14], strict=True):
                out.rows.add("", n.M_HOST_DISK, sub_label(disk=f[2], item=item), int(v))

    def _pressure(self, out: Reading) -> None:
        for res in ("cpu", "memory", "io"):
            p = self.proc / "pressure" / res
            if p.exists():
                for (kind, item), v in pressure(p.read_text()).items():
                    out.rows.add("", n.M_HOST_PRESSURE, sub_label(resource=res, kind=kind, item=item), v)
