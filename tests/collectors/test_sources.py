from __future__ import annotations

import math
import random
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collectors import _expfmt
from collectors.base import Reading
from collectors.cgroup import CgroupSource
from collectors.host import HostSource
from collectors.katamonitor import ParseCache, _data_tokens, _parse_python, _scanned, _strip_comments, floats, parse
from collectors.procfs import ProcSource, parse_stat
from collectors.sim.katamon import exposition
from collectors.sim.model import Fleet
from collectors.sim.render import NodeTree, qemu_threads, virtiofsd_threads
from collectors.sim.spec import FaultSpec, FleetSpec
from collectors.tenancy import TenantRule
from contracts import names as n

CRI = 'sandbox_id="sb1",cri_uid="u1",cri_name="web-0",cri_namespace="tenant-a"'


def test_kata_monitor_keeps_families_and_labels() -> None:
    text = "\n".join(
        [
            "# HELP kata_hypervisor_proc_stat x",
            "# TYPE kata_hypervisor_proc_stat gauge",
            f'kata_hypervisor_proc_stat{{item="utime",{CRI}}} 4310',
            f'kata_guest_cpu_time{{cpu="total",item="idle",{CRI}}} 1.5e3',
            f'kata_shim_agent_rpc_durations_histogram_milliseconds_count{{action="grpc.CheckRequest",{CRI}}} 12',
            "kata_monitor_running_shim_count 1",
            f"kata_sandbox_inflight_requests{{{CRI}}} 7",
            "go_goroutines 12",
        ]
    )
    r = parse(text, 1000)
    assert r.errors == 0
    assert r.samples() == [
        ("sb1", "kata_hypervisor_proc_stat", 'item="utime"', 4310.0),
        ("sb1", "kata_guest_cpu_time", 'cpu="total",item="idle"', 1500.0),
        ("sb1", "kata_shim_agent_rpc_durations_histogram_milliseconds_count", 'action="grpc.CheckRequest"', 12.0),
        ("sb1", "kata_sandbox_inflight_requests", "", 7.0),  # the gauge scale recommendations prefer
    ]
    assert r.labels["sb1"] == {"cri_uid": "u1", "cri_name": "web-0", "cri_namespace": "tenant-a"}


def test_kata_monitor_malformed_lines_counted_good_kept() -> None:
    text = "\n".join(
        [
            f"kata_hypervisor_threads{{{CRI}}} 7",
            "kata_hypervisor_fds{item=broken} 3",
            f"kata_hypervisor_fds{{{CRI}}} notanumber",
            'kata_guest_load{item="load1"} 0.5',
            "}{ garbage",
            f"kata_guest_load{{{CRI}}}1",  # no space before the value
            f"kata_guest_load{{{CRI}}} 1 2 3",  # too many fields
            f"kata_guest_load{{{CRI}}} 1 notatimestamp",
            f"kata_guest_lo-ad{{{CRI}}} 1",  # not a metric name
            f"kata_guest_load{{{CRI}",  # truncated
            f"kata_guest_load{{{CRI}}} 2 1700000000000",  # a timestamp is allowed
            f"kata_agent_scrape_count{{{CRI}}} 9",
        ]
    )
    r = parse(text, 1000)
    assert r.errors == 9
    assert [v for *_, v in r.samples()] == [7.0, 2.0, 9.0]


def test_kata_monitor_escaped_label_values() -> None:
    r = parse('kata_guest_meminfo{item="a\\"}b",sandbox_id="s"} 1\n', 0)
    assert r.errors == 0 and [s for _, _, s, _ in r.samples()] == ['item="a\\"}b"']


@pytest.fixture
def node(tmp_path: Path) -> tuple[NodeTree, Fleet]:
    fleet = Fleet(FleetSpec(nodes=1, sandboxes=4, tenants=2), now_ms=1_000_000)
    tree = NodeTree(tmp_path)
    for sb in fleet.live():
        sb.advance(1_005_000)
        tree.create(sb)
    tree.write_host(1_005_000, fleet.live())
    return tree, fleet


