"""The local stack: a Kafka-protocol broker, a ClickHouse server (or ZooKeeper and a 2x2
ClickHouse cluster), Prometheus and Alertmanager on 127.0.0.1, no Docker.

`Stack` is used by `sandmeter stack up|down|status`, by `sandmeter demo` and by the pytest
session fixtures, so all three start the services the same way.
"""

from sandmeter.stack.alerting import Target
from sandmeter.stack.cluster import CLUSTER, Cluster
from sandmeter.stack.procs import PortInUseError, ServiceError, StartTimeoutError
from sandmeter.stack.receiver import AlertReceiver, Delivery, alert_time
from sandmeter.stack.settings import StackSettings
from sandmeter.stack.stack import Stack, broker_process, create_topics

__all__ = [
    "CLUSTER",
    "AlertReceiver",
    "Cluster",
    "Delivery",
    "PortInUseError",
    "ServiceError",
    "Stack",
    "StackSettings",
    "StartTimeoutError",
    "Target",
    "alert_time",
    "broker_process",
    "create_topics",
]
