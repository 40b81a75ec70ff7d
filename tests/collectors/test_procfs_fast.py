"""The proc source's fast paths give exactly what its general parsing gives, for any text.

The fast paths only recognise the kernel's own layout of /proc/<pid>/io and status and hand
everything else to the general code, which therefore is the oracle here: the same tree is read
with the fast paths on and with them switched off, and the two readings must be identical.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import TypeVar
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collectors import procfs
from collectors.base import line_value
from collectors.procfs import ProcSource

T = TypeVar("T")
U = TypeVar("U")
Entry = str | bool | None  # a file's text, a directory in its place (True), or nothing (None)
Tree = dict[str, tuple[list[Entry], dict[int, dict[str, object]]]]  # sandbox -> (cgroup.procs, pid -> files)


def mostly(usual: st.SearchStrategy[T], odd: st.SearchStrategy[U]) -> st.SearchStrategy[T | U]:
    """`usual` four times in five (`one_of` picks its branches with no such odds)."""
    return st.sampled_from([True, True, True, True, False]).flatmap(lambda u: usual if u else odd)


# numbers as the kernel writes them, and what it never writes: signs, huge, non-ASCII digits
NUMBER = mostly(
    st.integers(0, 2**64).map(str),
    st.sampled_from(["-1", "+7", "0x10", "", "9" * 4400, "\u0663", "1_0", "07"]),
)
NOISE = "\r\x0b\t \n-+x(): 0123456789\u0663\u00b2"


@st.composite
def perturbed(draw: st.DrawFn, text: str) -> str:
    """`text` itself most of the time, else with a few characters inserted, deleted or swapped,
    lines duplicated or dropped, the end cut, or nothing like it at all."""
    how = draw(mostly(st.just("same"), st.sampled_from(["chars", "chars", "lines", "cut", "noise"])))
    if how == "chars":
        for _ in range(draw(st.integers(1, 3))):
            i = draw(st.integers(0, len(text)))
            op = draw(st.sampled_from(["insert", "delete", "replace"]))
            c = draw(st.sampled_from(NOISE))
            text = text[:i] + (c if op != "delete" else "") + text[i + (op != "insert") :]
    elif how == "lines":
        lines = text.splitlines(keepends=True)
        i = draw(st.integers(0, len(lines) - 1))
        line = lines[i] if draw(st.booleans()) else lines.pop(i)  # copied, or moved or dropped
        for _ in range(draw(st.integers(0, 2))):  # the copies first or anywhere, maybe with another number
            at = draw(st.sampled_from([0, draw(st.integers(0, len(lines)))]))
            lines.insert(at, re.sub("[0-9]+", draw(NUMBER), line, count=1) if draw(st.booleans()) else line)
        text = "".join(lines)
    elif how == "cut":
        text = text[: draw(st.integers(0, len(text)))]
    elif how == "noise":
        text = draw(st.text(NOISE + "abcdefghijklmnopqrstuvwxyz_", max_size=80))
    return text


@st.composite
def io_text(draw: st.DrawFn) -> str:
    keys = ("rchar", "wchar", "syscr", "syscw", "read_bytes", "write_bytes", "cancelled_write_bytes")
    return draw(perturbed("".join(f"{k}: {draw(NUMBER)}\n" for k in keys)))


@st.composite
def status_text(draw: st.DrawFn) -> str:
    head = draw(mostly(st.just("Name:\tqemu\nState:\tS (sleeping)\nThreads:\t3\n"), st.just("")))
    vol, nonvol = draw(NUMBER), draw(NUMBER)
    return draw(perturbed(f"{head}voluntary_ctxt_switches:\t{vol}\nnonvoluntary_ctxt_switches:\t{nonvol}\n"))


COMM = mostly(
    st.sampled_from(["qemu-system-x86", "virtiofsd"]),
    st.one_of(
        st.sampled_from(["containerd-shim", "CPU 0/KVM", "qemu) (b", "qemu) S 1", "virtiofsd\n"]),
        st.text("qemuvirtiofsd() \n", max_size=12),
    ),
)


@st.composite
def stat_text(draw: st.DrawFn, pid: int) -> str:
    fields = [draw(st.sampled_from("SDZR")), *("1", "2", "3", "0", "-1", "0", "0", "0", "0", "0")]
    fields += [draw(NUMBER), draw(NUMBER), "0", "0", "20"]
    return draw(perturbed(f"{pid} ({draw(COMM)}) {' '.join(fields)}\n"))


# what a file can be: its text, absent (FileNotFoundError) or a directory (another OSError)
def entry(text: st.SearchStrategy[str]) -> st.SearchStrategy[Entry]:
    return mostly(text, st.sampled_from([None, True]))


@st.composite
def process(draw: st.DrawFn, pid: int) -> dict[str, object]:
    threads = {
        tid: (draw(entry(stat_text(tid))), draw(st.sampled_from(["kvm_vcpu_block\n", "", " \n", None])))
        for tid in draw(st.lists(st.integers(pid, pid + 40), max_size=4, unique=True))
    }
    task = draw(mostly(st.just("dir"), st.sampled_from(["absent", "file"])))
    return {
        "stat": draw(entry(stat_text(pid))),
        "status": draw(entry(status_text())),
        "io": draw(entry(io_text())),
        "task": threads if task == "dir" else task,
    }


@st.composite
def node(draw: st.DrawFn) -> Tree:
    """Sandbox id -> (its one or two cgroup.procs, its processes by pid)."""
    sandboxes = {}
    for k in range(draw(st.integers(1, 3))):
        pids = draw(st.lists(st.integers(100 * k + 100, 100 * k + 140), min_size=1, max_size=3, unique=True))
        procs = {pid: draw(process(pid)) for pid in pids}
        cut = draw(st.sampled_from([len(pids), *range(len(pids) + 1)]))  # two directories share the pids
        listed = []
        for part in (pids[:cut], pids[cut:])[: draw(st.integers(1, 2))]:
            extra = draw(mostly(st.just(""), st.sampled_from(["notapid\n", "\u00b2\n", "-4\n"])))
            listed.append(draw(entry(st.just("".join(f"{p}\n" for p in part) + extra))))
        sandboxes[f"sb{k}"] = (listed, procs)
    return sandboxes


def put(path: Path, what: object) -> None:
    """A file with the text, nothing for None, a directory for True."""
    if isinstance(what, str):
        path.write_text(what, newline="")
    elif what is True:
        path.mkdir()


def build(root: Path, tree: Tree) -> dict[str, str]:
    """Writes the tree (one cgroup directory, or a pod's and its overhead's) and returns the pod
    uids the locator needs to find the second layout."""
    proc, cgroup = root / "proc", root / "cgroup"
    proc.mkdir()
    uids = {}
    for sb, (listed, procs) in tree.items():
        dirs = [cgroup / f"kata_{sb}"]
        if len(listed) == 2:
            uids[sb] = f"uid-{sb}"
            dirs = [cgroup / "kubepods" / f"poduid-{sb}", cgroup / "kata_overhead" / sb]
        for d, text in zip(dirs, listed, strict=True):
            d.mkdir(parents=True)
            put(d / "cgroup.procs", text)
        for pid, files in procs.items():
            d = proc / str(pid)
            d.mkdir()
            for name in ("stat", "status", "io"):
                put(d / name, files[name])
            task = files["task"]
            if task == "file":
                (d / "task").write_text("")
            elif isinstance(task, dict):
                for tid, (stat, wchan) in task.items():
                    (d / "task" / str(tid)).mkdir(parents=True)
                    put(d / "task" / str(tid) / "stat", stat)
                    put(d / "task" / str(tid) / "wchan", wchan)
    return uids


def general(_: str) -> None:
    return None


def outcome(source: ProcSource, sandboxes: frozenset[str]) -> tuple[object, ...]:
    """What a read gives, or what it raises (a pid token that is a digit but no number, `²`)."""
    try:
        r = source.read(sandboxes)
    except ValueError as exc:
        return type(exc), str(exc)
    return r.samples(), r.errors, r.error_samples


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(node())
def test_fast_paths_read_any_tree_as_the_general_code_does(tree: Tree) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sandboxes = frozenset(tree)
        uids = build(root, tree)
        fast = outcome(ProcSource(root / "proc", root / "cgroup", lambda: 5, lambda: uids), sandboxes)
        with mock.patch.object(procfs, "_io_fast", general), mock.patch.object(procfs, "_ctxt_fast", general):
            slow = outcome(ProcSource(root / "proc", root / "cgroup", lambda: 5, lambda: uids), sandboxes)
    assert fast == slow


@settings(max_examples=2000, deadline=None)
@given(io_text())
def test_io_fast_path_finds_what_the_general_lookup_finds(text: str) -> None:
    vals = procfs._io_fast(text)
    if vals is not None:
        assert vals == tuple(line_value(text, f"{k}:") for k in procfs.IO_ITEMS)


@settings(max_examples=2000, deadline=None)
@given(status_text())
def test_ctxt_fast_path_finds_what_the_general_lookup_finds(text: str) -> None:
    vals = procfs._ctxt_fast(text)
    if vals is not None:
        assert vals == (line_value(text, "voluntary_ctxt_switches:"), line_value(text, "nonvoluntary_ctxt_switches:"))


def test_fast_paths_take_the_kernels_own_text() -> None:
    """The property tests above would pass with fast paths that never fire."""
    io = "rchar: 1\nwchar: 2\nsyscr: 3\nsyscw: 4\nread_bytes: 5\nwrite_bytes: 6\ncancelled_write_bytes: 7\n"
    assert procfs._io_fast(io) == (" 1", " 2", " 5", " 6")
    assert procfs._ctxt_fast(Path(f"/proc/{os.getpid()}/status").read_text()) is not None
    assert procfs._io_fast(Path(f"/proc/{os.getpid()}/io").read_text()) is not None
