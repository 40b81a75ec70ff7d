"""Function load from ClickHouse into the KPA, fail-closed staleness, publishing changes only."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from contracts import names as n
from pipeline.functions import FunctionRule, Functions
from scaling.kpa import KpaConfig
from scaling.publisher import Publisher
from scaling.recommendations import Stale, UnknownFunction, history, recommend

NOW = 1_795_773_600_000


def rows(
    function: str, sandboxes: int, seconds: int, cores: float, end_ms: int = NOW, step_ms: int = 500,
    inflight: float = -1.0,
) -> list:  # fmt: skip
    out = []
    for i in range(sandboxes):
        for k in range(seconds * 1000 // step_ms):
            end = end_ms - k * step_ms
            out.append({"tenant": "acme", "function": function, "sandbox_id": f"{function}-{i}", "node": "n1",
                        "start_ms": end - step_ms, "end_ms": end, "cpu_used_us": int(cores * step_ms * 1000),
                        "vcpu_milli": 2000, "inflight": inflight, "batch_id": f"n1-{end}"})  # fmt: skip
    return out


def insert(ch: Any, data: list) -> None:
    ch.execute(f"INSERT INTO {n.T_FUNCTION_LOAD} VALUES", data, settings={"use_numpy": False})


def test_function_rules_first_match_then_kubernetes_naming() -> None:
    f = Functions((FunctionRule("thumbs", namespace="t1", pod_prefix="th-"), FunctionRule("web", label=("app", "web"))))
    assert f.of({"cri_namespace": "t1", "cri_name": "th-abc-1"}, "sb") == "thumbs"
    assert f.of({"cri_namespace": "t2", "cri_name": "th-abc-1", "app": "web"}, "sb") == "web"
    assert f.of({"cri_name": "resize-7d9f8b6c5-x2x4q"}, "sb") == "resize"
    assert f.of({"cri_name": "solo"}, "sb") == "solo" and f.of({}, "sb9") == "sb9"


@pytest.mark.clickhouse
def test_history_spreads_intervals_over_seconds_and_counts_replicas(db: tuple[str, Any]) -> None:
    _, ch = db
    insert(ch, rows("fn", 3, 30, 0.5))
    h = history(ch, "acme", "fn", NOW - 1, 60)
    assert h.per_replica == 2.0
    assert list(h.load[-30:]) == pytest.approx([1.5] * 30) and not h.load[:30].any()
    assert list(h.ready[-30:]) == [3] * 30 and not h.ready[:30].any()


@pytest.mark.clickhouse
def test_recommendation_fails_closed_on_stale_data_and_names_unknown_functions(db: tuple[str, Any]) -> None:
    _, ch = db
    with pytest.raises(Stale, match="no load data"):
        recommend(ch, "acme", "fn", NOW, stale_s=15)
    insert(ch, rows("fn", 4, 160, 1.4))  # 4 replicas of 2 cores, each at 70%: exactly on target
    rec = recommend(ch, "acme", "fn", NOW + 2000, stale_s=15)
    assert rec["desired_replicas"] == 4 and not rec["panic"] and rec["load"]["stable"] == pytest.approx(5.6)
    assert rec["per_replica_target"] == pytest.approx(1.4)
    with pytest.raises(UnknownFunction):
        recommend(ch, "acme", "nope", NOW + 2000, stale_s=15)
    with pytest.raises(Stale, match="old"):
        recommend(ch, "acme", "fn", NOW + 16_000, stale_s=15)


@pytest.mark.clickhouse
def test_an_inflight_gauge_drives_the_load_and_can_panic(db: tuple[str, Any]) -> None:
    _, ch = db
    insert(ch, rows("api", 2, 150, 0.1, end_ms=NOW - 6000, inflight=60.0))  # 120 in flight: 2 replicas' worth
    insert(ch, rows("api", 2, 6, 0.1, inflight=600.0))  # a burst: 1,200 in flight for the last 6 s
    h = history(ch, "acme", "api", NOW - 1, 30)
    assert h.unit == "requests" and h.per_replica == 100.0
    assert list(h.load[-6:]) == pytest.approx([1200.0] * 6) and h.load[-10] == pytest.approx(120.0)
    rec = recommend(ch, "acme", "api", NOW + 1000, stale_s=15)
    # panic: ceil(1200 / 70) = 18 replicas >= 2 x the 2 ready; CPU alone could never get there
    assert rec["panic"] and rec["desired_replicas"] == 18 and rec["unit"] == "requests"


class Ack:
    """kafka-python's FutureRecordMetadata: get() raises what Kafka answered for the record."""

    def __init__(self, error: Exception | None) -> None:
        self.error = error

    def get(self, timeout: float) -> None:
        if self.error:
            raise self.error


