from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from collectors.bundle import bundle_labels
from collectors.lifecycle import LifecycleEvent, SandboxWatcher
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
