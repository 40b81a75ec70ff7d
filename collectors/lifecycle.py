"""Sandbox start and stop, from the kata sandbox directories (`/run/vc/sbs/<id>`).

A background thread rescans the directories whenever inotify reports an entry created,
deleted or moved in one of them, so a stop is stamped within a millisecond or so, long
before the next scrape. It also rescans every `rescan_s` (re-adding watches on directories
that appeared late), and falls back to polling every `poll_s` where inotify is missing.
Start time is the directory's mtime, which survives a collector restart. Stop time is the
mtime of the parent directory the sandbox's directory was removed from (the kernel stamps it
at the removal, with its coarse clock: a jiffy or less early), capped by the scan time, so a
busy or polling collector still stamps a stop within milliseconds. Where another entry
changed since, the parent's mtime is later than the stop, never earlier. The agent drains
`events()`, learns labels on each start and takes a final sample on each stop.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from collectors.inotify import DirWatch
from contracts.wire import EventKind

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LifecycleEvent:
    sandbox: str
    kind: EventKind
    ts_ms: int
    started_ms: int | None = None  # on a stop: when the sandbox started


class SandboxWatcher:
    def __init__(
        self,
        dirs: Sequence[Path],
        clock_ms: Callable[[], int],
        poll_s: float = 0.1,
        rescan_s: float = 1.0,
        use_inotify: bool = True,
    ) -> None:
        self.dirs = list(dirs)
        self.clock_ms = clock_ms
        self.poll_s = poll_s
        self.rescan_s = rescan_s
        self.use_inotify = use_inotify
        self._dw: DirWatch | None = None
        self._alive: dict[str, tuple[int, str]] = {}  # sandbox -> (start ms, the directory holding it)
        self._events: list[LifecycleEvent] = []
        self._lock = threading.Lock()
        self._scan_lock = threading.Lock()  # one scan at a time, hooks included: a stop is handled once
        self._stop = threading.Event()
        self._on_stop: Callable[[LifecycleEvent], None] | None = None
        self._on_start: Callable[[LifecycleEvent], None] | None = None
        self._thread: threading.Thread | None = None

    def scan(self) -> None:
        """Lists the directories and reports starts and stops; when it returns, the stop
        handler has run for every sandbox whose directory was gone at the listing."""
        with self._scan_lock:
            self._scan()

    def _scan(self) -> None:
        now = self.clock_ms()
        seen: dict[str, int] = {}
        parent: dict[str, str] = {}
        changed: dict[str, int] = {}  # directory -> its mtime: when an entry last came or went
        for d in self.dirs:
            try:
                with os.scandir(d) as it:
                    for e in it:
                        if e.is_dir(follow_symlinks=False):
                            seen[e.name] = e.stat(follow_symlinks=False).st_mtime_ns // 1_000_000
                            parent[e.name] = str(d)
                # after the listing: a removal the listing missed is then older than this mtime
                changed[str(d)] = os.stat(d).st_mtime_ns // 1_000_000
            except FileNotFoundError:
                continue
        stopped: list[LifecycleEvent] = []
        with self._lock:
            new = [LifecycleEvent(sb, EventKind.START, min(t, now)) for sb, t in seen.items() if sb not in self._alive]
        if self._on_start:
            for ev in new:  # before the sandbox counts as alive: no batch sees it without its labels
                self._on_start(ev)
        with self._lock:
            for ev in new:
                self._alive[ev.sandbox] = (ev.ts_ms, parent[ev.sandbox])
                self._events.append(ev)
            for sb in [s for s in self._alive if s not in seen]:
                started, holder = self._alive.pop(sb)
                removed = changed.get(holder, now)
                ev = LifecycleEvent(sb, EventKind.STOP, max(started, min(removed, now)), started)
                # with a stop handler, the handler sends the stop (with the final sample)
                (stopped if self._on_stop else self._events).append(ev)
        if self._on_stop:
            for ev in stopped:
                self._on_stop(ev)

    def alive(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._alive)

    def events(self) -> list[LifecycleEvent]:
        with self._lock:
            out, self._events = self._events, []
        return out

    def start(
        self,
        on_start: Callable[[LifecycleEvent], None] | None = None,
        on_stop: Callable[[LifecycleEvent], None] | None = None,
    ) -> None:
        self._on_start, self._on_stop = on_start, on_stop
        if self.use_inotify:
            try:
                self._dw = DirWatch()
            except OSError as exc:
                log.warning("inotify unavailable (%s): polling the sandbox directories every %.2f s", exc, self.poll_s)
        self._rewatch()  # before the first scan, so nothing between the two is missed
        self.scan()
        self._thread = threading.Thread(target=self._run, name="sandbox-watcher", daemon=True)
        self._thread.start()

    @property
    def event_driven(self) -> bool:
        return self._dw is not None

    def _rewatch(self) -> None:
        if self._dw is not None:
            for d in self.dirs:
                self._dw.watch(d)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._dw is not None:
                if not self._dw.wait(self.rescan_s):
                    self._rewatch()  # a quiet second: pick up directories created since
            elif self._stop.wait(self.poll_s):
                break
            if not self._stop.is_set():
                self.scan()

    def close(self) -> None:
        self._stop.set()
        if self._dw is not None:
            self._dw.interrupt()
        if self._thread:
            self._thread.join(timeout=5)
        if self._dw is not None:
            self._dw.close()
            self._dw = None
