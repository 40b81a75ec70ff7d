"""The client of the stamping process (collectors/stampd.py): a DirWatch whose events carry stamps.

In the collector's own process, the thread that wakes on an inotify event must first get
Python's GIL, which a scrape parsing kata-monitor text holds for a switch interval at a
time; measured with four collectors and a simulator in one process, stamps came 1 ms late
at the median and 13-16 ms at p99. The stamping process has nothing else to do, so the moment
it wakes is the moment of the change up to the kernel's scheduling delay. It writes one line
per change and answers a sync request once every change made before the request is out.

It also reads the `--snapshot` files (the host's /proc/net/dev) the moment it sees a sandbox
directory go, before anything tears the pod network down: the final network reading.

Protocol (text lines): the child prints `R` when its watches are set; then
`E <mask> <dir index> <stamp ns> <name>` per event, preceded by `N <stamp ns> <JSON
{path: text}>` when the events of that stamp remove a directory, and `O <stamp ns>` when the
kernel's queue overflowed. The parent writes `S` (answered with `S` after everything queued before
it), `W <dir index>` (watch that directory again, e.g. created since). End of input (the
parent closed the pipe or died) ends the child.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from collectors.base import read_file
from collectors.inotify import IN_Q_OVERFLOW, DirEvent

log = logging.getLogger(__name__)
START_TIMEOUT_S = 10.0
SYNC_TIMEOUT_S = 2.0


class StamperGoneError(OSError):
    """The stamping child exited or stopped answering; the caller watches in-process instead."""


def read_snapshot(files: Sequence[str]) -> dict[str, str]:
    """The text of each file that can be read now (path -> text)."""
    out = {}
    for f in files:
        with contextlib.suppress(OSError):
            out[f] = read_file(f)
    return out


class StampedDirWatch:
    """DirWatch's interface, served by the stamping child: events carry its stamps."""

    def __init__(self, dirs: Sequence[Path], snapshot: Sequence[Path] = ()) -> None:
        self.dirs = list(dirs)
        self._index = {d: i for i, d in enumerate(self.dirs)}
        snap = [a for f in snapshot for a in ("--snapshot", str(f))]
        # run by path, not as a module of this package: it needs none of the collector's imports
        self.proc = subprocess.Popen(
            [sys.executable, "-I", str(Path(__file__).with_name("stampd.py")), *snap, "--", *map(str, self.dirs)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in, self.fd = self.proc.stdin, self.proc.stdout.fileno()
        os.set_blocking(self.fd, False)
        self._wake_r, self._wake_w = os.pipe()
        self._buf = b""
        self._events: list[DirEvent] = []
        self._acks = 0
        self._ready = False
        self._snap: tuple[int, dict[str, str]] | None = None
        if not self._await(lambda: self._ready, START_TIMEOUT_S):
            self.close()
            raise StamperGoneError("the stamping process did not start")

    def watch(self, d: Path) -> bool:
        self._send(f"W {self._index[d]}\n")
        return d.is_dir()

    def wait(self, timeout_s: float) -> bool:
        if self._events:
            return True
        ready, _, _ = select.select([self.fd, self._wake_r], [], [], timeout_s)
        if self._wake_r in ready:
            os.read(self._wake_r, 64)
        return self.fd in ready

    def read(self) -> list[DirEvent]:
        """Every event the child has sent so far, in order; never blocks."""
        self._pump()
        out, self._events = self._events, []
        return out

    def sync(self) -> None:
        """Returns once the events of every change made before the call have come in."""
        want = self._acks + 1
        self._send("S\n")
        if not self._await(lambda: self._acks >= want, SYNC_TIMEOUT_S):
            raise StamperGoneError("the stamping process did not answer a sync")

    def _send(self, text: str) -> None:
        try:
            self._in.write(text.encode())
        except (BrokenPipeError, ValueError) as exc:
            raise StamperGoneError(f"the stamping process is gone: {exc}") from exc

    def _await(self, done: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            select.select([self.fd], [], [], left)
            self._pump()
        return True

    def _pump(self) -> None:
        try:
            while chunk := os.read(self.fd, 65536):
                self._buf += chunk
            raise StamperGoneError("the stamping process exited")
        except BlockingIOError:
            pass
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            kind, _, rest = line.partition(b" ")
            if kind == b"E":
                mask, ix, stamp, name = rest.split(b" ", 3)
                ev = DirEvent(self.dirs[int(ix)], int(mask), os.fsdecode(name), int(stamp))
                if ev.removed and self._snap and self._snap[0] == ev.stamp_ns:  # a removal's final readings;
                    # a creation read in the same wake-up as a removal has none
                    ev = DirEvent(ev.directory, ev.mask, ev.name, ev.stamp_ns, self._snap[1])
                self._events.append(ev)
            elif kind == b"N":
                stamp, text = rest.split(b" ", 1)
                self._snap = (int(stamp), json.loads(text))
            elif kind == b"O":
                self._events.append(DirEvent(None, IN_Q_OVERFLOW, "", int(rest)))
            elif kind == b"S":
                self._acks += 1
            elif kind == b"R":
                self._ready = True

    def interrupt(self) -> None:
        os.write(self._wake_w, b"x")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._in.close()  # end of input: the child exits
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=2)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
