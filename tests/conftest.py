"""Session fixtures that start the real broker and ClickHouse; a guard for unit tests.

Tests that need a service carry `@pytest.mark.kafka` / `@pytest.mark.clickhouse` /
`@pytest.mark.cluster` (or `e2e`, which implies them; `fake_kafka`: real clients against
tests/scram_broker.py). Unmarked tests get clients that raise, so a unit test cannot
quietly depend on a server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import free_ports, private_db

from contracts.clock import wall_ms
from sandmeter.stack import AlertReceiver, Cluster, Stack, StackSettings
from sandmeter.stack.procs import free_port

SERVICE_MARKERS = {"kafka", "clickhouse", "cluster", "e2e", "fake_kafka"}


@pytest.fixture(scope="session")
def alert_receiver() -> Iterator[AlertReceiver]:
    """The webhook the session stack's Alertmanager posts every notification to."""
    r = AlertReceiver()
    yield r
    r.close()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, alert_receiver: AlertReceiver) -> Iterator[Stack]:
    """Broker, ClickHouse, Prometheus and Alertmanager. Alerting runs at test speed: scrapes and
    rule evaluations every second, notifications at once, every `for:` capped at 2 s (the rule
    setting; the expressions are the production ones)."""
    s = Stack(
        StackSettings(
            state_dir=tmp_path_factory.mktemp("stack"),
            kafka_port=free_port(),
            clickhouse_tcp_port=free_port(),
            clickhouse_http_port=free_port(),
            prometheus_port=free_port(),
            alertmanager_port=free_port(),
            alert_webhook_url=alert_receiver.url,
            scrape_interval_s=1,
            alert_group_wait_s=0,
            alert_group_interval_s=1,
            alert_for_max_s=2,
        )
    )
    s.up()
    try:
        yield s
    finally:
        s.down()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """ZooKeeper and the 2x2 ClickHouse cluster, started once, only for the tests that ask."""
    base = free_ports(12)  # node i: tcp base + i, http base + 4 + i, interserver base + 8 + i
    c = Cluster(
        StackSettings(
            state_dir=tmp_path_factory.mktemp("cluster"), clickhouse_tcp_port=base, clickhouse_http_port=base + 4,
            cluster_interserver_port=base + 8, zookeeper_port=free_port(), cluster=True,
        )
    )  # fmt: skip
    t0 = time.monotonic()
    c.up()
    print(f"\ncluster: ZooKeeper and 4 ClickHouse servers answering after {time.monotonic() - t0:.1f} s")
    try:
        yield c
    finally:
        c.down()


@pytest.fixture(scope="session")
def ch_migrated(stack: Stack) -> Any:
    from pipeline.schema import migrate

    ch = stack.ch("sandmeter", home="system")  # the stack's own database, as the admin
    migrate(ch, wall_ms())
    return ch


@pytest.fixture
def db(stack: Stack) -> Iterator[tuple[str, Any]]:
    """A ClickHouse database of the test's own, migrated, dropped afterwards."""
    with private_db(stack) as d:
        yield d


class _Blocked:
    def __init__(self, *a: Any, **k: Any) -> None:
        raise RuntimeError("this test touches a service: mark it kafka, clickhouse or e2e")


@pytest.fixture(autouse=True)
def _block_services(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if SERVICE_MARKERS & {m.name for m in request.node.iter_markers()}:
        return
    import clickhouse_driver
    import kafka

    for mod, names in (
        (clickhouse_driver, ["Client"]),
        (kafka, ["KafkaProducer", "KafkaConsumer", "KafkaAdminClient"]),
    ):
        for name in names:
            monkeypatch.setattr(mod, name, _Blocked)


@pytest.fixture
def fixtures_dir() -> Path:
    return Path(__file__).parent / "fixtures"
