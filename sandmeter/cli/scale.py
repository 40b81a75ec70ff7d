"""`sandmeter scale`: publish changed scale decisions to Kafka (SANDMETER_SCALE_*)."""

from __future__ import annotations

import argparse

from contracts.clock import wall_ms
from contracts.settings import Part
from sandmeter.cli.common import (
    Subparsers,
    apply_log_level,
    require_clickhouse,
    require_kafka,
    served_registry,
    service,
    settings,
    stop_on_signals,
)


def _settings_class() -> type[Part]:
    from scaling import ScaleSettings

    return ScaleSettings


def add(sub: Subparsers) -> None:
    service(sub, "scale", "publish changed scale decisions to Kafka (SANDMETER_SCALE_*)", run, _settings_class)


def run(a: argparse.Namespace) -> int:
    stop = stop_on_signals()  # first: a SIGTERM while it waits for Kafka or ClickHouse ends it cleanly
    from kafka import KafkaProducer

    from scaling import KpaConfig, Publisher, ScaleSettings

    s = settings(ScaleSettings)
    apply_log_level(s, a.verbose)
    require_kafka(s, stop=stop)
    require_clickhouse(s, stop=stop)
    reg = served_registry(s, "scale")
    producer = KafkaProducer(**s.kafka_kwargs(), acks="all")
    pub = Publisher(s.clickhouse(), producer, s.topic, s.stale_s, wall_ms, KpaConfig(), reg)
    pub.run(stop, s.status_every_s)
    producer.close(timeout=5)
    return 0