class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.refuse: Exception | None = None  # what Kafka answers each record with

    def send(self, topic: str, key: bytes, value: bytes) -> Ack:
        if not self.refuse:
            self.sent.append((topic, key, value))
        return Ack(self.refuse)

    def flush(self, timeout: float) -> None:
        pass


@pytest.mark.clickhouse
def test_publisher_sends_only_changed_decisions(db: tuple[str, Any]) -> None:
    _, ch = db
    insert(ch, rows("fn", 2, 160, 0.2))
    clock = [NOW + 1000]
    prod = Producer()
    pub = Publisher(ch, prod, "decisions", 15, lambda: clock[0], KpaConfig(), CollectorRegistry())
    assert pub.tick() == 1 and pub.tick() == 0  # the same decision is not sent twice
    topic, key, _ = prod.sent[0]
    assert (topic, key) == ("decisions", b"acme/fn")
    insert(ch, rows("fn", 2, 20, 2.0, end_ms=NOW + 20_000))  # 20 s at full load on top
    clock[0] = NOW + 21_000
    assert pub.tick() == 1 and len(prod.sent) == 2
    clock[0] = NOW + 60_000
    assert pub.tick() == 0 and pub.stale_ticks == 1  # stale: nothing published, no zero


class Down:
    """A ClickHouse connection to a server that went away."""

    def execute(self, *_a: Any, **_k: Any) -> Any:
        raise ConnectionRefusedError("Connection refused")


def test_a_failing_tick_is_counted_and_leaves_the_last_success_behind() -> None:
    reg = CollectorRegistry()
    clock = [NOW]
    pub = Publisher(Down(), Producer(), "decisions", 15, lambda: clock[0], KpaConfig(), reg)
    assert reg.get_sample_value(n.SCALE_LAST_SUCCESS) == NOW / 1000  # the start counts as the last success
    clock[0] = NOW + 5000
    pub.step()  # never raises: the next tick tries again
    pub.step()
    assert reg.get_sample_value(n.SCALE_TICK_FAILURES) == 2
    assert reg.get_sample_value(n.SCALE_LAST_SUCCESS) == NOW / 1000


@pytest.mark.clickhouse
def test_last_success_moves_on_fresh_or_empty_ticks_and_stands_still_on_stale_ones(db: tuple[str, Any]) -> None:
    _, ch = db
    reg = CollectorRegistry()
    clock = [NOW]
    pub = Publisher(ch, Producer(), "decisions", 15, lambda: clock[0], KpaConfig(), reg)
    clock[0] = NOW + 1000
    pub.step()  # no function has load yet: nothing to decide is a success
    assert reg.get_sample_value(n.SCALE_LAST_SUCCESS) == (NOW + 1000) / 1000
    insert(ch, rows("fn", 2, 160, 0.2))
    clock[0] = NOW + 2000
    pub.step()
    assert reg.get_sample_value(n.SCALE_LAST_SUCCESS) == (NOW + 2000) / 1000
    clock[0] = NOW + 60_000  # the load data is 60 s old, beyond stale_s
    pub.step()
    assert reg.get_sample_value(n.SCALE_LAST_SUCCESS) == (NOW + 2000) / 1000
    assert reg.get_sample_value(n.SCALE_STALE) == 1 and reg.get_sample_value(n.SCALE_TICK_FAILURES) == 0


@pytest.mark.clickhouse
def test_a_decision_kafka_refused_fails_the_tick_and_is_sent_again(db: tuple[str, Any]) -> None:
    _, ch = db
    insert(ch, rows("fn", 2, 160, 0.2))
    reg, prod = CollectorRegistry(), Producer()
    clock = [NOW]
    pub = Publisher(ch, prod, "decisions", 15, lambda: clock[0], KpaConfig(), reg)
    clock[0] = NOW + 1000
    prod.refuse = RuntimeError("NotLeaderForPartitionError")
    pub.step()
    assert reg.get_sample_value(n.SCALE_TICK_FAILURES) == 1 and reg.get_sample_value(n.SCALE_PUBLISHED) == 0
    assert reg.get_sample_value(n.SCALE_LAST_SUCCESS) == NOW / 1000
    prod.refuse = None
    pub.step()  # the same decision again: it was never delivered
    assert len(prod.sent) == 1 and reg.get_sample_value(n.SCALE_PUBLISHED) == 1
    assert reg.get_sample_value(n.SCALE_LAST_SUCCESS) == (NOW + 1000) / 1000
