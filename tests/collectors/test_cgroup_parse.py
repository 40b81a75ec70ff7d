"""The cgroup source's parse of the kernel's layouts against its general parse, the oracle:
on any file contents the two give the same samples, in the same order, and the same errors."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import collectors.cgroup as cg
from collectors.cgroup import CgroupSource, read_general
from collectors.sim.model import Fleet, SimSandbox
from collectors.sim.render import NodeTree
from collectors.sim.spec import FleetSpec

FILES = ("cpu.stat", "memory.current", "io.stat", "cpu.pressure", "memory.pressure", "io.pressure")
SPEC_FILES = ("memory.max", "cpu.max")
DIR = "<a directory>"  # put there instead of the file: reading it fails with IsADirectoryError


class General(CgroupSource):
    """The source with only the general parse."""

    _read_one = staticmethod(read_general)


def digits() -> st.SearchStrategy[str]:
    """Numbers as the kernel prints them (and zero-padded): longer ones come from `changed`."""
    return st.integers(0, 2**64 - 1).map(str) | st.sampled_from(["0", "007", "9" * 20])


def avg() -> st.SearchStrategy[str]:
    return st.builds("{}.{:02d}".format, st.integers(0, 100), st.integers(0, 99)) | st.sampled_from(["0.00", "1.5"])


def psi_line(kind: str) -> st.SearchStrategy[str]:
    return st.builds(f"{kind} avg10={{}} avg60={{}} avg300={{}} total={{}}\n".format, avg(), avg(), avg(), digits())


IDLE_SOME = "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
IDLE = IDLE_SOME + IDLE_SOME.replace("some", "full")
# a PSI file's shape: `some` and `full` lines, `some` alone (an older kernel's cpu.pressure), none (PSI off)
PSI: dict[str, st.SearchStrategy[str | None]] = {
    "full": st.just(IDLE) | st.builds(str.__add__, psi_line("some"), psi_line("full")),
    "some": st.just(IDLE_SOME) | psi_line("some"),
    "off": st.none(),
}
CANONICAL: dict[str, st.SearchStrategy[str | None]] = {
    "cpu.stat": st.builds(
        "usage_usec {}\nuser_usec {}\nsystem_usec {}\n{}".format,
        digits(),
        digits(),
        digits(),
        st.sampled_from(["", "nr_periods 0\nnr_throttled 0\nthrottled_usec 0\n"]),
    ),
    "memory.current": st.builds("{}\n".format, digits()),
    "io.stat": st.lists(
        st.builds(
            "{}:{} rbytes={} wbytes={} rios={} wios={} dbytes={} dios={}\n".format,
            st.integers(0, 300),
            st.integers(0, 16),
            *(digits() for _ in range(6)),
        ),
        max_size=3,
    ).map("".join),
    "memory.max": st.just("max\n") | st.builds("{}\n".format, digits()),
    "cpu.max": st.builds("{} {}\n".format, st.just("max") | digits(), st.just("100000") | digits()),
}


def edit(text: str, at: int, how: str) -> str:
    """One change at `at`: a character or token put in, a character taken out, the text cut
    there, the whole text twice (duplicate keys)."""
    i = at % (len(text) + 1)
    if how == "del":
        return text[:i] + text[i + 1 :]
    if how == "cut":
        return text[:i]
    if how == "twice":
        return text + text
    return text[:i] + how + text[i:]


EDITS = [" ", "\t", "\r", "\x0b", "\x1c", "\n", "\u2003", "x", "-", "\xb2", "nan", "1e3", "=", "0" * 25]
EDITS += ["9", "1" * 5000, "del", "cut", "twice"]  # a digit more: past a u64; past int()'s digit limit


def canonical(name: str, shapes: dict[str, str]) -> st.SearchStrategy[str | None]:
    """The kernel's layout of file `name`; a PSI file in the shape drawn for its resource."""
    res, _, kind = name.partition(".")
    return PSI[shapes[res]] if kind == "pressure" else CANONICAL[name]


@st.composite
def changed(draw: st.DrawFn, name: str, shapes: dict[str, str]) -> str | None:
    """A file's text in the kernel's layout with a few edits, or a file that is missing,
    unreadable (DIR), empty or garbage."""
    text = draw(canonical(name, shapes)) or IDLE
    for at, how in draw(st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(EDITS)), min_size=1, max_size=3)):
        text = edit(text, at, how)
    return draw(st.sampled_from([text, text, text, None, DIR, "", "garbage\n"]))


