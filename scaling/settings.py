"""`sandmeter scale` settings (SANDMETER_SCALE_*)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from contracts.names import TOPIC_SCALE
from contracts.settings import ClickHousePart, KafkaPart, LogPart, MetricsPart


class ScaleSettings(KafkaPart, ClickHousePart, MetricsPart, LogPart):
    """Publishes changed scale decisions (docs/autoscaling.md)."""

    model_config = SettingsConfigDict(env_prefix="SANDMETER_SCALE_", frozen=True)

    topic: str = TOPIC_SCALE
    # no decision when the newest load data anywhere is older than this
    stale_s: float = Field(15.0, gt=0)
    metrics_port: int = Field(9466, ge=0, le=65535)
