"""cgroup v2 files of each sandbox, in both Kata layouts, summed per sandbox.

sandbox_cgroup_only=true: everything under `.../pod<uid>/kata_<id>` (or `<id>` with the
systemd driver). Otherwise vCPU threads stay in the pod cgroup and the rest of QEMU is under
`/kata_overhead/<id>`: usage is the sum of both.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from collectors.base import Reading, line_value, read_file
from contracts import names as n
from contracts.wire import sub_label

PRESSURE = ("cpu", "memory", "io")


def io_totals(text: str) -> tuple[int, int]:
    rd = wr = 0
    for line in text.splitlines():
        for field in line.split()[1:]:
            k, _, v = field.partition("=")
            if k == "rbytes":
                rd += int(v)
            elif k == "wbytes":
                wr += int(v)
    return rd, wr


def pressure(text: str) -> dict[tuple[str, str], float]:
    """`some avg10=.. total=..` lines -> {(kind, item): value}."""
    out: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        kind, *fields = line.split()
        for f in fields:
            k, _, v = f.partition("=")
            out[(kind, k)] = float(v)
    return out


def cpu_max_millicores(text: str) -> int:
    quota, _, period = text.strip().partition(" ")
    if quota == "max" or not period:
        return 0
    return int(quota) * 1000 // int(period)


class CgroupLocator:
    """Finds each sandbox's cgroup directories; remembers them until they vanish."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[str, list[Path]] = {}

    def find(self, sandbox: str, pod_uid: str | None) -> list[Path]:
        hit = self._cache.get(sandbox)
        if hit:  # a read that fails drops it (`drop`): no stat per directory per scrape
            return hit
        paths = self._search(sandbox, pod_uid)
        if paths:
            self._cache[sandbox] = paths
        else:
            self._cache.pop(sandbox, None)
        return paths

    def each(self, sandboxes: frozenset[str], pod_uids: Mapping[str, str]) -> Iterator[tuple[str, list[Path]]]:
        """(sandbox, its cgroup directories, [] if none yet) in id order; then forgets the others."""
        for sb in sorted(sandboxes):
            yield sb, self.find(sb, pod_uids.get(sb))
        self.forget(sandboxes)

    def drop(self, sandbox: str) -> None:
        self._cache.pop(sandbox, None)

    def forget(self, keep: frozenset[str]) -> None:
        for k in [k for k in self._cache if k not in keep]:
            del self._cache[k]

    def _search(self, sandbox: str, pod_uid: str | None) -> list[Path]:
        wanted = {f"kata_{sandbox}", sandbox}
        pod_names = set()
        if pod_uid:
            pod_names = {f"pod{pod_uid}", f"pod{pod_uid.replace('-', '_')}"}
        pod_dir = None
        for dirpath, dirnames, _ in os.walk(self.root):
            depth = len(Path(dirpath).relative_to(self.root).parts)
            for d in dirnames:
                if d in wanted and not dirpath.endswith("kata_overhead"):
                    return [Path(dirpath) / d]
                if pod_names and any(d.startswith(p) or d.endswith(p + ".slice") or p in d for p in pod_names):
                    pod_dir = Path(dirpath) / d
            if depth >= 3:
                dirnames.clear()
        overhead = self.root / "kata_overhead" / sandbox
        if pod_dir is not None:
            return [pod_dir, overhead] if overhead.is_dir() else [pod_dir]
        return []


