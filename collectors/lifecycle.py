"""Sandbox start and stop, from the kata sandbox directories (`/run/vc/sbs/<id>`).

A stamping process (collectors/stampd.py) watches the directories with inotify and stamps
each create and delete the moment it wakes, and reads /proc/net/dev at each delete; a watcher
thread here turns its lines into starts and stops (a sandbox that lived 20 ms still shows as
a create and a delete) and hands stops to a second thread that runs the stop handler (the
final sample), so a slow handler never delays anything. A listing every `rescan_s` (and in
every `scan()`, after a sync with the stamping process) catches what events missed; polling
replaces inotify where it is missing.

Timestamps (docs/metering.md gives each bound and how it was measured):

- A change seen by the stamping process is stamped with the moment it woke for it: late by
  the kernel's wake-up latency (0-1 ms on a 2-core machine at load 5-9, at realtime priority).
- Without that process (it could not start, or died), the watcher thread stamps the moment
  it woke, late by that plus its wait for the GIL (up to 13-16 ms at p99 with four
  collectors in one process). The kernel's own stamp (the parent directory's mtime) is no
  better: outside bursts of changes it comes from the coarse clock, 0-8 ms early here
  (HZ=250, tickless), so it only caps a stamp when the thread was held off longer than that.
- A change first met by `scan()` (the watcher thread was held off) is stamped when the scan
  read it: an upper bound, like first sight.
- A sandbox found by a listing (collector start, lost events, polling) starts at its birth
  time (statx; nothing done inside the directory, e.g. its teardown, moves it) where the
  filesystem keeps one, else at the earlier of its mtime and first sight.
- Every stamp lies between the previous read of the directory and the read that found it.

The agent drains `events()`, learns labels on each start (`on_start`, before the sandbox
counts as alive) and takes a final sample on each stop (`on_stop`, which then owns the
stop: the sandbox's queued start goes with it, never after it).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from collectors.fstime import birth_ns
from collectors.inotify import IN_ISDIR, DirEvent, DirWatch
from collectors.stamper import StampedDirWatch, StamperGoneError, read_snapshot
from contracts.clock import wall_ms
from contracts.wire import EventKind

log = logging.getLogger(__name__)
MS = 1_000_000
COARSE_LAG_NS = 10 * MS  # the kernel's coarse clock trails by at most this (measured: 8 ms)


@dataclass(frozen=True)
class LifecycleEvent:
    sandbox: str
    kind: EventKind
    ts_ms: int
    started_ms: int | None = None  # on a stop: when the sandbox started
    # on a stop: the watcher's snapshot files (path -> text) as read when the stop was seen
    snapshot: Mapping[str, str] | None = field(default=None, compare=False)


def _clamp(t: int, lo: int | None, hi: int) -> int:
    return min(hi, t if lo is None else max(lo, t))


class SandboxWatcher:
    def __init__(
        self,
        dirs: Sequence[Path],
        clock_ms: Callable[[], int],
        poll_s: float = 0.1,
        rescan_s: float = 1.0,
        use_inotify: bool = True,
        clock_ns: Callable[[], int] | None = None,
        stamper: bool = True,
        snapshot: Sequence[Path] = (),
    ) -> None:
        self.dirs = list(dirs)
        self.clock_ms = clock_ms
        if clock_ns is None:  # a test's fake millisecond clock drives the bounds too
            clock_ns = time.time_ns if clock_ms is wall_ms else (lambda: clock_ms() * MS)
        self.clock_ns = clock_ns
        self.poll_s = poll_s
        self.rescan_s = rescan_s
        self.use_inotify = use_inotify
        self.stamper = stamper
        self.snapshot = list(snapshot)  # files read the moment a stop is seen, for final readings
        self._dw: DirWatch | StampedDirWatch | None = None
        self._alive: dict[str, tuple[int, str]] = {}  # sandbox -> (start ms, the directory holding it)
        self._events: list[LifecycleEvent] = []  # starts (and, without a stop handler, stops) to drain
        self._stops: list[LifecycleEvent] = []  # stamped, waiting for the stop handler
        self._handling = 0
        # when events were last read, and each directory last listed (ns, just before): a change
        # found by the next read or listing came after it
        self._drained_at: int | None = None
        self._listed_at: dict[str, int] = {}
        self._touched: set[str] = set()  # names events told about during the current scan
        self._lock = threading.Lock()  # the maps above
        self._stamp_lock = threading.Lock()  # one reader of events and listings at a time
        self._handler_lock = threading.Lock()  # stop handlers run one at a time, in stamp order
        self._wake = threading.Condition()
        self._stop = threading.Event()
        self.ready = threading.Event()  # set once watching: a sandbox created later is seen appear
        self._on_stop: Callable[[LifecycleEvent], None] | None = None
        self._on_start: Callable[[LifecycleEvent], None] | None = None
        self._threads: list[threading.Thread] = []
        self.stamps: Counter[str] = Counter()  # how each start and stop was stamped

    # -- scanning ------------------------------------------------------------------------
    def scan(self) -> None:
        """Reads pending events and lists the directories; when it returns, the stop handler
        has run for every sandbox whose directory was gone at the listing."""
        with self._handler_lock:
            with self._stamp_lock:
                self._scan()
            self._handle_stops()

    @contextmanager
    def hold(self) -> Iterator[frozenset[str]]:
        """`scan()`, then no stop handler runs until the block ends (stops are still stamped);
        yields the sandboxes alive at that scan."""
        with self._handler_lock:
            with self._stamp_lock:
                self._scan()
            self._handle_stops()
            yield self.alive()

    def _sync(self) -> None:
        """Waits until the event of every change made so far can be read."""
        if self._dw is not None:
            try:
                self._dw.sync()
            except StamperGoneError as exc:
                self._fall_back(exc)

    def _scan(self) -> None:
        self._touched.clear()
        self._sync()
        if self._drain(None):
            log.warning("inotify queue overflowed: the sandbox directories are listed instead")
        before = self.clock_ns()
        listed, mtimes, alive_before = self._list()
        self._sync()
        self._drain(None)  # changes the listing already saw whose events came meanwhile
        after = self.clock_ns()
        for sb, d in listed.items():
            if sb in self._alive or sb in self._touched:  # an event said more than the listing could
                continue
            born = birth_ns(f"{d}/{sb}")
            how = "listing_birth"
            if born is None:
                how = "listing_mtime"
                try:
                    born = os.stat(f"{d}/{sb}").st_mtime_ns  # later than the start, never earlier
                except OSError:
                    born = after
            if self._dw is not None:
                log.debug("%s: found by a listing, not by its event (%s)", sb, how)
            self._start(sb, d, _clamp(born, self._listed_at.get(d), after) // MS, how)
        for sb in alive_before - set(listed):
            if sb in self._alive:  # not stopped by the events read meanwhile
                start, d = self._alive[sb]
                lo = max(self._listed_at.get(d, 0), start * MS)
                self._stop_one(sb, _clamp(mtimes.get(d, after), lo, after) // MS, "listing")
        for path in self.dirs:
            self._listed_at[str(path)] = before

    def _list(self) -> tuple[dict[str, str], dict[str, int], set[str]]:
        """The sandbox directories present (name -> directory), each directory's mtime read
        after its listing, and who was alive before it."""
        with self._lock:
            alive_before = set(self._alive)
        listed: dict[str, str] = {}
        mtimes: dict[str, int] = {}
        for d in self.dirs:
            try:
                with os.scandir(d) as it:
                    for e in it:
                        if e.is_dir(follow_symlinks=False):
                            listed[e.name] = str(d)
                mtimes[str(d)] = os.stat(d).st_mtime_ns
            except FileNotFoundError:
                continue
        return listed, mtimes, alive_before

    def _drain(self, woke: int | None) -> bool:
        """Stamps the inotify events queued now (`woke`: when the watcher thread woke for them;
        None: read by a scan); True if the queue overflowed and only a listing can tell."""
        if self._dw is None:
            return False
        before = self.clock_ns()
        try:
            evs = self._dw.read()
        except StamperGoneError as exc:
            self._fall_back(exc)
            return True
        lo, self._drained_at = self._drained_at, before
        if not evs:
            return False
        after = self.clock_ns()
        by_dir: dict[str, list[DirEvent]] = {}
        for e in evs:
            if e.directory is not None and e.mask & IN_ISDIR and (e.created or e.removed):
                by_dir.setdefault(str(e.directory), []).append(e)
        how = "event" if woke is not None else "scan"
        local_snap: dict[str, str] | None = None
        if self.snapshot and any(e.removed and e.snapshot is None for c in by_dir.values() for e in c):
            local_snap = read_snapshot([str(f) for f in self.snapshot])  # as soon as it is seen
        for d, changes in by_dir.items():
            hi = after
            if len(changes) == 1:  # the parent's mtime is this change's (coarse) stamp
                with suppress(OSError):
                    hi = min(after, os.stat(d).st_mtime_ns + COARSE_LAG_NS)
            for e in changes:
                self._touched.add(e.name)
                if e.stamp_ns is not None:  # the stamping process woke for it: the stamp is the moment
                    t, kind = e.stamp_ns, "stamper"
                else:
                    t, kind = _clamp(woke if woke is not None else before, lo, hi), how
                if e.created and e.name not in self._alive:
                    self._start(e.name, d, t // MS, kind)
                elif e.removed and e.name in self._alive:
                    snap = e.snapshot if e.snapshot is not None else local_snap
                    self._stop_one(e.name, max(t, self._alive[e.name][0] * MS) // MS, kind, snap)
        return any(e.directory is None for e in evs)

    def _start(self, sb: str, holder: str, ts_ms: int, how: str) -> None:
        ev = LifecycleEvent(sb, EventKind.START, ts_ms)
        if self._on_start:  # before the sandbox counts as alive: no batch sees it without its labels
            self._on_start(ev)
        with self._lock:
            self._alive[sb] = (ts_ms, holder)
            self._events.append(ev)
        self.stamps["start_" + how] += 1

    def _stop_one(self, sb: str, ts_ms: int, how: str, snapshot: Mapping[str, str] | None = None) -> None:
        if snapshot is None and self.snapshot:
            snapshot = read_snapshot([str(f) for f in self.snapshot])
        with self._lock:
            started, _ = self._alive.pop(sb)
            ev = LifecycleEvent(sb, EventKind.STOP, max(started, ts_ms), started, snapshot)
            if self._on_stop:
                # the stop batch carries the start: a queued start must not follow its stop
                self._events = [e for e in self._events if e.sandbox != sb]
                self._stops.append(ev)
            else:
                self._events.append(ev)
        self.stamps["stop_" + how] += 1
        with self._wake:
            self._wake.notify_all()

    def _handle_stops(self) -> None:
        """Runs the stop handler for every stamped stop, in order (caller holds the handler lock)."""
        while True:
            with self._lock:
                if not self._stops:
                    return
                ev = self._stops.pop(0)
                self._handling += 1
            try:
                if self._on_stop:
                    self._on_stop(ev)
            except Exception:  # a handler bug must not stop the stamping of every later stop
                log.exception("stop handler failed for %s", ev.sandbox)
            finally:
                with self._lock:
                    self._handling -= 1

    # -- reading -------------------------------------------------------------------------
    def alive(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._alive)

    def busy(self) -> bool:
        """True while a sandbox is alive or a stop waits for (or is in) its handler."""
        with self._lock:
            return bool(self._alive or self._stops or self._handling)

    def events(self) -> list[LifecycleEvent]:
        with self._lock:
            out, self._events = self._events, []
        return out

    # -- the threads ---------------------------------------------------------------------
    def start(
        self,
        on_start: Callable[[LifecycleEvent], None] | None = None,
        on_stop: Callable[[LifecycleEvent], None] | None = None,
    ) -> None:
        self._on_start, self._on_stop = on_start, on_stop
        if self.use_inotify and self.stamper:
            try:
                self._dw = StampedDirWatch(self.dirs, self.snapshot)
            except OSError as exc:
                log.warning("no stamping process (%s): the watcher thread stamps changes itself", exc)
        if self.use_inotify and self._dw is None:
            try:
                self._dw = DirWatch()
            except OSError as exc:
                log.warning("inotify unavailable (%s): polling the sandbox directories every %.2f s", exc, self.poll_s)
        self._rewatch()  # before the first scan, so nothing between the two is missed
        self.scan()
        for target, name in ((self._run, "sandbox-watcher"), (self._run_handlers, "sandbox-stops")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        self.ready.set()

    def _fall_back(self, exc: Exception) -> None:
        """The stamping process is gone: watch in this process (the next listing finds the rest)."""
        log.error("%s: the watcher thread stamps changes itself from now on", exc)
        old, self._dw = self._dw, None
        if isinstance(old, StampedDirWatch):
            with suppress(OSError):
                old.close()
        try:
            self._dw = DirWatch()
            self._rewatch()
        except OSError as e:
            log.warning("inotify unavailable (%s): polling the sandbox directories every %.2f s", e, self.poll_s)

    @property
    def event_driven(self) -> bool:
        return self._dw is not None

    def _rewatch(self) -> None:
        if self._dw is not None:
            for d in self.dirs:
                self._dw.watch(d)

    def _run(self) -> None:
        while not self._stop.is_set():
            dw = self._dw
            if dw is not None:
                try:
                    got = dw.wait(self.rescan_s)
                except (OSError, ValueError):
                    got = True  # the stamping process went: the drain below notices and falls back
                if got:
                    woke = self.clock_ns()  # first thing after the wake-up: this is the stamp
                    with self._stamp_lock:
                        overflowed = self._drain(woke)
                    if not overflowed:
                        continue
                else:
                    self._rewatch()  # a quiet second: pick up directories created since
            elif self._stop.wait(self.poll_s):
                break
            if not self._stop.is_set():
                with self._stamp_lock:
                    self._scan()

    def _run_handlers(self) -> None:
        while not self._stop.is_set():
            with self._wake:
                self._wake.wait_for(lambda: bool(self._stops) or self._stop.is_set(), timeout=1.0)
            with self._handler_lock:
                self._handle_stops()

    def close(self) -> None:
        self._stop.set()
        if self._dw is not None:
            self._dw.interrupt()
        with self._wake:
            self._wake.notify_all()
        for t in self._threads:
            t.join(timeout=5)
        if self._dw is not None:
            self._dw.close()
            self._dw = None
