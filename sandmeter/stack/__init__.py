"""The local stack: a Kafka-protocol broker and a ClickHouse server on 127.0.0.1, no Docker.

`Stack` is used by `sandmeter stack up|down|status`, by `sandmeter demo` and by the pytest
session fixtures, so all three start the services the same way.
"""

from sandmeter.stack.procs import PortInUseError, ServiceError, StartTimeoutError
from sandmeter.stack.settings import StackSettings
from sandmeter.stack.stack import Stack, broker_process, create_topics

__all__ = [
    "PortInUseError",
    "ServiceError",
    "Stack",
    "StackSettings",
    "StartTimeoutError",
    "broker_process",
    "create_topics",
]
