from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collectors.bundle import bundle_labels
from collectors.fstime import birth_ns
from collectors.inotify import IN_CREATE, IN_DELETE, IN_ISDIR, DirEvent, DirWatch
from collectors.lifecycle import LifecycleEvent, SandboxWatcher
from collectors.stamper import StampedDirWatch
from contracts.clock import wall_ms
from contracts.wire import EventKind


def test_bundle_labels_from_cri_annotations(tmp_path: Path) -> None:
    (tmp_path / "sb1").mkdir()
    notes = {
        "io.kubernetes.cri.sandbox-namespace": "acme",
        "io.kubernetes.cri.sandbox-name": "fn-0",
        "io.kubernetes.cri.sandbox-uid": "u-1",
        "io.kubernetes.cri.container-type": "sandbox",
    }
    (tmp_path / "sb1" / "config.json").write_text(json.dumps({"annotations": notes}))
    assert bundle_labels([tmp_path / "missing", tmp_path], "sb1") == {
        "cri_namespace": "acme",
        "cri_name": "fn-0",
        "cri_uid": "u-1",
    }


def test_bundle_labels_bad_or_missing_bundle_is_empty(tmp_path: Path) -> None:
    (tmp_path / "sb1").mkdir()
    (tmp_path / "sb1" / "config.json").write_text("{not json")
    (tmp_path / "sb2").mkdir()
    (tmp_path / "sb2" / "config.json").write_text('["no", "annotations"]')
    assert bundle_labels([tmp_path], "sb1") == {}
    assert bundle_labels([tmp_path], "sb2") == {}
    assert bundle_labels([tmp_path], "sb3") == {}


def test_watcher_start_hook_runs_before_alive_and_stop_hook_gets_stops(tmp_path: Path) -> None:
    now = [5000]
    w = SandboxWatcher([tmp_path], lambda: now[0])
    seen_alive_in_hook: list[bool] = []
    stops: list[LifecycleEvent] = []
    w._on_start = lambda ev: seen_alive_in_hook.append(ev.sandbox in w.alive())
    w._on_stop = stops.append
    (tmp_path / "sb1").mkdir()
    w.scan()
    assert seen_alive_in_hook == [False] and w.alive() == {"sb1"}
    [start] = w.events()
    assert start.kind is EventKind.START and start.ts_ms <= 5000
    (tmp_path / "sb1").rmdir()
    now[0] = 6000
    w.scan()
    assert w.alive() == frozenset() and stops == [LifecycleEvent("sb1", EventKind.STOP, 6000, start.ts_ms)]
    assert w.events() == []  # the stop handler owns stop events


