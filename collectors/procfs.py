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
        out = Reading(self.name, self.clock_ms())
        for sb, dirs in self.locator.each(sandboxes, self.pod_uids()):
            if dirs:  # no cgroup yet is the cgroup source's to report
                self._sandbox(out, sb, dirs)
        return out

    def _pids(self, out: Reading, sb: str, dirs: list[Path]) -> list[int]:
        pids: list[int] = []
        for d in dirs:
            path = _child(d, "cgroup.procs")
            try:
                text = read_file(path)
            except FileNotFoundError:
                continue  # the cgroup went away with its sandbox
            except OSError as exc:
                out.error(f"{sb}: {exc}")
                continue
            for tok in text.split():
                if tok.isdigit():
                    pids.append(int(tok))
                else:
                    out.error(f"{sb}: bad pid {tok[:20]!r} in {path}")
        return pids

    def _sandbox(self, out: Reading, sb: str, dirs: list[Path]) -> None:
        found = dict.fromkeys((k for _, k in KINDS), 0)
        acc = {k: [0] * len(_SLOTS) for _, k in KINDS}  # per kind: the _SLOTS, summed over its processes
        for pid in self._pids(out, sb, dirs):
            base = f"{self.proc}/{pid}"
            try:
                comm, _, utime, stime = parse_stat(read_file(f"{base}/stat"))
                kind = _kind(comm)
                if kind is None:
                    continue  # the shim or another helper
                found[kind] += 1
                a = acc[kind]
                a[0] += utime
                a[1] += stime
                self._process(out, sb, kind, base, a)
            except FileNotFoundError:
                continue  # it exited between cgroup.procs and /proc: a sandbox stopping, not bad input
            except (OSError, ValueError, IndexError) as exc:
                out.error(f"{sb}: pid {pid}: {exc}")
        rows = out.rows
        for kind, count in found.items():
            rows.add(sb, n.M_PROC_COUNT, _KIND_SUB[kind], count)
        for kind, a in acc.items():
            if not found[kind]:
                continue
            rows.sandbox.extend([sb] * len(_SLOTS))
            rows.metric.extend(_SLOT_METRICS)
            rows.sub.extend(_SLOT_SUBS[kind])
            rows.value.extend(a)

    def _process(self, out: Reading, sb: str, kind: str, base: str, a: list[int]) -> None:
        status = read_file(f"{base}/status")
        io = read_file(f"{base}/io")
        _add_ctxt(a, status)
        _add_io(a, io)
        try:
            tids = os.listdir(f"{base}/task")
        except FileNotFoundError:
            tids = []
        task = f"{base}/task/"
        for tid in tids:
            try:
                stat = read_file(f"{task}{tid}/stat")
            except FileNotFoundError:
                continue  # a thread that exited between listing and reading is normal
            except OSError as exc:
                out.error(f"{sb}: {task}{tid}: {exc}")
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
_KIND_SUB = {kind: sub_label(proc=kind) for _, kind in KINDS}
