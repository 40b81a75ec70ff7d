"""A minimal Linux inotify binding (ctypes): wakes a thread when a watched directory changes.

Only the wake-up is used: the sandbox watcher rescans its directories on each wake-up, so
event names, overflows and coalesced events need no handling. Libraries exist (watchdog),
but watchdog holds events for half a second to pair renames, and half a second is billed
allocation at every stop; this takes a few lines and wakes within a millisecond.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import select
from pathlib import Path

IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
DIR_EVENTS = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR


class InotifyUnavailableError(OSError):
    pass


def _libc() -> ctypes.CDLL:
    name = ctypes.util.find_library("c")
    if name is None:
        raise InotifyUnavailableError("no C library found")
    lib = ctypes.CDLL(name, use_errno=True)
    if not hasattr(lib, "inotify_init1"):
        raise InotifyUnavailableError("this C library has no inotify")
    return lib


class DirWatch:
    """Watches directories for entries appearing and vanishing; `wait()` blocks until one does."""

    def __init__(self) -> None:
        self._lib = _libc()
        fd = self._lib.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            e = ctypes.get_errno()
            raise InotifyUnavailableError(e, os.strerror(e))
        self.fd: int = fd
        self._wake_r, self._wake_w = os.pipe()
        self.watched: dict[Path, int] = {}

    def watch(self, d: Path) -> bool:
        """Adds a watch on `d` (again, after it was deleted and re-created); False if it is not there."""
        wd = self._lib.inotify_add_watch(self.fd, os.fsencode(d), DIR_EVENTS)
        if wd < 0:
            e = ctypes.get_errno()
            if e in (errno.ENOENT, errno.ENOTDIR):
                self.watched.pop(d, None)
                return False
            raise OSError(e, f"inotify_add_watch {d}: {os.strerror(e)}")
        self.watched[d] = wd
        return True

    def wait(self, timeout_s: float) -> bool:
        """True if something changed (events are drained); False on timeout or `interrupt()`."""
        ready, _, _ = select.select([self.fd, self._wake_r], [], [], timeout_s)
        if self._wake_r in ready:
            os.read(self._wake_r, 64)
        if self.fd not in ready:
            return False
        try:
            while os.read(self.fd, 65536):
                pass
        except BlockingIOError:
            pass
        return True

    def interrupt(self) -> None:
        os.write(self._wake_w, b"x")

    def close(self) -> None:
        for fd in (self.fd, self._wake_r, self._wake_w):
            os.close(fd)
