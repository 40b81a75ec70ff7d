"""No record can stop the stream, through the real broker, processor and ClickHouse.

A processor (the real one: `build_processor`, Tansu, ClickHouse) runs for the whole module;
each generated example produces valid batches of new nodes and tenants with bad records of
every kind between them (tests/poison.py), waits until the group has committed past all of it,
and checks: the processor is still running; usage per sandbox equals the reference from the
valid batches alone and stays within vCPUs x elapsed time; the dead-letter topic received
exactly the bad records, with the bytes and keys they were produced with; late_samples holds
exactly the rejected values with their reasons.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from poison import SETTINGS, Plan, plans, usable
from poison import stream as make_stream
from processes import group_caught_up
from prometheus_client import CollectorRegistry
from support import private_db

from contracts.clickhouse import tables
from contracts.clock import wall_ms
from pipeline import ProcessorSettings, build_processor
from sandmeter.stack import Stack, create_topics
from sandmeter.stack.users import WRITER

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]
EXAMPLES = 12


@dataclass
class Running:
    ch: Any
    topic: str
    group: str
    bootstrap: str
    thread: threading.Thread
    producer: Any
    dlq: Any  # a consumer assigned every partition of the dead-letter topic
    examples: list[float]


@pytest.fixture(scope="module")
def running(stack: Stack) -> Iterator[Running]:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    with private_db(stack) as (name, ch):
        topic, group = f"poison-{name}", f"group-{name}"
        create_topics(stack.kafka_bootstrap, 4, (topic, topic + ".dlq"))
        s = ProcessorSettings(
            kafka_bootstrap=stack.kafka_bootstrap, topic=topic, deadletter_topic=topic + ".dlq", group_id=group,
            clickhouse_port=stack.settings.clickhouse_tcp_port, clickhouse_database=name, metrics_port=0,
            flush_interval_s=0.2, checkpoint_interval_s=0.5, **SETTINGS, **stack.users.settings(WRITER),
        )  # fmt: skip
        proc = build_processor(s, CollectorRegistry())
        stop = threading.Event()
        th = threading.Thread(target=proc.run, args=(stop,), daemon=True)
        th.start()
        prod = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all", linger_ms=2)
        dlq = KafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, auto_offset_reset="earliest")
        dlq.assign([TopicPartition(topic + ".dlq", p) for p in range(4)])
        r = Running(ch, topic, group, stack.kafka_bootstrap, th, prod, dlq, [])
        try:
            yield r
        finally:
            stop.set()
            th.join(timeout=15)
            proc.close()
            prod.close()
            dlq.close()
            if r.examples:
                print(f"\n{len(r.examples)} examples through the real broker: {sum(r.examples):.1f} s, "
                      f"max {max(r.examples):.1f} s")  # fmt: skip


def dead_letters(r: Running, count: int, timeout_s: float) -> list[tuple[bytes | None, bytes | None, dict[str, Any]]]:
    got: list[tuple[bytes | None, bytes | None, dict[str, Any]]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for msgs in r.dlq.poll(timeout_ms=200).values():
            got += [(m.key, m.value, dict(m.headers)) for m in msgs]
        if len(got) >= count:
            time.sleep(0.3)  # and nothing more arrives
            for msgs in r.dlq.poll(timeout_ms=100).values():
                got += [(m.key, m.value, dict(m.headers)) for m in msgs]
            return got
    return got


def as_sortable(kv: tuple[bytes | None, bytes | None]) -> tuple[bool, bytes, bool, bytes]:
    """A null key or value stays distinct from an empty one."""
    return kv[0] is None, kv[0] or b"", kv[1] is None, kv[1] or b""


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])  # fmt: skip
@given(plan=plans(max_bad=8).filter(usable))
def test_bad_records_through_the_real_broker_never_stop_the_processor(running: Running, plan: Plan) -> None:
    t0 = time.monotonic()
    uid = uuid.uuid4().hex[:8]
    s = make_stream(plan, wall_ms(), uid, random.Random(uid))
    for rec in s.records:
        running.producer.send(running.topic, key=rec.key, value=rec.value, headers=rec.headers)
    running.producer.flush()
    deadline = time.monotonic() + 30
    while not group_caught_up(running.bootstrap, running.group, running.topic):
        assert running.thread.is_alive(), "the processor stopped"
        assert time.monotonic() < deadline, "the processor did not get past the example's records"
        time.sleep(0.2)
    assert running.thread.is_alive()
    dead = [r for r in s.records if r.is_dead]
    got = dead_letters(running, len(dead), 10)
    assert sorted(map(as_sortable, ((k, v) for k, v, _ in got))) == sorted(as_sortable((r.key, r.value)) for r in dead)
    by_bytes = {(r.key, r.value): r for r in dead}
    for k, v, h in got:
        want = by_bytes[(k, v)].dead
        assert want is None or h["sandmeter-dlq-reason"] == want.encode(), (want, h)
        assert h["sandmeter-source"].startswith(running.topic.encode())
    late = running.ch.execute(
        f"SELECT reason, count() FROM {tables(running.ch).late} WHERE node LIKE %(u)s GROUP BY reason",
        {"u": f"%-{uid}"},
    )
    assert {str(k): int(v) for k, v in late} == dict(Counter(reason for r in s.records for reason in r.rejected))
    rows = running.ch.execute(
        "SELECT sandbox_id, sum(cpu_used_us), sum(io_read_bytes), sum(vcpu_alloc_mcpu_ms) FROM usage_intervals FINAL "
        "WHERE sandbox_id LIKE %(u)s GROUP BY sandbox_id",
        {"u": f"%-{uid}-s%"},
    )
    got_usage = {r[0]: (int(r[1]), int(r[2]), int(r[3])) for r in rows}
    want_usage = {sb: (t["cpu_used_us"], t["io_read_bytes"], t["vcpu_alloc_mcpu_ms"]) for sb, t in s.truth.items()}
    assert got_usage == want_usage
    for sb, t in s.truth.items():
        assert got_usage[sb][0] <= t["vcpu"] * t["elapsed_ms"]  # CPU-us within millicores x ms
    running.examples.append(time.monotonic() - t0)
