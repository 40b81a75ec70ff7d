"""Scale recommendations follow the load end to end, and fail closed when the data stops.

Simulator (one tenant, one function of 8 sandboxes) -> real collectors -> Tansu -> a
`sandmeter process` child -> ClickHouse -> the API's /v1/scale endpoint and the `scale`
publisher -> the scale-decisions topic. The test raises and lowers the sandboxes' CPU load.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from processes import Processors
from prometheus_client import CollectorRegistry

from billing.app import create_app
from billing.keys import TENANT, create_key
from billing.plans import load_book
from billing.settings import ApiSettings
from collectors.sim.runner import Simulator
from collectors.sim.spec import FleetSpec
from contracts.clock import wall_ms
from sandmeter.stack import Stack, create_topics
from sandmeter.stack.users import SCALE
from scaling import Publisher
from scaling.kpa import KpaConfig

pytestmark = pytest.mark.e2e
PLANS = Path(__file__).resolve().parents[1] / "fixtures" / "plans"
FOLLOW_S = 10.0
STALE_S = 10.0


def poll(c: TestClient, h: dict[str, str]) -> tuple[int, dict[str, Any]]:
    r = c.get("/v1/scale/tenant-a/fn", headers=h)
    return r.status_code, r.json()


def wait_for(c: TestClient, h: dict[str, str], cond: Any, limit_s: float) -> tuple[float, dict[str, Any]]:
    t0 = time.monotonic()
    while True:
        status, body = poll(c, h)
        if cond(status, body):
            return time.monotonic() - t0, body
        assert time.monotonic() - t0 < limit_s, (status, body)
        time.sleep(0.25)


def test_recommendation_follows_load_up_and_down_and_fails_closed(
    stack: Stack, db: tuple[str, Any], tmp_path: Path, collectors: Any
) -> None:
    name, ch = db
    topic, decisions = f"samples-{name}", f"decisions-{name}"
    create_topics(stack.kafka_bootstrap, 4, (topic, topic + ".dlq", decisions))
    sim = Simulator(tmp_path / "fleet", FleetSpec(nodes=2, sandboxes=8, tenants=1, churn_per_min=0, reset_per_min=0))
    sim.set_cpu_load(0.6)
    sim.start()
    fleet = collectors(sim, stack.kafka_bootstrap, topic, tmp_path / "spool", 0.5)
    procs = Processors(stack, name, topic, f"group-{name}", tmp_path)
    proc = procs.start()
    key = create_key(ch, TENANT, "tenant-a")[1]
    h = {"Authorization": f"Bearer {key}"}
    app = create_app(ApiSettings(key_cache_s=0, scale_stale_s=STALE_S), lambda: ch, book=load_book(PLANS))

    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
    stop_pub = threading.Event()
    pub_ch = stack.ch(name, SCALE)  # a connection is not shared
    pub = Publisher(pub_ch, producer, decisions, STALE_S, wall_ms, KpaConfig(), CollectorRegistry())
    pub_thread = threading.Thread(target=pub.run, args=(stop_pub,), daemon=True)
    pub_thread.start()
    try:
        with TestClient(app) as c:
            wait_for(c, h, lambda s, b: s == 200, 60)
            time.sleep(64)  # a whole stable window of the baseline load
            base = poll(c, h)[1]
            # 8 sandboxes at 60% of their vCPUs, 70% target: ceil(8 x 0.6 / 0.7) = 7
            assert base["desired_replicas"] == 7 and base["ready_replicas"] == 8, base

            sim.set_cpu_load(1.0)  # every sandbox busy
            up_s, up = wait_for(c, h, lambda s, b: s == 200 and b["desired_replicas"] > 7, FOLLOW_S + 5)
            print(f"load up: recommendation {base['desired_replicas']} -> {up['desired_replicas']} in {up_s:.1f} s")
            assert up_s <= FOLLOW_S
            time.sleep(62)  # the stable window fills with the high load
            high = poll(c, h)[1]
            assert high["desired_replicas"] >= 11, high  # all 8 busy at 70% target: ceil(8 / 0.7) = 12

            sim.set_cpu_load(0.6)
            down_s, down = wait_for(
                c, h, lambda s, b: s == 200 and b["desired_replicas"] < high["desired_replicas"], FOLLOW_S + 5
            )
            print(f"load down: {high['desired_replicas']} -> {down['desired_replicas']} in {down_s:.1f} s")
            assert down_s <= FOLLOW_S and down["desired_replicas"] >= high["desired_replicas"] // 2

            procs.stop_all()  # no more usage reaches ClickHouse
            stale_s, body = wait_for(c, h, lambda s, b: s == 503, STALE_S + 10)
            print(f"processor stopped: 503 after {stale_s:.1f} s ({body['detail']})")
            assert body["code"] == "stale" and stale_s <= STALE_S + 2
    finally:
        stop_pub.set()
        pub_thread.join(timeout=10)
        producer.close(timeout=5)
        fleet.stop(sink_timeout_s=5)
        procs.stop_all()
        sim.stop()
    assert proc.returncode is not None
    from kafka import KafkaConsumer, TopicPartition

    cons = KafkaConsumer(
        bootstrap_servers=stack.kafka_bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=3000
    )
    cons.assign([TopicPartition(decisions, p) for p in range(4)])
    published = [(m.key, json.loads(m.value)) for m in cons]
    cons.close()
    desired = [d["desired_replicas"] for _, d in published]
    assert {k for k, _ in published} == {b"tenant-a/fn"}
    states = [(d["desired_replicas"], d["panic"]) for _, d in published]
    assert all(a != b for a, b in itertools.pairwise(states))  # only changed decisions are published
    assert 7 in desired and max(desired) >= 11  # the baseline (after the warm-up) and the peak