def test_cgroup_both_layouts_sum_to_truth(node: tuple[NodeTree, Fleet]) -> None:
    tree, fleet = node
    live = fleet.live()
    assert {sb.overhead_layout for sb in live} == {True, False}
    src = CgroupSource(tree.cgroup, lambda: 5, lambda: {sb.id: sb.pod_uid for sb in live})
    r = src.read(frozenset(sb.id for sb in live))
    assert r.errors == 0
    cpu = {
        s: v for s, m, v in zip(r.rows.sandbox, r.rows.metric, r.rows.value, strict=True) if m == n.M_CG_CPU_USAGE_US
    }
    assert cpu == {sb.id: sb.cpu_us for sb in live}
    spec = {
        s: v for s, m, v in zip(r.rows.sandbox, r.rows.metric, r.rows.value, strict=True) if m == n.M_SPEC_VCPU_MILLI
    }
    assert spec == {sb.id: sb.vcpu_milli for sb in live}


def test_cgroup_unreadable_file_counted_others_kept(node: tuple[NodeTree, Fleet]) -> None:
    tree, fleet = node
    live = fleet.live()
    broken = next(sb for sb in live if not sb.overhead_layout)
    (tree.sandbox_cgroups(broken)[0] / "cpu.stat").unlink()
    src = CgroupSource(tree.cgroup, lambda: 5, lambda: {sb.id: sb.pod_uid for sb in live})
    r = src.read(frozenset(sb.id for sb in live))
    assert r.errors == 1
    assert set(r.rows.sandbox) == {sb.id for sb in live} - {broken.id}


def test_host_source_reads_proc(node: tuple[NodeTree, Fleet]) -> None:
    tree, _ = node
    r = HostSource(tree.proc, lambda: 7).read(frozenset())
    assert r.errors == 0
    metrics = set(r.rows.metric)
    assert {n.M_HOST_CPU_MS, n.M_HOST_PROCS_BLOCKED, n.M_HOST_MEMINFO, n.M_HOST_DISK, n.M_HOST_LOAD} <= metrics
    (tree.proc / "loadavg").write_text("garbage\n")
    assert HostSource(tree.proc, lambda: 7).read(frozenset()).errors == 1


def test_tenant_rule() -> None:
    assert TenantRule().tenant({"cri_namespace": "acme"}) == "acme"
    assert TenantRule().tenant({}) == n.UNATTRIBUTED
    assert TenantRule("cri_namespace", {"ns1": "acme"}).tenant({"cri_namespace": "other"}) == n.UNATTRIBUTED


def proc_rows(r: Reading, sb: str) -> dict[tuple[str, str], float]:
    return {
        (m, s): v for b, m, s, v in zip(r.rows.sandbox, r.rows.metric, r.rows.sub, r.rows.value, strict=True) if b == sb
    }


def proc_source(tree: NodeTree, fleet: Fleet) -> ProcSource:
    return ProcSource(tree.proc, tree.cgroup, lambda: 5, lambda: {sb.id: sb.pod_uid for sb in fleet.live()})


