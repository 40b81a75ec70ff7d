"""cgroup v2 files of each sandbox, in both Kata layouts, summed per sandbox.

sandbox_cgroup_only=true: everything under `.../pod<uid>/kata_<id>` (or `<id>` with the
systemd driver). Otherwise vCPU threads stay in the pod cgroup and the rest of QEMU is under
`/kata_overhead/<id>`: usage is the sum of both.
"""

from __future__ import annotations

import os
import re
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
        """Every file first; the kernel's own layout of each is parsed by one regex match,
        anything else (or a file that failed) by `read_general` on the texts already read."""
        spec = os.fspath(dirs[0])
        paths = [f"{base}/{name}" for base in map(os.fspath, dirs) for name in _DIR_FILES]
        paths += [f"{spec}/{name}" for name in _SPEC_FILES]
        texts, failed = _read_all(paths)
        if failed is not None or not _read_canonical(out, sb, texts):
            read_general(out, sb, dirs, _replay(paths, texts, failed))


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
    out.rows.add_sandbox(sb, metrics, subs, values)


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


# What `_read_one` reads, in `read_general`'s order: each directory's files, then dirs[0]'s spec
_DIR_FILES = ("cpu.stat", "memory.current", "io.stat", *(f"{res}.pressure" for res in PRESSURE))
_SPEC_FILES = ("memory.max", "cpu.max")


def _read_all(paths: list[str]) -> tuple[list[str | None], Exception | None]:
    """Each file's text (None: a PSI file that is missing, PSI is off) up to the first error
    `read_general` would not pass over, and that error: what it would read, in its order."""
    texts: list[str | None] = []
    for p in paths:
        try:
            texts.append(read_file(p))
        except FileNotFoundError as exc:
            if not p.endswith(".pressure"):
                return texts, exc
            texts.append(None)
        except (OSError, ValueError) as exc:
            return texts, exc
    return texts, None


def _replay(paths: list[str], texts: list[str | None], failed: Exception | None) -> Callable[[str], str]:
    """A `read` for `read_general` that gives back what `_read_all` got, errors included,
    so that the files are read once and its result is that of reading them itself."""
    known = dict(zip(paths, texts, strict=False))

    def read(path: str) -> str:
        if path not in known:  # `_read_all` stopped here
            assert failed is not None
            raise failed
        text = known[path]
        if text is None:  # `read_general` skips a missing PSI file whatever the message
            raise FileNotFoundError(path)
        return text

    return read


# The kernel's layout of each file. A number has at most 20 digits (a u64), so int() never
# meets its digit limit; [0-9], not \d, which takes any Unicode digit that int() may refuse
_U64 = "([0-9]{1,20})"
_AVG = "([0-9]{1,20}[.][0-9]{1,20})"
_CPU_STAT = re.compile(f"usage_usec {_U64}\nuser_usec {_U64}\nsystem_usec {_U64}\n")  # any lines after
_U64_LINE = re.compile(f"{_U64}\n")
_IO_LINE = f"[0-9]+:[0-9]+ rbytes={_U64} wbytes={_U64} rios=[0-9]+ wios=[0-9]+ dbytes=[0-9]+ dios=[0-9]+\n"
_IO_ONE = re.compile(_IO_LINE)
_IO_MANY = re.compile(f"(?:{_IO_LINE})+")
_CPU_MAX = re.compile(f"(max|[0-9]{{1,20}}) {_U64}\n")
_MEM_MAX = re.compile("(max|[0-9]{1,20})\n")
_PSI_LINE = f"avg10={_AVG} avg60={_AVG} avg300={_AVG} total={_U64}\n"
_PSI = re.compile(f"some {_PSI_LINE}full {_PSI_LINE}")
_PSI_SOME = re.compile(f"some {_PSI_LINE}")  # an older kernel's cpu.pressure: no `full` line
_TOTALS = (False, False, False, True) * 2  # which of a PSI file's values are totals (summed)
# an idle resource's PSI file: its values change nothing in another directory's (max and sum)
_PSI_IDLE = {
    "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n": (0.0,) * 4,
    "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n": (0.0,) * 8,
}
_PSI_OFF: tuple[float, ...] = ()


