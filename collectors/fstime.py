"""A file's birth time (statx `STATX_BTIME`), which nothing done to the file afterwards moves.

Python 3.11 has no `os.statx`, so this calls the C library's `statx` through ctypes. The
birth time is stamped by the kernel's coarse clock: on this project's 6.18 kernel
(HZ=250, tickless) it read 3-6 ms before the moment of creation on tmpfs and 0-6 ms on ext4
(docs/metering.md). Filesystems that keep no birth time give None, as does a kernel or C
library without statx.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
STATX_BTIME = 0x800
_BUF = 256  # sizeof(struct statx)
_BTIME = struct.Struct("qI")  # statx_timestamp: tv_sec s64, tv_nsec u32 (then 4 reserved bytes)
_BTIME_AT = 80  # offsetof(struct statx, stx_btime)


def _load() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    lib = ctypes.CDLL(name, use_errno=True) if name else None
    return lib if lib is not None and hasattr(lib, "statx") else None


_LIB = _load()


def birth_ns(path: str | os.PathLike[str]) -> int | None:
    """The birth time of `path` in ns since the epoch, or None where it is not kept."""
    if _LIB is None:
        return None
    buf = ctypes.create_string_buffer(_BUF)
    if _LIB.statx(AT_FDCWD, os.fsencode(path), AT_SYMLINK_NOFOLLOW, STATX_BTIME, buf) != 0:
        return None
    mask = struct.unpack_from("I", buf.raw, 0)[0]
    if not mask & STATX_BTIME:
        return None
    sec, nsec = _BTIME.unpack_from(buf.raw, _BTIME_AT)
    return int(sec) * 1_000_000_000 + int(nsec)