def put(path: Path, text: str | None) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    if text == DIR:
        path.mkdir()
    elif text is not None:
        path.write_text(text)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> tuple[NodeTree, list[SimSandbox]]:
    fleet = Fleet(FleetSpec(nodes=1, sandboxes=2, tenants=1), now_ms=1_000_000)
    tree = NodeTree(tmp_path_factory.mktemp("cg"))
    for sb in fleet.live():
        tree.create(sb)
    live = fleet.live()
    assert {sb.overhead_layout for sb in live} == {True, False}
    return tree, live


def outcome(src: CgroupSource, ids: frozenset[str]) -> tuple[str, int, list[str]]:
    try:
        r = src.read(ids)
    except Exception as exc:  # what escapes the source escapes both the same way
        return f"{type(exc).__name__}: {exc}", -1, []
    return repr(r.samples()), r.errors, r.error_samples  # repr: 1 is not 1.0, -0.0 not 0.0


def each_file(tree: NodeTree, live: list[SimSandbox]) -> Iterator[Path]:
    for sb in live:
        dirs = tree.sandbox_cgroups(sb)
        yield from (d / f for d in dirs for f in FILES)
        yield from (dirs[0] / f for f in SPEC_FILES)


def sources(live: list[SimSandbox], tree: NodeTree) -> Iterator[CgroupSource]:
    uids = {sb.id: sb.pod_uid for sb in live}
    for cls in (CgroupSource, General):
        yield cls(tree.cgroup, lambda: 5, lambda: uids)


SHAPES = st.fixed_dictionaries({res: st.sampled_from(list(PSI)) for res in ("cpu", "memory", "io")})


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_kernel_layout_parse_is_the_general_parse(node: tuple[NodeTree, list[SimSandbox]], data: st.DataObject) -> None:
    """Every file in the kernel's layout (PSI shapes alike in a sandbox's directories); that
    and one file changed; or each file drawn on its own, changed or not, shapes as they come."""
    tree, live = node
    paths = list(each_file(tree, live))
    mode = data.draw(st.sampled_from(["canonical", "one changed", "any"]), label="mode")
    shapes = data.draw(SHAPES, label="PSI shapes")
    texts = [data.draw(canonical(p.name, shapes)) for p in paths]
    if mode == "one changed":
        at = data.draw(st.integers(0, len(paths) - 1))
        texts[at] = data.draw(changed(paths[at].name, shapes))
    elif mode == "any":
        for at, p in enumerate(paths):
            shapes = data.draw(SHAPES)
            texts[at] = data.draw(canonical(p.name, shapes) | changed(p.name, shapes))
    for p, text in zip(paths, texts, strict=True):
        put(p, text)
    note = "\n".join(f"{p.relative_to(tree.cgroup)}: {t!r}" for p, t in zip(paths, texts, strict=True))
    ids = frozenset(sb.id for sb in live)
    fast, general = (outcome(src, ids) for src in sources(live, tree))
    assert fast == general, note


@pytest.mark.parametrize("cpu_psi", ["busy", "busy_some", "idle", "off"])
def test_canonical_files_take_no_general_parse(
    node: tuple[NodeTree, list[SimSandbox]], monkeypatch: pytest.MonkeyPatch, cpu_psi: str
) -> None:
    """Files in the kernel's layouts, both Kata layouts, PSI busy, idle, without `full` and
    off, are read by the kernel-layout parse alone (the property above holds if it never is)."""
    tree, live = node
    some = "some avg10=92.10 avg60=75.40 avg300=30.20 total=190000000\n"
    busy = some + some.replace("some", "full")
    files = {
        "cpu.stat": "usage_usec 9\nuser_usec 5\nsystem_usec 4\nnr_periods 0\n",
        "memory.current": "7\n",
        "io.stat": "8:0 rbytes=1 wbytes=2 rios=0 wios=0 dbytes=0 dios=0\n",
        "cpu.pressure": {"busy": busy, "busy_some": some, "idle": IDLE, "off": None}[cpu_psi],
        "memory.pressure": IDLE,
        "io.pressure": busy,
        "memory.max": "max\n",
        "cpu.max": "200000 100000\n",
    }
    for sb in live:
        for d in tree.sandbox_cgroups(sb):
            for name, text in files.items():
                put(d / name, text)
        put(d / "io.pressure", busy.replace("9", "3"))  # the last directory's differ
    ids = frozenset(sb.id for sb in live)
    want = outcome(next(s for s in sources(live, tree) if isinstance(s, General)), ids)
    monkeypatch.setattr(cg, "read_general", lambda *a: pytest.fail("general parse used"))
    got = outcome(CgroupSource(tree.cgroup, lambda: 5, lambda: {sb.id: sb.pod_uid for sb in live}), ids)
    assert got == want
    assert got[1] == 0
