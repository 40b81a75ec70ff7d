"""/proc of each sandbox's QEMU and virtiofsd: thread states, CPU ticks, context switches, IO.

The processes are found through the sandbox's cgroups (`cgroup.procs` of each directory the
cgroup source finds, in either layout) and told apart by `comm`. Per process kind it reports
process-wide utime/stime (`/proc/<pid>/stat`), the main thread's context switches
(`/proc/<pid>/status`, as kata-monitor does), `/proc/<pid>/io`, and per-thread states from
`/proc/<pid>/task/<tid>/stat`: a count per state and, for each thread in D state, one sample
naming the thread and its `wchan`, the evidence a hang incident carries.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

from collectors.base import Reading, line_value, read_file
from collectors.cgroup import CgroupLocator
from contracts import names as n
from contracts.wire import sub_label

KINDS = (("qemu", "qemu"), ("virtiofsd", "virtiofsd"))  # comm prefix -> kind
IO_ITEMS = ("rchar", "wchar", "read_bytes", "write_bytes")


def parse_stat(text: str) -> tuple[str, str, int, int]:
    """(comm, state, utime, stime) of a /proc stat line; the comm may hold spaces and parens."""
    head, sep, rest = text.rpartition(")")
    if not sep or "(" not in head:
        raise ValueError(f"not a stat line: {text[:60]!r}")
    f = rest.split()
    return head.partition("(")[2], f[0], int(f[11]), int(f[12])


class ProcSource:
    name = "proc"

    def __init__(
        self,
        proc: Path,
        cgroup_root: Path,
        clock_ms: Callable[[], int],
        pod_uids: Callable[[], Mapping[str, str]],
    ) -> None:
        self.proc = proc
        self.locator = CgroupLocator(cgroup_root)
        self.clock_ms = clock_ms
        self.pod_uids = pod_uids

    def read(self, sandboxes: frozenset[str]) -> Reading:
        """Reads every file first and parses after: parsing between system calls costs several
        times what it costs in one run (measured), so the two passes are kept apart. Problems
        met in the first pass travel with what it found and are reported in the second, in the
        order the files were read."""
        out = Reading(self.name, self.clock_ms())
        proc = f"{self.proc}"
        found = [
            (sb, *self._gather(sb, dirs, proc))
            for sb, dirs in self.locator.each(sandboxes, self.pod_uids())
            if dirs  # no cgroup yet is the cgroup source's to report
        ]
        for sb, notes, procs in found:
            self._sandbox(out, sb, notes, procs)
        return out

    def _gather(self, sb: str, dirs: list[Path], proc: str) -> tuple[list[str], list[_Proc | str]]:
        """The first pass over a sandbox: its bad pids, then per process its stat, and for one
        that may be QEMU or virtiofsd what `_read_process` read; or the message for a stat that
        could not be read."""
        notes: list[str] = []
        procs: list[_Proc | str] = []
        for pid in self._pids(notes, sb, dirs):
            base = f"{proc}/{pid}"
            try:
                p = _Proc(pid, read_file(f"{base}/stat"))
            except FileNotFoundError:
                continue  # it exited between cgroup.procs and /proc: a sandbox stopping, not bad input
            except OSError as exc:
                procs.append(f"{sb}: pid {pid}: {exc}")
                continue
            if _may_be_kind(p.stat):
                _read_process(p, base)
            procs.append(p)
        return notes, procs

    def _pids(self, notes: list[str], sb: str, dirs: list[Path]) -> list[int]:
        pids: list[int] = []
        for d in dirs:
            path = _child(d, "cgroup.procs")
            try:
                text = read_file(path)
            except FileNotFoundError:
                continue  # the cgroup went away with its sandbox
            except OSError as exc:
                notes.append(f"{sb}: {exc}")
                continue
            for tok in text.split():
                if tok.isascii() and tok.isdigit():  # "²" is a digit to isdigit(), not to int()
                    pids.append(int(tok))
                else:
                    notes.append(f"{sb}: bad pid {tok[:20]!r} in {path}")
        return pids

    def _sandbox(self, out: Reading, sb: str, notes: list[str], procs: list[_Proc | str]) -> None:
        """The second pass over a sandbox: sums and counts per kind, problems in reading order."""
        for note in notes:
            out.error(note)
        found = dict.fromkeys(_KIND_NAMES, 0)
        acc = {k: [0] * len(_SLOTS) for k in _KIND_NAMES}  # per kind: the _SLOTS, summed over its processes
        for p in procs:
            if isinstance(p, str):
                out.error(p)
                continue
            try:
                comm, _, utime, stime = parse_stat(p.stat)
                kind = _kind(comm)
                if kind is None:
                    continue  # the shim or another helper
                found[kind] += 1
                a = acc[kind]
                a[0] += utime
                a[1] += stime
                self._process(out, sb, kind, p, a)
            except FileNotFoundError:
                continue  # it exited between cgroup.procs and /proc: a sandbox stopping, not bad input
            except (OSError, ValueError, IndexError) as exc:
                out.error(f"{sb}: pid {p.pid}: {exc}")
        rows = out.rows
        for kind, count in found.items():
            rows.add(sb, n.M_PROC_COUNT, _KIND_SUB[kind], count)
        for kind, a in acc.items():
            if not found[kind]:
                continue
            rows.add_sandbox(sb, _SLOT_METRICS, _SLOT_SUBS[kind], a)

    def _process(self, out: Reading, sb: str, kind: str, p: _Proc, a: list[int]) -> None:
        """Parses what `_read_process` read, raising what it met where the reads would have."""
        if p.failed is not None:
            raise p.failed
        _add_ctxt(a, p.status)
        _add_io(a, p.io)
        if p.unlisted is not None:
            raise p.unlisted
        task = p.task
        for tid, stat in zip(p.tids, p.stats, strict=True):
            if not isinstance(stat, str):
                if not isinstance(stat, FileNotFoundError):  # a thread that exited meanwhile is normal
                    out.error(f"{sb}: {task}{tid}: {stat}")
                continue
            close = stat.rfind(")")
            state = stat[close + 2 : close + 3]
            if close < 0 or not state:
                out.error(f"{sb}: {task}{tid}: not a stat line: {stat[:60]!r}")
                continue
            a[8] += 1
            if state == "D":
                a[9] += 1
                self._blocked(out, sb, kind, f"{task}{tid}", tid, stat[stat.find("(") + 1 : close])
            elif state == "Z":
                a[10] += 1

    def _blocked(self, out: Reading, sb: str, kind: str, t: str, tid: str, name: str) -> None:
        """One sample per thread in D state, naming it and its wchan: the evidence of a hang."""
        try:
            wchan = read_file(f"{t}/wchan").strip() or "0"
        except OSError:
            wchan = "?"
        out.rows.add(sb, n.M_PROC_THREAD_BLOCKED, sub_label(proc=kind, thread=name, tid=tid, wchan=wchan), 1)


class _Proc:
    """One process as the first pass read it: its stat, and for QEMU or virtiofsd the texts of
    status, io and each thread's stat, and the error a read raised (kept to raise later)."""

    __slots__ = ("failed", "io", "pid", "stat", "stats", "status", "task", "tids", "unlisted")

    def __init__(self, pid: int, stat: str) -> None:
        self.pid, self.stat = pid, stat
        self.status = self.io = self.task = ""
        self.failed: OSError | None = None  # reading status or io
        self.unlisted: OSError | None = None  # listing task/, other than its absence
        self.tids: list[str] = []
        self.stats: list[str | OSError] = []  # per tid: the text, or what reading it raised


