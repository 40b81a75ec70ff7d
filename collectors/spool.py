"""The collector's on-disk spool: every batch waits here, one file each, until Kafka has it.

A record is written to a temporary name and renamed, so a crash leaves either the whole
file or none. File names are zero-padded sequence numbers, so the directory sorts oldest
first and a restarted collector resumes sending where the last one stopped. The spool is
bounded by bytes and by count; when a new batch does not fit, the oldest are dropped and
reported to the caller, which counts and logs them. An exclusive lock on `spool.lock` stops
two collectors from sharing one directory.
"""

from __future__ import annotations

import collections
import fcntl
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO

SUFFIX = ".smb"
_HEAD = struct.Struct("<HH")  # key length, batch id length


class SpoolLockedError(RuntimeError):
    pass


@dataclass(frozen=True)
class SpoolRecord:
    key: str  # the Kafka key (the node id)
    batch_id: str
    payload: bytes  # the encoded wire batch

    def to_bytes(self) -> bytes:
        k, b = self.key.encode(), self.batch_id.encode()
        return _HEAD.pack(len(k), len(b)) + k + b + self.payload

    @classmethod
    def from_bytes(cls, data: bytes) -> SpoolRecord:
        if len(data) < _HEAD.size:
            raise ValueError(f"{len(data)} bytes, shorter than the record head")
        kl, bl = _HEAD.unpack_from(data)
        end = _HEAD.size + kl + bl
        if len(data) <= end:
            raise ValueError("record has no payload")
        return cls(data[_HEAD.size : _HEAD.size + kl].decode(), data[_HEAD.size + kl : end].decode(), data[end:])


class DiskSpool:
    """Not thread-safe: the sink serialises access under its own lock."""

    def __init__(self, directory: Path, max_bytes: int, max_batches: int, fsync: bool = True) -> None:
        if max_bytes <= 0 or max_batches <= 0:
            raise ValueError("spool bounds must be positive")
        self.dir = directory
        self.max_bytes = max_bytes
        self.max_batches = max_batches
        self.fsync = fsync
        directory.mkdir(parents=True, exist_ok=True)
        self._lock: IO[bytes] = open(directory / "spool.lock", "ab")  # noqa: SIM115 - held for the spool's life
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise SpoolLockedError(f"{directory} is in use by another collector") from None
        self._files: collections.deque[tuple[int, int]] = collections.deque()  # (seq, size), oldest first
        self.bytes = 0
        for p in directory.glob(".*.tmp"):  # a write the last process did not finish
            p.unlink(missing_ok=True)
        found = []
        for p in directory.glob(f"*{SUFFIX}"):
            try:
                found.append((int(p.stem), p.stat().st_size))
            except (ValueError, OSError):
                continue
        for seq, size in sorted(found):
            self._files.append((seq, size))
            self.bytes += size
        self._next = self._files[-1][0] + 1 if self._files else 0

    def _path(self, seq: int) -> Path:
        return self.dir / f"{seq:020d}{SUFFIX}"

    def __len__(self) -> int:
        return len(self._files)

    def append(self, rec: SpoolRecord) -> int:
        """Stores `rec` as the newest record; returns how many old records it pushed out."""
        data = rec.to_bytes()
        dropped = 0
        while self._files and (len(self._files) >= self.max_batches or self.bytes + len(data) > self.max_bytes):
            self._remove_oldest()
            dropped += 1
        seq = self._next
        path = self._path(seq)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            if self.fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
        self._next += 1
        self._files.append((seq, len(data)))
        self.bytes += len(data)
        return dropped

    def head(self) -> tuple[int, SpoolRecord] | None:
        """The oldest record; raises ValueError (after removing it) if its file is unreadable."""
        if not self._files:
            return None
        seq = self._files[0][0]
        try:
            return seq, SpoolRecord.from_bytes(self._path(seq).read_bytes())
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            self._remove_oldest()
            raise ValueError(f"spool record {seq}: {exc}") from exc

    def pop(self, seq: int) -> None:
        """Removes the oldest record once it is delivered, if it is still `seq`."""
        if self._files and self._files[0][0] == seq:
            self._remove_oldest()

    def _remove_oldest(self) -> None:
        seq, size = self._files.popleft()
        self.bytes -= size
        self._path(seq).unlink(missing_ok=True)

    def close(self) -> None:
        self._lock.close()
