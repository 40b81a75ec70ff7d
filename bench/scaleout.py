"""Scale-out figures for docs/capacity.md: 1 vs 2 processors in one consumer group, and
ClickHouse insert rates of the 2x2 cluster against the single server.

Group throughput: the same pre-encoded scrapes are produced once to a 4-partition topic of
the local broker; then a group of one `sandmeter process` child and a group of two read all
of it (raw samples on, as deployed), alternating, each into a database of its own. The rate
is taken over the middle 80% of the samples (the group join and the last flush left out),
from the children's /metrics. Every process shares the machine's cores with the broker and
ClickHouse, which is the point of the measurement: it says what limits a second processor.

Inserts: blocks of narrow raw rows and of usage rows into the single server, and through the
cluster's Distributed tables (synchronous, all four servers on this machine).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

from bench import drop_databases, local_stack
from bench.processor import encoded_batches
from contracts import names as n
from contracts.clickhouse import tables
from contracts.clock import wall_ms
from contracts.names import databases
from contracts.quantities import COLUMNS
from contracts.wire import decode
from pipeline.accounting import USAGE_COLUMNS
from pipeline.schema import migrate
from sandmeter.stack import CLUSTER, Cluster, Stack, StackSettings, create_topics
from sandmeter.stack.procs import free_port, port_free
from sandmeter.stack.users import ADMIN


def _metric(port: int, name: str) -> float:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return 0.0
    return next((float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith(name + " ")), 0.0)


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def group_run(stack: Stack, topic: str, processors: int, expected: int, tag: str) -> tuple[float, float]:
    """(samples/s over the middle 80%, samples per processor CPU-second) for one group."""
    db = f"bench_group_{tag}"
    ch = stack.ch(db, home="system")
    ch.execute(f"CREATE DATABASE IF NOT EXISTS {db}")
    migrate(stack.ch(db), wall_ms())
    ports = [free_port() for _ in range(processors)]
    env = {
        **os.environ,
        "SANDMETER_PROCESSOR_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        "SANDMETER_PROCESSOR_TOPIC": topic,
        "SANDMETER_PROCESSOR_DEADLETTER_TOPIC": topic + ".dlq",
        "SANDMETER_PROCESSOR_GROUP_ID": f"group-{tag}",
        "SANDMETER_PROCESSOR_CLICKHOUSE_PORT": str(stack.settings.clickhouse_tcp_port),
        **stack.users.env("PROCESSOR", ADMIN),
        "SANDMETER_PROCESSOR_CLICKHOUSE_DATABASE": db,
        "SANDMETER_PROCESSOR_METRICS_HOST": "127.0.0.1",
        "SANDMETER_PROCESSOR_FLUSH_MAX_SAMPLES": "500000",
        "SANDMETER_PROCESSOR_LOG_LEVEL": "WARNING",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "sandmeter.cli", "process"],
            env={**env, "SANDMETER_PROCESSOR_METRICS_PORT": str(p)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for p in ports
    ]
    marks: dict[float, float] = {}  # fraction of the samples -> when it was passed
    cpu = 0.0
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            done = sum(_metric(p, n.PROCESSOR_SAMPLES) for p in ports) / expected
            for f in (0.1, 0.9):
                if done >= f and f not in marks:
                    marks[f] = time.monotonic()
            if done >= 0.9:
                break
            time.sleep(0.05)
        cpu = sum(_cpu_s(p.pid) for p in procs)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=60)
        if tag == "1x0":
            _disk(ch, db)
        drop_databases(ch, db)
    if len(marks) < 2:
        raise RuntimeError(f"the group of {processors} did not read 90% of the samples")
    rate = 0.8 * expected / (marks[0.9] - marks[0.1])
    return rate, 0.9 * expected / cpu  # CPU up to 90%, join and start-up included: a lower bound


def _disk(ch: object, db: str) -> None:
    """Bytes per row on disk of what a run wrote (fresh parts, before background merges)."""
    rows = ch.execute(  # type: ignore[attr-defined]
        "SELECT table, sum(rows), sum(data_compressed_bytes) FROM system.parts WHERE database IN %(db)s AND active "
        "GROUP BY table ORDER BY table",
        {"db": databases(db)},
        settings={"use_numpy": False},
    )
    print(
        "  compressed column data after the run (fresh parts, before merges): "
        + ", ".join(f"{t} {int(r):,} rows, {int(b) / max(1, int(r)):.1f} B/row" for t, r, b in rows if int(r))
    )


def groups(nodes: int = 40, scrapes: int = 25, rounds: int = 2) -> None:
    msgs = encoded_batches(nodes, scrapes)
    expected = sum(len(decode(m.value)) for m in msgs)
    wire = sum(len(m.value) for m in msgs)
    with tempfile.TemporaryDirectory() as tmp:
        stack = local_stack(Path(tmp))
        stack.up()
        try:
            from kafka import KafkaProducer

            topic = f"group-bench-{wall_ms()}"
            create_topics(stack.kafka_bootstrap, 4, (topic, topic + ".dlq"))
            prod = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all", linger_ms=5)
            t0 = time.perf_counter()
            for m in msgs:
                prod.send(topic, key=m.key, value=m.value)
            prod.flush()
            produce_s = time.perf_counter() - t0
            prod.close()
            print(
                f"broker: {len(msgs)} batches, {wire / 1e6:.1f} MB ({wire / expected:.2f} bytes/sample) produced in "
                f"{produce_s:.1f} s = {wire / produce_s / 1e6:.1f} MB/s into Tansu (one producer, acks=all)"
            )
            rates: dict[int, list[float]] = {1: [], 2: []}
            per_cpu: dict[int, list[float]] = {1: [], 2: []}
            for r in range(rounds):
                for k in (1, 2):
                    rate, eff = group_run(stack, topic, k, expected, f"{k}x{r}")
                    rates[k].append(rate)
                    per_cpu[k].append(eff)
            one, two = statistics.median(rates[1]), statistics.median(rates[2])
            print(
                f"processor group ({expected / 1e6:.1f} M samples, raw table on, through Tansu, {rounds} alternating "
                f"rounds): 1 processor {one / 1e6:.2f} M samples/s ({', '.join(f'{x / 1e6:.2f}' for x in rates[1])}), "
                f"2 processors {two / 1e6:.2f} M samples/s ({', '.join(f'{x / 1e6:.2f}' for x in rates[2])}): "
                f"ratio {two / one:.2f}; {one * wire / expected / 1e6:.1f} MB/s read from Tansu by one processor"
            )
            print(
                f"  samples per processor CPU-second: 1 processor {statistics.median(per_cpu[1]) / 1e6:.2f} M, "
                f"2 processors {statistics.median(per_cpu[2]) / 1e6:.2f} M (start-up and group join included)"
            )
        finally:
            stack.down()


def _raw(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "series_id": rng.integers(0, 1 << 63, rows, dtype=np.uint64),
            "ts_ms": np.full(rows, 1_800_000_000_000 + seed * 5000, np.uint64),
            "value": rng.random(rows),
        }
    )


def _usage(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    end = 1_800_000_000_000 + seed * 5000
    df = pd.DataFrame(
        {
            "tenant": [f"tenant-{i % 1000}" for i in range(rows)],
            "sandbox_id": [f"sb-{seed}-{i}" for i in range(rows)],
            "node": [f"node-{i % 10_000:05d}" for i in range(rows)],
            "start_ms": np.full(rows, end - 5000, np.uint64),
            "end_ms": np.full(rows, end, np.uint64),
            **{c: rng.integers(0, 1 << 40, rows).astype(np.uint64) for c in COLUMNS},
            "batch_id": [f"b{seed}-{i // 200}" for i in range(rows)],
        }
    )
    return df[list(USAGE_COLUMNS)]


def _insert_rate(ch: object, table: str, frames: list[pd.DataFrame]) -> float:
    cols = ", ".join(frames[0].columns)
    t0 = time.perf_counter()
    for df in frames:
        ch.insert_dataframe(f"INSERT INTO {tables(ch)(table)} ({cols}) VALUES", df)  # type: ignore[attr-defined]
    return sum(len(f) for f in frames) / (time.perf_counter() - t0)


def inserts(blocks: int = 5, raw_block: int = 200_000, usage_block: int = 100_000) -> None:
    raw = [_raw(raw_block, i) for i in range(blocks)]
    usage = [_usage(usage_block, i) for i in range(blocks)]
    with tempfile.TemporaryDirectory() as tmp:
        base = next(b for b in range(31_000, 60_000, 16) if all(port_free(b + i) for i in range(12)))
        s = StackSettings(
            state_dir=Path(tmp), kafka_port=free_port(), clickhouse_tcp_port=base, clickhouse_http_port=base + 4,
            cluster_interserver_port=base + 8, zookeeper_port=free_port(), cluster=True, alerting=False,
        )  # fmt: skip
        single = Stack(s.model_copy(update={"cluster": False, "state_dir": Path(tmp) / "single"}))
        cluster = Cluster(s)
        cluster.up()
        try:
            db = "bench_inserts"
            ch = cluster.ch(base, db, home="system", cluster=CLUSTER)
            migrate(ch, wall_ms(), CLUSTER, lambda h, p: cluster.ch(p, db, home="system", cluster=CLUSTER))
            ch = cluster.ch(base, db, cluster=CLUSTER)
            c_raw, c_usage = _insert_rate(ch, n.T_SAMPLES, raw), _insert_rate(ch, n.T_USAGE, usage)
        finally:
            cluster.down()
        single.up()  # the single server on s1r1's ports, after the cluster is gone
        try:
            migrate(single.ch("bench_single", home="system"), wall_ms())
            ch = single.ch("bench_single")
            s_raw, s_usage = _insert_rate(ch, n.T_SAMPLES, raw), _insert_rate(ch, n.T_USAGE, usage)
        finally:
            single.down()
    print(
        f"ClickHouse inserts, single server: raw {s_raw / 1e6:.2f} M rows/s ({raw_block:,}-row blocks), usage "
        f"{s_usage / 1e6:.2f} M rows/s ({usage_block:,}-row blocks); through the 2x2 cluster's Distributed tables "
        f"(sync, 4 servers and ZooKeeper on this machine): raw {c_raw / 1e6:.2f} M rows/s = {c_raw / 2e6:.2f} M per "
        f"shard, usage {c_usage / 1e6:.2f} M rows/s = {c_usage / 2e6:.2f} M per shard"
    )


def main() -> None:
    import logging

    logging.getLogger("clickhouse_driver").setLevel(logging.CRITICAL)  # refused connections while servers start
    groups()
    inserts()


if __name__ == "__main__":
    main()