def test_proc_source_finds_qemu_and_virtiofsd_in_both_layouts(node: tuple[NodeTree, Fleet]) -> None:
    tree, fleet = node
    live = fleet.live()
    r = proc_source(tree, fleet).read(frozenset(sb.id for sb in live))
    assert r.errors == 0
    for sb in live:
        rows = proc_rows(r, sb.id)
        assert rows[n.M_PROC_COUNT, 'proc="qemu"'] == 1 and rows[n.M_PROC_COUNT, 'proc="virtiofsd"'] == 1
        ticks = [rows[n.M_PROC_CPU_TICKS, f'item="{i}",proc="qemu"'] for i in ("utime", "stime")]
        assert sum(ticks) == (sb.cpu_us // 10_000) * 7 // 8
        assert rows[n.M_PROC_CTXT, 'item="voluntary",proc="qemu"'] == sb.vctx
        assert rows[n.M_PROC_IO, 'item="read_bytes",proc="qemu"'] == sb.io_read
        assert rows[n.M_PROC_THREADS, 'proc="qemu",state="all"'] == len(qemu_threads(sb))
        assert rows[n.M_PROC_THREADS, 'proc="qemu",state="D"'] == 0
        assert not any(m == n.M_PROC_THREAD_BLOCKED for m, _ in rows)


def test_proc_source_names_each_blocked_thread_of_a_hung_qemu(node: tuple[NodeTree, Fleet]) -> None:
    tree, fleet = node
    sb = fleet.live()[0]
    sb.hung = True
    tree.update(sb)
    rows = proc_rows(proc_source(tree, fleet).read(frozenset({sb.id})), sb.id)
    assert rows[n.M_PROC_THREADS, 'proc="qemu",state="D"'] == len(qemu_threads(sb))
    blocked = {s for m, s in rows if m == n.M_PROC_THREAD_BLOCKED}
    assert f'proc="qemu",thread="CPU 0/KVM",tid="{sb.qemu_pid + 3}",wchan="kvm_vcpu_block"' in blocked
    assert len(blocked) == len(qemu_threads(sb)) + len(virtiofsd_threads(sb))


def test_proc_source_bad_input_is_counted_and_the_rest_kept(node: tuple[NodeTree, Fleet]) -> None:
    tree, fleet = node
    a, b, c, d = fleet.live()
    (tree.proc / str(a.qemu_pid) / "stat").write_text("garbage")  # malformed
    shutil.rmtree(tree.proc / str(b.qemu_pid))  # exited between cgroup.procs and /proc: normal, not counted
    procs = tree.sandbox_cgroups(c)[-1] / "cgroup.procs"
    procs.write_text(procs.read_text() + "notapid\n²\n")  # "²": isdigit() but not int()
    shell = tree.proc / "4242"
    shell.mkdir()
    (shell / "stat").write_text("4242 (containerd-shim) S 1 2 3 0 -1 0 0 0 0 0 5 6 0\n")  # not QEMU: ignored
    procs = tree.sandbox_cgroups(d)[-1] / "cgroup.procs"
    procs.write_text(procs.read_text() + "4242\n")
    r = proc_source(tree, fleet).read(frozenset(sb.id for sb in (a, b, c, d)))
    assert r.errors == 3
    for sb in (a, b):
        assert proc_rows(r, sb.id)[n.M_PROC_COUNT, 'proc="virtiofsd"'] == 1  # the rest of the sandbox is kept
    for sb in (c, d):
        assert proc_rows(r, sb.id)[n.M_PROC_COUNT, 'proc="qemu"'] == 1


def test_parse_stat_reads_the_real_kernel_format() -> None:
    comm, state, utime, stime = parse_stat(Path("/proc/self/stat").read_text())
    assert comm == Path("/proc/self/comm").read_text().strip() and state in "RS" and utime >= 0 and stime >= 0
    assert parse_stat("7 (CPU 0/KVM) D 1 2 3 0 -1 0 0 0 0 0 55 66 0")[1:] == ("D", 55, 66)
    assert parse_stat("8 (a) b)) S 1 2 3 0 -1 0 0 0 0 0 1 2 0")[0] == "a) b)"
    with pytest.raises(ValueError):
        parse_stat("no parens here")


def test_injected_faults_show_in_every_signal(tmp_path: Path) -> None:
    spec = FleetSpec(
        nodes=1,
        sandboxes=3,
        churn_per_min=0,
        reset_per_min=0,
        faults=(FaultSpec("qemu_hang", at_s=1, duration_s=10), FaultSpec("io_stall", at_s=1)),
    )
    fleet = Fleet(spec, now_ms=0)
    tree = NodeTree(tmp_path)
    for sb in fleet.live():
        tree.create(sb)
    tree.write_host(0, fleet.live())
    fleet.step(2000)
    hung = next(sb for sb in fleet.live() if sb.hung)
    stalled = next(sb for sb in fleet.live() if sb.stalled)
    frozen = (hung.cpu_us, hung.check_count, hung.vctx, stalled.io_read)
    fleet.step(5000)
    assert (hung.cpu_us, hung.check_count, hung.vctx, stalled.io_read) == frozen
    for sb in fleet.live():
        tree.update(sb)
    tree.write_host(5000, fleet.live())
    text = exposition(fleet.live(), random.Random(1))
    assert hung.id not in text and stalled.id in text
    assert f'kata_guest_diskstat{{disk="vda",item="in_progress",sandbox_id="{stalled.id}"' in text
    cg = CgroupSource(tree.cgroup, lambda: 5, lambda: {sb.id: sb.pod_uid for sb in fleet.live()})
    rows = proc_rows(cg.read(frozenset({stalled.id})), stalled.id)
    assert rows[n.M_CG_PRESSURE, 'item="avg10",kind="full",resource="io"'] > 10
    host = HostSource(tree.proc, lambda: 5).read(frozenset())
    disk = proc_rows(host, "")
    assert disk[n.M_HOST_DISK, 'disk="nvme0n1",item="in_progress"'] > 0
    tree.write_host(8000, fleet.live())
    later = proc_rows(HostSource(tree.proc, lambda: 8).read(frozenset()), "")
    for item, grew in (("reads", False), ("writes", False), ("io_ms", True)):  # busy, yet nothing completes
        key = (n.M_HOST_DISK, f'disk="nvme0n1",item="{item}"')
        assert (later[key] > disk[key]) is grew
    fleet.step(12_000)
    assert not hung.hung and stalled.stalled  # the hang ended after 10 s, the stall runs on
    faults = {f["kind"]: f for f in fleet.truth()["faults"]}
    assert faults["qemu_hang"]["start_ms"] == 2000 and faults["qemu_hang"]["end_ms"] == 12_000
    assert faults["io_stall"]["end_ms"] is None and faults["io_stall"]["sandbox_id"] == stalled.id


SERIES = st.tuples(
    st.sampled_from(["kata_guest_meminfo", "kata_hypervisor_fds", "kata_agent_total_rss", "kata_shim_threads"]),
    st.sampled_from(["sb1", "sb2", "sb3"]),
    st.sampled_from(["", 'item="a"', 'cpu="0",item="b"']),  # canonical: keys sorted
)


@settings(max_examples=150, deadline=None)
@given(
    good=st.lists(st.tuples(SERIES, st.integers(0, 10**12)), max_size=30),
    noise=st.lists(
        st.sampled_from(
            [
                "# HELP kata_guest_meminfo memory",
                "# TYPE kata_guest_meminfo gauge",
                "kata_monitor_scrape_count 4",
                "go_goroutines 7",
                "",
                "}{ garbage",
                'kata_guest_load{item="x"} 1',
                "kata_guest_load{truncated",
                'kata_hypervisor_fds{sandbox_id="sb9"} notanumber',
                'kata_guest_tasks{item="a b",sandbox_id="sb1"} 2',
                'kata_guest_tasks{sandbox_id="sb1"} 3 1700000000000',
            ]
        ),
        max_size=8,
    ),
    data=st.data(),
)
def test_kata_monitor_parse_keeps_every_good_line_and_counts_every_bad_one(
    good: list[tuple[tuple[str, str, str], int]], noise: list[str], data: st.DataObject
) -> None:
    """The fast path (tokens in step) and the line-by-line path agree on any mix of lines."""
    good = list({s: (s, v) for s, v in good}.values())  # one value per series
    lines = [
        f'{m}{{{sub + "," if sub else ""}sandbox_id="{sb}",cri_namespace="t-{sb}"}} {v}' for (m, sb, sub), v in good
    ]
    lines += noise
    order = data.draw(st.permutations(range(len(lines))))
    text = "\n".join(lines[i] for i in order)
    cache = ParseCache()
    for _ in range(2):  # the second time, every head comes from the cache
        r = parse(text, 1000, cache)
        want = {(sb, m, sub, float(v)) for (m, sb, sub), v in good}
        want |= {("sb1", "kata_guest_tasks", "", 3.0)} if any("1700000000000" in x for x in noise) else set()
        want |= {("sb1", "kata_guest_tasks", 'item="a b"', 2.0)} if any("a b" in x for x in noise) else set()
        assert set(r.samples()) == want
        bad = ("}{ garbage", 'kata_guest_load{item="x"} 1', "kata_guest_load{truncated", "notanumber")
        assert r.errors == sum(1 for x in noise if any(b in x for b in bad))
        assert {sb for sb, *_ in r.samples()} <= set(r.labels)


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=60).map(lambda b: bytes(c for c in b if c in b"#\n x{}") or b"")
    | st.text("#\n x{}", max_size=60).map(str.encode)
)
def test_strip_comments_drops_exactly_the_lines_that_start_with_a_hash(body: bytes) -> None:
    lines = body.split(b"\n")
    want = [x + b"\n" for x in lines[:-1] if not x.startswith(b"#")]
    want += [lines[-1]] if not lines[-1].startswith(b"#") else []
    assert _strip_comments(body) == b"".join(want)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.sampled_from([b"#", b"# HELP", b"a", b"b 1", b"#x y", b" ", b"\n", b"\t", b"\r", b"1"]), max_size=40)
)
def test_tokens_cut_around_comments_are_the_stripped_bodys_tokens(parts: list[bytes]) -> None:
    body = b"".join(parts)
    got = _data_tokens(body)
    assert got is None or got == _strip_comments(body).split()
    if b"#" not in body.replace(b"\n#", b"").removeprefix(b"#"):  # every `#` starts a line
        assert got is not None


