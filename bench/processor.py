"""Processor throughput: pre-encoded batches through decode -> accounting -> ClickHouse insert.

Feeds the processor's chain from an in-process consumer (no broker), so this measures the
processor itself, and writes into a real ClickHouse started in a temp dir. Batches look like real scrapes: 50
sandboxes per node, 300 series per sandbox of which 7 are accounted (CPU, memory, IO,
network, spec), one scrape per node every 5 s.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry

from contracts import names as n
from contracts.builder import BatchBuilder
from contracts.clickhouse import tables
from contracts.clock import wall_ms
from contracts.wire import Encoder, EventKind, decode
from pipeline.accounting import Accountant
from pipeline.build import assemble
from pipeline.kafka import Rebalance
from pipeline.schema import migrate
from pipeline.settings import ProcessorSettings
from pipeline.steps import TP, Record
from pipeline.writer import ClickHouseWriter, open_writer
from sandmeter.stack import Stack, StackSettings
from sandmeter.stack.procs import free_port
from sandmeter.stack.users import ADMIN

SANDBOXES, EXTRA_SERIES = 50, 293
BASE_MS = wall_ms() // 1000 * 1000 - 3_600_000  # an hour ago: inside the processor's time window


@dataclass
class Msg:
    value: bytes
    offset: int
    key: bytes
    topic: str = "bench"
    partition: int = 0


class ListConsumer:
    """The processor's Consumer over records in memory: 500 per poll, none while paused."""

    def __init__(self, msgs: list[Msg]) -> None:
        self.records = deque(Record(m.topic, m.partition, m.offset, m.key, m.value) for m in msgs)
        self.paused = False

    def subscribe(self, topic: str, rebalance: Rebalance) -> None:
        pass

    def poll(self, timeout_ms: int) -> list[Record]:
        if self.paused:
            time.sleep(timeout_ms / 1000)  # as a real consumer waits when nothing is fetchable
            return []
        return [self.records.popleft() for _ in range(min(500, len(self.records)))]

    def pause(self, tps: Collection[TP]) -> None:
        self.paused = True

    def resume(self, tps: Collection[TP]) -> None:
        self.paused = False

    def assignment(self) -> set[TP]:
        return {("bench", 0)}

    def seek(self, tp: TP, offset: int) -> None:
        pass

    def seek_to_beginning(self, tp: TP) -> None:
        pass

    def lag(self) -> dict[TP, int]:
        return {("bench", 0): len(self.records)}

    def commit(self, offsets: Mapping[TP, int]) -> None:
        pass

    def close(self) -> None:
        pass


class NoProducer:
    def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes | None]],
        wait_s: float | None,
    ) -> None:  # fmt: skip
        raise AssertionError("no dead letters expected")

    def close(self, timeout_s: float) -> None:
        pass


def encoded_batches(nodes: int, scrapes: int) -> list[Msg]:
    enc, rng, out = Encoder(), np.random.default_rng(3), []
    subs = [f'item="k{i}"' for i in range(EXTRA_SERIES)]
    for s in range(scrapes):
        ts = BASE_MS + s * 5000
        for nd in range(nodes):
            b = BatchBuilder(f"node-{nd:03d}")
            for i in range(SANDBOXES):
                e = b.entity(f"sb-{nd:03d}-{i:02d}", {"tenant": f"tenant-{i % 20}"})
                b.add(e, n.M_CG_CPU_USAGE_US, "", ts, float(s * 5_000_000 + i))
                b.add(e, n.M_CG_MEM_CURRENT, "", ts, float(1 << 28))
                b.add(e, n.M_CG_IO_RBYTES, "", ts, float(s * 4096))
                b.add(e, n.M_CG_IO_WBYTES, "", ts, float(s * 2048))
                b.add(e, n.M_NET_RX_BYTES, "", ts, float(s * 1500))
                b.add(e, n.M_SPEC_VCPU_MILLI, "", ts, 1000.0)
                b.add(e, n.M_SPEC_MEM_BYTES, "", ts, float(1 << 30))
                b.add_many(
                    e, "kata_guest_vm_stat", subs, ts, rng.integers(0, 1 << 30, EXTRA_SERIES).astype(float).tolist()
                )
                if s == 0:
                    b.event(e, EventKind.START, ts - 1000)
            out.append(Msg(enc.encode(b.build(1, s, ts)), len(out), b.node.encode()))
    return out


