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

from bench import drop_databases, local_stack
from contracts import names as n
from contracts.builder import BatchBuilder
from contracts.clickhouse import tables
from contracts.clock import wall_ms
from contracts.wire import Encoder, EventKind, SampleBatch, decode
from pipeline.accounting import Accountant
from pipeline.build import assemble
from pipeline.kafka import Rebalance
from pipeline.schema import migrate
from pipeline.settings import ProcessorSettings
from pipeline.steps import TP, Record
from pipeline.writer import ClickHouseWriter, open_writer
from sandmeter.stack import Stack
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
    enc, rng = Encoder(), np.random.default_rng(3)
    out: list[Msg] = []
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
    drop_databases(ch, db)
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
    drop_databases(ch, db)
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


def produce(stack: Stack, msgs: list[Msg]) -> str:
    """The batches produced to a new 4-partition topic of the local broker; its name."""
    from kafka import KafkaProducer

    from sandmeter.stack import create_topics

    topic = f"bench-{wall_ms()}"
    create_topics(stack.kafka_bootstrap, 4, (topic, topic + ".dlq"))
    prod = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all", linger_ms=5)
    for m in msgs:
        prod.send(topic, key=m.key, value=m.value)
    prod.flush()
    prod.close()
    return topic


def bare_drain(stack: Stack, topic: str, count: int, group: str) -> float:
    """Messages/s at which a bare kafka-python consumer, in a group of its own, with the
    processor's consumer settings and poll size, drains `count` messages of `topic`; timed from
    its first record (after the group join) to its last, as `through_broker` is."""
    from kafka import KafkaConsumer

    s = ProcessorSettings(kafka_bootstrap=stack.kafka_bootstrap, group_id=group)
    c = KafkaConsumer(
        topic, **s.kafka_kwargs(), group_id=group, enable_auto_commit=False, auto_offset_reset="earliest",
        session_timeout_ms=s.session_timeout_ms, heartbeat_interval_ms=max(500, s.session_timeout_ms // 3),
        max_poll_interval_ms=s.max_poll_interval_ms, max_partition_fetch_bytes=8 << 20,
        fetch_max_wait_ms=s.fetch_max_wait_ms,
    )  # fmt: skip
    got, first, t0 = 0, 0.0, time.perf_counter()
    while got < count and time.perf_counter() - t0 < 300:
        polled = sum(len(v) for v in c.poll(timeout_ms=200, max_records=500).values())
        if polled and not got:
            first = time.perf_counter()
        got += polled
    rate = got / max(1e-9, time.perf_counter() - first)
    c.close(autocommit=False)
    return rate


def through_broker(stack: Stack, topic: str, expected: int, keep_raw: bool, db: str) -> float:
    """Samples/s of a real processor (its own consumer group) reading `topic` from the local
    broker, from its first flush (the group has joined) until all `expected` samples are written."""
    import threading

    from pipeline import build_processor

    ch = stack.ch(db, home="system")
    ch.execute(f"CREATE DATABASE IF NOT EXISTS {db}")
    migrate(stack.ch(db), wall_ms())
    s = ProcessorSettings(
        kafka_bootstrap=stack.kafka_bootstrap, topic=topic, deadletter_topic=topic + ".dlq", group_id=db,
        clickhouse_port=stack.settings.clickhouse_tcp_port, clickhouse_database=db, metrics_port=0,
        **stack.users.settings(ADMIN),
        flush_max_samples=500_000, keep_raw_samples=keep_raw,
    )  # fmt: skip
    p = build_processor(s, CollectorRegistry())
    stop = threading.Event()
    th = threading.Thread(target=p.run, args=(stop,), daemon=True)
    t0 = time.perf_counter()
    th.start()
    first: tuple[float, int] | None = None  # (time, samples) at the first flush: the group has joined
    while p.total_samples < expected and time.perf_counter() - t0 < 600:
        if first is None and p.total_samples:
            first = (time.perf_counter(), p.total_samples)
        time.sleep(0.005)
    assert first is not None and p.total_samples == expected, (first, p.total_samples, expected)
    rate = (p.total_samples - first[1]) / max(1e-9, time.perf_counter() - first[0])
    stop.set()
    th.join(timeout=60)
    p.close()
    drop_databases(ch, db)
    return rate


def consumer_path(stack: Stack, msgs: list[Msg], repeats: int = 3) -> None:
    """Issue 19's target 1: the processor through the broker with raw samples on, against a bare
    consumer draining the same topic and against the same processor fed in-process; the three
    alternate, `repeats` rounds, medians and ratios."""
    per_msg = sum(len(decode(m.value)) for m in msgs[:1])
    expected = per_msg * len(msgs)
    topic = produce(stack, msgs)
    bare, broker, inproc = [], [], []
    for r in range(repeats):
        bare.append(bare_drain(stack, topic, len(msgs), f"bare-{topic}-{r}") * per_msg)
        broker.append(through_broker(stack, topic, expected, True, f"bench_broker_{r}"))
        elapsed, samples = run(stack, msgs, True, f"bench_inproc_{r}")
        inproc.append(samples / elapsed)

    def runs(rates: list[float]) -> str:
        return ", ".join(f"{x / 1e6:.2f}" for x in rates)

    b, k, i = statistics.median(bare), statistics.median(broker), statistics.median(inproc)
    print(
        f"consumer path ({len(msgs)} batches, {expected:,} samples, 4 partitions, raw samples on, {repeats} "
        f"alternating rounds, rates from the first record/flush after the group join): processor through Tansu "
        f"median {k / 1e6:.2f} M samples/s ({runs(broker)}); bare kafka-python consumer {b / 1e6:.2f} "
        f"({runs(bare)}); processor in-process {i / 1e6:.2f} ({runs(inproc)}); ratio to bare {k / b:.2f} "
        f"[target >= 0.6], to in-process {k / i:.2f} [target >= 0.8]",
        flush=True,
    )


def _rss_bytes() -> int:
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def state_memory(series_target: int = 100_000) -> None:
    """RSS growth per accounted series (7 per sandbox) and the checkpoint state's export and
    import times. Run in a process of its own (`state_main`), so nothing else shares its RSS."""
    import gc
    import resource

    from pipeline.checkpoint import decode_state, encode_state

    per_node = 100
    nodes = -(-series_target // (7 * per_node))

    def feed(acct: Accountant, nodes: int, prefix: str) -> None:
        for s in range(3):
            ts = BASE_MS + s * 5000
            for lo in range(0, nodes, 100):  # a flush of 100 nodes at a time, as a processor's would be
                acct.process([scrape(f"{prefix}{nd:05d}", s, ts) for nd in range(lo, min(nodes, lo + 100))])

    def scrape(node: str, s: int, ts: int) -> SampleBatch:
        b = BatchBuilder(node)
        for i in range(per_node):
            e = b.entity(f"sb-{node}-{i:03d}", {"tenant": f"tenant-{i % 50}", "cri_name": f"fn-{i}"})
            b.add(e, n.M_CG_CPU_USAGE_US, "", ts, float(s * 1000))
            b.add(e, n.M_CG_MEM_CURRENT, "", ts, float(1 << 28))
            b.add(e, n.M_CG_IO_RBYTES, "", ts, float(s))
            b.add(e, n.M_CG_IO_WBYTES, "", ts, float(s))
            b.add(e, n.M_NET_RX_BYTES, "", ts, float(s))
            b.add(e, n.M_SPEC_VCPU_MILLI, "", ts, 1000.0)
            b.add(e, n.M_SPEC_MEM_BYTES, "", ts, float(1 << 30))
        return b.build(1, s, ts)

    feed(Accountant(), 1, "warm-")  # imports and caches, paid once by any processor: not state
    gc.collect()
    rss0, max0 = _rss_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    acct = Accountant()
    feed(acct, nodes, "mem-")
    gc.collect()
    rss1, max1 = _rss_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    series = len(acct.series)
    exp, imp = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        text = encode_state(acct.export_state())
        t1 = time.perf_counter()
        fresh = Accountant()
        fresh.import_state(decode_state(text))
        t2 = time.perf_counter()
        assert len(fresh.series) == series
        exp.append(t1 - t0)
        imp.append(t2 - t1)
        del fresh
    print(
        f"processor state: {series:,} series of {len(acct.sandboxes):,} sandboxes; series arrays and index "
        f"{acct.series.nbytes() / 1e6:.1f} MB; RSS grew {(rss1 - rss0) / 1e6:.0f} MB = "
        f"{(rss1 - rss0) / series:.0f} bytes/series [target <= 300] (max RSS grew {(max1 - max0) / 1e6:.0f} MB = "
        f"{(max1 - max0) / series:.0f} bytes/series); checkpoint state ({len(text) / 1e6:.1f} MB) export median "
        f"{statistics.median(exp):.2f} s, import {statistics.median(imp):.2f} s over 3 [target each < 1 s at 1M]",
        flush=True,
    )


def state_in_child(series_target: int) -> None:
    """`state_memory` in a fresh interpreter: the RSS it reports is the state's alone."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "bench.processor", "--state", str(series_target)], check=True)


def freshness(stack: Stack, flush_s: float = 0.5, samples_per_s: int = 100_000, seconds: float = 30.0) -> None:
    """Sample timestamp -> written to ClickHouse (raw samples and usage intervals: queryable), at
    `samples_per_s` through the local broker. Each round of scrapes carries one timestamp; a
    watcher notes when the processor's newest written sample time first reaches it, and a
    checker asks ClickHouse as the API's user for that time's usage rows (what `/usage` reads
    for bounds off whole minutes; whole-minute reads use the rollups, refreshed at checkpoints)."""
    import queue
    import threading

    from kafka import KafkaProducer

    from pipeline import build_processor
    from sandmeter.stack import create_topics
    from sandmeter.stack.users import API

    db, topic = "bench_fresh", f"fresh-{wall_ms()}"
    create_topics(stack.kafka_bootstrap, 4, (topic, topic + ".dlq"))
    ch = stack.ch(db, home="system")
    ch.execute(f"CREATE DATABASE IF NOT EXISTS {db}")
    migrate(stack.ch(db), wall_ms())
    s = ProcessorSettings(
        kafka_bootstrap=stack.kafka_bootstrap, topic=topic, deadletter_topic=topic + ".dlq", group_id=topic,
        clickhouse_port=stack.settings.clickhouse_tcp_port, clickhouse_database=db, metrics_port=0,
        **stack.users.settings(ADMIN),
        flush_interval_s=flush_s, keep_raw_samples=True,
    )  # fmt: skip
    reg = CollectorRegistry()
    p = build_processor(s, reg)
    stop, watching = threading.Event(), threading.Event()
    th = threading.Thread(target=p.run, args=(stop,), daemon=True)
    th.start()
    seen: list[tuple[int, int]] = []  # (wall ms, newest sample ms written) at each change
    to_check: queue.SimpleQueue[int | None] = queue.SimpleQueue()
    checked: list[bool] = []
    stack.allow(db)
    api = stack.ch(db, user=API)

    def watch() -> None:
        last = None
        while not watching.is_set():
            newest = p.chain.write.newest_written_ms
            if newest != last and newest is not None:
                seen.append((wall_ms(), newest))
                to_check.put(newest)
                last = newest
            time.sleep(0.002)
        to_check.put(None)

    def check() -> None:  # on a thread of its own: the watcher's times stay the processor's
        usage = tables(api).usage
        while (ts := to_check.get()) is not None:
            rows = api.execute(f"SELECT count() FROM {usage} FINAL WHERE end_ms = %(ts)s", {"ts": ts})
            checked.append(rows[0][0] > 0)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    checker = threading.Thread(target=check, daemon=True)
    checker.start()
    prod = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all", linger_ms=5)
    enc, per_batch, nodes = Encoder(), 300 * SANDBOXES // 10, 20  # 1,500 samples per batch
    interval = per_batch * nodes / samples_per_s  # one round of nodes every `interval` s
    time.sleep(8)  # the group join
    rounds: list[int] = []
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
        rounds.append(ts)
        seq += 1
        time.sleep(max(0.0, interval - (time.monotonic() - t_round)))
    prod.close()
    time.sleep(3)  # the last rounds written
    watching.set()
    watcher.join()
    checker.join(timeout=30)
    stop.set()
    th.join(timeout=30)
    p.close()
    parts = dict(
        ch.execute(
            "SELECT table, count() FROM system.parts WHERE active AND database IN %(dbs)s GROUP BY table",
            {"dbs": tuple(n.databases(db))},
        )
    )
    stack.disallow(db)
    drop_databases(ch, db)

    def mean_ms(name: str) -> str:
        count = reg.get_sample_value(name + "_count") or 0
        return f"{(reg.get_sample_value(name + '_sum') or 0) / max(1, count) * 1000:.0f} ms x {count:.0f}"

    at = np.array([t for t, _ in seen], np.int64)
    newest = np.maximum.accumulate(np.array([w for _, w in seen], np.int64))
    first = np.searchsorted(newest, np.array(rounds, np.int64))  # the first change that covered each round
    lat = np.sort((at[first[first < len(at)]] - np.array(rounds)[first < len(at)]) / 1000)
    sent = seq * nodes * per_batch
    print(
        f"freshness at {sent / seconds / 1e3:.0f}k samples/s for {seconds:.0f} s through Tansu (raw table on, "
        f"FLUSH_INTERVAL_S {flush_s}): sample time -> written, over {len(lat)} of {len(rounds)} rounds: median "
        f"{np.median(lat):.2f} s, p90 {lat[int(len(lat) * 0.9)]:.2f} s, p99 {lat[int(len(lat) * 0.99)]:.2f} s, max "
        f"{lat[-1]:.2f} s [target p99 <= 0.5 s]; per flush: accounting {mean_ms(n.PROCESSOR_FLUSH_SECONDS)}, "
        f"ClickHouse writes {mean_ms(n.PROCESSOR_INSERT_SECONDS)}; rollups {mean_ms(n.PROCESSOR_ROLLUP_SECONDS)}; "
        f"usage rows read back by the API's user at {sum(checked)} of {len(checked)} written times; "
        f"{(reg.get_sample_value(n.PROCESSOR_INSERT_SECONDS + '_count') or 0) / seconds:.1f} inserts/s per "
        f"table; active parts after the run: usage {parts.get(n.T_USAGE, 0)}, raw {parts.get(n.T_SAMPLES, 0)}",
        flush=True,
    )


def main(nodes: int = 20, scrapes: int = 10, repeats: int = 3, full: bool = False) -> None:
    for size in (100_000, 1_000_000) if full else (100_000,):
        state_in_child(size)
    msgs = encoded_batches(nodes, scrapes)
    with tempfile.TemporaryDirectory() as tmp:
        stack = local_stack(Path(tmp))
        stack.up()
        try:
            raw_ratio(stack, msgs)
            rates = []
            for r in range(repeats):
                elapsed, samples = run(stack, msgs, False, f"bench_{r}")
                rates.append(samples / elapsed)
            print(
                f"processor ({len(msgs)} batches, {samples} samples, raw table off): median "
                f"{statistics.median(rates) / 1e6:.2f} M samples/s over {repeats} runs "
                f"({', '.join(f'{x / 1e6:.2f}' for x in rates)})"
            )
            consumer_path(stack, msgs, repeats)
            for flush_s in (0.5, 0.25):
                freshness(stack, flush_s)
        finally:
            stack.down()


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(prog="python -m bench.processor", description=__doc__.split("\n")[0])
    ap.add_argument("--state", type=int, metavar="SERIES", help="only the state measurement, at this many series")
    ap.add_argument("--full", action="store_true", help="the state measurement at 1M series too")
    ap.add_argument("--only", choices=["consumer", "freshness"], help="only this part (for profiling)")
    ap.add_argument("--flush", default="0.5,0.25", help="FLUSH_INTERVAL_S values the freshness part runs at")
    args = ap.parse_args()
    if args.state:
        state_memory(args.state)
    elif args.only:
        with tempfile.TemporaryDirectory() as tmp:
            st = local_stack(Path(tmp))
            st.up()
            try:
                if args.only == "consumer":
                    consumer_path(st, encoded_batches(20, 10))
                else:
                    for flush_s in args.flush.split(","):
                        freshness(st, float(flush_s))
            finally:
                st.down()
    else:
        main(full=args.full)
