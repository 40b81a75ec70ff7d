"""The processor as a chain of steps, after getsentry/arroyo's ProcessingStrategy.

    decode -> validate -> batch -> account -> frame -> write -> commit

Each step takes messages with `submit` and passes what it made to the next one; `poll` does
its due work (an age-based flush, a finished write, a retry); `join` pushes out what it holds
without waiting for its size or age; `pending` says whether it still holds anything (the
processor polls until nothing is); `close` ends it. A step that cannot take a message now
raises `MessageRejected` instead of blocking: the processor keeps the record, pauses its
partitions (still polling, so it stays in its group) and submits the record again later. A
step that has already done irreversible work on a message (sent it to the dead-letter topic,
changed the accounting state) never rejects it: it keeps the result in its `Outbox` and
rejects the *next* message until the result is passed on. So nothing is done twice, and
memory is bounded by one message per step.

Every record travels to the end, dead-lettered ones included (as an `Item` without a batch),
so a partition's offset only moves past a record once everything before it is written.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import pandas as pd

from contracts.wire import SampleBatch
from pipeline.accounted import Accounted
from pipeline.checkpoint import Checkpoint
from pipeline.health import HealthEvent
from pipeline.writer import Pending

TP = tuple[str, int]  # (topic, partition)
T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)


class MessageRejected(Exception):
    """The step cannot take this message now; submit it again later (backpressure)."""


class Step(Protocol[T_contra]):
    def submit(self, msg: T_contra) -> None: ...

    def poll(self) -> None: ...

    def join(self) -> None: ...

    def close(self) -> None: ...

    def pending(self) -> bool:
        """True while the step holds anything not yet passed on (or, at the end, not yet done)."""
        ...


@dataclass(frozen=True)
class Record:
    """A Kafka record exactly as it arrived: what a dead letter carries."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()

    @property
    def tp(self) -> TP:
        return self.topic, self.partition

    @property
    def source(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


@dataclass
class Item:
    """One record on its way through the chain; `batch` stays None once it is dead-lettered."""

    record: Record
    batch: SampleBatch | None = None  # decoded, as it arrived (raw samples store this)
    clean: SampleBatch | None = None  # validated: what is accounted
    rejected: pd.DataFrame | None = None  # samples validation refused, as late_samples rows


@dataclass
class Flush:
    """Items batched together, in arrival order; `offsets`: the next offset of each partition."""

    items: list[Item]
    offsets: dict[TP, int]


@dataclass
class Rows:
    """What one flush writes: the accounted rows, the raw batches, health events to record;
    `pending`: the same as ClickHouse blocks, once the frame step has made them."""

    accounted: Accounted
    raw: tuple[SampleBatch, ...]
    events: list[HealthEvent]
    offsets: dict[TP, int]
    pending: Pending | None = None


@dataclass
class Plan:
    """A checkpoint: each partition's state as of the flushes before it, and the offsets they cover."""

    checkpoints: list[Checkpoint]
    offsets: dict[TP, int]


@dataclass
class Written:
    """A plan written to ClickHouse, so its offsets can be committed to Kafka."""

    offsets: Mapping[TP, int]
    checkpoints: int = 0


def without_checkpoints(out: Outbox[Rows | Plan], gone: set[TP]) -> None:
    """Held plans forget the partitions this processor lost: their rows may still be written
    (identical to what the next owner writes), their checkpoints are not ours to save."""
    for msg in out.held:
        if isinstance(msg, Plan):
            msg.checkpoints = [c for c in msg.checkpoints if (c.topic, c.partition) not in gone]
            msg.offsets = {tp: o for tp, o in msg.offsets.items() if tp not in gone}


def offsets_of(items: Sequence[Item]) -> dict[TP, int]:
    out: dict[TP, int] = {}
    for it in items:
        out[it.record.tp] = max(out.get(it.record.tp, 0), it.record.offset + 1)
    return out


@dataclass
class Outbox(Generic[T]):
    """What a step made and its next step has not taken yet, in order."""

    next: Step[T]
    held: deque[T] = field(default_factory=deque)

    def ready(self) -> None:
        """Passes on what is held; raises MessageRejected while the next step refuses it."""
        while self.held:
            self.next.submit(self.held[0])
            self.held.popleft()

    def put(self, msg: T) -> None:
        """Passes `msg` on, or holds it: the caller has taken its input either way."""
        self.held.append(msg)
        self.poll()

    def poll(self) -> None:
        with contextlib.suppress(MessageRejected):
            self.ready()

    def drop(self, gone: Callable[[T], bool]) -> None:
        """Forgets held messages `gone` says belong to partitions this processor lost."""
        self.held = deque(m for m in self.held if not gone(m))


class Relay(Generic[T]):
    """A step that is done with each message inside `submit` and hands it on through its
    outbox: polling and joining only pass on what is held, and nothing else is pending."""

    out: Outbox[T]

    def poll(self) -> None:
        self.out.poll()

    def join(self) -> None:
        self.out.poll()

    def close(self) -> None:
        pass

    def pending(self) -> bool:
        return bool(self.out.held)
