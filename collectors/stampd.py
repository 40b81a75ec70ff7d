"""The stamping process: watches the sandbox directories and stamps each change, nothing else.

Started by collectors/stamper.py as `python -I stampd.py [--snapshot FILE]... -- DIR...`, by
path: it imports only the standard library and its sibling inotify.py, so it starts in tens of
milliseconds and holds none of the collector's memory. It asks for realtime priority
(SCHED_FIFO) where allowed (CAP_SYS_NICE): woken ahead of busier tasks on a loaded node,
it stamps within microseconds of the change. The protocol is described in stamper.py.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import select
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

RT_PRIORITY = 10  # SCHED_FIFO: above other realtime work of ours at 1 (the simulator's truth windows)


def _sibling(name: str) -> ModuleType:
    """A module next to this file, loaded without importing the `collectors` package."""
    spec = importlib.util.spec_from_file_location(f"_stampd_{name}", Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while being defined
    spec.loader.exec_module(mod)
    return mod


def _read(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 1 << 20).decode(errors="replace")
    finally:
        os.close(fd)


def serve(dirs: Sequence[str], snapshot: Sequence[str] = ()) -> int:
    inotify = _sibling("inotify")
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(RT_PRIORITY))
    dw = inotify.DirWatch()
    paths = [Path(d) for d in dirs]
    index = {p: i for i, p in enumerate(paths)}
    for p in paths:
        dw.watch(p)
    out_fd = sys.stdout.fileno()
    os.set_blocking(out_fd, False)  # a parent slow to read must never delay the next stamp
    backlog = bytearray(b"R\n")

    def emit(stamp: int) -> None:
        lines = []
        evs = dw.read()
        if snapshot and any(e.removed and e.mask & inotify.IN_ISDIR for e in evs):
            snap = {}
            for f in snapshot:
                with contextlib.suppress(OSError):
                    snap[f] = _read(f)
            lines.append(f"N {stamp} {json.dumps(snap)}\n")
        for e in evs:
            if e.directory is None:
                lines.append(f"O {stamp}\n")
            else:
                lines.append(f"E {e.mask} {index[e.directory]} {stamp} {e.name}\n")
        backlog.extend("".join(lines).encode())

    pending = b""
    while True:
        ready, writable, _ = select.select([dw.fd, 0], [out_fd] if backlog else [], [], 1.0)
        if dw.fd in ready:
            emit(time.time_ns())  # first thing after the wake-up: this is the stamp
        if 0 in ready:
            chunk = os.read(0, 4096)
            if not chunk:
                return 0
            pending += chunk
            *cmds, pending = pending.split(b"\n")
            for cmd in cmds:
                if cmd == b"S":
                    emit(time.time_ns())
                    backlog.extend(b"S\n")
                elif cmd.startswith(b"W ") and cmd[2:].isdigit() and int(cmd[2:]) < len(paths):
                    dw.watch(paths[int(cmd[2:])])
        if backlog and (writable or ready):
            try:
                del backlog[: os.write(out_fd, backlog)]
            except BlockingIOError:  # the pipe is full: the rest goes once the parent has read
                continue
            except BrokenPipeError:  # the parent is gone
                return 0
        if not ready and not writable and os.getppid() == 1:  # orphaned
            return 0


def main(argv: Sequence[str]) -> int:
    args = list(argv)
    snapshot = []
    while args[:1] == ["--snapshot"] and len(args) > 1:
        snapshot.append(args[1])
        args = args[2:]
    return serve(args[1:] if args[:1] == ["--"] else args, snapshot)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