class CgroupSource:
    name = "cgroup"

    def __init__(
        self,
        root: Path,
        clock_ms: Callable[[], int],
        pod_uids: Callable[[], Mapping[str, str]],
    ) -> None:
        self.locator = CgroupLocator(root)
        self.clock_ms = clock_ms
        self.pod_uids = pod_uids

    def read(self, sandboxes: frozenset[str]) -> Reading:
        out = Reading(self.name, self.clock_ms())
        uids = self.pod_uids()
        for sb, dirs in self.locator.each(sandboxes, uids):
            if not dirs:
                if sb in uids or not (self.locator.root / "kata_overhead" / sb).is_dir():
                    out.error(f"{sb}: no cgroup found")
                # else: a new sandbox whose pod uid kata-monitor has not reported yet; its
                # counters are cumulative, so the next scrape loses nothing
                continue
            try:
                self._read_one(out, sb, dirs)
            except (OSError, ValueError) as exc:
                self.locator.drop(sb)  # found again next time, if it moved
                out.error(f"{sb}: {exc}")
        return out

    def read_final(self, sandbox: str, snapshot: Mapping[str, str] | None = None) -> Reading:
        """The last sample of a sandbox that just stopped (its cgroup may be about to go)."""
        out = Reading(self.name, self.clock_ms())
        dirs = self.locator.find(sandbox, self.pod_uids().get(sandbox))
        if dirs:
            try:
                self._read_one(out, sandbox, dirs)
            except (OSError, ValueError) as exc:
                out.error(f"{sandbox}: {exc}")
        return out

    @staticmethod
    def _read_one(out: Reading, sb: str, dirs: list[Path]) -> None:
        read_general(out, sb, dirs)


def read_general(out: Reading, sb: str, dirs: list[Path], read: Callable[[str], str] = read_file) -> None:
    """One sandbox's samples, summed over its cgroups, for any text the files may hold; `read`
    is `read_file`, or the texts a faster reader already has (same order, same exceptions)."""
    usage = user = system = mem = rd = wr = 0
    psi: dict[tuple[str, str, str], float] = {}
    for d in dirs:
        base = os.fspath(d)
        cpu = read(f"{base}/cpu.stat")
        usage += _field(cpu, "usage_usec ")
        user += _field(cpu, "user_usec ")
        system += _field(cpu, "system_usec ")
        cur = read(f"{base}/memory.current").strip()
        mem += int(cur) if cur.isdigit() else 0
        r, w = io_totals(read(f"{base}/io.stat"))
        rd, wr = rd + r, wr + w
        for res in PRESSURE:
            try:
                text = read(f"{base}/{res}.pressure")
            except FileNotFoundError:  # PSI is off on this kernel
                continue
            for (kind, item), pv in pressure(text).items():
                key = (res, kind, item)
                psi[key] = max(psi.get(key, 0.0), pv) if item != "total" else psi.get(key, 0.0) + pv
    spec = os.fspath(dirs[0])
    mmax = read(f"{spec}/memory.max").strip()
    metrics = [*_FIXED, *(n.M_CG_PRESSURE for _ in psi)]
    subs = [*("" for _ in _FIXED), *(_psi_sub(k) for k in psi)]
    values = [usage, user, system, mem, rd, wr, cpu_max_millicores(read(f"{spec}/cpu.max")),
              int(mmax) if mmax.isdigit() else 0, *psi.values()]  # fmt: skip
    rows = out.rows
    rows.sandbox.extend([sb] * len(values))
    rows.metric.extend(metrics)
    rows.sub.extend(subs)
    rows.value.extend(values)


_FIXED = (n.M_CG_CPU_USAGE_US, n.M_CG_CPU_USER_US, n.M_CG_CPU_SYSTEM_US, n.M_CG_MEM_CURRENT, n.M_CG_IO_RBYTES,
          n.M_CG_IO_WBYTES, n.M_SPEC_VCPU_MILLI, n.M_SPEC_MEM_BYTES)  # fmt: skip
_PSI_SUBS: dict[tuple[str, str, str], str] = {}


def _psi_sub(key: tuple[str, str, str]) -> str:
    got = _PSI_SUBS.get(key)
    if got is None:
        res, kind, item = key
        got = _PSI_SUBS[key] = sub_label(resource=res, kind=kind, item=item)
    return got


def _field(text: str, key: str) -> int:
    """The integer after `key` at the start of a line of `text`; 0 if there is none (or garbage)."""
    v = (line_value(text, key) or "").strip()
    return int(v) if v.isdigit() else 0