def wait_until(cond: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


@pytest.mark.parametrize("use_inotify", [True, False])
def test_watcher_stamps_a_stop_as_it_happens(tmp_path: Path, use_inotify: bool) -> None:
    sbs = tmp_path / "sbs"
    sbs.mkdir()
    stops: list[tuple[LifecycleEvent, int]] = []
    # a rescan period far longer than the test: only an inotify wake-up (or the poll) can see the stop
    w = SandboxWatcher([sbs], wall_ms, poll_s=0.05, rescan_s=60, use_inotify=use_inotify)
    w.start(on_stop=lambda ev: stops.append((ev, wall_ms())))
    assert w.event_driven is use_inotify
    try:
        (sbs / "sb1").mkdir()
        wait_until(lambda: "sb1" in w.alive())
        t_rm = wall_ms()
        (sbs / "sb1").rmdir()
        wait_until(lambda: bool(stops))
        [(ev, _)] = stops
        lag = ev.ts_ms - t_rm
        # the kernel stamps the removal with its coarse clock, which may be a tick behind ours
        assert ev.sandbox == "sb1" and -15 <= lag <= (50 if use_inotify else 200), lag
    finally:
        w.close()


def test_a_late_scan_still_stamps_the_stop_when_it_happened(tmp_path: Path) -> None:
    """The stop time is the parent directory's mtime, not the time of the scan that saw it."""
    sbs = tmp_path / "sbs"
    sbs.mkdir()
    for sb in ("sb1", "sb2"):
        (sbs / sb).mkdir()
    w = SandboxWatcher([sbs], wall_ms, use_inotify=False)
    w.scan()
    t_rm = wall_ms()
    (sbs / "sb1").rmdir()
    time.sleep(0.4)  # a collector busy elsewhere, or polling slowly
    w.scan()
    [ev] = w.events()[2:]  # after the two starts
    assert ev.sandbox == "sb1" and ev.kind == EventKind.STOP
    assert -15 <= ev.ts_ms - t_rm <= 15, ev.ts_ms - t_rm  # the kernel's coarse clock may be a jiffy behind
    (sbs / "sb3").mkdir()  # a later change to the directory: the stop is stamped at it, not before
    t_mk = wall_ms()
    (sbs / "sb2").rmdir()
    time.sleep(0.2)
    w.scan()
    stop = [e for e in w.events() if e.kind == EventKind.STOP]
    assert [e.sandbox for e in stop] == ["sb2"] and -15 <= stop[0].ts_ms - t_mk <= 15


def test_watcher_picks_up_a_sandbox_directory_created_after_start(tmp_path: Path) -> None:
    late = tmp_path / "run" / "vc" / "sbs"
    w = SandboxWatcher([late], wall_ms, rescan_s=0.1)
    w.start()
    try:
        assert w.alive() == frozenset()
        late.mkdir(parents=True)
        time.sleep(0.3)  # a rescan adds the watch
        (late / "sb9").mkdir()
        wait_until(lambda: w.alive() == {"sb9"})
    finally:
        w.close()


class FakeDirWatch:
    """Hands the watcher prepared inotify events (or a change made while it reads, and its
    event): the races a real kernel makes rare."""

    def __init__(self, batches: list[list[DirEvent] | Callable[[], list[DirEvent]]]) -> None:
        self.batches = batches

    def read(self) -> list[DirEvent]:
        b = self.batches.pop(0) if self.batches else []
        return b() if callable(b) else b

    def sync(self) -> None:
        pass


def test_a_listing_never_starts_again_a_sandbox_whose_removal_an_event_just_told(tmp_path: Path) -> None:
    (tmp_path / "sb1").mkdir()
    w = SandboxWatcher([tmp_path], wall_ms, use_inotify=False)
    stops: list[LifecycleEvent] = []
    w._on_stop = stops.append
    w.scan()
    assert [e.kind for e in w.events()] == [EventKind.START]
    # the listing of the next scan still sees sb1; its removal's event arrives right after it
    removed = DirEvent(tmp_path, IN_DELETE | IN_ISDIR, "sb1", wall_ms() * 1_000_000)
    w._dw = FakeDirWatch([[], [removed]])  # type: ignore[assignment]
    w.scan()
    assert [s.sandbox for s in stops] == ["sb1"] and w.alive() == frozenset()
    assert w.events() == []  # no second start, after its stop or ever
    (tmp_path / "sb1").rmdir()
    w._dw = None
    w.scan()
    assert w.events() == [] and len(stops) == 1


def test_event_stamps_and_the_stop_takes_its_start_out_of_the_queue(tmp_path: Path) -> None:
    w = SandboxWatcher([tmp_path], lambda: 10_000, use_inotify=False)
    stops: list[LifecycleEvent] = []
    w._on_stop = stops.append
    created = DirEvent(tmp_path, IN_CREATE | IN_ISDIR, "sb1", 9_000_123_456)
    removed = DirEvent(tmp_path, IN_DELETE | IN_ISDIR, "sb1", 9_020_999_999)
    w._dw = FakeDirWatch([[created], [removed]])  # type: ignore[assignment]
    w._drain(None)
    assert [(e.kind, e.ts_ms) for e in w.events()] == [(EventKind.START, 9_000)]
    w._dw = FakeDirWatch([[created], [removed]])  # type: ignore[assignment]
    w._alive.clear()
    w._drain(None)  # the start is queued, not yet drained by a scrape ...
    w._drain(None)  # ... when the stop comes: the stop batch carries the start
    w._handle_stops()
    assert w.events() == []
    assert stops == [LifecycleEvent("sb1", EventKind.STOP, 9_020, 9_000)]


def test_a_sandbox_found_by_a_listing_starts_at_its_birth_time(tmp_path: Path) -> None:
    made = time.time_ns() // 1_000_000
    (tmp_path / "sb1").mkdir()
    time.sleep(0.05)
    (tmp_path / "sb1" / "shim-monitor.sock").touch()  # a change inside: the mtime moves, birth does not
    w = SandboxWatcher([tmp_path], wall_ms, use_inotify=False)
    w.scan()
    [start] = w.events()
    if birth_ns(tmp_path / "sb1") is None:
        pytest.skip("this filesystem keeps no birth time")
    # the kernel's coarse clock stamps a birth up to a few ms early (docs/metering.md)
    assert -15 <= start.ts_ms - made <= 2 and w.stamps["start_listing_birth"] == 1


def test_a_stop_carries_the_snapshot_files_read_when_it_was_seen(tmp_path: Path) -> None:
    sbs, dev = tmp_path / "sbs", tmp_path / "dev"
    sbs.mkdir()
    (sbs / "sb1").mkdir()
    dev.write_text("before\n")
    stops: list[LifecycleEvent] = []
    w = SandboxWatcher([sbs], wall_ms, rescan_s=60, snapshot=[dev])
    w.start(on_stop=stops.append)
    try:
        (sbs / "sb1").rmdir()
        wait_until(lambda: bool(stops))
        dev.write_text("after\n")  # CNI DEL rewrote it later: the stop's snapshot is from before
        assert stops[0].snapshot == {str(dev): "before\n"}
    finally:
        w.close()


def test_the_stamping_process_stamps_each_change_and_answers_syncs(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    dev.write_text("counters\n")
    sw = StampedDirWatch([tmp_path], [dev])
    try:
        before = time.time_ns()
        (tmp_path / "sb1").mkdir()
        (tmp_path / "sb1").rmdir()
        after = time.time_ns()
        sw.sync()  # both events are in once it returns
        evs = [e for e in sw.read() if e.mask & IN_ISDIR]
        assert [(e.created, e.removed, e.name) for e in evs] == [(True, False, "sb1"), (False, True, "sb1")]
        assert all(e.stamp_ns is not None and before <= e.stamp_ns <= after + 50_000_000 for e in evs)
        assert evs[1].snapshot == {str(dev): "counters\n"} and evs[0].snapshot is None
    finally:
        sw.close()
    assert sw.proc.returncode == 0  # end of its input ends it


def test_the_watcher_stamps_changes_itself_when_the_stamping_process_dies(tmp_path: Path) -> None:
    stops: list[LifecycleEvent] = []
    w = SandboxWatcher([tmp_path], wall_ms, rescan_s=60)
    w.start(on_stop=stops.append)
    try:
        assert isinstance(w._dw, StampedDirWatch)
        w._dw.proc.kill()
        (tmp_path / "sb1").mkdir()
        wait_until(lambda: "sb1" in w.alive(), 10)  # found again, in this process
        (tmp_path / "sb1").rmdir()
        wait_until(lambda: bool(stops), 10)
        assert isinstance(w._dw, DirWatch)
    finally:
        w.close()


OPS = st.lists(
    st.tuples(st.sampled_from(["create", "remove", "remove_mid_scan", "scan", "drain", "handle", "scrape"]),
              st.sampled_from("abc"), st.booleans()),
    max_size=40,
)  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_lifecycle_events_are_consistent_whatever_the_order_of_changes_reads_and_scrapes(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, str, bool]]
) -> None:
    """Directories come and go, their events arrive (or are lost), listings, stop handlers
    and scrapes interleave at random: each lifetime is one start then one stop, a start is
    never delivered after its stop, and every stop carries its lifetime's start."""
    d = tmp_path_factory.mktemp("sbs")
    clock = [1_000]
    w = SandboxWatcher([d], lambda: clock[0], use_inotify=False)
    fake = FakeDirWatch([])
    w._dw = fake  # type: ignore[assignment]
    delivered: list[LifecycleEvent] = []  # what batches carried, in the order they were queued
    w._on_stop = lambda ev: delivered.extend([LifecycleEvent(ev.sandbox, EventKind.START, ev.started_ms or 0), ev])
    pending: list[DirEvent] = []
    created = dict.fromkeys("abc", 0)
    for op, name, lost in ops:
        clock[0] += 7
        if op == "create" and not (d / name).exists():
            (d / name).mkdir()
            created[name] += 1
            if not lost:
                pending.append(DirEvent(d, IN_CREATE | IN_ISDIR, name, clock[0] * 1_000_000))
        elif op == "remove" and (d / name).exists():
            (d / name).rmdir()
            if not lost:
                pending.append(DirEvent(d, IN_DELETE | IN_ISDIR, name, clock[0] * 1_000_000))
        elif op == "remove_mid_scan" and (d / name).exists():  # gone after the scan's listing saw it

            def remove(name: str = name) -> list[DirEvent]:
                (d / name).rmdir()
                return [DirEvent(d, IN_DELETE | IN_ISDIR, name, clock[0] * 1_000_000)]

            fake.batches += [pending, remove]
            pending = []
            w.scan()
        elif op == "drain":  # the stamping process delivers what it has
            fake.batches.append(pending)
            pending = []
            w._drain(None)
        elif op == "scan":
            fake.batches.append(pending)
            pending = []
            w.scan()
        elif op == "handle":
            w._handle_stops()
        elif op == "scrape":  # a scrape batch carries the starts drained from the queue
            delivered.extend(w.events())
    for name in "abc":  # the end: everything goes, every event arrives
        if (d / name).exists():
            (d / name).rmdir()
    fake.batches.append(pending)
    w.scan()
    delivered.extend(w.events())
    by_name: dict[str, list[LifecycleEvent]] = {}
    for ev in delivered:
        by_name.setdefault(ev.sandbox, []).append(ev)
    for name, evs in by_name.items():
        stops = [e for e in evs if e.kind == EventKind.STOP]
        # every lifetime ends with its stop; a start queued for a scrape never follows that stop
        last_stop = max(i for i, e in enumerate(evs) if e.kind == EventKind.STOP)
        assert all(e.kind == EventKind.STOP or e.ts_ms in {s.started_ms for s in stops} for e in evs), (name, evs)
        assert all(evs[i].kind == EventKind.STOP for i in range(last_stop, len(evs))), (name, evs)
        for s in stops:
            assert s.started_ms is not None and s.started_ms <= s.ts_ms
        starts_of = {s.started_ms for s in stops}
        for i, e in enumerate(evs):
            if e.kind == EventKind.START:  # no start after the stop of its own lifetime
                own = next(j for j, s in enumerate(evs) if s.kind == EventKind.STOP and s.started_ms == e.ts_ms)
                assert i < own, (name, evs)
        assert len(starts_of) == len(stops)  # each stop closes a lifetime of its own
        assert len(stops) <= created[name]  # never a lifetime that did not happen (lost ones may be missed)
    assert w.alive() == frozenset()