VALUE = st.one_of(
    st.integers(0, 10**19).map(lambda i: str(i).encode()),
    st.integers(0, 999).map(lambda i: b"0" * (i % 4) + str(i).encode()),
    st.floats(allow_nan=True).map(lambda f: repr(f).encode()),
    st.text("0123456789.-+eEnaINf_ \x00x", min_size=1, max_size=21).map(str.encode),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(VALUE, max_size=20))
def test_value_columns_convert_as_numpy_does(values: list[bytes]) -> None:
    """The digit-column conversion gives numpy's own values, and fails where numpy fails."""
    s = np.array(values, dtype=bytes)
    try:
        want = s.astype(np.float64)
    except ValueError:
        with pytest.raises(ValueError):
            floats(s)
        return
    np.testing.assert_array_equal(floats(s), want)


FAMILIES = ("kata_guest_meminfo", "kata_hypervisor_netdev", "kata_shim_agent_rpc_durations_histogram_milliseconds")
NOISE = ("go_goroutines 7", "}{ garbage", 'kata_guest_load{item="x"} 1', "kata_guest_load{truncated",
         'kata_hypervisor_fds{sandbox_id="sb9"} notanumber', 'kata_guest_tasks{sandbox_id="sb1"} 3 1700000000000',
         "# HELP kata_guest_meminfo x")  # fmt: skip