def _read_canonical(out: Reading, sb: str, texts: list[str | None]) -> bool:
    """`read_general`'s samples of texts all in the kernel's layout; False, adding nothing, at
    the first that is not. Every value is parsed by the same int() and float() as there."""
    usage = user = system = mem = rd = wr = 0
    psi: list[tuple[float, ...]] = []
    for at in range(0, len(texts) - 2, 6):
        cpu, cur, io = _cpu_stat(texts[at]), _u64(texts[at + 1]), _io_stat(texts[at + 2])
        got = _psi_files(texts[at + 3 : at + 6])
        if cpu is None or cur is None or io is None or got is None:
            return False
        usage, user, system = usage + cpu[0], user + cpu[1], system + cpu[2]
        mem, rd, wr = mem + cur, rd + io[0], wr + io[1]
        merged = _merge_psi(psi, got) if psi else got
        if merged is None:
            return False
        psi = merged
    spec = _spec(texts[-2], texts[-1])
    if spec is None:
        return False
    metrics, subs = _layout(tuple(map(len, psi)))
    values: list[float] = [usage, user, system, mem, rd, wr, *spec]
    for v in psi:
        values += v
    out.rows.add_sandbox(sb, metrics, subs, values)
    return True


def _cpu_stat(text: str | None) -> tuple[int, int, int] | None:
    """usage, user and system µs when they are the first three lines, as the kernel writes
    them: then they are the lines `_field` finds, whatever follows."""
    m = _CPU_STAT.match(text or "")
    return None if m is None else (int(m[1]), int(m[2]), int(m[3]))


def _u64(text: str | None) -> int | None:
    m = _U64_LINE.fullmatch(text or "")
    return None if m is None else int(m[1])


def _io_stat(text: str | None) -> tuple[int, int] | None:
    """`io_totals` of lines with the kernel's six fields: none (no IO yet), one device, or more."""
    if not text:
        return None if text is None else (0, 0)
    m = _IO_ONE.fullmatch(text)
    if m is not None:
        return int(m[1]), int(m[2])
    if _IO_MANY.fullmatch(text) is None:
        return None
    rd = wr = 0
    for r, w in _IO_ONE.findall(text):  # line after line, as the validated text is made of
        rd, wr = rd + int(r), wr + int(w)
    return rd, wr


def _psi(text: str | None) -> tuple[float, ...] | None:
    """A PSI file's values in its order (`pressure`'s); () when PSI is off; None if not canonical."""
    if text is None:
        return _PSI_OFF
    idle = _PSI_IDLE.get(text)
    if idle is not None:
        return idle
    m = _PSI.fullmatch(text) or _PSI_SOME.fullmatch(text)
    return None if m is None else tuple(map(float, m.groups()))


def _psi_files(texts: list[str | None]) -> list[tuple[float, ...]] | None:
    """A directory's PSI files' values, a tuple per resource; None if one is not canonical."""
    got = []
    for text in texts:
        values = _psi(text)
        if values is None:
            return None
        got.append(values)
    return got


def _merge_psi(into: list[tuple[float, ...]], more: list[tuple[float, ...]]) -> list[tuple[float, ...]] | None:
    """`read_general`'s max of averages and sum of totals over directories, or None when the
    directories' files differ in shape (their keys would then come in another order). Values
    are never negative nor NaN here, so a side of zeros (an idle resource) leaves the other."""
    out: list[tuple[float, ...]] = []
    for a, b in zip(into, more, strict=True):
        if len(a) != len(b):
            return None
        if not any(b):
            out.append(a)
        elif not any(a):
            out.append(b)
        else:
            out.append(tuple(x + y if total else max(x, y) for x, y, total in zip(a, b, _TOTALS, strict=False)))
    return out


def _spec(mem_max: str | None, cpu_max: str | None) -> tuple[int, int] | None:
    """vCPU millicores and memory bytes of the pod's limits; "max" is no limit (0)."""
    c, m = _CPU_MAX.fullmatch(cpu_max or ""), _MEM_MAX.fullmatch(mem_max or "")
    if c is None or m is None or int(c[2]) == 0:  # a zero period: `cpu_max_millicores` fails
        return None
    milli = 0 if c[1] == "max" else int(c[1]) * 1000 // int(c[2])
    return milli, 0 if m[1] == "max" else int(m[1])


_LAYOUTS: dict[tuple[int, ...], tuple[list[str], list[str]]] = {}


def _layout(shape: tuple[int, ...]) -> tuple[list[str], list[str]]:
    """Metric and sub-label columns of a sandbox whose PSI files have `shape` (values per
    resource: 0, 4 without `full`, 8): `read_general`'s, built once per shape."""
    got = _LAYOUTS.get(shape)
    if got is None:
        keys = [
            (res, kind, item)
            for res, size in zip(PRESSURE, shape, strict=True)
            for kind in ("some", "full")[: size // 4]
            for item in ("avg10", "avg60", "avg300", "total")
        ]
        metrics = [*_FIXED, *(n.M_CG_PRESSURE for _ in keys)]
        got = _LAYOUTS[shape] = (metrics, [*("" for _ in _FIXED), *map(_psi_sub, keys)])
    return got
