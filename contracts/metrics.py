"""Prometheus helpers shared by the services.

Counters export no `_created` series: nothing reads them and they double every counter's
series count (disabled once, process-wide, when this module is imported).
"""

import platform
from collections.abc import Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

from contracts.names import BUILD_INFO

disable_created_metrics()  # type: ignore[no-untyped-call]


def counter(name: str, doc: str, registry: CollectorRegistry, labels: Sequence[str] = ()) -> Counter:
    """A Counter registered under its full exposed name (`..._total`, as dashboards use it)."""
    if not name.endswith("_total"):
        raise ValueError(f"counter names end in _total: {name}")
    return Counter(name.removesuffix("_total"), doc, list(labels), registry=registry)


def service_registry(service: str, version: str) -> CollectorRegistry:
    """A service's registry with what every service exports: its build and its process
    (CPU seconds, resident memory, open files, start time; Python's version)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    info = Gauge(BUILD_INFO, "Always 1; the labels say what runs", ["service", "version", "python"], registry=registry)
    info.labels(service, version, platform.python_version()).set(1)
    return registry