@st.composite
def kata_bodies(draw: st.DrawFn) -> list[bytes]:
    """Scrapes of one kata-monitor as a real one orders them (families, then sandboxes, each
    block of lines in a fixed order), with what can change between scrapes: the order of
    families and sandboxes, sandboxes and series come and go, a series' labels change, lines
    of garbage, a block reordered or split, a body shuffled line by line."""
    sandboxes = draw(st.lists(st.sampled_from(["sb1", "sb2", "sb3", "sb4"]), min_size=1, max_size=4, unique=True))
    items = draw(st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=4, unique=True))
    suffix = {FAMILIES[2]: ("_bucket", "_sum", "_count")}
    bodies = []
    for _ in range(draw(st.integers(1, 5))):
        fams = draw(st.permutations(FAMILIES))
        order = draw(st.permutations(sandboxes))
        if draw(st.booleans()):  # a sandbox goes or comes
            order = order[1:] if draw(st.booleans()) else [*order, draw(st.sampled_from(["sb5", "sb6"]))]
        if draw(st.booleans()):  # a series comes or goes
            items = items[1:] if len(items) > 1 and draw(st.booleans()) else [*items, draw(st.sampled_from("efg"))]
        ns = draw(st.sampled_from(["t", "t", "t2"]))  # a label changes
        lines = []
        for fam in fams:
            lines.append(f"# TYPE {fam} gauge")
            for sb in order:
                for it in items:
                    for sfx in suffix.get(fam, ("",)):
                        v = draw(st.sampled_from(["1", "250", "1.5e3", "0"]))
                        lines.append(f'{fam}{sfx}{{item="{it}",sandbox_id="{sb}",cri_namespace="{ns}"}} {v}')
        for _ in range(draw(st.integers(0, 2))):
            lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(NOISE)))
        how = draw(st.sampled_from(["as is", "as is", "swap", "shuffle"]))
        if how == "swap" and len(lines) > 1:
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif how == "shuffle":
            lines = draw(st.permutations(lines))
        bodies.append(("\n".join(lines) + "\n").encode())
    return bodies


