"""The collector interface: a source reads one kind of node data into a Reading.

Sources take every path, URL and clock as constructor arguments, so tests run them on
fixture trees. A source never raises for bad input it can skip: it counts the problem in
`Reading.errors` and keeps the good samples around it. It raises `SourceError` only when
it has nothing at all to give (endpoint down, root missing).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Protocol


class SourceError(RuntimeError):
    """The source produced nothing this scrape; `source` names it for counters."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source


@dataclass
class Rows:
    """Samples as parallel lists; sandbox "" means the node itself."""

    sandbox: list[str] = field(default_factory=list)
    metric: list[str] = field(default_factory=list)
    sub: list[str] = field(default_factory=list)
    value: list[float] = field(default_factory=list)

    def add(self, sandbox: str, metric: str, sub: str, value: float) -> None:
        self.sandbox.append(sandbox)
        self.metric.append(metric)
        self.sub.append(sub)
        self.value.append(value)

    def __len__(self) -> int:
        return len(self.value)


@dataclass
class Reading:
    source: str
    ts_ms: int
    rows: Rows = field(default_factory=Rows)
    # sandbox id -> labels learnt from this source (cri_namespace, cri_name, ...)
    labels: dict[str, dict[str, str]] = field(default_factory=dict)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what)


class Source(Protocol):
    name: str

    def read(self, sandboxes: frozenset[str]) -> Reading:
        """Reads the current values; `sandboxes` are the ids the lifecycle knows alive."""
        ...


def read_file(path: str | os.PathLike[str]) -> str:
    """A small kernel file's text with two syscalls and no buffering: the hot read of every source."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = [os.read(fd, 65536)]
        while len(chunks[-1]) == 65536:
            chunks.append(os.read(fd, 65536))
    finally:
        os.close(fd)
    return b"".join(chunks).decode(errors="replace")