def _may_be_kind(stat: str) -> bool:
    """Whether a stat may name one of the `KINDS`: a cheap test that lets the first pass leave
    parsing to the second; the few it lets through in vain (a prefix elsewhere in the line)
    only cost their reads, as the second pass parses the stat and decides."""
    for prefix in _PREFIXES:  # noqa: SIM110 - any() over a generator costs more per process
        if prefix in stat:
            return True
    return False


def _read_process(p: _Proc, base: str) -> None:
    """Reads status, io, the task list and each thread's stat, in the order the parse needs."""
    try:
        p.status = read_file(f"{base}/status")
        p.io = read_file(f"{base}/io")
    except OSError as exc:
        p.failed = exc
        return
    try:
        p.tids = os.listdir(f"{base}/task")
    except FileNotFoundError:
        pass
    except OSError as exc:
        p.unlisted = exc
    p.task = task = f"{base}/task/"
    stats = p.stats
    for tid in p.tids:
        try:
            stats.append(read_file(f"{task}{tid}/stat"))
        except OSError as exc:
            stats.append(exc)


def _child(d: Path, name: str) -> str:
    """`str(d / name)` without building a Path, the dearest step of the per-sandbox loop; only
    a bare anchor (`/`, `.`), where the two spellings differ, goes through pathlib."""
    return f"{d}/{name}" if d.name else str(d / name)