# The kata-monitor body's C scan (collectors/_expfmt.c) against the Python parser it stands in
# for: on any body the scan accepts, the same samples, labels and errors; on any value it
# reads, the value `float()` reads.


def same(a: list[tuple[str, str, str, float]], b: list[tuple[str, str, str, float]]) -> bool:
    """Sample lists equal, a NaN equal to a NaN and -0.0 told from 0.0 (by the bits)."""
    bits = [[(s, m, u, struct.pack("<d", v)) for s, m, u, v in x] for x in (a, b)]
    return bits[0] == bits[1]


def check(bodies: list[bytes]) -> int:
    """Parses the bodies in turn with the scan (falling back where it gives way) and with
    Python alone, each with its own cache carried across bodies; returns how many the scan took."""
    native, python, small = ParseCache(), ParseCache(), ParseCache(max_series=8)  # small: reset often
    taken = 0
    for body in bodies:
        taken += _scanned(body, 5, ParseCache()) is not None
        got, want = parse(body, 5, native), _parse_python(body, 5, python)
        assert same(got.samples(), want.samples())
        assert (got.errors, got.error_samples, got.labels) == (want.errors, want.error_samples, want.labels)
        assert same(parse(body, 5, small).samples(), want.samples())
    return taken


@settings(max_examples=300, deadline=None)
@given(kata_bodies())
def test_scan_parses_kata_monitor_bodies_as_python_does(bodies: list[bytes]) -> None:
    """Bodies as a real kata-monitor orders them, changing between scrapes, garbage included;
    the scan takes every body without garbage."""
    clean = [b for b in bodies if not any(x.encode() in b for x in NOISE)]
    assert check([*bodies, *bodies]) >= 2 * len(clean)


TOKENS = [b"kata_guest_load", b'{sandbox_id="s1"}', b'{item="a",sandbox_id="s2",cri_namespace="t"}', b"go_gc",
          b"kata_monitor_x", b"{", b"}", b'"', b"=", b",", b"#", b" ", b"  ", b"\n", b"\t", b"\r", b"\x0b", b"\x0c",
          b"\x00", b"\xff", b"1", b"-2", b"+3", b"0.5", b"1e3", b"NaN", b"+Inf", b"-Inf", b"Inf", b"nan", b"1_0",
          b"12345678901234567", b"x", b".", b"e", b"-", b"+"]  # fmt: skip


