"""Kafka TLS + SASL SCRAM-SHA-512 on the client side: kafka-python's real client, built from
the settings by the one `kafka_kwargs()` every service uses, against a fake broker
(tests/scram_broker.py: the local Tansu broker can do neither TLS nor SASL). The right
password gets metadata; a wrong password, user, mechanism or CA and plaintext do not, and the
CLI says which in one line naming the address and variables. Unit tests: not end to end."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from prometheus_client import CollectorRegistry
from scram_broker import FakeScramBroker, make_certs

from collectors import CollectorSettings, KafkaSink
from contracts import kafka
from contracts.settings import load
from sandmeter.cli.common import warn_if_kafka_refuses
from sandmeter.stack.procs import free_port

pytestmark = pytest.mark.fake_kafka

PASSWORD = "pw#collector-Ünïcode-s3cret"
TOPIC = "sandmeter.test"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def broker(certs: dict[str, Path]) -> Iterator[FakeScramBroker]:
    b = FakeScramBroker({"collector": PASSWORD}, certs["cert"], certs["key"], TOPIC)
    yield b
    b.close()


def env(broker: FakeScramBroker, certs: dict[str, Path], prefix: str = "COLLECTOR", **over: str) -> dict[str, str]:
    p = f"SANDMETER_{prefix}_KAFKA_"
    base = {"BOOTSTRAP": broker.bootstrap, "SECURITY_PROTOCOL": "SASL_SSL", "SASL_MECHANISM": "SCRAM-SHA-512",
            "USERNAME": "collector", "PASSWORD": PASSWORD, "CA_FILE": str(certs["ca"])}  # fmt: skip
    return {p + k: v for k, v in {**base, **over}.items() if v is not None}


def collector_settings(broker: FakeScramBroker, certs: dict[str, Path], **over: Any) -> CollectorSettings:
    with mock.patch.dict(os.environ, env(broker, certs, **over)):
        return load(CollectorSettings, os.environ)


def test_the_right_password_gets_metadata_through_every_client_the_services_build(
    broker: FakeScramBroker, certs: dict[str, Path], tmp_path: Path
) -> None:
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

    s = collector_settings(broker, certs)
    kw = s.kafka_kwargs()
    admin = KafkaAdminClient(**kw)
    assert TOPIC in admin.list_topics()
    admin.close()
    consumer = KafkaConsumer(**kw)
    assert consumer.topics() == {TOPIC}
    consumer.close()
    producer = KafkaProducer(**kw, max_block_ms=5000)
    assert producer.partitions_for(TOPIC) == {0}
    producer.close()
    # the collector's sink builds its producer from the same arguments (collectors.build_agent)
    sink = KafkaSink(s.kafka_bootstrap, TOPIC, CollectorRegistry(), tmp_path, fsync=False, client_kwargs=kw)
    sink_producer = sink._connect()
    assert sink_producer.partitions_for(TOPIC) == {0}
    sink_producer.close()
    sink.close(timeout_s=1)
    assert kafka.probe(kw, timeout_s=5) is None
    assert broker.events.count("authenticated collector") >= 5


@pytest.mark.parametrize(
    ("over", "kind", "broker_saw"),
    [
        ({"PASSWORD": "pw#wrong"}, "sasl", "login refused collector"),
        ({"USERNAME": "mallory"}, "sasl", "login refused mallory"),
        ({"SASL_MECHANISM": "SCRAM-SHA-256"}, "sasl", "handshake SCRAM-SHA-256"),
        ({"CA_FILE": "other_ca"}, "tls", "tls refused: SSLError"),
        ({"SECURITY_PROTOCOL": "SASL_PLAINTEXT", "CA_FILE": None}, "unreachable", "tls refused: SSLError"),
        ({"SECURITY_PROTOCOL": "PLAINTEXT", "USERNAME": None, "PASSWORD": None, "CA_FILE": None}, "unreachable",
         "tls refused: SSLError"),
    ],
)  # fmt: skip
def test_anything_but_the_right_login_over_tls_is_refused(
    broker: FakeScramBroker, certs: dict[str, Path], over: dict[str, str | None], kind: str, broker_saw: str
) -> None:
    if over.get("CA_FILE") == "other_ca":
        over = {**over, "CA_FILE": str(certs["other_ca"])}
    s = collector_settings(broker, certs, **over)
    broker.events.clear()
    refusal = kafka.probe(s.kafka_kwargs(), timeout_s=1.0)
    assert refusal is not None and refusal.kind == kind, refusal
    assert broker_saw in broker.events
    assert not any(e.startswith("authenticated") for e in broker.events)
    assert PASSWORD not in refusal.detail


@pytest.mark.parametrize("client", ["producer", "consumer", "admin"])
def test_a_wrong_password_gets_no_client_anything(broker: FakeScramBroker, certs: dict[str, Path], client: str) -> None:
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

    kw = collector_settings(broker, certs, PASSWORD="pw#wrong").kafka_kwargs()
    with pytest.raises(Exception, match=r"Unable to bootstrap|Failed to update metadata|Timeout"):
        if client == "producer":
            KafkaProducer(**kw, max_block_ms=1500, bootstrap_timeout_ms=1500).partitions_for(TOPIC)
        elif client == "consumer":
            KafkaConsumer(**kw, bootstrap_timeout_ms=1500).topics()
        else:
            KafkaAdminClient(**kw, bootstrap_timeout_ms=1500)


def test_no_log_record_carries_the_password(
    broker: FakeScramBroker, certs: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="kafka")
    for over in ({}, {"USERNAME": "mallory"}):
        kafka.probe(collector_settings(broker, certs, **over).kafka_kwargs(), timeout_s=1.0)
    messages = [r.getMessage() for r in caplog.records]
    # kafka-python logs its whole configuration: the password is in it, masked
    assert any("'sasl_plain_password': '***'" in m for m in messages)
    assert not any(PASSWORD in m for m in messages)


def test_the_collector_says_once_that_its_login_is_refused_and_runs_on(
    broker: FakeScramBroker, certs: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sandmeter.cli")
    warn_if_kafka_refuses(collector_settings(broker, certs, PASSWORD="pw#wrong"), timeout_s=1.0)
    warn_if_kafka_refuses(collector_settings(broker, certs), timeout_s=5.0)  # the right one: silent
    [line] = [r.getMessage() for r in caplog.records if r.name == "sandmeter.cli"]
    assert f"Kafka at {broker.bootstrap} refused the SCRAM-SHA-512 login of 'collector'" in line
    assert "SANDMETER_COLLECTOR_KAFKA_PASSWORD" in line and "batches stay spooled" in line


def sandmeter(*args: str, **environ: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SANDMETER_")}
    return subprocess.run(
        [sys.executable, "-m", "sandmeter.cli", *args], env={**clean, **environ}, capture_output=True, text=True,
        timeout=90, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("cmd", "prefix", "over", "said", "variables"),
    [
        ("process", "PROCESSOR", {"PASSWORD": "pw#wrong"}, "refused the SCRAM-SHA-512 login of 'collector'",
         ["USERNAME", "PASSWORD", "PASSWORD_FILE", "SASL_MECHANISM"]),
        ("scale", "SCALE", {"CA_FILE": "other_ca"}, "TLS handshake failed", ["CA_FILE", "CHECK_HOSTNAME"]),
    ],
)  # fmt: skip
def test_a_refused_login_at_start_is_one_line_naming_the_address_and_variables(
    broker: FakeScramBroker, certs: dict[str, Path], cmd: str, prefix: str, over: dict[str, str], said: str,
    variables: list[str],
) -> None:  # fmt: skip
    if over.get("CA_FILE") == "other_ca":
        over = {**over, "CA_FILE": str(certs["other_ca"])}
    r = sandmeter(cmd, **env(broker, certs, prefix, **over))
    assert r.returncode == 3, r.stderr
    [line] = r.stderr.strip().splitlines()
    assert f"Kafka at {broker.bootstrap}" in line and said in line, line
    for v in variables:
        assert f"SANDMETER_{prefix}_KAFKA_{v}" in line, line
    assert PASSWORD not in r.stderr + r.stdout


def test_with_the_right_login_the_processor_gets_past_kafka(broker: FakeScramBroker, certs: dict[str, Path]) -> None:
    port = free_port()  # no ClickHouse there: the next check after Kafka's
    r = sandmeter("process", **env(broker, certs, "PROCESSOR"), SANDMETER_PROCESSOR_CLICKHOUSE_PORT=str(port))
    assert r.returncode == 3 and f"ClickHouse at 127.0.0.1:{port} does not answer" in r.stderr, r.stderr
