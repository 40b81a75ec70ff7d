"""A 10-node x 50-sandbox fleet delivers every batch through a broker outage.

Real parts: the simulator's trees and kata-monitor endpoints, the real collectors with their
disk spools, and a Tansu broker that this test stops for 30 s and restarts empty (its
storage is memory: it keeps nothing). A consumer reads throughout.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collectors.sim.runner import Simulator
from collectors.sim.spec import FleetSpec
from collectors.spool import SpoolRecord
from contracts.names import COLLECTOR_SPOOL_DEPTH as SPOOL_DEPTH
from contracts.names import TOPIC_SAMPLES
from contracts.wire import BATCH_ID_KEY, batch_id
from sandmeter.stack import broker_process, create_topics
from sandmeter.stack.procs import ManagedProcess, free_port

pytestmark = pytest.mark.kafka

NODES, PER_NODE, INTERVAL_S, OUTAGE_S = 10, 50, 2.0, 30.0


class Reader(threading.Thread):
    """Reads every partition from the start; keeps batch ids in the order read.

    While `paused` it holds no consumer. The broker keeps nothing across a restart, so on
    resuming it reads the new log from its beginning with a new consumer: an old consumer's
    offsets would point into the middle of the new log.
    """

    def __init__(self, bootstrap: str) -> None:
        super().__init__(name="reader", daemon=True)
        self.bootstrap = bootstrap
        self.seen: list[str] = []
        self.stop = threading.Event()
        self.paused = threading.Event()

    def _consumer(self) -> Any:
        from kafka import KafkaConsumer, TopicPartition

        c = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            consumer_timeout_ms=300,
            request_timeout_ms=6000,
        )
        c.assign([TopicPartition(TOPIC_SAMPLES, p) for p in range(4)])
        return c

    def run(self) -> None:
        c = None
        while not self.stop.is_set():
            if self.paused.is_set():
                if c is not None:
                    c.close()
                    c = None
                time.sleep(0.1)
                continue
            c = c or self._consumer()
            for msg in c:
                self.seen.append(dict(msg.headers)[BATCH_ID_KEY].decode())
        if c is not None:
            c.close()


def wait_for(cond: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def spooled(spool_root: Path) -> set[str]:
    """Batch ids still waiting in the collectors' spools (not yet acknowledged)."""
    out = set()
    for f in spool_root.glob("*/*.smb"):
        with contextlib.suppress(OSError, ValueError):
            out.add(SpoolRecord.from_bytes(f.read_bytes()).batch_id)
    return out


def kill_once_caught_up(broker: ManagedProcess, reader: Reader, produced: Any, spool_root: Path) -> None:
    """Kills the broker at a moment when the reader has every batch the broker acknowledged.

    The broker keeps its log in memory, so a batch it acknowledged but the reader had not
    fetched yet would die with it; no producer can resend what the broker confirmed. So the
    broker is frozen (SIGSTOP: no more acknowledgements), and killed only if everything
    that left the spools is already read; otherwise it runs on briefly and is frozen again.
    """
    pid = broker.pid()
    assert pid is not None
    for _ in range(50):
        os.kill(pid, signal.SIGSTOP)
        time.sleep(0.3)  # acknowledgements already on the wire reach the sinks
        acked = produced() - spooled(spool_root)
        if acked <= set(reader.seen):
            os.kill(pid, signal.SIGKILL)
            return
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.2)
    raise AssertionError("the reader never caught up with the broker")


@pytest.fixture
def fleet_root() -> Iterator[Path]:
    # the trees are rewritten every tick: tmpfs keeps that cheap, like the kernel's own files
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(prefix="sandmeter-fleet-", dir=base) as d:
        yield Path(d)


def test_every_batch_arrives_in_order_through_a_broker_restart(
    tmp_path: Path, fleet_root: Path, collectors: Any
) -> None:
    port = free_port()
    broker: ManagedProcess = broker_process(tmp_path / "broker", port)
    broker.start(30)
    bootstrap = f"127.0.0.1:{port}"
    create_topics(bootstrap)
    sim = Simulator(fleet_root, FleetSpec(nodes=NODES, sandboxes=NODES * PER_NODE, churn_per_min=30), tick_s=1.0)
    sim.start()
    fleet = collectors(sim, bootstrap, TOPIC_SAMPLES, tmp_path / "spool", INTERVAL_S)
    agents = fleet.agents
    reader = Reader(bootstrap)
    reader.start()

    def produced() -> set[str]:
        return {batch_id(a.node, a.boot_epoch_ms, s) for a in agents for s in range(a.batches_made)}

    def spooled() -> float:
        return sum(a.registry.get_sample_value(SPOOL_DEPTH) or 0 for a in agents)

    try:
        time.sleep(8)
        before_outage = len(produced())

        kill_once_caught_up(broker, reader, produced, tmp_path / "spool")
        reader.paused.set()
        broker.stop()  # already dead: clears its pid file
        made_before = len(produced())
        time.sleep(OUTAGE_S)
        made_during = len(produced()) - made_before
        assert made_during >= NODES * OUTAGE_S / INTERVAL_S / 2, "the collectors kept scraping"
        assert spooled() >= made_during, "every batch made during the outage waits in a spool"
        broker.start(30)  # empty: no topics, no offsets
        create_topics(bootstrap)
        reader.paused.clear()
        wait_for(lambda: spooled() == 0, 120, "the spools to drain")
        fleet.stop(sink_timeout_s=5)  # the watchers too: a stop seen later would make one more batch
        made = produced()
        wait_for(lambda: made <= set(reader.seen), 60, "every batch to reach the reader")
    finally:
        fleet.stop(sink_timeout_s=5)
        reader.stop.set()
        sim.stop()
        broker.stop()
    reader.join(timeout=10)

    assert len(made) > before_outage + made_during
    seen = reader.seen
    assert set(seen) == made, "nothing lost, nothing foreign"
    per_node: dict[str, list[int]] = defaultdict(list)
    firsts = set()
    for bid in seen:
        if bid in firsts:
            continue  # a re-sent duplicate: recognisable by its batch id
        firsts.add(bid)
        node, _, seq = bid.rsplit("/", 2)
        per_node[node].append(int(seq))
    assert len(per_node) == NODES
    for node, seqs in per_node.items():
        assert seqs == sorted(seqs), f"{node}: batches out of order"
    print(f"batches: {len(made)} made, {len(seen)} read, {len(seen) - len(made)} duplicates")
