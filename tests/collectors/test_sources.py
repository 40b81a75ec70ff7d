from __future__ import annotations

from pathlib import Path

import pytest

from collectors.cgroup import CgroupSource
from collectors.host import HostSource
from collectors.katamonitor import parse
from collectors.sim.model import Fleet, FleetSpec
from collectors.sim.render import NodeTree
from collectors.tenancy import TenantRule
from sandmeter import names as n

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
            "go_goroutines 12",
        ]
    )
    r = parse(text, 1000)
    assert r.errors == 0
    assert list(zip(r.rows.sandbox, r.rows.metric, r.rows.sub, r.rows.value, strict=True)) == [
        ("sb1", "kata_hypervisor_proc_stat", 'item="utime"', 4310.0),
        ("sb1", "kata_guest_cpu_time", 'cpu="total",item="idle"', 1500.0),
        ("sb1", "kata_shim_agent_rpc_durations_histogram_milliseconds_count", 'action="grpc.CheckRequest"', 12.0),
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
            f"kata_agent_scrape_count{{{CRI}}} 9",
        ]
    )
    r = parse(text, 1000)
    assert r.errors == 4
    assert r.rows.value == [7.0, 9.0]


def test_kata_monitor_escaped_label_values() -> None:
    r = parse('kata_guest_meminfo{item="a\\"}b",sandbox_id="s"} 1\n', 0)
    assert r.errors == 0 and r.rows.sub == ['item="a\\"}b"']


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
