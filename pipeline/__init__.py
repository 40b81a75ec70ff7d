"""The stream processor: Kafka batches -> exact usage, health incidents and rollups in
ClickHouse, exactly once through checkpoints; and the ClickHouse schema migrations."""

from pipeline.build import build_processor
from pipeline.processor import Processor
from pipeline.reconcile import reconcile_rollups
from pipeline.retention import retain
from pipeline.schema import SchemaError, migrate
from pipeline.settings import MigrateSettings, ProcessorSettings, RetentionSettings

__all__ = [
    "MigrateSettings",
    "Processor",
    "ProcessorSettings",
    "RetentionSettings",
    "SchemaError",
    "build_processor",
    "migrate",
    "reconcile_rollups",
    "retain",
]
