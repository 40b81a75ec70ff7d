"""Health state machines on scripted signal traces (batches built as the collector builds them)."""

from __future__ import annotations

from contracts import names as n
from contracts.builder import HOST, BatchBuilder
from contracts.names import HOST_DISK_STALL, IO_STALL, QEMU_HANG
from contracts.wire import EventKind, SampleBatch
from pipeline.health import HealthDetector, HealthEvent

CHECK = "kata_shim_agent_rpc_durations_histogram_milliseconds_count"


def scrape(
    t_s: float,
    *,
    d: int = 0,
    kata: bool = True,
    psi: float = 0.0,
    in_progress: float = 0.0,
    io_done: float | None = None,
    disk_stuck: bool = False,
    disks: tuple[str, ...] = ("nvme0n1",),
    stop: bool = False,
) -> SampleBatch:
    ts = 1_800_000_000_000 + int(t_s * 1000)
    b = BatchBuilder("node-1")
    e = b.entity("sb1", {"tenant": "acme"})
    frozen = d > 0
    progress = 1000.0 if frozen else ts / 10
    b.add(e, n.M_PROC_THREADS, 'proc="qemu",state="D"', ts, float(d))
    b.add(e, n.M_PROC_CPU_TICKS, 'item="utime",proc="qemu"', ts, progress)
    if d:
        b.add(e, n.M_PROC_THREAD_BLOCKED, 'proc="qemu",thread="CPU 0/KVM",tid="7",wchan="kvm_vcpu_block"', ts, 1)
    if kata:
        b.add(e, "kata_hypervisor_threads", "", ts, 8)
        b.add(e, CHECK, 'action="grpc.CheckRequest"', ts, float(int(t_s) // 5))
        b.add(e, "kata_guest_diskstat", 'disk="vda",item="in_progress"', ts, in_progress)
        b.add(e, "kata_guest_diskstat", 'disk="vda",item="reads"', ts, ts / 100 if io_done is None else io_done)
    b.add(e, n.M_CG_PRESSURE, 'item="avg10",kind="full",resource="io"', ts, psi)
    for disk in disks:
        b.add(HOST, n.M_HOST_DISK, f'disk="{disk}",item="in_progress"', ts, 32.0 if disk_stuck else 0.0)
        b.add(HOST, n.M_HOST_DISK, f'disk="{disk}",item="reads"', ts, 5.0 if disk_stuck else ts / 1000)
    if stop:
        b.event(e, EventKind.STOP, ts)
    return b.build(1, int(t_s), ts)


def run(det: HealthDetector, trace: list[SampleBatch]) -> list[tuple[float, str, str]]:
    out: list[HealthEvent] = []
    for b in trace:
        out += det.observe([b])
    return [((e.ts_ms - 1_800_000_000_000) / 1000, e.kind, e.event) for e in out]


def test_hang_opens_after_30_s_of_blocked_threads_and_closes_after_30_s_clear() -> None:
    trace = [scrape(t, d=3, kata=False) for t in range(0, 60, 5)] + [scrape(t) for t in range(60, 120, 5)]
    det = HealthDetector()
    events = run(det, trace[:6])
    assert events == []  # 25 s in: not yet
    events = run(det, trace[6:])
    assert events == [(30.0, QEMU_HANG, "open"), (90.0, QEMU_HANG, "close")]


def test_hang_evidence_names_the_blocked_thread() -> None:
    det = HealthDetector()
    events: list[HealthEvent] = []
    for t in range(0, 40, 5):
        events += det.observe([scrape(t, d=1, kata=False)])
    [ev] = events
    assert ev.opened_ms == 1_800_000_000_000 and ev.tenant == "acme"
    assert ev.evidence["blocked_threads"] == ['proc="qemu",thread="CPU 0/KVM",tid="7",wchan="kvm_vcpu_block"']
    assert ev.incident_id == "qemu_hang/node-1/sb1/1800000000000"


def test_flapping_signal_neither_opens_nor_closes_repeatedly() -> None:
    flapping = [scrape(t, d=(1 if (t // 5) % 2 else 0)) for t in range(0, 600, 5)]
    assert run(HealthDetector(), flapping) == []  # never bad for 30 s in a row
    det = HealthDetector()
    opened = run(det, [scrape(t, d=2, kata=False) for t in range(0, 35, 5)])
    assert opened == [(30.0, QEMU_HANG, "open")]
    assert run(det, [scrape(t, d=(1 if (t // 5) % 2 else 0)) for t in range(35, 600, 5)]) == []  # stays open


def test_a_healthy_sandbox_raises_nothing_in_ten_minutes() -> None:
    assert run(HealthDetector(), [scrape(t) for t in range(0, 600, 5)]) == []


def test_heartbeat_and_series_gone_with_qemu_flat_is_a_hang_without_d_state() -> None:
    trace = [scrape(t) for t in range(0, 20, 5)] + [scrape(t, kata=False) for t in range(20, 80, 5)]
    # kata series gone from 20 s; QEMU's progress still moves here, so only the stale
    # heartbeat (120 s) can tell, and it has not yet
    assert run(HealthDetector(), trace) == []
    det = HealthDetector(heartbeat_ms=30_000)
    assert run(det, trace) == [(75.0, QEMU_HANG, "open")]  # stale at 45 s (last change 15 s) + 30 s


def test_io_stall_hysteresis_on_pressure() -> None:
    det = HealthDetector()
    trace = [scrape(t, psi=85) for t in range(0, 70, 5)]
    trace += [scrape(t, psi=7) for t in range(70, 200, 5)]  # between the thresholds: stays open
    trace += [scrape(t, psi=1) for t in range(200, 240, 5)]
    assert run(det, trace) == [(60.0, IO_STALL, "open"), (230.0, IO_STALL, "close")]


def test_guest_disk_stuck_is_an_io_stall() -> None:
    trace = [scrape(t, in_progress=4, io_done=100) for t in range(0, 70, 5)]
    assert run(HealthDetector(), trace) == [(65.0, IO_STALL, "open")]  # stuck from the 2nd scrape (5 s)


def test_stop_closes_open_incidents_and_forgets_the_sandbox() -> None:
    det = HealthDetector()
    run(det, [scrape(t, d=1, kata=False) for t in range(0, 35, 5)])
    assert run(det, [scrape(40, d=1, kata=False, stop=True)]) == [(40.0, QEMU_HANG, "close")]
    assert det.sandboxes == {} and list(det.open_incidents()) == []


def test_host_disk_with_ios_in_flight_and_no_completions() -> None:
    det = HealthDetector()
    events = run(det, [scrape(t, disk_stuck=True) for t in range(0, 70, 5)] + [scrape(t) for t in range(70, 110, 5)])
    assert events == [(65.0, HOST_DISK_STALL, "open"), (100.0, HOST_DISK_STALL, "close")]


def test_a_host_disk_stall_is_nobodys_tenant_and_each_disk_its_own_incident() -> None:
    """A disk named like a tenant ("acme", sb1's tenant) is a disk, not that tenant; two disks of
    one node stalling in the same ms are two incidents."""
    det = HealthDetector()
    events: list[HealthEvent] = []
    for t in range(0, 70, 5):
        events += det.observe([scrape(t, disk_stuck=True, disks=("acme", "nvme1n1"))])
    assert [(e.kind, e.event, e.node, e.sandbox_id, e.tenant, e.disk) for e in events] == [
        (HOST_DISK_STALL, "open", "node-1", "", "", "acme"),
        (HOST_DISK_STALL, "open", "node-1", "", "", "nvme1n1"),
    ]
    assert events[0].opened_ms == events[1].opened_ms
    assert [e.incident_id for e in events] == [
        "host_disk_stall/node-1/acme/1800000005000",
        "host_disk_stall/node-1/nvme1n1/1800000005000",
    ]
    assert sorted(det.open_incidents()) == [
        (HOST_DISK_STALL, "node-1", "", "", "acme"),
        (HOST_DISK_STALL, "node-1", "", "", "nvme1n1"),
    ]
    # a sandbox's incidents keep their tenant and have no disk
    hang: list[HealthEvent] = []
    for t in range(70, 110, 5):
        hang += det.observe([scrape(t, d=1, kata=False, disk_stuck=True, disks=("acme", "nvme1n1"))])
    [ev] = hang
    assert (ev.kind, ev.tenant, ev.disk, ev.incident_id) == (
        QEMU_HANG,
        "acme",
        "",
        "qemu_hang/node-1/sb1/1800000070000",
    )
    assert (QEMU_HANG, "node-1", "sb1", "acme", "") in set(det.open_incidents())


def test_a_sandbox_that_vanishes_without_a_stop_is_forgotten_and_its_incident_closed() -> None:
    det = HealthDetector(forget_after_ms=60_000)
    run(det, [scrape(t, d=1, kata=False) for t in range(0, 35, 5)])  # hang open
    events: list[HealthEvent] = []
    for t in range(40, 110, 10):  # the node goes on reporting, without sb1
        ts = 1_800_000_000_000 + t * 1000
        other_b = BatchBuilder("node-1")
        e = other_b.entity("sb2", {"tenant": "acme"})
        other_b.add(e, "kata_hypervisor_threads", "", ts, 8)
        events += det.observe([other_b.build(1, t, ts)])
    gone = [e for e in events if e.sandbox_id == "sb1"]
    assert [(e.kind, e.event, e.evidence["closed_by"]) for e in gone] == [
        (QEMU_HANG, "close", "sandbox no longer reported")
    ]
    assert gone[0].ts_ms == 1_800_000_000_000 + 90_000  # 60 s after it was last seen at 30 s
    assert ("node-1", "sb1") not in det.sandboxes and ("node-1", "sb2") in det.sandboxes


def test_detector_state_survives_a_move_through_a_checkpoint() -> None:
    first = HealthDetector()
    assert run(first, [scrape(t, d=1, kata=False, disk_stuck=True) for t in range(0, 20, 5)]) == []
    moved = HealthDetector()
    moved.import_(first.export(frozenset({"node-1"})))
    assert HealthDetector().export(frozenset({"node-1"})) != first.export(frozenset({"node-1"}))
    # the hang began at 0 s on the first processor; the second opens it at 30 s with that start
    events: list[HealthEvent] = []
    for t in range(20, 70, 5):
        events += moved.observe([scrape(t, d=1, kata=False, disk_stuck=True)])
    assert [((e.ts_ms - 1_800_000_000_000) // 1000, e.kind, e.opened_ms) for e in events] == [
        (30, QEMU_HANG, 1_800_000_000_000),
        (65, HOST_DISK_STALL, 1_800_000_005_000),  # stuck from the second scrape
    ]
    assert (events[1].tenant, events[1].disk) == ("", "nvme0n1")
    assert moved.export(frozenset({"other-node"})) == '{"sandboxes": [], "disks": []}'