@settings(max_examples=600, deadline=None)
@given(st.lists(st.lists(st.sampled_from(TOKENS), max_size=12).map(b"".join), min_size=1, max_size=4))
def test_scan_agrees_with_python_on_any_bytes(bodies: list[bytes]) -> None:
    """Bytes from the pieces that change how a body is cut: whitespace of every kind, comments,
    empty lines, braces and quotes, values of every form; whatever the scan accepts, Python
    reads the same."""
    check(bodies)


@settings(max_examples=600, deadline=None)
@given(st.lists(VALUE | st.sampled_from([b"NaN", b"+Inf", b"-Inf", b"-0", b"+0", b"1.", b".5", b"-1e-400"]),
                min_size=1, max_size=20))  # fmt: skip
def test_scan_reads_values_as_float_does(values: list[bytes]) -> None:
    """Every value the scan reads is `float()`'s to the bit; every one it cannot, it leaves."""
    values = [v for v in values if v and not any(c in v for c in b" \t\n\r\x0b\x0c")]
    body = b"".join(b'kata_guest_load{sandbox_id="s%d"} %s\n' % (i, v) for i, v in enumerate(values))
    got = _expfmt.HeadTable().scan(body)
    assert got is not None
    read = np.frombuffer(got[1], np.float64)
    for v, x, ok in zip(values, read.tolist(), got[2], strict=True):
        try:
            want = float(v)
        except ValueError:
            assert not ok
            continue
        if ok:
            assert struct.pack("<d", x) == struct.pack("<d", want) or (math.isnan(x) and math.isnan(want))
        else:
            assert b"_" in v or b"n" in v.lower() or len(v) > 64  # forms left to Python on purpose


def test_scan_takes_the_simulated_kata_monitor_body() -> None:
    """A whole simulated body (every family) is read by the scan, to the same samples."""
    fleet = Fleet(FleetSpec(nodes=1, sandboxes=5, tenants=2), now_ms=1_000_000)
    rng = random.Random(3)
    bodies = [exposition(fleet.live(), rng, detail=True) for _ in range(2)]
    raw = [b if isinstance(b, bytes) else b.encode() for b in bodies]
    assert check(raw) == 2
    assert len(parse(raw[0], 5).samples()) >= 5 * 250


HEAD = st.binary(min_size=1, max_size=40).map(lambda b: bytes(c for c in b if c not in b" \t\n\r\x0b\x0c#") or b"h")


@settings(max_examples=200, deadline=None)
@given(
    known=st.lists(HEAD, max_size=30),
    many=st.integers(0, 2500),  # past the table's first growth (1,024 heads)
    data=st.data(),
)
def test_head_table_gives_every_head_its_own_code(known: list[bytes], many: int, data: st.DataObject) -> None:
    """Whatever the heads (prefixes of each other, a byte apart, any length) and whatever
    order the bodies bring them in, the scan's code for a line is the dict's for its head and
    a head never added is unknown; the guess from the last body never stands in for a lookup."""
    heads = list(dict.fromkeys([*known, *(b"k%d" % i for i in range(many))]))
    codes = {h: i * 7 - 2 for i, h in enumerate(heads)}  # negative ones too, as SKIP and BAD
    table = _expfmt.HeadTable()
    for h in heads:
        table.add(h, codes[h])
    assert len(table) == len(heads)
    for _ in range(3):
        lines = data.draw(st.lists(st.sampled_from(heads) | HEAD, max_size=40)) if heads else []
        got = table.scan(b"".join(h + b" 1\n" for h in lines))
        assert got is not None
        want = [codes.get(h, -3) for h in lines]
        assert np.frombuffer(got[0], np.int64).tolist() == want
        assert [h for _, h in got[3]] == [h for h in lines if h not in codes]
