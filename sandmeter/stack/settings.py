"""`sandmeter stack` settings (SANDMETER_STACK_*)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from contracts.settings import Part


class StackSettings(Part):
    """The local broker and ClickHouse server on loopback."""

    model_config = SettingsConfigDict(env_prefix="SANDMETER_STACK_", frozen=True)

    state_dir: Path = Path(".sandmeter/stack")
    host: Literal["127.0.0.1"] = "127.0.0.1"
    kafka_port: int = Field(19092, ge=1, le=65535)
    clickhouse_tcp_port: int = Field(19000, ge=1, le=65535)
    clickhouse_http_port: int = Field(18123, ge=1, le=65535)
    start_timeout_s: float = 30.0
