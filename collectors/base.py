"""The collector interface: a source reads one kind of node data into a Reading.

Sources take every path, URL and clock as constructor arguments, so tests run them on
fixture trees. A source never raises for bad input it can skip: it counts the problem in
`Reading.errors` and keeps the good samples around it. It raises `SourceError` only when
it has nothing at all to give (endpoint down, root missing).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt


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

    def add_sandbox(self, sandbox: str, metrics: Sequence[str], subs: Sequence[str], values: Sequence[float]) -> None:
        """Samples of one sandbox, in columns."""
        self.sandbox.extend([sandbox] * len(values))
        self.metric.extend(metrics)
        self.sub.extend(subs)
        self.value.extend(values)

    def __len__(self) -> int:
        return len(self.value)


@dataclass
class Block:
    """Samples as indexes into string tables: a source that parsed its input in columns."""

    sandboxes: Sequence[str]  # "" is the node itself
    metrics: Sequence[str]
    subs: Sequence[str]
    sandbox: npt.NDArray[np.int64]
    metric: npt.NDArray[np.int64]
    sub: npt.NDArray[np.int64]
    value: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.value.shape[0])


@dataclass
class Reading:
    source: str
    ts_ms: int
    rows: Rows = field(default_factory=Rows)
    blocks: list[Block] = field(default_factory=list)
    # sandbox id -> labels learnt from this source (cri_namespace, cri_name, ...)
    labels: dict[str, dict[str, str]] = field(default_factory=dict)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def samples(self) -> list[tuple[str, str, str, float]]:
        """Every sample as (sandbox, metric, sub-labels, value): for tests and small readers."""
        out = list(zip(self.rows.sandbox, self.rows.metric, self.rows.sub, self.rows.value, strict=True))
        for b in self.blocks:
            cols = (b.sandbox.tolist(), b.metric.tolist(), b.sub.tolist(), b.value.tolist())
            out += [(b.sandboxes[s], b.metrics[m], b.subs[u], float(v)) for s, m, u, v in zip(*cols, strict=True)]
        return out

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what)


class Source(Protocol):
    name: str

    def read(self, sandboxes: frozenset[str]) -> Reading:
        """Reads the current values; `sandboxes` are the ids the lifecycle knows alive."""
        ...


def line_value(text: str, key: str) -> str | None:
    """The rest of the line of `text` that starts with `key` (e.g. `read_bytes:`), or None
    when no line does: for the `key value` files of cgroup v2 and /proc."""
    i = text.find(key)
    while i > 0 and text[i - 1] != "\n":
        i = text.find(key, i + 1)
    if i < 0:
        return None
    end = text.find("\n", i)
    return text[i + len(key) : end if end >= 0 else None]


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
