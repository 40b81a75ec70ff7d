"""A minimal Linux inotify binding (ctypes): which entries of watched directories came and went.

The sandbox watcher stamps each start and stop from these events (a sandbox that lived less
than the watcher's reaction time still shows as a create and a delete) and falls back to a
listing when the queue overflowed. Libraries exist (watchdog), but watchdog holds events for
half a second to pair renames, and half a second is billed allocation at every stop; this
takes a few lines and wakes within a millisecond.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import select
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then `len` bytes of NUL-padded name

IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ISDIR = 0x40000000
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


@dataclass(frozen=True)
class DirEvent:
    directory: Path | None  # None: the queue overflowed, events were lost (list the directories)
    mask: int
    name: str
    stamp_ns: int | None = None  # when a stamping process saw it (collectors/stamper.py)
    # files read the moment a removal was seen (path -> text), for final readings
    snapshot: Mapping[str, str] | None = field(default=None, compare=False)

    @property
    def created(self) -> bool:
        return bool(self.mask & (IN_CREATE | IN_MOVED_TO))

    @property
    def removed(self) -> bool:
        return bool(self.mask & (IN_DELETE | IN_MOVED_FROM))


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
        self._dirs: dict[int, Path] = {}

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
        self._dirs[wd] = d
        return True

    def wait(self, timeout_s: float) -> bool:
        """True once events are waiting (read them with `read()`); False on timeout or `interrupt()`."""
        ready, _, _ = select.select([self.fd, self._wake_r], [], [], timeout_s)
        if self._wake_r in ready:
            os.read(self._wake_r, 64)
        return self.fd in ready

    def read(self) -> list[DirEvent]:
        """Every event queued now, in order; never blocks."""
        data = b""
        try:
            while chunk := os.read(self.fd, 65536):
                data += chunk
        except BlockingIOError:
            pass
        out: list[DirEvent] = []
        pos = 0
        while pos + _EVENT.size <= len(data):
            wd, mask, _, size = _EVENT.unpack_from(data, pos)
            name = data[pos + _EVENT.size : pos + _EVENT.size + size].split(b"\0", 1)[0]
            pos += _EVENT.size + size
            if mask & IN_Q_OVERFLOW:
                out.append(DirEvent(None, mask, ""))
            elif wd in self._dirs and not mask & IN_IGNORED:
                out.append(DirEvent(self._dirs[wd], mask, os.fsdecode(name)))
        return out

    def sync(self) -> None:
        """Events of every change made before this call can be read now (they are, here)."""

    def interrupt(self) -> None:
        os.write(self._wake_w, b"x")

    def close(self) -> None:
        for fd in (self.fd, self._wake_r, self._wake_w):
            os.close(fd)
