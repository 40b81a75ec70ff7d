"""The on-disk spool and the Kafka sink's delivery through it (fake producer, no broker)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from collectors.sink import KafkaSink
from collectors.spool import DiskSpool, SpoolLockedError, SpoolRecord
from contracts.builder import BatchBuilder
from contracts.names import COLLECTOR_SPOOL_DEPTH as SPOOL_DEPTH
from contracts.names import COLLECTOR_SPOOL_DROPPED as SPOOL_DROPPED
from contracts.wire import SampleBatch, decode


def rec(i: int, size: int = 10) -> SpoolRecord:
    return SpoolRecord("node-1", f"node-1/1/{i}", bytes([i % 256]) * size)


def test_records_come_back_oldest_first_and_survive_a_restart(tmp_path: Path) -> None:
    sp = DiskSpool(tmp_path, 1 << 20, 100, fsync=False)
    for i in range(3):
        sp.append(rec(i))
    head = sp.head()
    assert head is not None and head[1] == rec(0)
    sp.pop(head[0])
    sp.close()
    again = DiskSpool(tmp_path, 1 << 20, 100, fsync=False)
    got = []
    while (h := again.head()) is not None:
        got.append(h[1].batch_id)
        again.pop(h[0])
    assert got == ["node-1/1/1", "node-1/1/2"]
    again.append(rec(9))  # numbering continues after the restart
    assert [p.name for p in tmp_path.glob("*.smb")] == [f"{3:020d}.smb"]


def test_full_spool_drops_the_oldest_and_says_how_many(tmp_path: Path) -> None:
    sp = DiskSpool(tmp_path, max_bytes=10_000, max_batches=3, fsync=False)
    assert [sp.append(rec(i)) for i in range(5)] == [0, 0, 0, 1, 1]
    h = sp.head()
    assert h is not None and h[1].batch_id == "node-1/1/2" and len(sp) == 3
    by_bytes = DiskSpool(tmp_path / "b", max_bytes=200, max_batches=100, fsync=False)
    dropped = sum(by_bytes.append(rec(i, size=60)) for i in range(5))
    assert by_bytes.bytes <= 200 and dropped == 5 - len(by_bytes) and dropped > 0


def test_an_unreadable_file_is_removed_and_reported(tmp_path: Path) -> None:
    sp = DiskSpool(tmp_path, 1 << 20, 100, fsync=False)
    sp.append(rec(0))
    sp.append(rec(1))
    (tmp_path / f"{0:020d}.smb").write_bytes(b"\x01")
    with pytest.raises(ValueError, match="spool record 0"):
        sp.head()
    h = sp.head()
    assert h is not None and h[1] == rec(1)


def test_a_half_written_file_from_a_crash_is_ignored(tmp_path: Path) -> None:
    (tmp_path / f".{0:020d}.smb.tmp").write_bytes(b"partial")
    sp = DiskSpool(tmp_path, 1 << 20, 100, fsync=False)
    assert len(sp) == 0 and not list(tmp_path.glob(".*.tmp"))


def test_two_collectors_cannot_share_a_spool(tmp_path: Path) -> None:
    sp = DiskSpool(tmp_path, 1 << 20, 100)
    with pytest.raises(SpoolLockedError):
        DiskSpool(tmp_path, 1 << 20, 100)
    sp.close()
    DiskSpool(tmp_path, 1 << 20, 100).close()


class Sent:
    """kafka-python's FutureRecordMetadata, as far as the sink uses it."""

    def __init__(self, error: Exception | None) -> None:
        self.error = error

    def get(self, timeout: float) -> None:
        if self.error:
            raise self.error


class FlakyProducer:
    """Fails every send while `down` is set; records what it accepted."""

    def __init__(self) -> None:
        self.down = threading.Event()
        self.got: list[str] = []

    def send(self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> Sent:
        if self.down.is_set():
            return Sent(ConnectionError("broker away"))
        self.got.append(dict(headers)["sandmeter-batch-id"].decode())
        assert decode(value).batch_id == self.got[-1]
        return Sent(None)

    def close(self, timeout: float) -> None:
        pass


def batch(seq: int) -> SampleBatch:
    b = BatchBuilder("node-1")
    ix = b.entity("sb1", {"tenant": "t"})
    b.add(ix, "m", "", 1000 + seq, float(seq))
    return b.build(1, seq, 1000 + seq)


def wait_for(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_sink_holds_batches_through_an_outage_and_sends_them_in_order(tmp_path: Path) -> None:
    prod, reg = FlakyProducer(), CollectorRegistry()
    prod.down.set()
    sink = KafkaSink("unused", "t", reg, tmp_path, fsync=False, producer=prod)
    for i in range(5):
        sink.put(batch(i))
    time.sleep(0.3)
    assert prod.got == [] and reg.get_sample_value(SPOOL_DEPTH) == 5
    prod.down.clear()
    wait_for(lambda: len(prod.got) == 5)
    assert prod.got == [f"node-1/1/{i}" for i in range(5)]
    wait_for(lambda: reg.get_sample_value(SPOOL_DEPTH) == 0)
    sink.close(1)


def test_sink_restart_sends_what_the_last_run_left(tmp_path: Path) -> None:
    prod = FlakyProducer()
    prod.down.set()
    first = KafkaSink("unused", "t", CollectorRegistry(), tmp_path, fsync=False, producer=prod)
    for i in range(3):
        first.put(batch(i))
    first.close(0.2)
    prod.down.clear()
    second = KafkaSink("unused", "t", CollectorRegistry(), tmp_path, fsync=False, producer=prod)
    wait_for(lambda: len(prod.got) == 3)
    assert prod.got == ["node-1/1/0", "node-1/1/1", "node-1/1/2"]
    second.close(1)


def test_sink_counts_what_a_full_spool_drops(tmp_path: Path) -> None:
    prod, reg = FlakyProducer(), CollectorRegistry()
    prod.down.set()
    sink = KafkaSink("unused", "t", reg, tmp_path, max_batches=2, fsync=False, producer=prod)
    for i in range(5):
        sink.put(batch(i))
    assert reg.get_sample_value(SPOOL_DROPPED, {"reason": "full"}) == 3
    prod.down.clear()
    wait_for(lambda: len(prod.got) == 2)
    assert prod.got == ["node-1/1/3", "node-1/1/4"]
    assert np.all(np.diff([int(b.rsplit("/", 1)[1]) for b in prod.got]) > 0)
    sink.close(1)


def test_closing_with_the_broker_away_does_not_wait_for_it_and_keeps_the_batches(tmp_path: Path) -> None:
    """A SIGTERM while Kafka is away: the sink closes at once, not after its timeout, and the
    next start sends every batch; with the broker up, closing waits for what is in flight."""
    prod = FlakyProducer()
    up = KafkaSink("unused", "t", CollectorRegistry(), tmp_path, fsync=False, producer=prod)
    up.put(batch(0))
    wait_for(lambda: prod.got == ["node-1/1/0"])
    prod.down.set()
    for i in range(1, 4):
        up.put(batch(i))
    time.sleep(0.3)  # a send has failed
    t0 = time.monotonic()
    up.close(10)
    assert time.monotonic() - t0 < 2.0
    prod.down.clear()
    again = KafkaSink("unused", "t", CollectorRegistry(), tmp_path, fsync=False, producer=prod)
    wait_for(lambda: len(prod.got) == 4)
    again.put(batch(4))
    again.close(10)  # sends are succeeding: the last one goes before the close returns
    assert prod.got == [f"node-1/1/{i}" for i in range(5)]