def _kind(comm: str) -> str | None:
    """The kind a comm names (`KINDS`), None for the shim and other helpers."""
    for prefix, kind in KINDS:
        if comm.startswith(prefix):
            return kind
    return None


def _add_ctxt(a: list[int], status: str) -> None:
    """Adds the main thread's voluntary and nonvoluntary context switches into a[2] and a[3]."""
    vals = _ctxt_fast(status)
    if vals is None:
        a[2] += _field(status, "voluntary_ctxt_switches:")
        a[3] += _field(status, "nonvoluntary_ctxt_switches:")
    else:
        a[2] += int(vals[0])
        a[3] += int(vals[1])


def _ctxt_fast(status: str) -> tuple[str, str] | None:
    """The two context-switch values exactly as `_field` finds them (text after the key up to the
    newline), taken with one search and one match when the kernel's adjacent pair of lines is
    the first line starting with either key; None for any other text, which `_field` reads."""
    i = status.find(_VOL)
    m = _CTXT.match(status, i) if i >= 0 else None
    if m is None or status.startswith(_CTXT_KEYS) or status.find(_NONVOL, 0, i) >= 0:
        return None
    return m[1], m[2]


def _add_io(a: list[int], io: str) -> None:
    """Adds the `IO_ITEMS` of /proc/<pid>/io into a[4:8], in that order."""
    vals = _io_fast(io)
    if vals is None:
        for i, key in enumerate(_IO_KEYS, 4):
            a[i] += _field(io, key)
    else:
        for i, v in enumerate(vals, 4):
            a[i] += int(v)


def _io_fast(io: str) -> tuple[str, ...] | None:
    """The `IO_ITEMS` values as `_field` finds them, from one match of the file as the kernel
    writes it (seven `key: digits` lines in a fixed order); None for any other text."""
    m = _IO.fullmatch(io)
    return None if m is None else m.groups()


def _field(text: str, key: str) -> int:
    """The integer after `key` (e.g. `read_bytes:`) at the start of a line; 0 if there is none;
    ValueError for garbage (the caller counts it as bad input)."""
    v = line_value(text, key)
    return 0 if v is None else int(v)


_IO_KEYS = tuple(f"{k}:" for k in IO_ITEMS)
# /proc/<pid>/io as the kernel writes it; the groups keep the space `_field` passes to int()
_IO = re.compile(
    r"rchar:( [0-9]+)\nwchar:( [0-9]+)\nsyscr: [0-9]+\nsyscw: [0-9]+\n"
    r"read_bytes:( [0-9]+)\nwrite_bytes:( [0-9]+)\ncancelled_write_bytes: [0-9]+\n"
)
# the last two lines of /proc/<pid>/status; the groups keep the tab `_field` passes to int()
_VOL, _NONVOL = "\nvoluntary_ctxt_switches:", "\nnonvoluntary_ctxt_switches:"
_CTXT_KEYS = (_VOL[1:], _NONVOL[1:])
_CTXT = re.compile(r"\nvoluntary_ctxt_switches:(\t[0-9]+)\nnonvoluntary_ctxt_switches:(\t[0-9]+)\n")
# what is summed per process kind, in this order: (metric, the sub-label's own key and value)
_SLOTS = (
    (n.M_PROC_CPU_TICKS, "item", "utime"), (n.M_PROC_CPU_TICKS, "item", "stime"),
    (n.M_PROC_CTXT, "item", "voluntary"), (n.M_PROC_CTXT, "item", "nonvoluntary"),
    *((n.M_PROC_IO, "item", k) for k in IO_ITEMS),
    (n.M_PROC_THREADS, "state", "all"), (n.M_PROC_THREADS, "state", "D"), (n.M_PROC_THREADS, "state", "Z"),
)  # fmt: skip
_SLOT_METRICS = [m for m, _, _ in _SLOTS]
_SLOT_SUBS = {kind: [sub_label(**{"proc": kind, key: v}) for _, key, v in _SLOTS] for _, kind in KINDS}
_KIND_NAMES = tuple(kind for _, kind in KINDS)
_PREFIXES = tuple(prefix for prefix, _ in KINDS)
_KIND_SUB = {kind: sub_label(proc=kind) for _, kind in KINDS}
