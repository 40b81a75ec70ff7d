"""`sandmeter scale`: publish changed scale decisions to Kafka (SANDMETER_SCALE_*)."""

from __future__ import annotations

import argparse
import logging

from contracts.clock import wall_ms
from sandmeter.cli.common import Subparsers, no_args, served_registry, stop_on_signals


def add(sub: Subparsers) -> None:
    no_args(sub, "scale", "publish changed scale decisions to Kafka (SANDMETER_SCALE_*)", run)


def run(a: argparse.Namespace) -> int:
    from kafka import KafkaProducer

    from scaling import KpaConfig, Publisher, ScaleSettings

    s = ScaleSettings()
    logging.basicConfig(level=s.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    reg = served_registry(s)
    producer = KafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all")
    pub = Publisher(s.clickhouse(), producer, s.topic, s.stale_s, wall_ms, KpaConfig(), reg)
    pub.run(stop_on_signals(), s.status_every_s)
    producer.close(timeout=5)
    return 0
