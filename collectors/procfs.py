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
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path

from collectors.base import Reading, read_file
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
            try:
                text = read_file(d / "cgroup.procs")
            except FileNotFoundError:
                continue  # the cgroup went away with its sandbox
            except OSError as exc:
                out.error(f"{sb}: {exc}")
                continue
            for tok in text.split():
                if tok.isdigit():
                    pids.append(int(tok))
                else:
                    out.error(f"{sb}: bad pid {tok[:20]!r} in {d / 'cgroup.procs'}")
        return pids

    def _sandbox(self, out: Reading, sb: str, dirs: list[Path]) -> None:
        found = dict.fromkeys((k for _, k in KINDS), 0)
        acc: Counter[tuple[str, str]] = Counter()  # (metric, sub-label) -> summed over the kind's processes
        for pid in self._pids(out, sb, dirs):
            base = f"{self.proc}/{pid}"
            try:
                comm, _, utime, stime = parse_stat(read_file(f"{base}/stat"))
                kind = next((k for prefix, k in KINDS if comm.startswith(prefix)), None)
                if kind is None:
                    continue  # the shim or another helper
                found[kind] += 1
                acc[n.M_PROC_CPU_TICKS, sub_label(proc=kind, item="utime")] += utime
                acc[n.M_PROC_CPU_TICKS, sub_label(proc=kind, item="stime")] += stime
                self._process(out, sb, kind, base, acc)
            except FileNotFoundError:
                continue  # it exited between cgroup.procs and /proc: a sandbox stopping, not bad input
            except (OSError, ValueError, IndexError) as exc:
                out.error(f"{sb}: pid {pid}: {exc}")
        rows = out.rows
        for kind, count in found.items():
            rows.add(sb, n.M_PROC_COUNT, sub_label(proc=kind), count)
        for (metric, sub), v in acc.items():
            rows.add(sb, metric, sub, v)

    def _process(self, out: Reading, sb: str, kind: str, base: str, acc: Counter[tuple[str, str]]) -> None:
        status = read_file(f"{base}/status")
        io = read_file(f"{base}/io")
        for line in status.splitlines():
            k, _, v = line.partition(":")
            if k in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
                acc[n.M_PROC_CTXT, sub_label(proc=kind, item=k.split("_")[0])] += int(v)
        for line in io.splitlines():
            k, _, v = line.partition(":")
            if k in IO_ITEMS:
                acc[n.M_PROC_IO, sub_label(proc=kind, item=k)] += int(v)
        threads = {state: sub_label(proc=kind, state=state) for state in ("all", "D", "Z")}
        for sub in threads.values():
            acc[n.M_PROC_THREADS, sub] += 0  # zero counts are reported too: "no thread blocked"
        try:
            tids = os.listdir(f"{base}/task")
        except FileNotFoundError:
            tids = []
        for tid in tids:
            t = f"{base}/task/{tid}"
            try:
                name, state, _, _ = parse_stat(read_file(f"{t}/stat"))
            except FileNotFoundError:
                continue  # a thread that exited between listing and reading is normal
            except (OSError, ValueError, IndexError) as exc:
                out.error(f"{sb}: {t}: {exc}")
                continue
            acc[n.M_PROC_THREADS, threads["all"]] += 1
            if state in ("D", "Z"):
                acc[n.M_PROC_THREADS, threads[state]] += 1
            if state == "D":
                try:
                    wchan = read_file(f"{t}/wchan").strip() or "0"
                except OSError:
                    wchan = "?"
                blocked = sub_label(proc=kind, thread=name, tid=tid, wchan=wchan)
                out.rows.add(sb, n.M_PROC_THREAD_BLOCKED, blocked, 1)