def run(stack: Stack, msgs: list[Msg], keep_raw: bool, db: str) -> tuple[float, int]:
    ch = stack.ch(db, home="system")
    ch.execute(f"CREATE DATABASE IF NOT EXISTS {db}")
    migrate(stack.ch(db), wall_ms())
    s = ProcessorSettings(
        flush_max_samples=500_000, checkpoint_interval_s=3600, keep_raw_samples=keep_raw,
        clickhouse_port=stack.settings.clickhouse_tcp_port, clickhouse_database=db, **stack.users.settings(ADMIN),
    )  # fmt: skip
    cons = ListConsumer(msgs)
    maintenance = ClickHouseWriter(stack.ch(db), keep_raw=False)
    p = assemble(s, cons, NoProducer(), open_writer(s, keep_raw), maintenance, CollectorRegistry())
    t0 = time.perf_counter()
    while cons.records or p.feeding():
        p.turn()
    if not p.drain(None, 600):
        raise RuntimeError("the processor did not finish writing")
    elapsed = time.perf_counter() - t0
    p.close()  # its worker threads end
    ch.execute(f"DROP DATABASE {db}")
    return elapsed, p.total_samples


def narrow_insert(stack: Stack, rows: int, chunk: int, db: str) -> float:
    """Seconds to insert `rows` narrow (series id, ts, value) rows from numpy arrays, `chunk` per
    INSERT, into a fresh `raw_samples` table: the floor any processor writing its raw samples
    to this ClickHouse can reach, measured beside it."""
    ch = stack.ch(db, home="system")
    ch.execute(f"CREATE DATABASE IF NOT EXISTS {db}")
    migrate(stack.ch(db), wall_ms())
    dbc = stack.ch(db)
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 1 << 63, 300 * SANDBOXES * 20, dtype=np.uint64)  # as many series as the batches
    frames = []
    for lo in range(0, rows, chunk):
        k = min(chunk, rows - lo)
        sid = ids[np.arange(lo, lo + k) % ids.shape[0]]
        ts = (BASE_MS + (np.arange(lo, lo + k) // ids.shape[0]) * 5000).astype(np.uint64)
        frames.append(pd.DataFrame({"series_id": sid, "ts_ms": ts, "value": rng.random(k) * 1e9}))
    t0 = time.perf_counter()
    for df in frames:
        dbc.insert_dataframe(f"INSERT INTO {tables(dbc).samples} (series_id, ts_ms, value) VALUES", df)
    elapsed = time.perf_counter() - t0
    ch.execute(f"DROP DATABASE {db}")
    return elapsed


def raw_ratio(stack: Stack, msgs: list[Msg], repeats: int = 5) -> None:
    """The processor with raw samples on against a plain narrow insert of as many rows, runs
    alternating in one process against the same ClickHouse; medians and their ratio."""
    proc_rates, base_rates = [], []
    for r in range(repeats):
        elapsed, samples = run(stack, msgs, True, f"bench_ratio_p{r}")
        proc_rates.append(samples / elapsed)
        base_rates.append(samples / narrow_insert(stack, samples, 500_000, f"bench_ratio_b{r}"))
    p, b = statistics.median(proc_rates), statistics.median(base_rates)

    def runs(rates: list[float]) -> str:
        return ", ".join(f"{x / 1e6:.2f}" for x in rates)

    print(
        f"raw samples on: processor median {p / 1e6:.2f} M samples/s ({runs(proc_rates)}); plain numpy insert "
        f"of as many narrow rows median {b / 1e6:.2f} M rows/s ({runs(base_rates)}); ratio {p / b:.2f} over "
        f"{repeats} alternating runs"
    )


def through_broker(stack: Stack, msgs: list[Msg], keep_raw: bool) -> tuple[float, int]:
    """The same batches produced to the local broker first, then consumed by a real processor."""
    import threading

    from kafka import KafkaProducer

    from pipeline import build_processor
    from sandmeter.stack import create_topics

    db, topic = "bench_broker", f"bench-{wall_ms()}"
    create_topics(stack.kafka_bootstrap, 4, (topic, topic + ".dlq"))
    prod = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all", linger_ms=5)
    for m in msgs:
        prod.send(topic, key=m.key, value=m.value)
    prod.flush()
    prod.close()
    ch = stack.ch(db, home="system")
    ch.execute(f"CREATE DATABASE IF NOT EXISTS {db}")
    migrate(stack.ch(db), wall_ms())
    s = ProcessorSettings(
        kafka_bootstrap=stack.kafka_bootstrap, topic=topic, deadletter_topic=topic + ".dlq", group_id=topic,
        clickhouse_port=stack.settings.clickhouse_tcp_port, clickhouse_database=db, metrics_port=0,
        **stack.users.settings(ADMIN),
        flush_max_samples=500_000, keep_raw_samples=keep_raw,
    )  # fmt: skip
    p = build_processor(s, CollectorRegistry())
    stop = threading.Event()
    expected = sum(len(decode(m.value)) for m in msgs)
    th = threading.Thread(target=p.run, args=(stop,), daemon=True)
    t0 = time.perf_counter()
    th.start()
    first: tuple[float, int] | None = None  # (time, samples) at the first flush: the group has joined
    while p.total_samples < expected and time.perf_counter() - t0 < 600:
        if first is None and p.total_samples:
            first = (time.perf_counter(), p.total_samples)
        time.sleep(0.01)
    elapsed = time.perf_counter() - t0
    if first is not None:
        steady = (p.total_samples - first[1]) / max(1e-9, time.perf_counter() - first[0])
        print(f"  after the group join (from the first flush on): {steady / 1e6:.2f} M samples/s")
    stop.set()
    th.join(timeout=60)
    p.close()
    ch.execute(f"DROP DATABASE {db}")
    return elapsed, p.total_samples


def state_memory(series_target: int = 100_000) -> None:
    """RSS growth and state size for `series_target` accounted series (7 per sandbox)."""
    import gc
    import resource

    per_node = 100
    nodes = -(-series_target // (7 * per_node))
    gc.collect()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    acct = Accountant()
    for s in range(3):
        ts = BASE_MS + s * 5000
        batches = []
        for nd in range(nodes):
            b = BatchBuilder(f"mem-{nd:04d}")
            for i in range(per_node):
                e = b.entity(f"sb-{nd:04d}-{i:03d}", {"tenant": f"tenant-{i % 50}", "cri_name": f"fn-{i}"})
                b.add(e, n.M_CG_CPU_USAGE_US, "", ts, float(s * 1000))
                b.add(e, n.M_CG_MEM_CURRENT, "", ts, float(1 << 28))
                b.add(e, n.M_CG_IO_RBYTES, "", ts, float(s))
                b.add(e, n.M_CG_IO_WBYTES, "", ts, float(s))
                b.add(e, n.M_NET_RX_BYTES, "", ts, float(s))
                b.add(e, n.M_SPEC_VCPU_MILLI, "", ts, 1000.0)
                b.add(e, n.M_SPEC_MEM_BYTES, "", ts, float(1 << 30))
            batches.append(b.build(1, s, ts))
        acct.process(batches)
    gc.collect()
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        f"processor state: {len(acct.series)} series of {len(acct.sandboxes)} sandboxes; series arrays and index "
        f"{acct.series.nbytes() / 1e6:.1f} MB; process max RSS grew {(rss1 - rss0) / 1024:.0f} MB "
        f"(to {rss1 / 1024:.0f} MB)"
    )


def freshness(stack: Stack, samples_per_s: int = 100_000, seconds: float = 30.0) -> None:
    """Sample timestamp -> written to ClickHouse, at `samples_per_s` through the local broker."""
    import threading

    from kafka import KafkaProducer

    from pipeline import build_processor
    from sandmeter.stack import create_topics

    db, topic = "bench_fresh", f"fresh-{wall_ms()}"
    create_topics(stack.kafka_bootstrap, 4, (topic, topic + ".dlq"))
    ch = stack.ch(db, home="system")
    ch.execute(f"CREATE DATABASE IF NOT EXISTS {db}")
    migrate(stack.ch(db), wall_ms())
    reg = CollectorRegistry()
    s = ProcessorSettings(
        kafka_bootstrap=stack.kafka_bootstrap, topic=topic, deadletter_topic=topic + ".dlq", group_id=topic,
        clickhouse_port=stack.settings.clickhouse_tcp_port, clickhouse_database=db, metrics_port=0,
        **stack.users.settings(ADMIN),
        flush_interval_s=0.5, keep_raw_samples=True,
    )  # fmt: skip
    p = build_processor(s, reg)
    stop = threading.Event()
    th = threading.Thread(target=p.run, args=(stop,), daemon=True)
    th.start()
    prod = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all", linger_ms=5)
    enc, per_batch, nodes = Encoder(), 300 * SANDBOXES // 10, 20  # 1,500 samples per batch
    interval = per_batch * nodes / samples_per_s  # one round of nodes every `interval` s
    time.sleep(8)  # the group join
    readings: list[float] = []
    t_end, seq = time.monotonic() + seconds, 0
    while time.monotonic() < t_end:
        t_round = time.monotonic()
        ts = wall_ms()
        for nd in range(nodes):
            b = BatchBuilder(f"fresh-{nd:02d}")
            for i in range(5):
                e = b.entity(f"sb-{nd}-{i}", {"tenant": "t"})
                b.add(e, n.M_CG_CPU_USAGE_US, "", ts, float(seq * 1000))
                b.add_many(e, "kata_guest_vm_stat", [f'item="k{j}"' for j in range(299)], ts, [float(seq)] * 299)
            prod.send(topic, key=b.node.encode(), value=enc.encode(b.build(1, seq, ts)))
        seq += 1
        v = reg.get_sample_value(n.PROCESSOR_FRESHNESS)
        if v:
            readings.append(v)
        time.sleep(max(0.0, interval - (time.monotonic() - t_round)))
    prod.close()
    stop.set()
    th.join(timeout=30)
    p.close()
    ch.execute(f"DROP DATABASE {db}")
    sent = seq * nodes * per_batch
    print(
        f"freshness at {sent / seconds / 1e3:.0f}k samples/s for {seconds:.0f} s through Tansu (raw table on, "
        f"0.5 s flushes): median {statistics.median(readings):.2f} s, p90 "
        f"{sorted(readings)[int(len(readings) * 0.9)]:.2f} s over {len(readings)} readings"
    )


def main(nodes: int = 20, scrapes: int = 10, repeats: int = 3) -> None:
    state_memory()
    msgs = encoded_batches(nodes, scrapes)
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(
            StackSettings(
                state_dir=Path(tmp), kafka_port=free_port(), clickhouse_tcp_port=free_port(),
                clickhouse_http_port=free_port(),
            )
        )  # fmt: skip
        stack.up()
        try:
            raw_ratio(stack, msgs)
            for keep_raw in (False, True):
                rates = []
                for r in range(repeats):
                    elapsed, samples = run(stack, msgs, keep_raw, f"bench_{r}")
                    rates.append(samples / elapsed)
                print(
                    f"processor ({len(msgs)} batches, {samples} samples, raw table {'on' if keep_raw else 'off'}): "
                    f"median {statistics.median(rates) / 1e6:.2f} M samples/s over {repeats} runs "
                    f"({', '.join(f'{x / 1e6:.2f}' for x in rates)})"
                )
            elapsed, samples = through_broker(stack, msgs, keep_raw=False)
            print(
                f"processor through the local broker (group join included, raw table off): {samples} samples in "
                f"{elapsed:.1f} s = {samples / elapsed / 1e6:.2f} M samples/s, "
                f"{sum(len(m.value) for m in msgs) / elapsed / 1e6:.1f} MB/s from Tansu"
            )
            freshness(stack)
        finally:
            stack.down()


if __name__ == "__main__":
    main()
