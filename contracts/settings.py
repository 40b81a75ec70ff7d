"""Settings building blocks: the parts every service's settings class is composed of.

Each deployable has one frozen settings class, read from its SANDMETER_<SERVICE>_* variables,
built once at the entry point and passed down; nothing below the entry point reads
os.environ. The classes inherit these parts instead of copying their fields, so a Kafka or
ClickHouse option is defined once and every service that connects takes it the same way.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.clickhouse import client

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class Part(BaseSettings):
    """The base of every part and settings class: frozen, unknown variables ignored."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")


class KafkaPart(Part):
    kafka_bootstrap: str = "127.0.0.1:19092"


class ClickHousePart(Part):
    clickhouse_host: str = "127.0.0.1"
    clickhouse_port: int = Field(19000, ge=1, le=65535)
    clickhouse_database: str = "default"

    def clickhouse(self) -> Any:
        """A new connection (clickhouse-driver's Client; one per thread)."""
        return client(self.clickhouse_host, self.clickhouse_port, self.clickhouse_database)


class MetricsPart(Part):
    """Where the service's Prometheus `/metrics` listens (port 0: no listener)."""

    metrics_host: str = "0.0.0.0"
    metrics_port: int = Field(0, ge=0, le=65535)


class LogPart(Part):
    status_every_s: float = 30.0  # the one-line periodic status
    log_level: LogLevel = "INFO"
