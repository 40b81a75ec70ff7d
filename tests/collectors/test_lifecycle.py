from __future__ import annotations

import json
from pathlib import Path

from collectors.bundle import bundle_labels
from collectors.lifecycle import LifecycleEvent, SandboxWatcher
from sandmeter.wire import EventKind


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
    assert w.alive() == frozenset() and stops == [LifecycleEvent("sb1", EventKind.STOP, 6000)]
    assert w.events() == []  # the stop handler owns stop events
